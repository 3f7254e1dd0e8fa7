//! The strategy interface: a learngene method.
//!
//! A strategy never touches the model. It writes [`Parameterization`]s (which
//! weights are leaves, shared, factorized or expressed from other tensors, and
//! which leaves train) and moves tensors by name. The host builds, trains,
//! and materializes models from them.
//!
//! Life cycle: `ancestry` → host pre-trains → `extract` → learngene file →
//! `descendant` for each target graph → host trains the leaves marked
//! trainable for `init_steps` → host materializes a plain model (every weight
//! evaluated from its expression) → ordinary training.

use crate::graph::Graph;
use crate::info::{Options, PluginInfo};
use crate::param::{Init, Parameterization};
use crate::tensors::Tensors;
use anyhow::Result;
use std::collections::BTreeMap;

pub mod dit;
pub mod testing;

/// A weight the model reads: DiT name, PyTorch shape, DiT's default init.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightSpec {
    /// e.g. `blocks.3.attn.qkv.weight`.
    pub name: String,
    /// e.g. `[3·D, D]`.
    pub shape: Vec<usize>,
    /// DiT's initialization of this weight.
    pub init: Init,
}

/// What a strategy extracted from a trained ancestry.
#[derive(Debug, Clone, PartialEq)]
pub struct Learngene {
    /// Name of the strategy that made it.
    pub strategy: String,
    /// Its version.
    pub strategy_version: String,
    /// Free-form metadata (source graph, ranks, data, steps, …).
    pub meta: BTreeMap<String, String>,
    /// The inherited tensors.
    pub tensors: Tensors,
}

/// A descendant model ready for its initialization phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Descendant {
    /// Leaves (with `trainable` set for the initialization phase) and bindings.
    pub spec: Parameterization,
    /// Values of leaves inherited or computed; leaves absent here are drawn from their `Init`.
    pub values: Tensors,
    /// Steps of the initialization phase (0: none, go straight to ordinary training).
    pub init_steps: usize,
}

/// A learngene method.
pub trait Strategy: Send + Sync {
    /// Name, kind, version, options.
    fn info(&self) -> PluginInfo;
    /// Phase 1: the parameterization of an ancestry model of `graph`, whose weights are `weights`.
    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization>;
    /// The learngene of a trained ancestry: `leaves` are its trained leaf values.
    fn extract(&self, graph: &Graph, spec: &Parameterization, leaves: &Tensors, opts: &Options) -> Result<Learngene>;
    /// A descendant of `target` (weights `weights`) initialized from `learngene`.
    fn descendant(
        &self,
        learngene: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        opts: &Options,
    ) -> Result<Descendant>;
}
