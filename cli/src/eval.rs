//! `fine eval`: FID, sFID, precision/recall and FID (classifier features) of a
//! run's samples against a dataset, or of one real set against another.
//!
//! ```text
//! fine eval --run DIR --n N [--metric fid,sfid,pr,cfid] [--sampler S --steps K --cfg C --seed S] [--ref DATA:SPLIT]
//! fine eval --real A --real B [--n N] [--metric ...]
//! ```
//!
//! The metrics themselves are the library's ([`fine_core::eval::evaluate`]).

use crate::sample::{sample_images, SampleArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use fine_core::checkpoint::Checkpoint;
use fine_core::data::{self, Split};
use fine_core::eval::evaluate::Progress;
use fine_core::eval::inception::Inception;
use fine_core::eval::{stats, EvalConfig, Evaluator, ImageSource, Metric, Scores};
use fine_core::model::device::DeviceSpec;
use fine_core::pipeline::{Meter, RunDir};
use fine_core::plugin::Registry;
use fine_core::util::fsx::write_atomic;
use fine_core::util::image::to_u8;
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `fine eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder: evaluate N images sampled from its EMA weights.
    #[arg(long, conflicts_with = "real")]
    pub run: Option<PathBuf>,
    /// A real set `DATASET[:SPLIT]` (`fashion-mnist:test`, `bundled:train`, `mnist:test`, `idx:…`);
    /// give it twice to compare two real sets (the first is the reference).
    #[arg(long, value_name = "DATASET[:SPLIT]")]
    pub real: Vec<String>,
    /// Metrics, comma-separated: fid, sfid, pr (precision/recall), cfid (FID on classifier
    /// features; it needs a labelled reference). Default: all four, without cfid when the
    /// reference is unlabelled.
    #[arg(long)]
    pub metric: Option<String>,
    /// Images per set: the first N of a dataset, N samples of a run (required with --run;
    /// with --real the default is the smaller set).
    #[arg(long)]
    pub n: Option<usize>,
    /// Reference set of --run (default: the run's training dataset, train split).
    #[arg(long = "ref", value_name = "DATASET[:SPLIT]")]
    pub reference: Option<String>,
    /// Sampler plugin (`fine plugins list`).
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    /// Sampler options: `name=value,...` or a RON map.
    #[arg(long, default_value = "")]
    pub sampler_opts: String,
    /// Sampling steps (respaced; default: the full schedule).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f32,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not clip the predicted x₀ to [-1, 1].
    #[arg(long)]
    pub no_clip: bool,
    /// Seed of the classifier behind cfid (trained once per dataset and seed, then cached).
    #[arg(long, default_value_t = 0)]
    pub classifier_seed: u64,
    /// Write every number and the exact settings to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

// ----- progress bars -----

/// Progress on stderr, one meter per phase (a bar on a terminal, plain lines
/// otherwise), with a summary line when a phase ends.
#[derive(Default)]
struct Bars {
    bar: RefCell<Option<(Meter, String, usize, Instant)>>,
}

impl Progress for Bars {
    fn start(&self, what: &str, len: usize) {
        *self.bar.borrow_mut() = Some((Meter::new(what, len), what.to_string(), 0, Instant::now()));
    }
    fn advance(&self, k: usize) {
        if let Some((m, _, done, _)) = &mut *self.bar.borrow_mut() {
            m.inc(k);
            *done += k;
        }
    }
    fn finish(&self) {
        if let Some((m, what, done, t)) = self.bar.borrow_mut().take() {
            m.finish();
            eprintln!("{what}: {done} in {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    fn warn(&self, msg: &str) {
        match &*self.bar.borrow() {
            Some((m, ..)) => m.suspend(|| eprintln!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }
    fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

// ----- the command -----

/// Drops cfid from the default metrics when the reference set `ds` has no
/// classes to train its classifier on (an explicit `--metric cfid` stays, and
/// fails with the classifier's reason).
fn leave_out_cfid_if_unlabelled(metrics: &mut Vec<Metric>, explicit: bool, ds: &data::Dataset) {
    if !explicit && ds.num_classes < 2 && metrics.contains(&Metric::Cfid) {
        metrics.retain(|m| *m != Metric::Cfid);
        eprintln!("note: the reference set is unlabelled, so cfid (FID on classifier features) is left out");
    }
}

/// `--metric` when it is not given.
const DEFAULT_METRICS: &str = "fid,sfid,pr,cfid";

/// Runs `fine eval`.
pub fn run(a: EvalArgs, reg: &Registry, device: DeviceSpec) -> Result<()> {
    let mut metrics = Metric::parse_list(a.metric.as_deref().unwrap_or(DEFAULT_METRICS))?;
    let progress = Bars::default();
    let inception_path = Inception::default_path();
    let mut settings = serde_json::json!({ "fine_version": env!("CARGO_PKG_VERSION") });
    let (reference, scores, compared) = match (&a.run, a.real.len()) {
        (Some(run), 0) => {
            let n = a.n.context("--n is required with --run (number of images to sample)")?;
            let ck = Checkpoint::load(&RunDir(run.clone()).checkpoint())?;
            let g = &ck.graph.input;
            let values = n as f64 * (g.channels * g.height * g.width) as f64;
            fine_core::util::mem::check_fits(6.0 * 4.0 * values, &format!("--n {n}"))?;
            let reference = match &a.reference {
                Some(r) => ImageSource::parse_dataset(r)?,
                None => ImageSource::Dataset { spec: ck.train.data.clone(), split: Split::Train },
            };
            let ImageSource::Dataset { spec, split } = &reference else { unreachable!() };
            let i = &ck.graph.input;
            let ds = data::load_as(spec, *split, Some(i.chw()))?;
            if (ds.channels, ds.height, ds.width) != (i.channels, i.height, i.width) {
                bail!(
                    "the run makes {}×{}×{} images but the reference {} has {}×{}×{}",
                    i.channels,
                    i.height,
                    i.width,
                    reference.name(),
                    ds.channels,
                    ds.height,
                    ds.width
                );
            }
            leave_out_cfid_if_unlabelled(&mut metrics, a.metric.is_some(), &ds);
            drop(ds);
            let e = Evaluator::new(config(&metrics, n, spec, a.classifier_seed, inception_path.clone()), &progress)?;
            let r = e.stats(&reference, &progress)?;
            // ----- sample, quantize like real images -----
            let sa = SampleArgs {
                run: run.clone(),
                n,
                out: PathBuf::new(),
                class: None,
                cfg: a.cfg,
                steps: a.steps,
                seed: a.seed,
                sampler: a.sampler.clone(),
                sampler_opts: a.sampler_opts.clone(),
                no_ema: false,
                no_clip: a.no_clip,
            };
            let t = Instant::now();
            eprintln!(
                "sampling {n} images ({}, {} steps, cfg {}) ...",
                a.sampler,
                a.steps.unwrap_or(ck.train.diffusion_steps),
                a.cfg
            );
            let (x, _) = sample_images(&ck, &sa, reg, device)?;
            eprintln!("sampled {n} images in {:.1} s", t.elapsed().as_secs_f64());
            let name = format!("{} samples", run.display());
            let generated = ImageSource::Images {
                name: name.clone(),
                images: x.iter().map(|&v| to_u8(v)).collect(),
                n,
                channels: i.channels,
                height: i.height,
                width: i.width,
            };
            let g = e.stats(&generated, &progress)?;
            let scores = e.compare(&r, &g)?;
            let s = settings.as_object_mut().unwrap();
            s.insert("mode".into(), "run".into());
            s.insert("run".into(), run.display().to_string().into());
            s.insert("checkpoint_step".into(), ck.step.into());
            s.insert("weights".into(), "ema".into());
            s.insert("sampler".into(), a.sampler.clone().into());
            s.insert("sampler_opts".into(), a.sampler_opts.clone().into());
            s.insert("steps".into(), a.steps.unwrap_or(ck.train.diffusion_steps).into());
            s.insert("cfg".into(), (a.cfg as f64).into());
            s.insert("seed".into(), a.seed.into());
            s.insert("clip_denoised".into(), (!a.no_clip).into());
            s.insert(
                "classes".into(),
                match ck.graph.conditioning.num_classes {
                    0 => "none: an unconditional graph".to_string(),
                    c => format!("cycled: image i has class i mod {c}"),
                }
                .into(),
            );
            (reference, scores, name)
        }
        (None, 2) => {
            let (ra, rb) = (ImageSource::parse_dataset(&a.real[0])?, ImageSource::parse_dataset(&a.real[1])?);
            let ImageSource::Dataset { spec, split } = &ra else { unreachable!() };
            let ds = data::load(spec, *split)?;
            leave_out_cfid_if_unlabelled(&mut metrics, a.metric.is_some(), &ds);
            let n = match a.n {
                Some(n) => n,
                None => {
                    let ImageSource::Dataset { spec: b, split: bs } = &rb else { unreachable!() };
                    ds.len.min(data::load(b, *bs)?.len)
                }
            };
            drop(ds);
            let e = Evaluator::new(config(&metrics, n, spec, a.classifier_seed, inception_path.clone()), &progress)?;
            let (sa, sb) = (e.stats(&ra, &progress)?, e.stats(&rb, &progress)?);
            let scores = e.compare(&sa, &sb)?;
            settings.as_object_mut().unwrap().insert("mode".into(), "real".into());
            (ra, scores, rb.name())
        }
        (Some(_), _) => unreachable!("clap rejects --run with --real"),
        (None, k) => bail!("give --run DIR, or --real twice (two real sets to compare); got {k} --real"),
    };
    let s = settings.as_object_mut().unwrap();
    s.insert("metrics".into(), serde_json::to_value(&metrics)?);
    s.insert(
        "inception_weights".into(),
        metrics.iter().any(|m| *m != Metric::Cfid).then(|| inception_path.display().to_string()).into(),
    );
    s.insert("classifier_seed".into(), metrics.contains(&Metric::Cfid).then_some(a.classifier_seed).into());
    s.insert("reference".into(), reference.name().into());
    s.insert("compared".into(), compared.clone().into());
    s.insert("n".into(), scores.n_reference.into());
    print_table(&reference.name(), &compared, &scores);
    if let Some(path) = &a.json {
        let doc = serde_json::json!({ "scores": scores, "settings": settings });
        write_atomic(path, format!("{}\n", serde_json::to_string_pretty(&doc)?).as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn config(metrics: &[Metric], n: usize, dataset: &str, seed: u64, inception_path: PathBuf) -> EvalConfig {
    EvalConfig {
        metrics: metrics.to_vec(),
        n,
        cache_dir: stats::cache_dir(),
        inception_path,
        classifier_dataset: dataset.to_string(),
        classifier_seed: seed,
    }
}

/// One line per number, each with the N it was computed from.
fn print_table(reference: &str, compared: &str, s: &Scores) {
    println!("{compared} vs reference {reference}");
    println!("{:<34} {:>12}  {:>6}  {:>6}", "metric", "value", "N ref", "N cmp");
    let row = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            println!("{name:<34} {v:>12.4}  {:>6}  {:>6}", s.n_reference, s.n_compared);
        }
    };
    row("FID (Inception pool3)", s.fid);
    row("sFID (Inception spatial)", s.sfid);
    row("precision (k=3, Inception pool3)", s.precision);
    row("recall (k=3, Inception pool3)", s.recall);
    row("FID (classifier features)", s.cfid);
    if let Some(c) = &s.classifier {
        println!(
            "classifier: {} on {}:train, accuracy {:.2}% on {} {} images (seed {})",
            c.id,
            c.info.dataset,
            100.0 * c.info.accuracy,
            c.info.test_images,
            c.info.accuracy_split,
            c.info.seed
        );
    }
}
