//! Utilities: atomic file writes, matrix products, PNG image grids, SVG line plots,
//! zero-filled buffers.

pub mod crc;
pub mod fsx;
pub mod gemm;
pub mod image;
pub mod mem;
pub mod plot;

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Buffers from this many floats are zero-filled on all rayon workers.
const PAR_FILL: usize = 1 << 16;

/// A zero-filled buffer of `n` floats, filled in parallel when large (a
/// recycled heap block makes `calloc` run one serial memset, which left the
/// second core idle).
pub fn zeroed(n: usize) -> Vec<f32> {
    if n < PAR_FILL {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut().par_chunks_mut(PAR_FILL).for_each(|c| c.fill(MaybeUninit::new(0.0)));
    // SAFETY: all n elements were initialised above.
    unsafe { v.set_len(n) };
    v
}
