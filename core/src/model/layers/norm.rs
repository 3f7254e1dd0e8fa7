//! LayerNorm without affine parameters, and adaLN modulation.

use super::T3;
use crate::model::Backend;
use dfdx::prelude::*;

/// LayerNorm over the last axis, no affine (DiT: `elementwise_affine=False`).
/// Uses the biased variance, as PyTorch does.
pub fn layer_norm<D: Backend, T: Tape<f32, D>>(x: T3<D, T>, eps: f64) -> T3<D, T> {
    x.normalize::<Axis<2>>(eps)
}

/// `x · (1 + scale) + shift`, with shift/scale (B, D) broadcast over tokens.
pub fn modulate<D: Backend, T: Tape<f32, D>>(
    x: T3<D, T>,                              // (B, T, D)
    shift: Tensor<(usize, usize), f32, D, T>, // (B, D)
    scale: Tensor<(usize, usize), f32, D, T>, // (B, D)
) -> T3<D, T> {
    let s = *x.shape();
    x * (scale + 1.0).broadcast_like::<_, Axis<1>>(&s) + shift.broadcast_like::<_, Axis<1>>(&s)
}

/// Splits adaLN's (B, n·D) modulation into n (B, D) chunks (PyTorch's `chunk(n, dim=1)`).
/// Every chunk but the last gets an empty tape; the last carries the tape.
pub fn chunks<D: Backend, T: Tape<f32, D>>(
    m: Tensor<(usize, usize), f32, D, T>,
    n: usize,
) -> Vec<Tensor<(usize, usize), f32, D, T>> {
    let d = m.shape().1 / n;
    let mut out: Vec<_> = (0..n - 1).map(|k| m.with_empty_tape().slice((.., k * d..(k + 1) * d))).collect();
    out.push(m.slice((.., (n - 1) * d..n * d)));
    out
}
