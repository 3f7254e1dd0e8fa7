//! The configuration of `fine bench learngene` (RON).

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A learngene benchmark: which strategies, which descendant sizes, how long,
/// how evaluated. Every row is trained with the same data, batch, optimizer
/// and seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Name of the benchmark (titles of the report and plots).
    pub name: String,
    /// Data of the ancestries and (unless a row says otherwise) of the descendants.
    pub data: String,
    /// How every strategy's ancestry is pre-trained.
    pub ancestry: Ancestry,
    /// Rows of the table: a strategy with its options.
    pub rows: Vec<Row>,
    /// Descendant graphs (RON files, relative to the working directory): the table's columns.
    pub sizes: Vec<PathBuf>,
    /// The initialization phase of strategies that have one (e.g. FINE's σ-only phase).
    pub init: Phase,
    /// Ordinary training of every descendant.
    pub train: Phase,
    /// Seeds; every (row, size) is run once per seed.
    pub seeds: Vec<u64>,
    /// How descendants are scored.
    pub eval: Eval,
    /// Sub-tables of the report (e.g. the paper's Tables A, C, D): chosen rows
    /// and sizes, each metric. Empty: only the full table.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// Paired per-seed differences `a − b` of the final metrics, per size.
    #[serde(default)]
    pub paired: Vec<(String, String)>,
}

/// A sub-table of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Heading.
    pub title: String,
    /// Row labels, in order.
    pub rows: Vec<String>,
    /// Size (graph) names, in order; empty: every size.
    #[serde(default)]
    pub sizes: Vec<String>,
}

/// Ancestry pre-training.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ancestry {
    /// Ancestry graph file.
    pub graph: PathBuf,
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Warmup steps.
    #[serde(default)]
    pub warmup: usize,
    /// EMA decay (the learngene is extracted from the EMA weights).
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// EMA warmup (`TrainConfig::ema_warmup`); off by default, as the
    /// benchmarks' ancestries were trained before it existed.
    #[serde(default)]
    pub ema_warmup: bool,
    /// Seed of the ancestry run.
    #[serde(default)]
    pub seed: u64,
    /// Which weights the learngene is extracted from.
    #[serde(default)]
    pub weights: Weights,
}

/// The ancestry weights a learngene is extracted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Weights {
    /// The EMA of every leaf (for a factorized ancestry, the EMA of each factor).
    #[default]
    Ema,
    /// The live weights at the last step.
    Live,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// Label in the table (default: the strategy name).
    #[serde(default)]
    pub label: Option<String>,
    /// Strategy plugin (`fine plugins list`); `scratch` needs no ancestry.
    pub strategy: String,
    /// Options of the ancestry (`name=value,...`).
    #[serde(default)]
    pub ancestry_opts: String,
    /// Options of the descendants (`name=value,...`).
    #[serde(default)]
    pub opts: String,
    /// Descendant data, when it differs from `data` (a transfer row, e.g. `mnist`).
    #[serde(default)]
    pub data: Option<String>,
    /// Use this learngene file instead of pre-training an ancestry.
    #[serde(default)]
    pub learngene: Option<PathBuf>,
    /// Only these sizes (graph names); empty: every size.
    #[serde(default)]
    pub sizes: Vec<String>,
    /// The ancestry's peak learning rate, when this strategy's ancestry trains
    /// best at another than `ancestry.lr` (measured, e.g. a factorized model).
    #[serde(default)]
    pub ancestry_lr: Option<f64>,
    /// Ordinary training steps of this row, when they differ from `train.steps`
    /// (e.g. scratch trained as long as the ancestry).
    #[serde(default)]
    pub train_steps: Option<usize>,
}

impl Row {
    /// The row's label.
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.strategy.clone())
    }
}

/// A training phase of descendants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Steps (for `init`: overrides the strategy's default when given; strategies
    /// without an initialization phase keep none).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Use only the first N training images (e.g. FINE's small σ-training subset).
    #[serde(default)]
    pub subset: Option<usize>,
    /// EMA decay.
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// Linear warmup steps (a fresh optimizer starts every phase).
    #[serde(default)]
    pub warmup: usize,
}

/// The score of a descendant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Metric {
    /// Held-out ε-MSE on fixed test (image, t, ε) triples.
    Heldout,
    /// Fréchet distance on the features of this project's classifier ("FID (classifier features)").
    Cfid,
    /// Inception FID.
    Fid,
}

impl Metric {
    /// Name in reports.
    pub fn title(&self) -> &'static str {
        match self {
            Metric::Heldout => "held-out ε-MSE",
            Metric::Cfid => "FID (classifier features)",
            Metric::Fid => "FID (Inception)",
        }
    }
}

/// Evaluation of descendants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    /// The table's metric.
    pub metric: Metric,
    /// Images scored (test images for `Heldout`; generated and reference images for FIDs).
    pub n: usize,
    /// Also score every this many training steps (and at step 0) for the curves; 0: only at the end.
    #[serde(default)]
    pub every: usize,
    /// Sampler for FIDs.
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Sampling steps for FIDs.
    #[serde(default = "default_sampling_steps")]
    pub sampling_steps: usize,
    /// Classifier-free guidance scale for FIDs (1 = none).
    #[serde(default = "one")]
    pub cfg_scale: f32,
    /// Metrics of the final model only, from one set of `end_n` samples
    /// (e.g. `[Cfid, Fid]`), each a table of its own.
    #[serde(default)]
    pub end: Vec<Metric>,
    /// Samples (and reference images) of the `end` metrics.
    #[serde(default = "default_end_n")]
    pub end_n: usize,
    /// Inception FID (when in `end`) only at these sizes (graph names; it is the
    /// slow one on a CPU); empty: every size.
    #[serde(default)]
    pub fid_sizes: Vec<String>,
}

fn default_ema() -> f64 {
    0.995
}
fn default_end_n() -> usize {
    2000
}
fn default_sampler() -> String {
    "ddim".into()
}
fn default_sampling_steps() -> usize {
    50
}
fn one() -> f32 {
    1.0
}

impl BenchConfig {
    /// Reads a config with `file:line:col` errors and checks the plain facts.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fine_core::util::fsx::read_input_string(path, "bench config")?;
        let cfg: BenchConfig = ron::from_str(&text)
            .map_err(|e| anyhow!("{}:{}:{}: {}", path.display(), e.position.line, e.position.col, e.code))?;
        let bad = |m: String| anyhow!("{}: {m}", path.display());
        if cfg.rows.is_empty() || cfg.sizes.is_empty() || cfg.seeds.is_empty() {
            return Err(bad("`rows`, `sizes` and `seeds` must not be empty".into()));
        }
        if cfg.eval.n == 0 || cfg.train.batch == 0 || cfg.init.batch == 0 || cfg.ancestry.batch == 0 {
            return Err(bad("`eval.n` and every `batch` must be at least 1".into()));
        }
        if cfg.train.steps.unwrap_or(0) == 0 {
            return Err(bad("`train.steps` must be given and at least 1".into()));
        }
        let mut labels = std::collections::BTreeSet::new();
        for r in &cfg.rows {
            if !labels.insert(r.label()) {
                bail!("{}: two rows are labelled `{}`; give them distinct `label`s", path.display(), r.label());
            }
            if r.train_steps == Some(0) {
                bail!("{}: row `{}`: `train_steps` must be at least 1", path.display(), r.label());
            }
        }
        if cfg.eval.end.contains(&Metric::Heldout) {
            return Err(bad("`eval.end` takes sample metrics (Cfid, Fid); the held-out loss is `eval.metric`".into()));
        }
        if !cfg.eval.end.is_empty() && cfg.eval.end_n < 2 {
            return Err(bad("`eval.end_n` must be at least 2".into()));
        }
        let known = |l: &String| labels.contains(l);
        for t in &cfg.tables {
            if let Some(l) = t.rows.iter().find(|l| !known(l)) {
                bail!("{}: table `{}` names row `{l}`, which no row has as its label", path.display(), t.title);
            }
        }
        for (a, b) in &cfg.paired {
            if let Some(l) = [a, b].into_iter().find(|l| !known(l)) {
                bail!("{}: `paired` names row `{l}`, which no row has as its label", path.display());
            }
        }
        Ok(cfg)
    }
}
