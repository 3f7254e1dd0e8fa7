//! `nn.Linear`: y = x·Wᵀ + b with W stored (out, in) as in PyTorch.

use super::T2;
use crate::model::{Backend, Params};
use anyhow::Result;
use dfdx::prelude::*;

/// A linear layer whose weights are `{prefix}.weight` and `{prefix}.bias`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Name prefix, e.g. `blocks.0.attn.qkv`.
    pub prefix: String,
    /// Input features.
    pub inp: usize,
    /// Output features.
    pub out: usize,
    /// Whether `{prefix}.bias` exists.
    pub bias: bool,
}

impl Linear {
    /// A linear layer with bias.
    pub fn new(prefix: impl Into<String>, inp: usize, out: usize) -> Self {
        Self { prefix: prefix.into(), inp, out, bias: true }
    }

    /// `(N, in) → (N, out)`.
    pub fn forward<D: Backend, T: Tape<f32, D>>(&self, p: &Params<D, T>, x: T2<D, T>) -> Result<T2<D, T>> {
        let n = x.shape().0;
        let w = p.matrix(&format!("{}.weight", self.prefix), self.out, self.inp)?; // (out, in)
        let y = x.matmul(w.permute::<_, Axes2<1, 0>>()); // (N, out)
        if !self.bias {
            return Ok(y);
        }
        let b = p.vector(&format!("{}.bias", self.prefix), self.out)?;
        Ok(y + b.broadcast_like::<_, Axis<0>>(&(n, self.out)))
    }
}
