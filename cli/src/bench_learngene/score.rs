//! Scoring descendants with the benchmark's metrics: the held-out ε-MSE, or a
//! FID of N samples (the live weights, `eval.sampler` with
//! `eval.sampling_steps`, classes cycling, seed 0) against the first N
//! training images of the descendant's data set — N = `eval.n` for the curve's
//! metric, `eval.end_n` for the final-model metrics `eval.end` (one sample set
//! for all of them).

use super::config::{BenchConfig, Metric};
use anyhow::{bail, Result};
use fine_core::data::{self, Split};
use fine_core::diffusion::NoiseSchedule;
use fine_core::eval::evaluate::{Quiet, SetStats};
use fine_core::eval::inception::Inception;
use fine_core::eval::{self as ev, stats, EvalConfig, Evaluator, ImageSource};
use fine_core::graph::Graph;
use fine_core::model::{Backend, ParamStore};
use fine_core::plugin::Registry;
use fine_core::sample::{self as smp, Denoiser, Options};
use fine_core::train::heldout::HeldOut;
use fine_core::train::Trainer;
use fine_core::util::image::to_u8;
use std::collections::BTreeMap;

/// Checks that the metrics can be computed (before any training): the sampler
/// and its options exist and the Inception weights load.
pub fn check(cfg: &BenchConfig, sizes: &[Graph], reg: &Registry) -> Result<()> {
    let all: Vec<Metric> = std::iter::once(cfg.eval.metric).chain(cfg.eval.end.iter().copied()).collect();
    if all.iter().all(|m| *m == Metric::Heldout) {
        return Ok(());
    }
    let s = reg.sampler(&cfg.eval.sampler)?;
    Options::parse(&s.info(), "")?;
    if cfg.eval.sampling_steps == 0 {
        bail!("eval.sampling_steps must be at least 1");
    }
    if all.contains(&Metric::Fid) {
        Inception::load(&Inception::default_path())?;
    }
    if sizes.iter().any(|g| g.input.channels != 1) {
        bail!("the FID metrics take grayscale images; a size has {} channels", sizes[0].input.channels);
    }
    Ok(())
}

/// The evaluator's metric of a benchmark metric (`None`: the held-out loss).
fn eval_metric(m: Metric) -> Option<ev::Metric> {
    match m {
        Metric::Heldout => None,
        Metric::Cfid => Some(ev::Metric::Cfid),
        Metric::Fid => Some(ev::Metric::Fid),
    }
}

/// An evaluator for some sample metrics at one N, and its reference statistics.
type SampleEval = (Evaluator, SetStats);

/// Scores models; keeps the per-dataset evaluation sets and reference statistics.
pub struct Scorer<'a> {
    cfg: &'a BenchConfig,
    reg: &'a Registry,
    heldout: BTreeMap<String, HeldOut>,
    /// Keyed by (data set, metrics, N).
    fid: BTreeMap<(String, Vec<Metric>, usize), SampleEval>,
    /// The first 100 u8 samples (NCHW) the last sample metrics were computed from.
    pub last_samples: Option<Vec<u8>>,
}

impl<'a> Scorer<'a> {
    /// A scorer for the benchmark's `eval` settings.
    pub fn new(cfg: &'a BenchConfig, reg: &'a Registry) -> Self {
        Self { cfg, reg, heldout: BTreeMap::new(), fid: BTreeMap::new(), last_samples: None }
    }

    /// The held-out ε-MSE of `store` (a model of `t`'s graph) on `data`'s test split (`eval.n` images).
    pub fn heldout<D: Backend>(&mut self, t: &Trainer<D>, store: &ParamStore<D>, data: &str) -> Result<f64> {
        if !self.heldout.contains_key(data) {
            let set = data::load_as(data, Split::Test, Some(t.dit.graph.input.chw()))?;
            self.heldout.insert(data.to_string(), HeldOut::new(&set, self.cfg.eval.n, t.schedule(), 0)?);
        }
        self.heldout[data].loss(&t.dit, store, 64)
    }

    /// The table's metric (`eval.metric`) of the live weights of `t` on data set `data`.
    pub fn score<D: Backend>(&mut self, t: &Trainer<D>, data: &str) -> Result<f64> {
        let m = self.cfg.eval.metric;
        if m == Metric::Heldout {
            return self.heldout(t, &t.store, data);
        }
        Ok(self.sample_metrics(t, data, &[m], self.cfg.eval.n)?[&m])
    }

    /// The `eval.end` metrics of the live weights of `t`, from one set of
    /// `eval.end_n` samples (Inception FID only at `eval.fid_sizes`).
    pub fn score_end<D: Backend>(&mut self, t: &Trainer<D>, data: &str) -> Result<BTreeMap<Metric, f64>> {
        let e = &self.cfg.eval;
        let size = &t.dit.graph.name;
        let fid_here = e.fid_sizes.is_empty() || e.fid_sizes.contains(size);
        let end: Vec<Metric> = e.end.iter().copied().filter(|m| *m != Metric::Fid || fid_here).collect();
        let n = e.end_n;
        if end.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.sample_metrics(t, data, &end, n)
    }

    /// Sample metrics `ms` (no `Heldout`) of `n` samples of `t`'s live weights
    /// against the first `n` training images of `data`.
    fn sample_metrics<D: Backend>(
        &mut self,
        t: &Trainer<D>,
        data: &str,
        ms: &[Metric],
        n: usize,
    ) -> Result<BTreeMap<Metric, f64>> {
        let key = (data.to_string(), ms.to_vec(), n);
        if !self.fid.contains_key(&key) {
            let config = EvalConfig {
                metrics: ms.iter().filter_map(|m| eval_metric(*m)).collect(),
                n,
                cache_dir: stats::cache_dir(),
                inception_path: Inception::default_path(),
                classifier_dataset: data.to_string(),
                classifier_seed: 0,
            };
            let ev = Evaluator::new(config, &Quiet)?;
            let reference = ev.stats(&ImageSource::Dataset { spec: data.to_string(), split: Split::Train }, &Quiet)?;
            self.fid.insert(key.clone(), (ev, reference));
        }
        let images = self.sample(t, n)?;
        // A run's grid shows 100 of them: keep only those.
        let per = t.dit.image_len();
        self.last_samples = Some(images[..images.len().min(100 * per)].to_vec());
        let g = &t.dit.graph.input;
        let src = ImageSource::Images {
            name: "samples".into(),
            images,
            n,
            channels: g.channels,
            height: g.height,
            width: g.width,
        };
        let (ev, reference) = &self.fid[&key];
        let s = ev.compare(reference, &ev.stats(&src, &Quiet)?)?;
        ms.iter()
            .map(|&m| {
                let v = if m == Metric::Fid { s.fid } else { s.cfid };
                Ok((m, v.ok_or_else(|| anyhow::anyhow!("the evaluator gave no {}", m.title()))?))
            })
            .collect()
    }

    /// `n` samples of the live weights, quantized to u8 like real images.
    fn sample<D: Backend>(&self, t: &Trainer<D>, n: usize) -> Result<Vec<u8>> {
        let e = &self.cfg.eval;
        let labels = fine_core::sample::cycled_labels(&t.dit.graph, n);
        let sampler = self.reg.sampler(&e.sampler)?;
        let opts = Options::parse(&sampler.info(), "")?;
        let den = Denoiser { dit: &t.dit, store: &t.store, labels, cfg_scale: e.cfg_scale, chunk: 64 };
        let sched = NoiseSchedule::new(t.cfg.beta_schedule, t.cfg.diffusion_steps);
        let mut meter = fine_core::pipeline::Meter::new(&format!("sampling {n} images"), e.sampling_steps);
        let mut eps = |x: &[f32], step: usize| {
            meter.inc(1);
            den.eps(x, step)
        };
        let x = smp::generate(sampler, &opts, &sched, e.sampling_steps, true, n * t.dit.image_len(), &mut eps, 0)?;
        meter.finish();
        Ok(x.iter().map(|&v| to_u8(v)).collect())
    }
}
