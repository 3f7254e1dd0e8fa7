//! Scoring descendants with the benchmark's metric: the held-out ε-MSE, or a
//! FID of `eval.n` samples (the live weights, `eval.sampler` with
//! `eval.sampling_steps`, classes cycling, seed 0) against the first `eval.n`
//! training images of the descendant's data set.

use super::config::{BenchConfig, Metric};
use anyhow::{bail, Result};
use fine_core::data::{self, Split};
use fine_core::diffusion::NoiseSchedule;
use fine_core::eval::evaluate::{Quiet, SetStats};
use fine_core::eval::inception::Inception;
use fine_core::eval::{self as ev, stats, EvalConfig, Evaluator, ImageSource};
use fine_core::graph::Graph;
use fine_core::model::Backend;
use fine_core::plugin::Registry;
use fine_core::sample::{self as smp, Denoiser, Options};
use fine_core::train::heldout::HeldOut;
use fine_core::train::Trainer;
use fine_core::util::image::to_u8;
use std::collections::BTreeMap;

/// Checks that the metric can be computed (before any training): the sampler
/// and its options exist and the Inception weights load.
pub fn check(cfg: &BenchConfig, sizes: &[Graph], reg: &Registry) -> Result<()> {
    if cfg.eval.metric == Metric::Heldout {
        return Ok(());
    }
    let s = reg.sampler(&cfg.eval.sampler)?;
    Options::parse(&s.info(), "")?;
    if cfg.eval.sampling_steps == 0 {
        bail!("eval.sampling_steps must be at least 1");
    }
    if cfg.eval.metric == Metric::Fid {
        Inception::load(&Inception::default_path())?;
    }
    if sizes.iter().any(|g| g.input.channels != 1) {
        bail!("the FID metrics take grayscale images; a size has {} channels", sizes[0].input.channels);
    }
    Ok(())
}

/// Scores models; keeps the per-dataset evaluation sets and reference statistics.
pub struct Scorer<'a> {
    cfg: &'a BenchConfig,
    reg: &'a Registry,
    heldout: BTreeMap<String, HeldOut>,
    fid: BTreeMap<String, (Evaluator, SetStats)>,
}

impl<'a> Scorer<'a> {
    /// A scorer for the benchmark's `eval` settings.
    pub fn new(cfg: &'a BenchConfig, reg: &'a Registry) -> Self {
        Self { cfg, reg, heldout: BTreeMap::new(), fid: BTreeMap::new() }
    }

    /// The metric of the live weights of `t` on data set `data`.
    pub fn score<D: Backend>(&mut self, t: &Trainer<D>, data: &str) -> Result<f64> {
        let e = &self.cfg.eval;
        match e.metric {
            Metric::Heldout => {
                if !self.heldout.contains_key(data) {
                    let set = data::load(data, Split::Test)?;
                    self.heldout.insert(data.to_string(), HeldOut::new(&set, e.n, t.schedule(), 0)?);
                }
                self.heldout[data].loss(&t.dit, &t.store, 64)
            }
            Metric::Cfid | Metric::Fid => {
                let metric = if e.metric == Metric::Fid { ev::Metric::Fid } else { ev::Metric::Cfid };
                if !self.fid.contains_key(data) {
                    let config = EvalConfig {
                        metrics: vec![metric],
                        n: e.n,
                        cache_dir: stats::cache_dir(),
                        inception_path: Inception::default_path(),
                        classifier_dataset: data.to_string(),
                        classifier_seed: 0,
                    };
                    let ev = Evaluator::new(config, &Quiet)?;
                    let reference =
                        ev.stats(&ImageSource::Dataset { spec: data.to_string(), split: Split::Train }, &Quiet)?;
                    self.fid.insert(data.to_string(), (ev, reference));
                }
                let images = self.sample(t)?;
                let g = &t.dit.graph.input;
                let src = ImageSource::Images {
                    name: "samples".into(),
                    images,
                    n: e.n,
                    channels: g.channels,
                    height: g.height,
                    width: g.width,
                };
                let (ev, reference) = &self.fid[data];
                let s = ev.compare(reference, &ev.stats(&src, &Quiet)?)?;
                let v = if metric == ev::Metric::Fid { s.fid } else { s.cfid };
                v.ok_or_else(|| anyhow::anyhow!("the evaluator gave no {metric}"))
            }
        }
    }

    /// `eval.n` samples of the live weights, quantized to u8 like real images.
    fn sample<D: Backend>(&self, t: &Trainer<D>) -> Result<Vec<u8>> {
        let e = &self.cfg.eval;
        let classes = t.dit.graph.conditioning.num_classes;
        let labels: Vec<usize> = (0..e.n).map(|i| i % classes).collect();
        let sampler = self.reg.sampler(&e.sampler)?;
        let opts = Options::parse(&sampler.info(), "")?;
        let den = Denoiser { dit: &t.dit, store: &t.store, labels, cfg_scale: e.cfg_scale, chunk: 64 };
        let sched = NoiseSchedule::new(t.cfg.beta_schedule, t.cfg.diffusion_steps);
        let mut eps = |x: &[f32], step: usize| den.eps(x, step);
        let x = smp::generate(sampler, &opts, &sched, e.sampling_steps, true, e.n * t.dit.image_len(), &mut eps, 0)?;
        Ok(x.iter().map(|&v| to_u8(v)).collect())
    }
}
