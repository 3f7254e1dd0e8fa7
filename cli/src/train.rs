//! `fine train`: a new run from a graph, or `--resume DIR`.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use fine_core::checkpoint::Checkpoint;
use fine_core::graph;
use fine_core::model::device::DeviceSpec;
use fine_core::pipeline::{self as run, RunDir};
use fine_core::train::{LrSchedule, TrainConfig, Trainer};
use std::path::{Path, PathBuf};

/// Options of `fine train`. Flags override the `--config` file, which
/// overrides the defaults.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Graph file (RON) of the model to train (new runs).
    #[arg(long)]
    pub graph: Option<PathBuf>,
    /// Run configuration file (RON, fields of `TrainConfig`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output run folder (new runs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Resume the run in this folder (its stored graph and config are used).
    #[arg(long, conflicts_with_all = ["graph", "config", "out", "from"])]
    pub resume: Option<PathBuf>,
    /// Start a new run from the weights in this folder (a `fine init` output or
    /// any run); its graph is used, the config comes from flags. Output: --out,
    /// default FROM/train.
    #[arg(long, conflicts_with = "graph")]
    pub from: Option<PathBuf>,
    /// Stop after this global step (the run can be resumed later).
    #[arg(long)]
    pub until: Option<usize>,
    /// At the end, the held-out denoising loss on the first N images of the
    /// data's test split (fixed timesteps and noise; live and EMA weights),
    /// printed and written to RUN/heldout.json. 0: off.
    #[arg(long, default_value_t = 0)]
    pub heldout: usize,
    /// Every N steps: the held-out ε-MSE of the live and EMA weights (on the
    /// first `--heldout` test images, 256 when that is 0) into the step's line
    /// of metrics.jsonl. 0: off.
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Every N steps: a grid of 2 EMA samples per class (DDIM, 50 steps) into
    /// RUN/samples/step-NNNNNNN.png, its path in metrics.jsonl. 0: off.
    #[arg(long, default_value_t = 0)]
    pub sample_every: usize,
    #[command(flatten)]
    pub over: Overrides,
}

/// Training-config fields settable from the command line.
#[derive(Args, Debug, Default, Clone)]
pub struct Overrides {
    /// Data set: bundled | fashion-mnist | mnist | idx:IMAGES[,LABELS] | pokemon[:SIDE] | folder:DIR.
    #[arg(long)]
    pub data: Option<String>,
    /// Split: train | test.
    #[arg(long)]
    pub split: Option<String>,
    /// Use only the first N images.
    #[arg(long)]
    pub subset: Option<usize>,
    /// Total optimizer steps (on --resume: extend the run to this many).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Images per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warmup steps.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Cosine decay to this learning rate after warmup (default: constant).
    #[arg(long)]
    pub cosine_min_lr: Option<f64>,
    /// EMA decay (the cap of the EMA warmup).
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// EMA warmup, decay min(ema_decay, (1+s)/(10+s)) at update s: true (default) | false.
    #[arg(long)]
    pub ema_warmup: Option<bool>,
    /// Gradient-norm clip (0 disables).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// β schedule: linear | cosine.
    #[arg(long)]
    pub beta_schedule: Option<String>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub ckpt_every: Option<usize>,
}

impl Overrides {
    /// Applies the flags that were given to `cfg`.
    pub fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
        macro_rules! set { ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone(); } )* } }
        set!(data, split, steps, batch, seed, lr, warmup, ema_decay, ema_warmup, ckpt_every);
        if let Some(n) = self.subset {
            cfg.subset = Some(n);
        }
        if let Some(m) = self.cosine_min_lr {
            cfg.lr_schedule = LrSchedule::Cosine { min_lr: m };
        }
        if let Some(c) = self.grad_clip {
            if c.is_nan() {
                anyhow::bail!("--grad-clip must be a number (0 disables clipping), got {c}");
            }
            cfg.grad_clip = (c > 0.0).then_some(c);
        }
        if let Some(b) = &self.beta_schedule {
            cfg.beta_schedule = b.parse().context("--beta-schedule")?;
        }
        Ok(())
    }

    /// Flags that would change a stored config (all but `steps`).
    fn changing(&self) -> Vec<&'static str> {
        let o = self;
        [
            (o.data.is_some(), "--data"),
            (o.split.is_some(), "--split"),
            (o.subset.is_some(), "--subset"),
            (o.batch.is_some(), "--batch"),
            (o.seed.is_some(), "--seed"),
            (o.lr.is_some(), "--lr"),
            (o.warmup.is_some(), "--warmup"),
            (o.cosine_min_lr.is_some(), "--cosine-min-lr"),
            (o.ema_decay.is_some(), "--ema-decay"),
            (o.ema_warmup.is_some(), "--ema-warmup"),
            (o.grad_clip.is_some(), "--grad-clip"),
            (o.beta_schedule.is_some(), "--beta-schedule"),
            (o.ckpt_every.is_some(), "--ckpt-every"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

/// Reads a `TrainConfig` RON file with `file:line:col` errors.
pub fn load_config(path: &Path) -> Result<TrainConfig> {
    let text = fine_core::util::fsx::read_input_string(path, "run config")?;
    ron::from_str(&text).map_err(|e| anyhow!("{}:{}:{}: {}", path.display(), e.position.line, e.position.col, e.code))
}

/// Runs `fine train` on `device`.
pub fn run(a: TrainArgs, reg: &fine_core::plugin::Registry, device: DeviceSpec) -> Result<()> {
    fine_core::on_device!(device, |dev| run_on(a, dev, reg))
}

fn run_on<D: fine_core::model::Backend>(a: TrainArgs, dev: D, reg: &fine_core::plugin::Registry) -> Result<()> {
    let (mut trainer, dir) = if let Some(dir) = &a.resume {
        let changing = a.over.changing();
        if !changing.is_empty() {
            bail!(
                "--resume keeps the run's stored configuration; remove {} (only --steps and --until may be given)",
                changing.join(", ")
            );
        }
        let rd = RunDir(dir.clone());
        let ck = Checkpoint::load(&rd.checkpoint())?;
        let mut t = Trainer::from_checkpoint(dev, ck)?;
        if let Some(s) = a.over.steps {
            if s < t.step {
                bail!("--steps {s} is below the run's current step {}", t.step);
            }
            t.cfg.steps = s;
        }
        run::truncate_metrics(&rd, t.step)?;
        eprintln!("resuming {} at step {}/{}", dir.display(), t.step, t.cfg.steps);
        (t, rd)
    } else if let Some(from) = &a.from {
        let out = a.out.clone().unwrap_or_else(|| from.join("train"));
        if run::has_run(&out) {
            bail!("{} already holds a run; use --resume {} or another --out", out.display(), out.display());
        }
        let mut cfg = match &a.config {
            Some(p) => load_config(p)?,
            None => TrainConfig::default(),
        };
        a.over.apply(&mut cfg)?;
        let t = run::trainer_from(dev, from, cfg)?;
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let rd = RunDir(out.clone());
        run::write_run_ron(&rd, &t)?;
        eprintln!(
            "training {} from {} for {} steps → {}",
            t.dit.graph.name,
            from.display(),
            t.cfg.steps,
            out.display()
        );
        (t, rd)
    } else {
        let gpath = a.graph.as_ref().ok_or_else(|| anyhow!("--graph FILE is required (or --resume DIR)"))?;
        let out = a.out.as_ref().ok_or_else(|| anyhow!("--out DIR is required (or --resume DIR)"))?;
        if run::has_run(out) {
            bail!("{} already holds a run; use --resume {} or another --out", out.display(), out.display());
        }
        let g = graph::load::from_file(gpath)?;
        let mut cfg = match &a.config {
            Some(p) => load_config(p)?,
            None => TrainConfig::default(),
        };
        a.over.apply(&mut cfg)?;
        let t = Trainer::new(dev, &g, cfg, None).with_context(|| format!("--graph {}", gpath.display()))?;
        let rd = RunDir(out.clone());
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        run::write_run_ron(&rd, &t)?;
        eprintln!(
            "training {} ({} parameters) on {} [{} images] for {} steps → {}",
            g.name,
            t.store.num_values(),
            t.cfg.data,
            t.data.len,
            t.cfg.steps,
            out.display()
        );
        (t, rd)
    };
    let until = a.until.unwrap_or(trainer.cfg.steps).min(trainer.cfg.steps);
    let name = trainer.dit.graph.name.clone();
    let mut watch = watcher(&a, &trainer, &dir, reg)?;
    run::train_loop_watched(&mut trainer, &dir, until, &name, &mut watch)?;
    if a.heldout > 0 {
        heldout(&trainer, &dir, a.heldout)?;
    }
    println!("run: {}", dir.0.display());
    println!("checkpoint: {} (step {})", dir.checkpoint().display(), trainer.step);
    println!("metrics: {}", dir.metrics().display());
    println!("loss plot: {}", dir.plot().display());
    Ok(())
}

/// What `--eval-every` and `--sample-every` do after a step.
fn watcher<'a, D: fine_core::model::Backend>(
    a: &'a TrainArgs,
    t: &Trainer<D>,
    dir: &'a RunDir,
    reg: &'a fine_core::plugin::Registry,
) -> Result<Box<run::Watch<'a, D>>> {
    use fine_core::train::heldout::HeldOut;
    let set = match a.eval_every {
        0 => None,
        _ => {
            let data =
                fine_core::data::load_as(&t.cfg.data, fine_core::data::Split::Test, Some(t.dit.graph.input.chw()))
                    .context("--eval-every")?;
            Some(HeldOut::new(&data, if a.heldout > 0 { a.heldout } else { 256 }, t.schedule(), 0)?)
        }
    };
    let sampler = match a.sample_every {
        0 => None,
        _ => Some(reg.sampler("ddim")?),
    };
    Ok(Box::new(move |t: &Trainer<D>| {
        let mut m = serde_json::Map::new();
        if let Some(set) = set.as_ref().filter(|_| t.step % a.eval_every == 0) {
            m.insert("heldout_live".into(), set.loss(&t.dit, &t.store, 64)?.into());
            m.insert("heldout_ema".into(), set.loss(&t.dit, &t.ema_store()?, 64)?.into());
        }
        if let Some(s) = sampler.filter(|_| t.step % a.sample_every == 0) {
            let path = dir.0.join("samples").join(format!("step-{:07}.png", t.step));
            sample_grid(t, s, &path)?;
            m.insert("samples".into(), path.display().to_string().into());
        }
        Ok(m)
    }))
}

/// Two EMA samples per class of `t` (DDIM, 50 steps, no guidance) as a grid at `path`.
fn sample_grid<D: fine_core::model::Backend>(
    t: &Trainer<D>,
    sampler: &dyn fine_plugin_api::Sampler,
    path: &std::path::Path,
) -> Result<()> {
    let g = &t.dit.graph;
    let classes = g.conditioning.num_classes.max(1);
    let labels = fine_core::sample::cycled_labels(g, 2 * classes);
    let n = labels.len();
    let store = t.ema_store()?;
    let den = fine_core::sample::Denoiser { dit: &t.dit, store: &store, labels, cfg_scale: 1.0, chunk: 64 };
    let opts = fine_plugin_api::Options::parse(&sampler.info(), "")?;
    let mut eps = |x: &[f32], step: usize| den.eps(x, step);
    let x = fine_core::sample::generate(sampler, &opts, t.schedule(), 50, true, n * t.dit.image_len(), &mut eps, 0)?;
    let i = &g.input;
    let scale = fine_core::util::image::display_scale(i.height, i.width);
    fine_core::util::image::save_grid_png_scaled(path, &x, n, i.channels, i.height, i.width, classes.min(n), scale)
}

/// Writes RUN/heldout.json: the held-out ε-MSE of the live and EMA weights.
pub(crate) fn heldout<D: fine_core::model::Backend>(t: &Trainer<D>, dir: &RunDir, n: usize) -> Result<()> {
    use fine_core::train::heldout::HeldOut;
    let data = fine_core::data::load_as(&t.cfg.data, fine_core::data::Split::Test, Some(t.dit.graph.input.chw()))?;
    let set = HeldOut::new(&data, n, t.schedule(), 0)?;
    let live = set.loss(&t.dit, &t.store, 64)?;
    let ema = set.loss(&t.dit, &t.ema_store()?, 64)?;
    let json = serde_json::json!({
        "step": t.step, "data": t.cfg.data, "split": "test", "n": n, "seed": 0, "live": live, "ema": ema,
    });
    let path = dir.0.join("heldout.json");
    fine_core::util::fsx::write_atomic(&path, format!("{json}\n").as_bytes())?;
    println!("held-out ε-MSE ({} test, N = {n}): live {live:.5}, EMA {ema:.5}", t.cfg.data);
    Ok(())
}
