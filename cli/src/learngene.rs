//! The learngene pipeline around strategy plugins:
//! `fine pretrain` → `fine learngene extract` → `fine init` → `fine train --from`.

use crate::run::{self, RunDir};
use crate::train::{load_config, Overrides};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use fine_core::checkpoint::Checkpoint;
use fine_core::graph;
use fine_core::model::{Backend, Dit};
use fine_core::plugin::Registry;
use fine_core::strategy::{self as st, load_learngene, save_learngene};
use fine_core::train::{TrainConfig, Trainer};
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

/// Runs `fine pretrain` on the `--device`.
pub fn pretrain(a: PretrainArgs, reg: &Registry) -> Result<()> {
    fine_core::on_device!(run::device(), |dev| pretrain_on(a, reg, dev))
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
    let dit = Dit::new(&g);
    let spec = strategy.ancestry(&g, &st::weights_of(&dit), &opts)?;
    let mut t = Trainer::new(dev, &g, cfg, Some(spec)).with_context(|| format!("--graph {}", a.graph.display()))?;
    t.extra = BTreeMap::from([
        ("strategy".to_string(), info.name.clone()),
        ("strategy_version".to_string(), info.version.clone()),
        ("strategy_opts".to_string(), opts.to_ron()),
    ]);
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

/// Runs a learngene subcommand.
pub fn learngene(cmd: LearngeneCmd, reg: &Registry) -> Result<()> {
    match cmd {
        LearngeneCmd::Extract { run, out, no_ema } => {
            fine_core::util::fsx::refuse_run_file(&out, &run, "--out")?;
            let ck = Checkpoint::load(&RunDir(run.clone()).checkpoint())?;
            let lg = extract(&ck, &run, no_ema, reg)?;
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

/// The learngene of the ancestry run `run` (checkpoint `ck`) by the strategy that made it.
pub fn extract(
    ck: &Checkpoint,
    run: &std::path::Path,
    no_ema: bool,
    reg: &Registry,
) -> Result<fine_plugin_api::Learngene> {
    let name = ck.extra.get("strategy").ok_or_else(|| {
        anyhow!("{} was not made by `fine pretrain` (its checkpoint names no strategy)", run.display())
    })?;
    let strategy = reg.strategy(name)?;
    let info = strategy.info();
    if ck.extra.get("strategy_version") != Some(&info.version) {
        eprintln!(
            "warning: the run was made by `{name}` {}, this is {}",
            ck.extra.get("strategy_version").map(String::as_str).unwrap_or("?"),
            info.version
        );
    }
    let opts = Options::from_ron(&info, ck.extra.get("strategy_opts").map(String::as_str).unwrap_or(""))?;
    extract_with(ck, run, no_ema, strategy, &opts)
}

/// The learngene of the ancestry run `run` (checkpoint `ck`) by `strategy` with
/// `opts` (the run's parameterization must be the one the strategy makes).
pub fn extract_with(
    ck: &Checkpoint,
    run: &std::path::Path,
    no_ema: bool,
    strategy: &dyn fine_plugin_api::Strategy,
    opts: &Options,
) -> Result<fine_plugin_api::Learngene> {
    let opts = opts.clone();
    let init_share = ck.train.ema_init_share(ck.step as u64);
    if !no_ema && init_share > 0.05 {
        eprintln!(
            "warning: the EMA (decay {}) of {} steps still holds {:.0} % of the initial weights; \
             the learngene of an ancestry this short wants --no-ema (or a lower --ema-decay when training)",
            ck.train.ema_decay,
            ck.step,
            100.0 * init_share
        );
    }
    let values = if no_ema { &ck.params } else { &ck.ema };
    let mut leaves = st::values_as_tensors(&ck.spec, values)?;
    let pool = fine_core::on_device!(run::device(), |dev| distill_pool(dev, strategy, ck, &leaves, &opts, run))?;
    leaves.extend(pool);
    let mut lg = strategy.extract(&ck.graph, &ck.spec, &leaves, &opts)?;
    lg.meta.insert("source_graph".into(), graph::load::to_ron(&ck.graph));
    lg.meta.insert("source_run".into(), run.display().to_string());
    lg.meta.insert("data".into(), format!("{} {}", ck.train.data, ck.train.split));
    lg.meta.insert("steps".into(), ck.step.to_string());
    lg.meta.insert("weights".into(), if no_ema { "live" } else { "ema" }.into());
    Ok(lg)
}

/// The strategy's pool members (if any), each distilled from the ancestry
/// `leaves` in `RUN/pool-NAME` (resumed when interrupted), as `pool.NAME.*` leaves.
fn distill_pool<D: Backend>(
    dev: D,
    strategy: &dyn fine_plugin_api::Strategy,
    ck: &Checkpoint,
    leaves: &fine_plugin_api::Tensors,
    opts: &Options,
    run: &std::path::Path,
) -> Result<fine_plugin_api::Tensors> {
    let members = strategy.pool(&ck.graph, &ck.spec, leaves, opts)?;
    for m in &members {
        st::pool::check_member(&ck.graph, m)?;
    }
    let mut out = fine_plugin_api::Tensors::new();
    for (i, m) in members.iter().enumerate() {
        let teacher = st::pool::teacher(dev.clone(), &ck.graph, &ck.spec, leaves, m.alpha)?;
        let dir = RunDir(run.join(format!("pool-{}", m.name)));
        let mut t = if run::has_run(&dir.0) {
            let mut t = Trainer::from_checkpoint(dev.clone(), Checkpoint::load(&dir.checkpoint())?)?;
            if t.extra.get("pool_member") != Some(&m.name) || t.dit.graph != m.graph {
                bail!("{} holds another run than pool member `{}`; delete it", dir.0.display(), m.name);
            }
            t.teacher = Some(teacher);
            t
        } else {
            let cfg = TrainConfig { seed: ck.train.seed.wrapping_add(1 + i as u64), ..ck.train.clone() };
            let t = st::pool::member_trainer(dev.clone(), m, teacher, cfg)?;
            std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
            run::write_run_ron(&dir, &t)?;
            t
        };
        eprintln!(
            "distilling pool member `{}` ({}) from the ancestry: {} steps, α = {} → {}",
            m.name,
            m.graph.name,
            m.steps,
            m.alpha,
            dir.0.display()
        );
        run::train_loop(&mut t, &dir, m.steps, &format!("pool {}", m.name))?;
        out.extend(st::pool::member_leaves(m, &t.ema_store()?)?);
    }
    Ok(out)
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
        let full = graph::param_count(&fine_core::graph::Graph { depth: d, ..anc.clone() });
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

/// Strategy options `text` for a run seeded with `seed`: a strategy with a
/// `seed` option (its own random draws, e.g. FINE's σ-init) gets the run's
/// seed unless `text` sets it.
pub fn seeded_options(info: &fine_plugin_api::PluginInfo, text: &str, seed: u64) -> Result<Options> {
    let given = Options::parse(info, text)?;
    let has_seed = info.options.iter().any(|o| o.name == "seed");
    if !has_seed || text.contains("seed") || text.trim_start().starts_with('{') {
        return Ok(given);
    }
    let sep = if text.trim().is_empty() { "" } else { "," };
    Options::parse(info, &format!("{text}{sep}seed={seed}"))
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

/// Runs `fine init` on the `--device`.
pub fn init(a: InitArgs, reg: &Registry) -> Result<()> {
    fine_core::on_device!(run::device(), |dev| init_on(a, reg, dev))
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
    let opts = seeded_options(&info, &a.strategy_opts, cfg.seed).context("--strategy-opts")?;
    let t0 = Instant::now();
    let probe_data = || fine_core::data::load(&cfg.data, fine_core::data::Split::Train);
    let (dit, desc) = st::build_descendant(strategy, &lg, &target, &opts, probe_data, cfg.seed)
        .with_context(|| format!("building a descendant of {} from {}", target.name, a.learngene.display()))?;
    let g = dit.graph.clone();
    let init_steps = st::init_phase_steps(a.init_steps, desc.init_steps);
    if a.init_steps.is_some_and(|n| n > 0) && init_steps == 0 {
        eprintln!("note: `{}` has no initialization phase; --init-steps is not used", info.name);
    }
    cfg.steps = init_steps.max(1);
    cfg.ckpt_every = cfg.steps;
    let store = st::descendant_store(dev, &dit, &desc, cfg.seed)?;
    let trainable = store.num_trainable();
    let mut extra = BTreeMap::from([
        ("strategy".to_string(), info.name.clone()),
        ("strategy_version".to_string(), info.version.clone()),
        ("learngene".to_string(), a.learngene.display().to_string()),
        ("init_steps".to_string(), init_steps.to_string()),
        ("init_trainable".to_string(), trainable.to_string()),
    ]);
    let mut t = Trainer::with_store(dit.clone(), cfg.clone(), store, extra.clone())?;
    let heldout = match a.heldout {
        0 => None,
        n => {
            let data = fine_core::data::load(&cfg.data, fine_core::data::Split::Test)?;
            Some(fine_core::train::heldout::HeldOut::new(&data, n, t.schedule(), 0)?)
        }
    };
    let start = heldout.as_ref().map(|h| h.loss(&dit, &t.store, 64)).transpose()?;
    if init_steps > 0 {
        let idir = RunDir(a.out.join("init"));
        std::fs::create_dir_all(&idir.0).with_context(|| format!("creating {}", idir.0.display()))?;
        run::write_run_ron(&idir, &t)?;
        eprintln!(
            "initializing {} from `{}` learngene: {init_steps} steps training {trainable} of {} values on {} images",
            g.name,
            info.name,
            t.store.num_values(),
            t.data.len
        );
        run::train_loop(&mut t, &idir, init_steps, "init")?;
    }
    let plain = st::materialize(&dit, &t.store)?;
    extra.insert("init_seconds".into(), format!("{:.3}", t0.elapsed().as_secs_f64()));
    let values = plain.host_values();
    let ck = Checkpoint {
        graph: g.clone(),
        train: TrainConfig { steps: 0, ..cfg.clone() },
        spec: plain.spec.clone(),
        step: 0,
        params: values.clone(),
        ema: values,
        adam_m: BTreeMap::new(),
        adam_v: BTreeMap::new(),
        extra,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if let (Some(h), Some(start)) = (&heldout, start) {
        let end = h.loss(&dit, &t.store, 64)?;
        println!(
            "held-out ε-MSE ({} test, N = {}): {start:.5} before the initialization phase, {end:.5} after",
            cfg.data, a.heldout
        );
        let json = serde_json::json!({
            "data": cfg.data, "split": "test", "n": a.heldout, "seed": 0, "init_steps": init_steps,
            "before": start, "after": end,
        });
        fine_core::util::fsx::write_atomic(&a.out.join("heldout.json"), format!("{json}\n").as_bytes())?;
    }
    ck.save(&dir.checkpoint())?;
    println!("initialized {} in {:.1} s → {}", g.name, t0.elapsed().as_secs_f64(), dir.checkpoint().display());
    println!("next: fine train --from {} --steps N", a.out.display());
    Ok(())
}
