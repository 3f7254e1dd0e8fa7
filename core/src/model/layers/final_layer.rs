//! DiT's final layer: adaLN (shift, scale) → LayerNorm → modulate → linear to patches.

use super::{linear::Linear, WeightSpec, T2, T3};
use crate::model::{init, Backend, Params};
use anyhow::Result;
use dfdx::prelude::*;

/// `final_layer.adaLN_modulation.1` (D → 2D) and `final_layer.linear` (D → p·p·C).
#[derive(Debug, Clone)]
pub struct FinalLayer {
    /// Modulation producing (shift, scale).
    pub ada: Linear,
    /// Projection to patch pixels, columns ordered (i, j, c).
    pub linear: Linear,
    /// Width D.
    pub dim: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

impl FinalLayer {
    /// Final layer from width `dim` to `out` values per token.
    pub fn new(dim: usize, out: usize, eps: f64) -> Self {
        Self {
            ada: Linear::new("final_layer.adaLN_modulation.1", dim, 2 * dim),
            linear: Linear::new("final_layer.linear", dim, out),
            dim,
            eps,
        }
    }

    /// Its weights, all zero: the model starts by predicting 0.
    pub fn declare(&self, out: &mut Vec<WeightSpec>) {
        self.linear.declare("head", None, init::zero(), out);
        self.ada.declare("head.ada", None, init::zero(), out);
    }

    /// `x` (B, T, D), `c_silu` (B, D) → (B·T, p·p·C).
    pub fn forward<D: Backend, T: Tape<f32, D>>(
        &self,
        p: &Params<D, T>,
        x: T3<D, T>,
        c_silu: T2<D, T>,
    ) -> Result<T2<D, T>> {
        let (b, t, d) = *x.shape();
        let m = self.ada.forward(p, c_silu)?; // (B, 2D): shift, scale
        let h = D::ln_modulate(x, m, 0, 1, self.eps);
        self.linear.forward(p, h.reshape_like(&(b * t, d)))
    }
}
