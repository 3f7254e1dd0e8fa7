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
//!
//! Three optional hooks serve methods that need the host to run models
//! (Learngene Pool): [`Strategy::pool`] asks for models distilled from the
//! trained ancestry before `extract`; [`Strategy::descendant_graph`] may change
//! the target graph (e.g. add a stitching layer); [`Strategy::probes`] asks for
//! token features of learngene models on real data, handed to
//! [`Strategy::descendant_probed`]. Their defaults do nothing, so other
//! strategies (and dynamic-library plugins, whose ABI carries only the four
//! required methods) are unaffected.

use crate::graph::Graph;
use crate::info::{Options, PluginInfo};
use crate::param::{Init, Parameterization};
use crate::tensors::Tensors;
use anyhow::Result;
use std::collections::BTreeMap;

pub mod dit;
pub mod testing;

/// A weight the model reads, as its layer declares it: name, PyTorch shape,
/// DiT's default init, and what it does (role and block). Strategies work by
/// role and block index, never by parsing names.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightSpec {
    /// e.g. `blocks.3.attn.qkv.weight`.
    pub name: String,
    /// e.g. `[3·D, D]`.
    pub shape: Vec<usize>,
    /// DiT's initialization of this weight.
    pub init: Init,
    /// What the weight is, the same in every block: a block's matrices are
    /// `qkv`, `proj`, `fc1`, `fc2` and `ada` (its adaLN modulation) and their
    /// biases `qkv.bias` …; outside the blocks `patch`, `time.fc1`, `time.fc2`,
    /// `label`, `stitch`, `head`, `head.ada` (and `.bias` of each).
    #[serde(default)]
    pub role: String,
    /// The block the weight lies in; `None` outside the blocks.
    #[serde(default)]
    pub block: Option<usize>,
}

impl WeightSpec {
    /// Whether this is block `l`'s weight of role `role`.
    pub fn is(&self, l: usize, role: &str) -> bool {
        self.block == Some(l) && self.role == role
    }
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

/// A model the host distils from the trained ancestry before `extract`
/// (Learngene Pool's auxiliary models). The teacher is the ancestry itself
/// (the weights `extract` would see); the member's trained (EMA) weights reach
/// `extract` as extra leaves named `pool.{name}.{weight}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolMember {
    /// Name, used in tensor names (letters, digits, `-`, `_`).
    pub name: String,
    /// The member's graph: same input, patch size and classes as the ancestry.
    /// It is a plain model (one leaf per weight, DiT's initialization).
    pub graph: Graph,
    /// Start values of some weights (e.g. taken from the ancestry); the others are drawn from DiT's init.
    pub values: Tensors,
    /// Weights kept at their start values during distillation.
    pub frozen: Vec<String>,
    /// Distillation steps (data, batch and learning rate are the ancestry's).
    pub steps: usize,
    /// Weight α of the teacher term: target = (1−α)·ε + α·ε_teacher.
    pub alpha: f32,
}

/// A request for token features: run the plain model whose weights are the
/// learngene tensors `{prefix}{weight}` on noisy real training images and
/// return its token stream after `blocks` blocks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Name of the returned tensor, shape (images·T, D).
    pub name: String,
    /// Graph of the probed model.
    pub graph: Graph,
    /// Prefix of its weights among the learngene's tensors, e.g. `pool.a.`.
    pub prefix: String,
    /// Blocks run before the tokens are taken (0: embedded patches plus positions).
    pub blocks: usize,
}

/// Feature requests; every probe sees the same images, timesteps, noise and labels.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Probes {
    /// Training images to run (drawn with the descendant's seed).
    pub images: usize,
    /// The requests.
    pub probes: Vec<Probe>,
}

/// A learngene method.
pub trait Strategy: Send + Sync {
    /// Name, kind, version, options.
    fn info(&self) -> PluginInfo;
    /// Phase 1: the parameterization of an ancestry model of `graph`, whose weights are `weights`.
    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization>;
    /// The learngene of a trained ancestry of `graph` (weights `weights`,
    /// parameterized by `spec`): `leaves` are its trained leaf values.
    fn extract(
        &self,
        graph: &Graph,
        weights: &[WeightSpec],
        spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Learngene>;
    /// A descendant of `target` (weights `weights`) initialized from `learngene`.
    fn descendant(
        &self,
        learngene: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        opts: &Options,
    ) -> Result<Descendant>;

    /// Models to distil from the trained ancestry (`leaves` of `spec` on
    /// `graph`) before `extract`. Default: none.
    fn pool(
        &self,
        graph: &Graph,
        spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Vec<PoolMember>> {
        let _ = (graph, spec, leaves, opts);
        Ok(Vec::new())
    }

    /// The graph a descendant of `target` actually has (e.g. `target` plus a
    /// stitching layer). Default: `target` itself.
    fn descendant_graph(&self, learngene: &Learngene, target: &Graph, opts: &Options) -> Result<Graph> {
        let _ = (learngene, opts);
        Ok(target.clone())
    }

    /// Features to compute before building a descendant of `target` (the graph
    /// from `descendant_graph`). Default: none.
    fn probes(&self, learngene: &Learngene, target: &Graph, opts: &Options) -> Result<Probes> {
        let _ = (learngene, target, opts);
        Ok(Probes::default())
    }

    /// `descendant` given the features asked for by `probes`. Default: `descendant`.
    fn descendant_probed(
        &self,
        learngene: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        opts: &Options,
        features: &Tensors,
    ) -> Result<Descendant> {
        let _ = features;
        self.descendant(learngene, target, weights, opts)
    }
}
