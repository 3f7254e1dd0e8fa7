//! `nn.Linear`: y = x·Wᵀ + b with W stored (out, in) as in PyTorch.

use super::{WeightSpec, T2};
use crate::model::{init, Backend, Flat, Params};
use anyhow::Result;
use dfdx::prelude::*;
use fine_plugin_api::param::Init;

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

    /// Declares `{prefix}.weight` (out, in) with `w_init` as `role` of `block`,
    /// and the bias (zero) as `role.bias`.
    pub fn declare(&self, role: &str, block: Option<usize>, w_init: Init, out: &mut Vec<WeightSpec>) {
        let shape = vec![self.out, self.inp];
        out.push(weight(format!("{}.weight", self.prefix), shape, w_init, role, block));
        if self.bias {
            out.push(weight(
                format!("{}.bias", self.prefix),
                vec![self.out],
                init::zero(),
                &format!("{role}.bias"),
                block,
            ));
        }
    }

    /// [`Self::declare`] with DiT's default for a linear weight (Xavier-uniform).
    pub fn declare_xavier(&self, role: &str, block: Option<usize>, out: &mut Vec<WeightSpec>) {
        self.declare(role, block, init::xavier(&[self.out, self.inp]), out)
    }

    /// `(N, in) → (N, out)`.
    pub fn forward<D: Backend, T: Tape<f32, D>>(&self, p: &Params<D, T>, x: T2<D, T>) -> Result<T2<D, T>> {
        let (w, b) = self.weights(p)?;
        Ok(D::linear(x, w, b))
    }

    /// The weight (out, in) and the bias (out), if any.
    pub fn weights<D: Backend, T: Tape<f32, D>>(&self, p: &Params<D, T>) -> Result<(T2<D, T>, Option<Flat<D, T>>)> {
        let w = p.matrix(&format!("{}.weight", self.prefix), self.out, self.inp)?; // (out, in)
        let b = if self.bias { Some(p.vector(&format!("{}.bias", self.prefix), self.out)?) } else { None };
        Ok((w, b))
    }
}

/// A declared weight.
pub fn weight(name: String, shape: Vec<usize>, init: Init, role: &str, block: Option<usize>) -> WeightSpec {
    WeightSpec { name, shape, init, role: role.to_string(), block }
}
