//! Multi-head self-attention with a fused qkv projection (timm's `Attention`).

use super::{linear::Linear, T2};
use crate::model::{Backend, Params};
use anyhow::Result;
use dfdx::prelude::*;

/// `{prefix}.qkv` (D → 3D) and `{prefix}.proj` (D → D).
#[derive(Debug, Clone)]
pub struct Attention {
    /// Fused query/key/value projection.
    pub qkv: Linear,
    /// Output projection.
    pub proj: Linear,
    /// Number of heads.
    pub heads: usize,
    /// Width D.
    pub dim: usize,
}

impl Attention {
    /// Attention over width `dim` with `heads` heads.
    pub fn new(prefix: &str, dim: usize, heads: usize, qkv_bias: bool) -> Self {
        let mut qkv = Linear::new(format!("{prefix}.qkv"), dim, 3 * dim);
        qkv.bias = qkv_bias;
        Self { qkv, proj: Linear::new(format!("{prefix}.proj"), dim, dim), heads, dim }
    }

    /// `(B·T, D) → (B·T, D)` for `b` sequences of `t` tokens.
    pub fn forward<D: Backend, T: Tape<f32, D>>(
        &self,
        p: &Params<D, T>,
        x: T2<D, T>,
        b: usize,
        t: usize,
    ) -> Result<T2<D, T>> {
        // qkv rows of W: (3, H, hd) as PyTorch's reshape(B, N, 3, H, hd)
        let (w, bias) = self.qkv.weights(p)?;
        let o = D::qkv_attention(x, w, bias, b, t, self.heads); // (B·T, D)
        self.proj.forward(p, o)
    }
}
