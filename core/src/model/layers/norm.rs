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
