//! `y = x·Wᵀ + b` and its backward pass, all products through `gemm`.
//!
//! ```text
//! forward   y  (N, out) = x (N, in) · Wᵀ            (+ b broadcast over rows)
//! backward  dx (N, in)  += dy (N, out) · W (out, in)
//!           dW (out, in) += dyᵀ · x
//!           db (out)     += Σ_rows dy
//! ```

use super::{gemm, output, threads, view, with_grad_of, zeroed, Mat};
use crate::model::kernels::Flat;
use crate::model::layers::T2;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Rows per rayon task for the bias broadcast and its gradient.
const BIAS_ROWS: usize = 256;

pub fn linear<T: Tape<f32, Cpu>>(x: T2<Cpu, T>, w: T2<Cpu, T>, b: Option<Flat<Cpu, T>>) -> T2<Cpu, T> {
    let (n, inp) = *x.shape();
    let out = w.shape().0;
    assert_eq!(w.shape().1, inp, "linear: x has {inp} features, W is {:?}", w.shape());
    let (x, tx) = x.contiguous().split_tape();
    let (w, tw) = w.contiguous().split_tape();
    let mut tape = tx.merge(tw);
    let b = b.map(|b| {
        let (b, tb) = b.contiguous().split_tape();
        tape = std::mem::take(&mut tape).merge(tb);
        b
    });
    let (xv, wv) = (view(&x), view(&w)); // (N, in), (out, in)
    let mut y = zeroed(n * out); // (N, out)
    if let Some(b) = &b {
        let bv = view(b);
        assert_eq!(bv.len(), out, "linear: bias has {} values for {out} outputs", bv.len());
        y.par_chunks_mut(BIAS_ROWS * out).for_each(|rows| rows.chunks_mut(out).for_each(|r| r.copy_from_slice(&bv)));
    }
    // SAFETY: x is (N, in), Wᵀ is read from W (out, in) with strides (1, in), y is (N, out).
    unsafe {
        gemm(n, out, inp, y.as_mut_ptr(), out, b.is_some(), Mat::rows(&xv, inp), Mat::cols(&wv, inp), 1.0, threads())
    };
    let y = output(x.device(), y, (n, out));
    let y_ghost = y.clone();
    tape.add_backward_op(move |grads| {
        with_grad_of(grads, &y_ghost, |grads, dy| {
            let dx = grads.get_or_alloc_mut(&x)?;
            // SAFETY: dx (N, in) += dy (N, out) · W (out, in).
            unsafe {
                gemm(n, inp, out, dx.as_mut_ptr(), inp, true, Mat::rows(&dy, out), Mat::rows(&wv, inp), 1.0, threads())
            };
            let dw = grads.get_or_alloc_mut(&w)?;
            // SAFETY: dW (out, in) += dyᵀ (read from dy with strides (1, out)) · x (N, in).
            unsafe {
                gemm(out, inp, n, dw.as_mut_ptr(), inp, true, Mat::cols(&dy, out), Mat::rows(&xv, inp), 1.0, threads())
            };
            if let Some(b) = &b {
                // db += Σ_rows dy: partial sums over blocks of rows, then their sum.
                let partial = dy
                    .par_chunks(BIAS_ROWS * out)
                    .map(|rows| {
                        let mut s = vec![0.0f32; out];
                        rows.chunks(out).for_each(|r| s.iter_mut().zip(r).for_each(|(s, d)| *s += d));
                        s
                    })
                    .collect::<Vec<_>>();
                let db = grads.get_or_alloc_mut(b)?;
                for s in &partial {
                    db.iter_mut().zip(s).for_each(|(g, d)| *g += d);
                }
            }
            Ok(())
        })
    });
    y.put_tape(tape)
}
