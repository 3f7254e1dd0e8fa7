//! The adaLN-Zero DiT block.

use super::{attention::Attention, linear::Linear, mlp::Mlp, norm, T2, T3};
use crate::model::{Backend, Params};
use anyhow::Result;
use dfdx::prelude::*;

/// `blocks.{i}`: norm1 → modulate → attn → gate; norm2 → modulate → mlp → gate.
#[derive(Debug, Clone)]
pub struct DitBlock {
    /// `blocks.{i}.attn`.
    pub attn: Attention,
    /// `blocks.{i}.mlp`.
    pub mlp: Mlp,
    /// `blocks.{i}.adaLN_modulation.1`: D → 6D.
    pub ada: Linear,
    /// Width D.
    pub dim: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

impl DitBlock {
    /// Block `i` of width `dim`.
    pub fn new(i: usize, dim: usize, heads: usize, mlp_hidden: usize, qkv_bias: bool, eps: f64) -> Self {
        let pre = format!("blocks.{i}");
        Self {
            attn: Attention::new(&format!("{pre}.attn"), dim, heads, qkv_bias),
            mlp: Mlp::new(&format!("{pre}.mlp"), dim, mlp_hidden),
            ada: Linear::new(format!("{pre}.adaLN_modulation.1"), dim, 6 * dim),
            dim,
            eps,
        }
    }

    /// `x` (B, T, D), `c_silu` = SiLU(c) (B, D) → (B, T, D).
    pub fn forward<D: Backend, T: Tape<f32, D>>(
        &self,
        p: &Params<D, T>,
        x: T3<D, T>,
        c_silu: T2<D, T>,
    ) -> Result<T3<D, T>> {
        let (b, t, d) = *x.shape();
        let m = self.ada.forward(p, c_silu)?; // (B, 6D)
        let mut c = norm::chunks(m, 6).into_iter(); // shift, scale, gate for MSA, then for MLP: (B, D) each
        let mut next = || c.next().expect("six chunks");
        let (shift_msa, scale_msa, gate_msa) = (next(), next(), next());
        let (shift_mlp, scale_mlp, gate_mlp) = (next(), next(), next());

        let h = norm::modulate(norm::layer_norm(x.with_empty_tape(), self.eps), shift_msa, scale_msa);
        let a = self.attn.forward(p, h.reshape_like(&(b * t, d)), b, t)?.reshape_like(&(b, t, d));
        let x = x + gate_msa.broadcast_like::<_, Axis<1>>(&(b, t, d)) * a;

        let h = norm::modulate(norm::layer_norm(x.with_empty_tape(), self.eps), shift_mlp, scale_mlp);
        let f = self.mlp.forward(p, h.reshape_like(&(b * t, d)))?.reshape_like(&(b, t, d));
        Ok(x + gate_mlp.broadcast_like::<_, Axis<1>>(&(b, t, d)) * f)
    }
}
