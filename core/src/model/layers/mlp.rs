//! DiT's MLP: fc1 → GELU (tanh approximation) → fc2.

use super::{linear::Linear, T2};
use crate::model::{Backend, Params};
use anyhow::Result;
use dfdx::prelude::*;

/// `{prefix}.fc1`, `{prefix}.fc2`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// First projection D → hidden.
    pub fc1: Linear,
    /// Second projection hidden → D.
    pub fc2: Linear,
}

impl Mlp {
    /// An MLP `dim → hidden → dim`.
    pub fn new(prefix: &str, dim: usize, hidden: usize) -> Self {
        Self {
            fc1: Linear::new(format!("{prefix}.fc1"), dim, hidden),
            fc2: Linear::new(format!("{prefix}.fc2"), hidden, dim),
        }
    }

    /// `(N, D) → (N, D)`.
    pub fn forward<D: Backend, T: Tape<f32, D>>(&self, p: &Params<D, T>, x: T2<D, T>) -> Result<T2<D, T>> {
        let h = D::gelu_tanh(self.fc1.forward(p, x)?); // (N, hidden)
        self.fc2.forward(p, h)
    }
}
