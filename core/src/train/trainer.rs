//! The training loop: batches, noise, loss, clipping, AdamW, EMA, checkpoints.
//!
//! Randomness is a pure function of `(seed, step)`: the data order of epoch `e`
//! is a shuffle drawn from ChaCha8 stream `2⁶³ + e`, and every other draw of step
//! `s` (label dropout, timesteps, noise) from stream `s`. So resuming from a
//! checkpoint at step `k` reproduces the uninterrupted run bit for bit.

use super::config::TrainConfig;
use super::optim::{self, AdamWHp, HostMap, OptState};
use super::provenance::Provenance;
use super::{ema, loss};
use crate::data::{self, Dataset, Split};
use crate::diffusion::NoiseSchedule;
use crate::graph::Graph;
use crate::model::{Backend, Dit, ParamStore, Parameterization};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

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
    /// AdamW moments and the EMA of every leaf (on the host, or on the device
    /// once the optimizer steps there).
    opt: OptState<D>,
    /// Updates applied so far.
    pub step: usize,
    /// Where the run came from, carried into checkpoints.
    pub provenance: Provenance,
    /// Training data.
    pub data: Dataset,
    /// Distil from this teacher (target blended with its prediction); not
    /// checkpointed: whoever resumes a distillation run attaches it again.
    pub teacher: Option<super::Teacher<D>>,
    sched: NoiseSchedule,
    perm: (usize, Vec<usize>),
    /// Whether steps run the optimizer on the device (default: `!D::HOST_STEP`).
    device_step: bool,
}

/// The error for a loss that is not finite at (0-based) step `s`.
fn check_finite(loss: f32, s: usize) -> Result<()> {
    if !loss.is_finite() {
        bail!(
            "loss became {loss} at step {}: lower the learning rate (`lr`, --lr) or enable `grad_clip` (--grad-clip)",
            s + 1
        );
    }
    Ok(())
}

/// The error for a gradient norm that is not finite at (0-based) step `s`.
fn check_finite_norm(norm: f64, s: usize) -> Result<()> {
    if !norm.is_finite() {
        bail!("the gradient norm became {norm} at step {}: lower the learning rate (`lr`, --lr)", s + 1);
    }
    Ok(())
}

/// `hp` with the learning rate of a leaf whose scale is `lr_scale` ([`fine_plugin_api::LeafSpec::lr_scale`]).
fn scaled(hp: AdamWHp, lr_scale: f32) -> AdamWHp {
    AdamWHp { lr: hp.lr * lr_scale as f64, ..hp }
}

/// The images a run of `cfg` on `graph` trains on: the split `cfg.split` of
/// `cfg.data` (`synthetic`: 1024 seeded random images of the graph's shape, for
/// tests), whole — the trainer takes `cfg.subset` of it.
pub fn load_data(cfg: &TrainConfig, graph: &Graph) -> Result<Dataset> {
    let split: Split = cfg.split.parse()?;
    if cfg.data == "synthetic" {
        let (i, classes) = (&graph.input, graph.conditioning.num_classes.min(256));
        return Ok(Dataset::synthetic(1024, i.channels, i.height, i.width, classes, cfg.seed));
    }
    data::load_as(&cfg.data, split, Some(graph.input.chw()))
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
        let opt = OptState::host(HostMap::new(), HostMap::new(), store.host_values(), 0);
        let data = load_data(&cfg, &dit.graph)?;
        Self::assemble(dit, cfg, store, opt, 0, Provenance::default(), data)
    }

    /// A run whose weights are already given (e.g. built by a strategy):
    /// fresh optimizer, EMA starting at the weights; data loaded from the config.
    pub fn with_store(dit: Dit, cfg: TrainConfig, store: ParamStore<D>, provenance: Provenance) -> Result<Self> {
        cfg.validate()?;
        let data = load_data(&cfg, &dit.graph)?;
        Self::with_data(dit, cfg, store, data, provenance)
    }

    /// [`Self::with_store`] on `data`, the loaded images of `cfg.data`'s split
    /// (the config's `subset` is taken from it here), so a caller that runs many
    /// trainers on one data set loads it once.
    pub fn with_data(
        dit: Dit,
        cfg: TrainConfig,
        store: ParamStore<D>,
        data: Dataset,
        provenance: Provenance,
    ) -> Result<Self> {
        cfg.validate()?;
        store.spec.validate(&dit.weight_shapes())?;
        let opt = OptState::host(HostMap::new(), HostMap::new(), store.host_values(), 0);
        Self::assemble(dit, cfg, store, opt, 0, provenance, data)
    }

    /// The trainer over its parts; `data` is the whole split (`cfg.subset` applies here).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        dit: Dit,
        cfg: TrainConfig,
        store: ParamStore<D>,
        opt: OptState<D>,
        step: usize,
        provenance: Provenance,
        mut data: Dataset,
    ) -> Result<Self> {
        let g = &dit.graph;
        crate::util::mem::check_fits(
            crate::model::summary::training_bytes(g, cfg.batch),
            &format!("training `{}` at batch {}", g.name, cfg.batch),
        )?;
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
        // An unconditional graph (0 classes) trains on any data and ignores its labels.
        let classes = dit.graph.conditioning.num_classes;
        if classes > 0 && data.num_classes > classes {
            bail!(
                "data `{}` has {} classes, the graph has only {}",
                cfg.data,
                data.num_classes,
                dit.graph.conditioning.num_classes
            );
        }
        let sched = NoiseSchedule::new(cfg.beta_schedule, cfg.diffusion_steps);
        Ok(Self {
            dit,
            cfg,
            store,
            opt,
            step,
            provenance,
            data,
            teacher: None,
            sched,
            perm: (usize::MAX, Vec::new()),
            device_step: !D::HOST_STEP,
        })
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
        let lr = self.cfg.lr_at(s);
        let hp = AdamWHp {
            lr,
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.adam_eps,
            weight_decay: self.cfg.weight_decay,
        };
        self.opt.t = s as u64 + 1;
        let (loss, grad_norm) = if self.device_step {
            self.device_update(&x_t, &tf, &y, &target, hp)?
        } else {
            self.host_update(&x_t, &tf, &y, &target, hp)?
        };
        self.step += 1;
        Ok(StepStats { step: self.step, loss, grad_norm, lr })
    }

    /// Gradients, clipping, AdamW and EMA over host copies; returns (loss, gradient norm).
    fn host_update(&mut self, x_t: &[f32], tf: &[f32], y: &[usize], target: &[f32], hp: AdamWHp) -> Result<(f32, f64)> {
        let (loss, mut grads) = loss::eps_mse_and_grads(&self.dit, &self.store, x_t, tf, y, target)?;
        check_finite(loss, self.step)?;
        let grad_norm = optim::global_norm(grads.values());
        check_finite_norm(grad_norm, self.step)?;
        if let Some(c) = self.cfg.grad_clip {
            optim::clip(&mut grads, grad_norm, c);
        }
        // `opt.t` already counts this step: the EMA's update index is t − 1.
        let ema_decay = self.cfg.ema_decay_at(self.opt.t - 1);
        for (name, g) in &grads {
            let leaf = self.store.leaf(name)?;
            let (mut v, hp) = (crate::model::store::flat_values(&leaf.value), scaled(hp, leaf.lr_scale));
            let (t, (adam, ema)) = (self.opt.t, self.opt.host_mut());
            adam.update(name, &mut v, g, hp, t);
            ema::update(ema, name, &v, ema_decay);
            self.store.set(name, v)?;
        }
        Ok((loss, grad_norm))
    }

    /// The same as [`Self::host_update`] with gradients, moments and EMA on the device.
    fn device_update(
        &mut self,
        x_t: &[f32],
        tf: &[f32],
        y: &[usize],
        target: &[f32],
        hp: AdamWHp,
    ) -> Result<(f32, f64)> {
        let (loss, mut tape) = loss::eps_mse_backward(&self.dit, &self.store, x_t, tf, y, target)?;
        let grads = loss::device_grads(&self.store, &mut tape)?;
        drop(tape);
        check_finite(loss, self.step)?;
        let grad_norm = optim::device_global_norm(grads.values());
        check_finite_norm(grad_norm, self.step)?;
        let scale = match self.cfg.grad_clip {
            Some(c) if c / (grad_norm + 1e-6) < 1.0 => (c / (grad_norm + 1e-6)) as f32, // as optim::clip
            _ => 1.0,
        };
        let ema_decay = self.cfg.ema_decay_at(self.opt.t - 1);
        let t = self.opt.t;
        let state = self.opt.device_mut(&self.store.dev);
        for (name, g) in &grads {
            let hp = scaled(hp, self.store.leaf(name)?.lr_scale);
            state.update(name, self.store.value_mut(name)?, g, scale, hp, t, ema_decay)?;
        }
        Ok((loss, grad_norm))
    }

    /// Steps the optimizer on the device (`true`) or on the host over copies;
    /// the default is the device's
    /// [`Kernels::HOST_STEP`](crate::model::kernels::Kernels::HOST_STEP). Both give the same
    /// numbers up to f32 rounding (`tests::device_step_matches_host_step`).
    pub fn set_device_step(&mut self, on: bool) {
        if !on {
            self.opt.to_host();
        }
        self.device_step = on;
    }

    /// The optimizer state (moments, EMA, update count).
    pub fn opt(&self) -> &OptState<D> {
        &self.opt
    }

    /// A store holding the EMA weights (for sampling).
    pub fn ema_store(&self) -> Result<ParamStore<D>> {
        ParamStore::from_values(self.store.dev.clone(), self.store.spec.clone(), self.opt.ema())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::CpuDevice;

    fn rel(a: &HostMap, b: &HostMap) -> f64 {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (k, x) in a {
            for (p, q) in x.iter().zip(&b[k]) {
                num = num.max((p - q).abs() as f64);
                den = den.max(p.abs() as f64);
            }
        }
        num / den.max(1e-12)
    }

    /// A leaf's `lr_scale` multiplies the run's learning rate: a run at lr/4 whose
    /// leaves all have scale 4 takes the same steps as a run at lr (host and device
    /// optimizer), while scale 1 at lr/4 does not.
    #[test]
    fn lr_scale_multiplies_the_learning_rate() {
        let g = crate::graph::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../graphs/fmnist-tiny.ron"
        )))
        .unwrap();
        let cfg =
            TrainConfig { data: "synthetic".into(), batch: 4, lr: 2e-3, weight_decay: 0.01, ..Default::default() };
        let run = |lr: f64, scale: f32, device: bool| {
            let dit = Dit::new(&g);
            let mut spec = dit.plain_parameterization();
            spec.leaves.iter_mut().for_each(|l| l.lr_scale = scale);
            let mut t = Trainer::new(CpuDevice::default(), &g, TrainConfig { lr, ..cfg.clone() }, Some(spec)).unwrap();
            t.set_device_step(device);
            for _ in 0..3 {
                t.train_step().unwrap();
            }
            t.checkpoint().params
        };
        for device in [false, true] {
            let base = run(2e-3, 1.0, device);
            assert!(rel(&base, &run(5e-4, 4.0, device)) < 1e-6, "device step {device}");
            assert!(rel(&base, &run(5e-4, 1.0, device)) > 1e-4, "device step {device}: the check is vacuous");
        }
    }

    /// The device optimizer (run here on the CPU) takes the same steps as the
    /// host one: weights, both moments and the EMA after 4 steps with clipping
    /// active and weight decay, then one more after switching back to the host.
    #[test]
    fn device_step_matches_host_step() {
        let g = crate::graph::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../graphs/fmnist-tiny.ron"
        )))
        .unwrap();
        let cfg = TrainConfig {
            data: "synthetic".into(),
            batch: 4,
            lr: 3e-3,
            weight_decay: 0.01,
            grad_clip: Some(0.05), // below the norm of a fresh model: clipping scales every step
            ema_decay: 0.9,
            ..Default::default()
        };
        let mut host = Trainer::new(CpuDevice::default(), &g, cfg.clone(), None).unwrap();
        let mut dev = Trainer::new(CpuDevice::default(), &g, cfg, None).unwrap();
        assert!(!host.device_step, "the CPU steps on the host by default");
        dev.set_device_step(true);
        for _ in 0..4 {
            let (a, b) = (host.train_step().unwrap(), dev.train_step().unwrap());
            assert!(a.grad_norm > 0.05, "clipping inactive: norm {}", a.grad_norm);
            assert!(
                ((a.loss - b.loss) / a.loss).abs() < 1e-5 && ((a.grad_norm - b.grad_norm) / a.grad_norm).abs() < 1e-5
            );
        }
        let (ca, cb) = (host.checkpoint(), dev.checkpoint());
        assert!(dev.opt().on_device() && !host.opt().on_device(), "where each optimizer state lives");
        for (what, a, b) in [
            ("params", &ca.params, &cb.params),
            ("m", &ca.adam_m, &cb.adam_m),
            ("v", &ca.adam_v, &cb.adam_v),
            ("ema", &ca.ema, &cb.ema),
        ] {
            let e = rel(a, b);
            assert!(e < 1e-5, "{what}: relative difference {e:.2e}");
        }
        assert!(rel(&ca.params, &host.checkpoint().ema) > 1e-4, "EMA equals the weights: the EMA check is vacuous");
        dev.set_device_step(false);
        host.train_step().unwrap();
        dev.train_step().unwrap();
        let e = rel(&host.checkpoint().adam_v, &dev.checkpoint().adam_v);
        assert!(e < 1e-5, "after switching back: {e:.2e}");
    }
}
