//! The training loop: batches, noise, loss, clipping, AdamW, EMA, checkpoints.
//!
//! Randomness is a pure function of `(seed, step)`: the data order of epoch `e`
//! is a shuffle drawn from ChaCha8 stream `2⁶³ + e`, and every other draw of step
//! `s` (label dropout, timesteps, noise) from stream `s`. So resuming from a
//! checkpoint at step `k` reproduces the uninterrupted run bit for bit.

use super::config::TrainConfig;
use super::optim::{self, AdamW, AdamWHp};
use super::{ema, loss};
use crate::checkpoint::Checkpoint;
use crate::data::{self, Dataset, Split};
use crate::diffusion::NoiseSchedule;
use crate::graph::Graph;
use crate::model::{Backend, Dit, ParamStore, Parameterization};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;

/// What one step measured.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Step number (1-based: the number of updates applied so far).
    pub step: usize,
    /// ε-MSE of the batch.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// A training run in memory.
pub struct Trainer<D: Backend> {
    /// The model structure.
    pub dit: Dit,
    /// The run configuration.
    pub cfg: TrainConfig,
    /// Leaves (live weights).
    pub store: ParamStore<D>,
    /// AdamW moments.
    pub opt: AdamW,
    /// EMA of every leaf.
    pub ema: BTreeMap<String, Vec<f32>>,
    /// Updates applied so far.
    pub step: usize,
    /// Extra metadata carried into checkpoints.
    pub extra: BTreeMap<String, String>,
    /// Training data.
    pub data: Dataset,
    /// Distil from this teacher (target blended with its prediction); not
    /// checkpointed: whoever resumes a distillation run attaches it again.
    pub teacher: Option<super::Teacher<D>>,
    sched: NoiseSchedule,
    perm: (usize, Vec<usize>),
}

/// The random stream of step `s` of a run seeded with `seed`.
pub fn step_rng(seed: u64, s: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(s as u64);
    r
}

impl<D: Backend> Trainer<D> {
    /// A fresh run: leaves initialised from `spec` (default: plain DiT) with the
    /// seed's init stream, data loaded from the config.
    pub fn new(dev: D, graph: &Graph, cfg: TrainConfig, spec: Option<Parameterization>) -> Result<Self> {
        cfg.validate()?;
        let dit = Dit::new(graph);
        let spec = spec.unwrap_or_else(|| dit.plain_parameterization());
        spec.validate(&dit.weight_shapes())?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(u64::MAX);
        let store = ParamStore::init(dev, spec, &mut rng)?;
        let ema = store.host_values();
        Self::assemble(dit, cfg, store, AdamW::default(), ema, 0, BTreeMap::new())
    }

    /// Resumes from a checkpoint (its own graph and config).
    pub fn from_checkpoint(dev: D, ck: Checkpoint) -> Result<Self> {
        let dit = Dit::new(&ck.graph);
        ck.spec.validate(&dit.weight_shapes()).context("checkpoint parameterization does not fit its graph")?;
        let store = ParamStore::from_values(dev, ck.spec.clone(), ck.params)?;
        let opt = AdamW { m: ck.adam_m, v: ck.adam_v, t: ck.step as u64 };
        Self::assemble(dit, ck.train, store, opt, ck.ema, ck.step, ck.extra)
    }

    /// A run whose weights are already given (e.g. built by a strategy):
    /// fresh optimizer, EMA starting at the weights.
    pub fn with_store(
        dit: Dit,
        cfg: TrainConfig,
        store: ParamStore<D>,
        extra: BTreeMap<String, String>,
    ) -> Result<Self> {
        cfg.validate()?;
        store.spec.validate(&dit.weight_shapes())?;
        let ema = store.host_values();
        Self::assemble(dit, cfg, store, AdamW::default(), ema, 0, extra)
    }

    fn assemble(
        dit: Dit,
        cfg: TrainConfig,
        store: ParamStore<D>,
        opt: AdamW,
        ema: BTreeMap<String, Vec<f32>>,
        step: usize,
        extra: BTreeMap<String, String>,
    ) -> Result<Self> {
        let split: Split = cfg.split.parse()?;
        let g = &dit.graph;
        let mut data = if cfg.data == "synthetic" {
            Dataset::synthetic(
                1024,
                g.input.channels,
                g.input.height,
                g.input.width,
                g.conditioning.num_classes.min(256),
                cfg.seed,
            )
        } else {
            data::load(&cfg.data, split)?
        };
        if let Some(n) = cfg.subset {
            if n == 0 || n > data.len {
                bail!("subset {n} is not within 1..={} (images in {} {})", data.len, cfg.data, cfg.split);
            }
            data = data.subset(n);
        }
        let g = &dit.graph.input;
        if (data.channels, data.height, data.width) != (g.channels, g.height, g.width) {
            bail!(
                "data `{}` has images {}×{}×{}, the graph `{}` expects {}×{}×{}",
                cfg.data,
                data.channels,
                data.height,
                data.width,
                dit.graph.name,
                g.channels,
                g.height,
                g.width
            );
        }
        if data.num_classes > dit.graph.conditioning.num_classes {
            bail!(
                "data `{}` has {} classes, the graph has only {}",
                cfg.data,
                data.num_classes,
                dit.graph.conditioning.num_classes
            );
        }
        let sched = NoiseSchedule::new(cfg.beta_schedule, cfg.diffusion_steps);
        Ok(Self { dit, cfg, store, opt, ema, step, extra, data, teacher: None, sched, perm: (usize::MAX, Vec::new()) })
    }

    /// The noise schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.sched
    }

    /// Data indices of step `s` (epoch-wise shuffles, pure in (seed, s)).
    fn batch_indices(&mut self, s: usize) -> Vec<usize> {
        let (n, b) = (self.data.len, self.cfg.batch);
        (s * b..(s + 1) * b)
            .map(|g| {
                let epoch = g / n;
                if self.perm.0 != epoch {
                    let mut p: Vec<usize> = (0..n).collect();
                    let mut r = ChaCha8Rng::seed_from_u64(self.cfg.seed);
                    r.set_stream((1u64 << 63) + epoch as u64);
                    p.shuffle(&mut r);
                    self.perm = (epoch, p);
                }
                self.perm.1[g % n]
            })
            .collect()
    }

    /// One optimizer step.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let s = self.step;
        let idx = self.batch_indices(s);
        let mut x0 = Vec::new();
        self.data.fill_batch(&idx, &mut x0);
        let mut y = self.data.labels_of(&idx);
        let mut rng = step_rng(self.cfg.seed, s);
        let p_drop = self.dit.graph.conditioning.label_dropout;
        if let Some(null) = self.dit.null_class() {
            for l in y.iter_mut() {
                if rng.gen::<f64>() < p_drop {
                    *l = null;
                }
            }
        }
        let t: Vec<usize> = (0..idx.len()).map(|_| rng.gen_range(0..self.sched.len())).collect();
        let eps: Vec<f32> = (0..x0.len()).map(|_| rng.sample(StandardNormal)).collect();
        let mut x_t = Vec::new();
        self.sched.add_noise(&x0, &eps, &t, &mut x_t);
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();

        let target = match &self.teacher {
            Some(teacher) => teacher.target(&x_t, &tf, &y, &eps)?,
            None => eps,
        };
        let (loss, mut grads) = loss::eps_mse_and_grads(&self.dit, &self.store, &x_t, &tf, &y, &target)?;
        if !loss.is_finite() {
            bail!("loss became {loss} at step {}: lower the learning rate or enable grad_clip", s + 1);
        }
        let grad_norm = optim::global_norm(grads.values());
        if let Some(c) = self.cfg.grad_clip {
            optim::clip(&mut grads, grad_norm, c);
        }
        let lr = self.cfg.lr_at(s);
        let hp = AdamWHp {
            lr,
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.adam_eps,
            weight_decay: self.cfg.weight_decay,
        };
        self.opt.t = s as u64 + 1;
        for (name, g) in &grads {
            let mut v = crate::model::store::flat_values(&self.store.leaf(name)?.value);
            self.opt.update(name, &mut v, g, hp, self.opt.t);
            ema::update(&mut self.ema, name, &v, self.cfg.ema_decay);
            self.store.set(name, v)?;
        }
        self.step += 1;
        Ok(StepStats { step: self.step, loss, grad_norm, lr })
    }

    /// The complete state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            graph: self.dit.graph.clone(),
            train: self.cfg.clone(),
            spec: self.store.spec.clone(),
            step: self.step,
            params: self.store.host_values(),
            ema: self.ema.clone(),
            adam_m: self.opt.m.clone(),
            adam_v: self.opt.v.clone(),
            extra: self.extra.clone(),
        }
    }

    /// A store holding the EMA weights (for sampling).
    pub fn ema_store(&self) -> Result<ParamStore<D>> {
        ParamStore::from_values(self.store.dev.clone(), self.store.spec.clone(), self.ema.clone())
    }
}
