//! `fine bench learngene --config FILE.ron`: the FINE paper's comparison in one
//! command.
//!
//! 1. **Check everything first.** Every row's strategy and options, every size
//!    it must build (a dry run: the strategy's ancestry parameterization at
//!    random values → extract → `descendant` for every size), the data sets and
//!    any given learngene file. A bad config fails here, before any training.
//! 2. **Ancestries**, one per row that needs one, cached by content: the folder
//!    `CACHE/<strategy>-<crc32 of the key>` holds the run, its learngene and
//!    `key.txt` (strategy, version, options, graph, data, training config). A
//!    later benchmark with the same key reuses it; an interrupted one resumes.
//! 3. **Descendants**: for every row × size × seed, the strategy's descendant
//!    with its initialization phase (trainable values and wall time recorded),
//!    materialized, then `train.steps` ordinary steps, scored at step 0, every
//!    `eval.every` steps and at the end. Finished runs keep a `result.json`
//!    and are not redone.
//! 4. **Report** in OUT: `table.md` (rows × sizes, mean ± std over seeds, plus
//!    learngene storage and initialization cost), `results.json` (every number
//!    and the exact config), `curve-<size>.png`/`.svg` (metric vs step, log
//!    axis where the values span a decade), `bars-<size>.svg` (the table's
//!    column as bars) and, per run, `runs/<run>/samples.png` (the first 100 of
//!    the final samples, one class per column).

pub mod config;
mod report;
mod score;

use anyhow::{bail, Context, Result};
use clap::Args;
use config::{BenchConfig, Row};
use fine_core::checkpoint::Checkpoint;
use fine_core::data::Dataset;
use fine_core::graph::{self, Graph};
use fine_core::model::device::DeviceSpec;
use fine_core::model::{Backend, Dit, ParamStore};
use fine_core::pipeline::{self as run, InitPhase, RunDir};
use fine_core::plugin::Registry;
use fine_core::strategy::{self as st, load_learngene, save_learngene};
use fine_core::train::{TrainConfig, Trainer};
use fine_plugin_api::{Learngene, Options, Strategy};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `fine bench learngene`.
#[derive(Args, Debug)]
pub struct BenchLearngeneArgs {
    /// Benchmark configuration (RON; see `benches/learngene-*.ron`).
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder (default: runs/bench-NAME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Ancestry cache folder (default: OUT/cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Train nothing: write the report from the runs finished so far (a
    /// partial report says how many of the runs it holds).
    #[arg(long)]
    pub report_only: bool,
    /// Take the finished runs of another report of this same config (its
    /// `results.json`, e.g. a piece run elsewhere) as done: each run OUT does
    /// not hold yet gets its `result.json`. A report of another config is
    /// refused.
    #[arg(long, value_name = "RESULTS_JSON")]
    pub import: Option<PathBuf>,
}

/// One descendant run's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Row label.
    pub row: String,
    /// Descendant graph name.
    pub size: String,
    /// Seed.
    pub seed: u64,
    /// Steps of the initialization phase.
    pub init_steps: usize,
    /// Values trained during the initialization phase (0: none).
    pub init_trainable: usize,
    /// Wall time of building + initializing the descendant, seconds.
    pub init_seconds: f64,
    /// Wall time of ordinary training (without scoring), seconds.
    pub train_seconds: f64,
    /// (training step, metric) pairs.
    pub curve: Vec<(usize, f64)>,
    /// The metric after the last step.
    pub last: f64,
    /// Ordinary training steps.
    #[serde(default)]
    pub train_steps: usize,
    /// The `eval.end` metrics of the final model (metric title → value).
    #[serde(default)]
    pub end: BTreeMap<String, f64>,
}

/// An ancestry's own score: held-out ε-MSE of its live and EMA weights
/// (`eval.n` test images of the benchmark's data).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AncestryScore {
    /// Live weights after the last step.
    pub live: f64,
    /// EMA weights (for a factorized ancestry: the product of the factors' EMAs).
    pub ema: f64,
}

/// A row ready to run.
struct Prepared<'a> {
    row: Row,
    strategy: Option<&'a dyn Strategy>,
    learngene: Option<Learngene>,
    /// Whether the row needs an ancestry trained: its strategy's learngene holds
    /// something (scratch's is empty: its descendants start from DiT's init).
    needs_ancestry: bool,
}

/// Runs `fine bench learngene` on `device`.
pub fn run(a: BenchLearngeneArgs, reg: &Registry, device: DeviceSpec) -> Result<()> {
    fine_core::on_device!(device, |dev| run_on(a, reg, dev))
}

fn run_on<D: Backend>(a: BenchLearngeneArgs, reg: &Registry, dev: D) -> Result<()> {
    let cfg = BenchConfig::load(&a.config)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/bench-{}", cfg.name)));
    let cache = a.cache.clone().unwrap_or_else(|| out.join("cache"));
    let anc_graph = graph::load::from_file(&cfg.ancestry.graph)?;
    let sizes: Vec<Graph> = cfg.sizes.iter().map(|p| graph::load::from_file(p)).collect::<Result<_>>()?;
    let mut names = std::collections::BTreeSet::new();
    for g in &sizes {
        if !names.insert(g.name.clone()) {
            bail!("{}: two sizes have the graph name `{}`", a.config.display(), g.name);
        }
    }
    let mut files = std::collections::BTreeMap::new();
    for r in &cfg.rows {
        if let Some(other) = files.insert(sanitize(&r.label()), r.label()) {
            bail!("{}: rows `{other}` and `{}` would share a run folder name", a.config.display(), r.label());
        }
    }
    let mut files = std::collections::BTreeSet::new();
    for g in &sizes {
        if !files.insert(sanitize(&g.name)) {
            bail!("{}: two sizes would share a file name (`{}`)", a.config.display(), sanitize(&g.name));
        }
    }
    let named = cfg.rows.iter().flat_map(|r| &r.sizes).chain(cfg.tables.iter().flat_map(|t| &t.sizes));
    let named = named.chain(&cfg.eval.fid_sizes);
    for n in named {
        if !names.contains(n) {
            bail!("{}: size `{n}` is not the graph name of any of `sizes`", a.config.display());
        }
    }

    // ----- 1. check everything before training -----
    let mut datasets = BTreeMap::new();
    for d in std::iter::once(&cfg.data).chain(cfg.rows.iter().filter_map(|r| r.data.as_ref())) {
        if !datasets.contains_key(d) {
            let set = fine_core::data::load(d, fine_core::data::Split::Train)
                .with_context(|| format!("{}: data `{d}`", a.config.display()))?;
            datasets.insert(d.clone(), set);
        }
    }
    let mut rows = Vec::new();
    for r in &cfg.rows {
        let data = &datasets[r.data.as_ref().unwrap_or(&cfg.data)];
        let p = prepare(r, &anc_graph, &sizes, data, reg)
            .with_context(|| format!("{}: row `{}`", a.config.display(), r.label()))?;
        rows.push(p);
    }
    score::check(&cfg, &sizes, reg).with_context(|| format!("{}: eval", a.config.display()))?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let sizes_of =
        |r: &Row| -> Vec<&Graph> { sizes.iter().filter(|g| r.sizes.is_empty() || r.sizes.contains(&g.name)).collect() };
    let total_runs: usize = rows.iter().map(|p| sizes_of(&p.row).len()).sum::<usize>() * cfg.seeds.len();
    eprintln!(
        "bench `{}`: {} rows × up to {} sizes × {} seeds = {total_runs} descendant runs → {}",
        cfg.name,
        rows.len(),
        sizes.len(),
        cfg.seeds.len(),
        out.display()
    );

    if let Some(file) = &a.import {
        import(file, &cfg, &names, &out)?;
    }

    // ----- 2. ancestries (cached) -----
    let mut storage = BTreeMap::new();
    let mut ancestry_scores = BTreeMap::new();
    let mut scorer = score::Scorer::new(&cfg, reg);
    for p in rows.iter_mut() {
        if let (Some(s), None) = (p.strategy, &p.learngene) {
            if p.needs_ancestry {
                let found = ancestry(dev.clone(), s, &p.row, &cfg, &anc_graph, &cache, &mut scorer, a.report_only)?;
                if let Some((lg, score)) = found {
                    p.learngene = Some(lg);
                    ancestry_scores.insert(p.row.label(), score);
                }
            }
        }
        let values = p.learngene.as_ref().map(|lg| lg.tensors.values().map(|t| t.data.len()).sum()).unwrap_or(0);
        storage.insert(p.row.label(), values);
    }

    // ----- 3. descendants -----
    let mut results = Vec::new();
    let mut k = 0;
    // Seeds outermost: an interrupted benchmark has whole tables of its first seeds.
    for &seed in &cfg.seeds {
        for p in &rows {
            for g in sizes_of(&p.row) {
                k += 1;
                let data = &datasets[p.row.data.as_ref().unwrap_or(&cfg.data)];
                if a.report_only {
                    results.extend(finished(&run_dir(&out, &p.row.label(), &g.name, seed)));
                    continue;
                }
                eprintln!("[{k}/{total_runs}] {} → {} seed {seed}", p.row.label(), g.name);
                results.push(descendant(dev.clone(), p, g, seed, &cfg, &out, data, &mut scorer)?);
            }
        }
    }

    // ----- 4. report -----
    let partial = (results.len() < total_runs).then_some((results.len(), total_runs));
    report::write(&out, &cfg, &sizes, &storage, &ancestry_scores, &results, partial)?;
    Ok(())
}

/// Resolves a row's strategy and options and dry-runs every size.
fn prepare<'a>(r: &Row, anc: &Graph, sizes: &[Graph], data: &Dataset, reg: &'a Registry) -> Result<Prepared<'a>> {
    let strategy = reg.strategy(&r.strategy)?;
    let info = strategy.info();
    let anc_opts = Options::parse(&info, &r.ancestry_opts).context("ancestry_opts")?;
    let opts = Options::parse(&info, &r.opts).context("opts")?;
    let given = match &r.learngene {
        Some(path) => {
            let lg = load_learngene(path)?;
            if lg.strategy != r.strategy {
                bail!("learngene {} was made by `{}`, not by `{}`", path.display(), lg.strategy, r.strategy);
            }
            Some(lg)
        }
        None => None,
    };
    // Dry run: the learngene of an untrained ancestry has the real one's shapes.
    let dry = match &given {
        Some(lg) => lg.clone(),
        None => {
            let dit = Dit::new(anc);
            let spec = strategy.ancestry(anc, &st::weights_of(&dit), &anc_opts).context("ancestry")?;
            spec.validate(&dit.weight_shapes()).context("the strategy's ancestry parameterization")?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let store = ParamStore::init(fine_core::model::store::CpuDevice::default(), spec.clone(), &mut rng)?;
            let mut leaves = st::leaves_as_tensors(&store)?;
            for m in strategy.pool(anc, &spec, &leaves, &anc_opts).context("pool")? {
                st::pool::check_member(anc, &m)?;
                leaves.extend(st::pool::untrained_member_leaves(&m)?);
            }
            strategy.extract(anc, &st::weights_of(&dit), &spec, &leaves, &anc_opts).context("extract")?
        }
    };
    for g in sizes {
        let (dit, d) = st::build_descendant(strategy, &dry, g, &opts, || Ok(data.clone()), 0)
            .with_context(|| format!("cannot build size `{}`", g.name))?;
        d.spec.validate(&dit.weight_shapes()).with_context(|| format!("size `{}`", g.name))?;
    }
    let needs_ancestry = given.is_none() && !dry.tensors.is_empty();
    Ok(Prepared { row: r.clone(), strategy: Some(strategy), learngene: given, needs_ancestry })
}

fn phase_config(p: &config::Phase, data: &str, seed: u64, steps: usize) -> TrainConfig {
    TrainConfig {
        data: data.to_string(),
        steps: steps.max(1),
        batch: p.batch,
        lr: p.lr,
        warmup: p.warmup,
        subset: p.subset,
        ema_decay: p.ema_decay,
        seed,
        ckpt_every: steps.max(1),
        ..TrainConfig::default()
    }
}

/// Pre-trains (or finds in the cache) the ancestry of a row; returns its
/// learngene and the ancestry's own score.
///
/// The training run is cached by what defines it — the parameterization, the
/// graph, the data and the training config — in `CACHE/run-<crc32>`, so rows
/// whose strategies train the same model (every plain ancestry: svd-independent
/// at any rank, heur, stitch) share one run; the learngene is cached per
/// strategy and options in `CACHE/<strategy>-<crc32>`.
#[allow(clippy::too_many_arguments)]
fn ancestry<D: Backend>(
    dev: D,
    s: &dyn Strategy,
    r: &Row,
    cfg: &BenchConfig,
    g: &Graph,
    cache: &Path,
    scorer: &mut score::Scorer,
    report_only: bool,
) -> Result<Option<(Learngene, AncestryScore)>> {
    let info = s.info();
    let opts = Options::parse(&info, &r.ancestry_opts).context("ancestry_opts")?;
    let a = &cfg.ancestry;
    let tcfg = TrainConfig {
        ckpt_every: (a.steps / 4).max(1),
        ema_warmup: a.ema_warmup,
        ..phase_config(
            &config::Phase {
                steps: None,
                batch: a.batch,
                lr: r.ancestry_lr.unwrap_or(a.lr),
                subset: None,
                ema_decay: a.ema_decay,
                warmup: a.warmup,
            },
            &cfg.data,
            a.seed,
            a.steps,
        )
    };
    let spec = s.ancestry(g, &st::weights_of(&Dit::new(g)), &opts)?;
    let run_key = format!(
        "spec: {}\ntrain: {}\ngraph: {}\n",
        ron::to_string(&spec)?,
        ron::to_string(&tcfg)?,
        graph::load::to_ron(g)
    );
    let key = format!(
        "strategy: {} {}\noptions: {}\nweights: {:?}\n{run_key}",
        info.name,
        info.version,
        opts.to_ron(),
        a.weights
    );
    let run_dir = cache.join(format!("run-{:08x}", crc32fast::hash(run_key.as_bytes())));
    let dir = cache.join(format!("{}-{:08x}", info.name, crc32fast::hash(key.as_bytes())));
    let lg_path = dir.join("learngene.safetensors");
    let score_path = run_dir.join("ancestry-score.json");
    let mut lg = None;
    if report_only {
        let score = std::fs::read_to_string(&score_path).ok().and_then(|t| serde_json::from_str(&t).ok());
        return Ok(match (lg_path.exists(), score) {
            (true, Some(score)) => Some((load_learngene(&lg_path)?, score)),
            _ => None,
        });
    }
    for (d, k) in [(&run_dir, &run_key), (&dir, &key)] {
        let key_path = d.join("key.txt");
        if key_path.exists() {
            let old = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
            if &old != k {
                bail!("{}: cache collision (another key); delete the folder", d.display());
            }
        } else {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            fine_core::util::fsx::write_atomic(&key_path, k.as_bytes())?;
        }
    }
    if lg_path.exists() {
        eprintln!("ancestry of `{}`: learngene cached in {}", info.name, dir.display());
        lg = Some(load_learngene(&lg_path)?);
    }
    let cached_score =
        std::fs::read_to_string(&score_path).ok().and_then(|t| serde_json::from_str::<AncestryScore>(&t).ok());
    if let (Some(lg), Some(score)) = (lg.clone(), cached_score) {
        return Ok(Some((lg, score)));
    }
    let rd = RunDir(run_dir.clone());
    let mut t = if run::has_run(&run_dir) {
        Trainer::from_checkpoint(dev.clone(), Checkpoint::load(&rd.checkpoint())?)?
    } else {
        let t = Trainer::new(dev.clone(), g, tcfg, Some(spec))?;
        run::write_run_ron(&rd, &t)?;
        t
    };
    eprintln!("ancestry of `{}`: {} steps of {} → {}", info.name, a.steps, g.name, run_dir.display());
    run::train_loop(&mut t, &rd, a.steps, &format!("{} ancestry", info.name))?;
    let score = AncestryScore {
        live: scorer.heldout(&t, &t.store, &cfg.data)?,
        ema: scorer.heldout(&t, &t.ema_store()?, &cfg.data)?,
    };
    eprintln!("ancestry of `{}`: held-out ε-MSE live {:.5}, EMA {:.5}", info.name, score.live, score.ema);
    fine_core::util::fsx::write_atomic(&score_path, serde_json::to_string(&score)?.as_bytes())?;
    let lg = match lg {
        Some(lg) => lg,
        None => {
            let lg = run::extract_with(dev, &t.checkpoint(), &run_dir, a.weights == config::Weights::Live, s, &opts)?;
            save_learngene(&lg_path, &lg)?;
            lg
        }
    };
    Ok(Some((lg, score)))
}

/// `--import`: writes the runs of another report of `cfg` (descendant graph
/// names `sizes`) into `out`'s run folders that have no result yet.
fn import(file: &Path, cfg: &BenchConfig, sizes: &std::collections::BTreeSet<String>, out: &Path) -> Result<()> {
    #[derive(Deserialize)]
    struct Report {
        config: serde_json::Value,
        runs: Vec<RunResult>,
    }
    let text = fine_core::util::fsx::read_input_string(file, "--import")?;
    let r: Report = serde_json::from_str(&text)
        .with_context(|| format!("--import: {} is not a benchmark report's results.json", file.display()))?;
    // Read back as a config first, so that fields added since (with their
    // defaults) do not make the same config look like another.
    let theirs: BenchConfig = serde_json::from_value(r.config)
        .with_context(|| format!("--import: the `config` of {} is not a benchmark config", file.display()))?;
    if serde_json::to_value(&theirs)? != serde_json::to_value(cfg)? {
        bail!("--import: {} is the report of another config (its `config` differs from this one's)", file.display());
    }
    let mut n = 0;
    for run in &r.runs {
        let row = cfg.rows.iter().find(|x| x.label() == run.row);
        let planned = |x: &&Row| {
            cfg.seeds.contains(&run.seed)
                && sizes.contains(&run.size)
                && (x.sizes.is_empty() || x.sizes.contains(&run.size))
        };
        let Some(row) = row.filter(planned) else {
            bail!(
                "--import: {}: run `{}` {} seed {} is not in this config",
                file.display(),
                run.row,
                run.size,
                run.seed
            );
        };
        let dir = run_dir(out, &row.label(), &run.size, run.seed);
        if finished(&dir).is_some() {
            continue;
        }
        fresh_run_dir(&dir)?;
        fine_core::util::fsx::write_atomic(&dir.join("result.json"), serde_json::to_string_pretty(run)?.as_bytes())?;
        n += 1;
    }
    eprintln!("--import: {n} finished runs taken from {}", file.display());
    Ok(())
}

/// The folder of one descendant run.
fn run_dir(out: &Path, row: &str, size: &str, seed: u64) -> PathBuf {
    out.join("runs").join(format!("{}-{}-s{seed}", sanitize(row), sanitize(size)))
}

/// Empties the folder of an unfinished run (or makes it).
fn fresh_run_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing the unfinished run {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The result of a finished run in `dir`, if any.
fn finished(dir: &Path) -> Option<RunResult> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).ok()?).ok()
}

/// One descendant: build, initialize, train, score.
#[allow(clippy::too_many_arguments)]
fn descendant<D: Backend>(
    dev: D,
    p: &Prepared,
    g: &Graph,
    seed: u64,
    cfg: &BenchConfig,
    out: &Path,
    train_data: &Dataset,
    scorer: &mut score::Scorer,
) -> Result<RunResult> {
    let label = p.row.label();
    let data = p.row.data.clone().unwrap_or_else(|| cfg.data.clone());
    let dir = run_dir(out, &label, &g.name, seed);
    let result_path = dir.join("result.json");
    if let Some(r) = finished(&dir) {
        eprintln!("  done before: {}", result_path.display());
        return Ok(r);
    }
    fresh_run_dir(&dir)?;
    let steps = p.row.train_steps.or(cfg.train.steps).unwrap_or(1);
    let tcfg = phase_config(&cfg.train, &data, seed, steps);
    let t0 = Instant::now();
    let (mut t, init_steps, init_trainable) = match (&p.learngene, p.strategy) {
        (Some(lg), Some(s)) => {
            let opts = &run::seeded_options(&s.info(), &p.row.opts, seed)?;
            let phase = InitPhase {
                cfg: phase_config(&cfg.init, &data, seed, 1),
                steps: cfg.init.steps,
                dir: RunDir(dir.join("init")),
                label: format!("{label} init"),
                provenance: Default::default(),
                data: train_data.clone(),
                heldout: None,
            };
            let d = run::initialize(dev, s, lg, g, opts, || Ok(train_data.clone()), phase)?;
            let trainable = if d.steps > 0 { d.trainable } else { 0 };
            (Trainer::with_data(d.dit, tcfg, d.plain, train_data.clone(), Default::default())?, d.steps, trainable)
        }
        _ => (Trainer::new(dev, g, tcfg, None)?, 0, 0),
    };
    let init_seconds = t0.elapsed().as_secs_f64();
    let rd = RunDir(dir.join("train"));
    std::fs::create_dir_all(&rd.0)?;
    let mut curve = Vec::new();
    let every = cfg.eval.every;
    if every > 0 {
        curve.push((0, scorer.score(&t, &data)?));
    }
    let mut train_seconds = 0.0;
    while t.step < steps {
        let next = if every > 0 { (t.step + every).min(steps) } else { steps };
        let ts = Instant::now();
        run::train_loop(&mut t, &rd, next, &format!("{label} {}", g.name))?;
        train_seconds += ts.elapsed().as_secs_f64();
        if every > 0 || t.step == steps {
            curve.push((t.step, scorer.score(&t, &data)?));
        }
    }
    let last = curve.last().map(|c| c.1).unwrap_or(f64::NAN);
    eprintln!("  {}: {last:.5} after {steps} steps", cfg.eval.metric.title());
    let end: BTreeMap<String, f64> =
        scorer.score_end(&t, &data)?.into_iter().map(|(m, v)| (m.title().to_string(), v)).collect();
    if let Some(images) = scorer.last_samples.take() {
        let i = &g.input;
        let per = i.channels * i.height * i.width;
        let n = (images.len() / per).min(100);
        let x: Vec<f32> = images[..n * per].iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        let cols = g.conditioning.num_classes.clamp(1, 10);
        let scale = fine_core::util::image::display_scale(i.height, i.width);
        fine_core::util::image::save_grid_png_scaled(
            &dir.join("samples.png"),
            &x,
            n,
            i.channels,
            i.height,
            i.width,
            cols,
            scale,
        )?;
    }
    for (m, v) in &end {
        eprintln!("  {m}: {v:.3} (N = {})", cfg.eval.end_n);
    }
    let r = RunResult {
        row: label,
        size: g.name.clone(),
        seed,
        init_steps,
        init_trainable,
        init_seconds,
        train_seconds,
        curve,
        last,
        train_steps: steps,
        end,
    };
    fine_core::util::fsx::write_atomic(&result_path, serde_json::to_string_pretty(&r)?.as_bytes())?;
    Ok(r)
}

/// A label usable in a file name: letters, digits, `-` and `_` kept, anything
/// else (`/`, `.`, spaces) `_`, so no name leaves the output folder.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
