//! The learngene pipeline around strategy plugins:
//! `fine pretrain` → `fine learngene extract` → `fine init` → `fine train --from`.

use crate::train::{load_config, Overrides};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fine_core::checkpoint::Checkpoint;
use fine_core::graph;
use fine_core::model::device::DeviceSpec;
use fine_core::model::Backend;
use fine_core::pipeline::{self as run, InitPhase, RunDir};
use fine_core::plugin::Registry;
use fine_core::strategy::{load_learngene, save_learngene};
use fine_core::train::{Provenance, TrainConfig};
use fine_plugin_api::Options;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `fine pretrain`.
#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Strategy plugin that parameterizes the ancestry (`fine plugins list`).
    #[arg(long)]
    pub strategy: String,
    /// Strategy options: `name=value,...` or a RON map.
    #[arg(long, default_value = "")]
    pub strategy_opts: String,
    /// Ancestry graph.
    #[arg(long)]
    pub graph: PathBuf,
    /// Run configuration file (RON).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop after this global step (resume with `fine train --resume`).
    #[arg(long)]
    pub until: Option<usize>,
    /// At the end, the ancestry's held-out ε-MSE on the first N test images
    /// (live and EMA weights; RUN/heldout.json). 0: off.
    #[arg(long, default_value_t = 0)]
    pub heldout: usize,
    #[command(flatten)]
    pub over: Overrides,
}

/// Runs `fine pretrain` on `device`.
pub fn pretrain(a: PretrainArgs, reg: &Registry, device: DeviceSpec) -> Result<()> {
    fine_core::on_device!(device, |dev| pretrain_on(a, reg, dev))
}

fn pretrain_on<D: Backend>(a: PretrainArgs, reg: &Registry, dev: D) -> Result<()> {
    if run::has_run(&a.out) {
        bail!(
            "{} already holds a run; use `fine train --resume {}` or another --out",
            a.out.display(),
            a.out.display()
        );
    }
    let strategy = reg.strategy(&a.strategy)?;
    let info = strategy.info();
    let opts = Options::parse(&info, &a.strategy_opts).context("--strategy-opts")?;
    let g = graph::load::from_file(&a.graph)?;
    let mut cfg = a.config.as_deref().map(load_config).transpose()?.unwrap_or_default();
    a.over.apply(&mut cfg)?;
    let mut t = run::ancestry_trainer(dev, strategy, &g, cfg, &opts)
        .with_context(|| format!("--graph {}", a.graph.display()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let dir = RunDir(a.out.clone());
    run::write_run_ron(&dir, &t)?;
    eprintln!(
        "pretraining the `{}` ancestry of {}: {} stored values ({} trainable) for {} steps → {}",
        info.name,
        g.name,
        t.store.num_values(),
        t.store.num_trainable(),
        t.cfg.steps,
        a.out.display()
    );
    let until = a.until.unwrap_or(t.cfg.steps).min(t.cfg.steps);
    run::train_loop(&mut t, &dir, until, &format!("{} ancestry", info.name))?;
    if a.heldout > 0 {
        crate::train::heldout(&t, &dir, a.heldout)?;
    }
    println!("ancestry run: {} (step {})", a.out.display(), t.step);
    println!("next: fine learngene extract --run {} --out learngene.safetensors", a.out.display());
    Ok(())
}

/// `fine learngene ...`.
#[derive(Subcommand)]
pub enum LearngeneCmd {
    /// Extract the learngene from a pretrained ancestry run (its EMA weights).
    Extract {
        /// Ancestry run folder (made by `fine pretrain`).
        #[arg(long)]
        run: PathBuf,
        /// Output learngene file (safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Use the live weights instead of the EMA weights.
        #[arg(long)]
        no_ema: bool,
    },
    /// What a learngene file holds and what it costs to store.
    Info {
        /// Learngene file.
        file: PathBuf,
    },
}

/// Runs a learngene subcommand (pool members distil on `device`).
pub fn learngene(cmd: LearngeneCmd, reg: &Registry, device: DeviceSpec) -> Result<()> {
    match cmd {
        LearngeneCmd::Extract { run, out, no_ema } => {
            fine_core::util::fsx::refuse_run_file(&out, &run, "--out")?;
            let ck = Checkpoint::load(&RunDir(run.clone()).checkpoint())?;
            let lg = fine_core::on_device!(device, |dev| run::extract(dev, &ck, &run, no_ema, reg))?;
            save_learngene(&out, &lg)?;
            let n: usize = lg.tensors.values().map(|t| t.data.len()).sum();
            println!(
                "wrote {} ({} tensors, {} values) from {} step {}",
                out.display(),
                lg.tensors.len(),
                n,
                ck.graph.name,
                ck.step
            );
            Ok(())
        }
        LearngeneCmd::Info { file } => {
            let lg = load_learngene(&file)?;
            let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!("{}: learngene by `{}` {}", file.display(), lg.strategy, lg.strategy_version);
            for (k, v) in &lg.meta {
                if k != "source_graph" {
                    println!("  {k}: {v}");
                }
            }
            let n: usize = lg.tensors.values().map(|t| t.data.len()).sum();
            println!("  {} tensors, {} values, {} bytes on disk", lg.tensors.len(), n, bytes);
            for (name, t) in &lg.tensors {
                println!("    {name:<40} {:?}", t.shape);
            }
            print_storage(&lg);
            Ok(())
        }
    }
}

/// Storage of n descendants kept whole vs one learngene plus n per-model
/// sets, when the strategy states its storage model (`storage.*` metadata).
fn print_storage(lg: &fine_plugin_api::Learngene) {
    let get = |k: &str| lg.meta.get(k).and_then(|v| v.parse::<usize>().ok());
    let (Some(shared), Some(per_layer), Some(g)) =
        (get("storage.learngene"), get("storage.per_layer"), lg.meta.get("source_graph"))
    else {
        return;
    };
    let Ok(anc) = graph::load::from_str(g, "learngene metadata") else { return };
    let depths = [4usize, 6, 8, 10, 12];
    let mut full_total = 0;
    let mut lg_total = shared;
    println!("  storage (values) of descendants at depths {depths:?}, same width:");
    for d in depths {
        let full = fine_core::model::summary::param_count(&fine_core::graph::Graph { depth: d, ..anc.clone() });
        let own = per_layer * d;
        full_total += full;
        lg_total += own;
        println!("    depth {d:>2}: whole model {full:>12}   per-model set {own:>10}");
    }
    println!(
        "    {} models: whole {full_total} vs learngene {shared} + sets = {lg_total} ({:.1}× smaller)",
        depths.len(),
        full_total as f64 / lg_total as f64
    );
}

/// Options of `fine init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Learngene file (`fine learngene extract`).
    #[arg(long)]
    pub learngene: PathBuf,
    /// Target (descendant) graph.
    #[arg(long)]
    pub graph: PathBuf,
    /// Output folder: `checkpoint.safetensors` holds the initialized plain model,
    /// `init/` the initialization-phase run.
    #[arg(long)]
    pub out: PathBuf,
    /// Expected strategy: refuse a learngene made by another one.
    #[arg(long)]
    pub strategy: Option<String>,
    /// Strategy options: `name=value,...` or a RON map.
    #[arg(long, default_value = "")]
    pub strategy_opts: String,
    /// Steps of the initialization phase (default: the strategy's choice).
    #[arg(long, alias = "sigma-steps")]
    pub init_steps: Option<usize>,
    /// Run configuration of the initialization phase (RON).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The descendant's held-out ε-MSE on the first N test images before and
    /// after the initialization phase (printed; OUT/heldout.json). 0: off.
    #[arg(long, default_value_t = 0)]
    pub heldout: usize,
    #[command(flatten)]
    pub over: Overrides,
}

/// Runs `fine init` on `device`.
pub fn init(a: InitArgs, reg: &Registry, device: DeviceSpec) -> Result<()> {
    fine_core::on_device!(device, |dev| init_on(a, reg, dev))
}

fn init_on<D: Backend>(a: InitArgs, reg: &Registry, dev: D) -> Result<()> {
    let lg = load_learngene(&a.learngene)?;
    if let Some(want) = a.strategy.as_deref().filter(|w| *w != lg.strategy) {
        bail!("{} was made by strategy `{}`, not `{want}`", a.learngene.display(), lg.strategy);
    }
    let strategy = reg
        .strategy(&lg.strategy)
        .with_context(|| format!("learngene {} needs its strategy", a.learngene.display()))?;
    let info = strategy.info();
    let target = graph::load::from_file(&a.graph)?;
    let dir = RunDir(a.out.clone());
    if run::has_run(&a.out) {
        bail!("{} already holds a model; pass another --out", a.out.display());
    }
    let mut cfg = a.config.as_deref().map(load_config).transpose()?.unwrap_or_default();
    a.over.apply(&mut cfg)?;
    let opts = run::seeded_options(&info, &a.strategy_opts, cfg.seed).context("--strategy-opts")?;
    let t0 = Instant::now();
    let heldout = match a.heldout {
        0 => None,
        n => {
            let data = fine_core::data::load_as(&cfg.data, fine_core::data::Split::Test, Some(target.input.chw()))?;
            let sched = fine_core::diffusion::NoiseSchedule::new(cfg.beta_schedule, cfg.diffusion_steps);
            Some(fine_core::train::heldout::HeldOut::new(&data, n, &sched, 0)?)
        }
    };
    let mut provenance = Provenance {
        strategy: Some(info.name.clone()),
        strategy_version: Some(info.version.clone()),
        learngene: Some(a.learngene.display().to_string()),
        ..Default::default()
    };
    let phase = InitPhase {
        cfg: cfg.clone(),
        steps: a.init_steps,
        dir: RunDir(a.out.join("init")),
        label: "init".into(),
        provenance: provenance.clone(),
        data: fine_core::train::trainer::load_data(&cfg, &target)?,
        heldout: heldout.as_ref(),
    };
    let probe_data = || fine_core::data::load_as(&cfg.data, fine_core::data::Split::Train, Some(target.input.chw()));
    let d = run::initialize(dev, strategy, &lg, &target, &opts, probe_data, phase)
        .with_context(|| format!("building a descendant of {} from {}", target.name, a.learngene.display()))?;
    if a.init_steps.is_some_and(|n| n > 0) && d.steps == 0 {
        eprintln!("note: `{}` has no initialization phase; --init-steps is not used", info.name);
    }
    let g = d.dit.graph.clone();
    provenance.init_steps = Some(d.steps);
    provenance.init_trainable = Some(d.trainable);
    provenance.init_seconds = Some(t0.elapsed().as_secs_f64());
    let values = d.plain.host_values();
    let ck = Checkpoint {
        graph: g.clone(),
        train: TrainConfig { steps: 0, ckpt_every: d.steps.max(1), ..cfg.clone() },
        spec: d.plain.spec.clone(),
        step: 0,
        params: values.clone(),
        ema: values,
        adam_m: BTreeMap::new(),
        adam_v: BTreeMap::new(),
        provenance,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if let Some((start, end)) = d.heldout {
        println!(
            "held-out ε-MSE ({} test, N = {}): {start:.5} before the initialization phase, {end:.5} after",
            cfg.data, a.heldout
        );
        let json = serde_json::json!({
            "data": cfg.data, "split": "test", "n": a.heldout, "seed": 0, "init_steps": d.steps,
            "before": start, "after": end,
        });
        fine_core::util::fsx::write_atomic(&a.out.join("heldout.json"), format!("{json}\n").as_bytes())?;
    }
    ck.save(&dir.checkpoint())?;
    println!("initialized {} in {:.1} s → {}", g.name, t0.elapsed().as_secs_f64(), dir.checkpoint().display());
    println!("next: fine train --from {} --steps N", a.out.display());
    Ok(())
}
