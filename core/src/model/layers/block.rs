//! The adaLN-Zero DiT block.

use super::{attention::Attention, linear::Linear, mlp::Mlp, WeightSpec, T2, T3};
use crate::model::{init, Backend, Params};
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

    /// The block's weights, as block `l`: the four linear layers Xavier-uniform,
    /// the adaLN modulation zero (adaLN-Zero: the block starts as the identity).
    pub fn declare(&self, l: usize, out: &mut Vec<WeightSpec>) {
        let b = Some(l);
        self.attn.qkv.declare_xavier("qkv", b, out);
        self.attn.proj.declare_xavier("proj", b, out);
        self.mlp.fc1.declare_xavier("fc1", b, out);
        self.mlp.fc2.declare_xavier("fc2", b, out);
        self.ada.declare("ada", b, init::zero(), out);
    }

    /// `x` (B, T, D), `c_silu` = SiLU(c) (B, D) → (B, T, D).
    pub fn forward<D: Backend, T: Tape<f32, D>>(
        &self,
        p: &Params<D, T>,
        x: T3<D, T>,
        c_silu: T2<D, T>,
    ) -> Result<T3<D, T>> {
        let (b, t, d) = *x.shape();
        let m = self.ada.forward(p, c_silu)?; // (B, 6D): shift, scale, gate for MSA, then for MLP
        let (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) = (0, 1, 2, 3, 4, 5);

        let h = D::ln_modulate(x.with_empty_tape(), m.with_empty_tape(), shift_msa, scale_msa, self.eps);
        let a = self.attn.forward(p, h.reshape_like(&(b * t, d)), b, t)?.reshape_like(&(b, t, d));
        let x = D::gate_residual(x, m.with_empty_tape(), gate_msa, a);

        let h = D::ln_modulate(x.with_empty_tape(), m.with_empty_tape(), shift_mlp, scale_mlp, self.eps);
        let f = self.mlp.forward(p, h.reshape_like(&(b * t, d)))?.reshape_like(&(b, t, d));
        Ok(D::gate_residual(x, m, gate_mlp, f))
    }
}
