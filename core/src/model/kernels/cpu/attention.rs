//! Multi-head attention straight from the qkv rows: per (batch, head), no
//! q/k/v copies or transposes; the softmax probabilities are kept for backward.
//!
//! ```text
//! qkv (B·T, 3D), columns (3, H, hd); per (b, h): Q, K, V (T, hd) strided views
//! forward   S = QKᵀ/√hd (T, T)   P = softmax_rows(S)   O = P·V → out (B·T, D)
//! backward  dV += Pᵀ·dO          dP = dO·Vᵀ
//!           dS = P ⊙ (dP − rowsum(dP ⊙ P))
//!           dQ += dS·K/√hd       dK += dSᵀ·Q/√hd
//! ```

use super::{exp, gemm, output, view, with_grad_of, zeroed, Mat, SendPtr};
use crate::model::layers::T2;
use dfdx::prelude::*;
use rayon::prelude::*;

pub fn attention<T: Tape<f32, Cpu>>(qkv: T2<Cpu, T>, b: usize, t: usize, heads: usize) -> T2<Cpu, T> {
    let (rows, d3) = *qkv.shape();
    let d = d3 / 3;
    assert!(
        rows == b * t && d3 == 3 * d && d % heads == 0,
        "attention: qkv {:?} for B={b}, T={t}, H={heads}",
        qkv.shape()
    );
    let (h, hd) = (heads, d / heads);
    let scale = (hd as f32).powf(-0.5);
    let (qkv, mut tape) = qkv.contiguous().split_tape();
    let x = view(&qkv); // (B·T, 3D)
    let mut probs = zeroed(b * h * t * t); // (B, H, T, T)
    let mut out = zeroed(b * t * d); // (B·T, D)
    let out_ptr = SendPtr(out.as_mut_ptr());
    // Offsets of Q, K, V of (bi, hi) in qkv, and of its output block.
    let at =
        move |bi: usize, hi: usize| (bi * t * d3 + hi * hd, bi * t * d3 + d + hi * hd, bi * t * d3 + 2 * d + hi * hd);
    probs.par_chunks_mut(t * t).enumerate().for_each(|(task, p)| {
        let (bi, hi) = (task / h, task % h);
        let (q, k, v) = at(bi, hi);
        let o = out_ptr;
        // SAFETY: Q (T, hd) and K (T, hd) are strided views of x; P is (T, T).
        unsafe { gemm(t, t, hd, p.as_mut_ptr(), t, false, Mat::rows(&x, d3).at(q), Mat::cols(&x, d3).at(k), scale, 1) };
        for row in p.chunks_mut(t) {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            row.iter_mut().for_each(|v| *v = exp(*v - max));
            let inv = 1.0 / row.iter().sum::<f32>();
            row.iter_mut().for_each(|v| *v *= inv);
        }
        // SAFETY: task (bi, hi) writes rows bi·T.. and columns hi·hd.. of out only.
        unsafe {
            gemm(t, hd, t, o.0.add(bi * t * d + hi * hd), d, false, Mat::rows(p, t), Mat::rows(&x, d3).at(v), 1.0, 1)
        };
    });
    let out = output(qkv.device(), out, (b * t, d));
    let out_ghost = out.clone();
    tape.add_backward_op(move |grads| {
        with_grad_of(grads, &out_ghost, |grads, dout| {
            let dqkv = grads.get_or_alloc_mut(&qkv)?;
            let dx = SendPtr(dqkv.as_mut_ptr());
            probs.par_chunks(t * t).enumerate().for_each(|(task, p)| {
                let (bi, hi) = (task / h, task % h);
                let (q, k, v) = at(bi, hi);
                let dx = dx;
                let dov = Mat::rows(&dout, d).at(bi * t * d + hi * hd); // dO (T, hd)
                let mut ds = vec![0.0f32; t * t];
                // SAFETY: task (bi, hi) writes only its own Q, K, V column blocks of dqkv's rows bi·T..
                unsafe {
                    gemm(t, hd, t, dx.0.add(v), d3, true, Mat::cols(p, t), dov, 1.0, 1); // dV += Pᵀ·dO
                    gemm(t, t, hd, ds.as_mut_ptr(), t, false, dov, Mat::cols(&x, d3).at(v), 1.0, 1);
                    // dP = dO·Vᵀ
                }
                for (dr, pr) in ds.chunks_mut(t).zip(p.chunks(t)) {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    dr.iter_mut().zip(pr).for_each(|(g, p)| *g = p * (*g - dot));
                }
                unsafe {
                    gemm(t, hd, t, dx.0.add(q), d3, true, Mat::rows(&ds, t), Mat::rows(&x, d3).at(k), scale, 1); // dQ += dS·K/√hd
                    gemm(t, hd, t, dx.0.add(k), d3, true, Mat::cols(&ds, t), Mat::rows(&x, d3).at(q), scale, 1);
                    // dK += dSᵀ·Q/√hd
                }
            });
            Ok(())
        })
    });
    out.put_tape(tape)
}
