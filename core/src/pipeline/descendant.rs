//! Steps 3 and 4 of the pipeline: a descendant of another size built from a
//! learngene and put through its strategy's initialization phase (FINE: only
//! the fresh σ's train), then materialized as a plain DiT that trains normally.

use super::run_dir::{self, RunDir};
use super::train_loop::train_loop;
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::graph::Graph;
use crate::model::{Backend, Dit, ParamStore};
use crate::strategy as st;
use crate::train::heldout::HeldOut;
use crate::train::{Provenance, TrainConfig, Trainer};
use anyhow::{Context, Result};
use fine_plugin_api::{Learngene, Options, PluginInfo, Strategy};
use std::path::Path;

/// Strategy options `text` for a run seeded with `seed`: a strategy with a
/// `seed` option (its own random draws, e.g. FINE's σ-init) gets the run's
/// seed unless `text` sets it.
pub fn seeded_options(info: &PluginInfo, text: &str, seed: u64) -> Result<Options> {
    let given = Options::parse(info, text)?;
    let has_seed = info.options.iter().any(|o| o.name == "seed");
    if !has_seed || text.contains("seed") || text.trim_start().starts_with('{') {
        return Ok(given);
    }
    let sep = if text.trim().is_empty() { "" } else { "," };
    Options::parse(info, &format!("{text}{sep}seed={seed}"))
}

/// How a descendant's initialization phase runs.
pub struct InitPhase<'a> {
    /// Its training config (data, batch, lr, seed, subset); `steps` and
    /// `ckpt_every` are set from the phase's length.
    pub cfg: TrainConfig,
    /// Steps asked for; `None`: the strategy's own (one rule for every caller:
    /// [`st::init_phase_steps`]).
    pub steps: Option<usize>,
    /// Where the phase trains (its run folder, written only when it has steps).
    pub dir: RunDir,
    /// Progress label.
    pub label: String,
    /// Provenance carried into the phase's checkpoint.
    pub provenance: Provenance,
    /// The split of `cfg.data` the phase trains on, loaded (its `subset` is taken here).
    pub data: Dataset,
    /// A held-out set to score the descendant on before and after the phase.
    pub heldout: Option<&'a HeldOut>,
}

/// A descendant after its initialization phase.
pub struct Initialized<D: Backend> {
    /// The descendant's model (the strategy's graph for it).
    pub dit: Dit,
    /// Its weights as a plain DiT (every factorization multiplied out).
    pub plain: ParamStore<D>,
    /// Steps the initialization phase ran (0: none).
    pub steps: usize,
    /// Values the phase's parameterization trains (whether or not it ran).
    pub trainable: usize,
    /// Images the phase trained on.
    pub images: usize,
    /// Held-out ε-MSE before and after the phase ([`InitPhase::heldout`]).
    pub heldout: Option<(f64, f64)>,
}

/// Builds the descendant of `target` that `strategy` makes from `lg` with
/// `opts` (probes, when it asks for them, drawn from `probe_data`), runs its
/// initialization phase and materializes it.
pub fn initialize<D: Backend>(
    dev: D,
    strategy: &dyn Strategy,
    lg: &Learngene,
    target: &Graph,
    opts: &Options,
    probe_data: impl FnOnce() -> Result<Dataset>,
    phase: InitPhase,
) -> Result<Initialized<D>> {
    let seed = phase.cfg.seed;
    let (dit, desc) = st::build_descendant(strategy, lg, target, opts, probe_data, seed)?;
    let steps = st::init_phase_steps(phase.steps, desc.init_steps);
    let cfg = TrainConfig { steps: steps.max(1), ckpt_every: steps.max(1), ..phase.cfg };
    let store = st::descendant_store(dev, &dit, &desc, seed)?;
    let trainable = store.num_trainable();
    let mut t = Trainer::with_data(dit.clone(), cfg, store, phase.data, phase.provenance)?;
    let before = phase.heldout.map(|h| h.loss(&dit, &t.store, 64)).transpose()?;
    if steps > 0 {
        run_dir::create(&phase.dir)?;
        run_dir::write_run_ron(&phase.dir, &t)?;
        eprintln!(
            "initializing {} from `{}` learngene: {steps} steps training {trainable} of {} values on {} images",
            dit.graph.name,
            strategy.info().name,
            t.store.num_values(),
            t.data.len
        );
        train_loop(&mut t, &phase.dir, steps, &phase.label)?;
    }
    let after = phase.heldout.map(|h| h.loss(&dit, &t.store, 64)).transpose()?;
    let plain = st::materialize(&dit, &t.store)?;
    Ok(Initialized { dit, plain, steps, trainable, images: t.data.len, heldout: before.zip(after) })
}

/// A new run starting from the weights in the run folder `from` (a `fine init`
/// output or any run), materialized; `from` is recorded in its provenance.
pub fn trainer_from<D: Backend>(dev: D, from: &Path, cfg: TrainConfig) -> Result<Trainer<D>> {
    let ck = Checkpoint::load(&RunDir(from.to_path_buf()).checkpoint())?;
    let dit = Dit::new(&ck.graph);
    let store = ParamStore::from_values(dev, ck.spec.clone(), ck.params.clone())
        .with_context(|| format!("the weights in {}", from.display()))?;
    let plain = st::materialize(&dit, &store)?;
    let provenance = Provenance { from: Some(from.display().to_string()), ..ck.provenance.clone() };
    Trainer::with_store(dit, cfg, plain, provenance)
}
