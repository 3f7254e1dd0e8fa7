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
        let (h, d) = (self.heads, self.dim);
        let hd = d / h;
        // qkv columns are laid out (3, H, hd), as PyTorch's reshape(B, N, 3, H, hd).
        let qkv = self.qkv.forward(p, x)?; // (B·T, 3D)
        let q = qkv.with_empty_tape().slice((.., 0..d)).reshape_like(&(b, t, h, hd)).permute::<_, Axes4<0, 2, 1, 3>>(); // (B, H, T, hd)
        let k =
            qkv.with_empty_tape().slice((.., d..2 * d)).reshape_like(&(b, t, h, hd)).permute::<_, Axes4<0, 2, 3, 1>>(); // (B, H, hd, T)
        let v = qkv.slice((.., 2 * d..3 * d)).reshape_like(&(b, t, h, hd)).permute::<_, Axes4<0, 2, 1, 3>>(); // (B, H, T, hd)
        let scale = (hd as f32).powf(-0.5);
        let att = (q.matmul(k) * scale).softmax::<Axis<3>>(); // (B, H, T, T)
        let o = att.matmul(v).permute::<_, Axes4<0, 2, 1, 3>>().reshape_like(&(b * t, d)); // (B·T, D)
        self.proj.forward(p, o)
    }
}
