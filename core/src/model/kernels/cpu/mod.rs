//! CPU kernels: [`crate::util::gemm`] for every matrix product (strided
//! operands, so no transpose is ever materialised), rayon across rows and
//! heads, and loops written so the compiler vectorises them.

pub mod attention;
pub mod gelu;
pub mod linear;
pub mod norm;

use crate::model::kernels::{flat_values, Flat};
use dfdx::prelude::*;
use std::collections::VecDeque;
use std::sync::Mutex;

pub use crate::util::gemm::{gemm, threads, Mat, SendPtr};
pub use crate::util::zeroed;

// ---------------------------------------------------------------------------
// Host buffers: fresh ones, and views of tensors' values
// ---------------------------------------------------------------------------

/// Recent kernel outputs whose buffers the next kernels read in place: at most
/// this many, holding at most [`RECENT_BYTES`]. A block's activations are read
/// within about a dozen kernel calls of being made.
const RECENT: usize = 24;
const RECENT_BYTES: usize = 512 << 20;

/// One recorded kernel output: `keep` holds its buffer alive and shared (so
/// dfdx's copy-on-write never writes to it in place); `ptr` is that buffer.
struct Recent {
    id: UniqueId,
    keep: Flat<Cpu>,
    ptr: *const f32,
    len: usize,
}
// SAFETY: `ptr` points into the immutable buffer that `keep` owns.
unsafe impl Send for Recent {}

static RECENT_OUTPUTS: Mutex<VecDeque<Recent>> = Mutex::new(VecDeque::new());

/// A tensor's id. dfdx keeps the field private; `UnusedTensors::add` is the
/// public accessor it offers.
fn id_of<S: Shape, T>(x: &Tensor<S, f32, Cpu, T>) -> UniqueId {
    let mut u = dfdx::optim::UnusedTensors::default();
    u.add(x);
    u.ids[0]
}

/// A kernel's output: the tensor over `v`, recorded so that the kernels that
/// read it next borrow `v` instead of copying it (see [`view`]).
pub fn output<S: Shape>(dev: &Cpu, v: Vec<f32>, shape: S) -> Tensor<S, f32, Cpu> {
    let (ptr, len) = (v.as_ptr(), v.len());
    let t = dev.tensor_from_vec(v, shape);
    if len * 4 <= RECENT_BYTES {
        let rec = Recent { id: id_of(&t), keep: t.clone().reshape_like(&(len,)), ptr, len };
        let mut recent = RECENT_OUTPUTS.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back(rec);
        while recent.len() > RECENT || recent.iter().map(|r| r.len * 4).sum::<usize>() > RECENT_BYTES {
            recent.pop_front();
        }
    }
    t
}

/// The values of a contiguous tensor (callers make tensors contiguous first),
/// read in place when a kernel made it
/// (dfdx offers no borrowed view of a CPU tensor), copied otherwise.
///
/// In place is sound because the view holds the buffer alive and shared:
/// dfdx writes into a tensor's buffer only when it is the sole owner
/// (`Arc::make_mut`), and gives a writer sharing it a fresh copy. Tensors
/// are never written in place in this crate, so the values read are the
/// tensor's.
pub fn view<S: Shape, T>(x: &Tensor<S, f32, Cpu, T>) -> HostView {
    let (id, len) = (id_of(x), x.shape().num_elements());
    let recent = RECENT_OUTPUTS.lock().unwrap_or_else(|e| e.into_inner());
    match recent.iter().rev().find(|r| r.id == id && r.len == len) {
        Some(r) => HostView::Borrowed { _keep: r.keep.clone(), ptr: r.ptr, len },
        None => {
            drop(recent);
            HostView::Owned(flat_values(x))
        }
    }
}

/// See [`view`].
pub enum HostView {
    /// A kernel output's own buffer, kept alive by `_keep`.
    Borrowed { _keep: Flat<Cpu>, ptr: *const f32, len: usize },
    /// A copy.
    Owned(Vec<f32>),
}
// SAFETY: a borrowed view points into an immutable buffer that `_keep` owns.
unsafe impl Send for HostView {}
unsafe impl Sync for HostView {}

#[cfg(test)]
impl HostView {
    /// Whether the values are read in place.
    pub fn is_borrowed(&self) -> bool {
        matches!(self, Self::Borrowed { .. })
    }
}

impl std::ops::Deref for HostView {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: `ptr` is the start of `len` initialised floats owned by `_keep`.
            Self::Borrowed { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Self::Owned(v) => v,
        }
    }
}

/// Runs a backward pass with the gradient of `out` moved out of `grads` (no
/// copy) and puts it back afterwards, so `f` may borrow other gradients mutably.
pub fn with_grad_of<S: dfdx::shapes::Shape>(
    grads: &mut dfdx::tensor::Gradients<f32, dfdx::tensor::Cpu>,
    out: &dfdx::tensor::Tensor<S, f32, dfdx::tensor::Cpu>,
    f: impl FnOnce(&mut dfdx::tensor::Gradients<f32, dfdx::tensor::Cpu>, &[f32]) -> Result<(), dfdx::tensor::CpuError>,
) -> Result<(), dfdx::tensor::CpuError> {
    let dy: Vec<f32> = std::mem::take(&mut **grads.get_or_alloc_mut(out)?);
    let result = f(grads, &dy);
    **grads.get_or_alloc_mut(out)? = dy;
    result
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding and subtracting it rounds an f32 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x in f32 (relative error ≈ 1e-7 on [-87, 88]; below that it returns
/// e^-87.3 instead of 0). Branch-free, so loops over slices vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND; // round(x / ln 2)
    let f = x - n * LN2_HI - n * LN2_LO; // |f| ≤ ln2/2
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_matches_std() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0;
            let (a, b) = (super::exp(x), (x as f64).exp());
            assert!(((a as f64 - b) / b).abs() < 3e-7, "exp({x}) = {a}, want {b}");
        }
        assert!(super::exp(-1e4) < 1e-37 && super::exp(-1e4) >= 0.0);
        assert!(super::exp(1e4).is_finite());
    }
}
