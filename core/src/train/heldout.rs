//! Held-out denoising loss: the ε-MSE of a model on a fixed set of test
//! images, timesteps and noises — the same triples for every model of the
//! same input shape, so runs can be compared number to number.
//!
//! Image i of the first `n` of the set gets timestep t_i = ⌊(i + ½)·T/n⌋ (a
//! stratified grid over the whole schedule, so every noise level counts
//! equally) and noise drawn from ChaCha8 seeded with `seed`; labels are the
//! true classes (no dropout).

use crate::data::Dataset;
use crate::diffusion::NoiseSchedule;
use crate::model::{Backend, Dit, ParamStore};
use anyhow::{bail, Result};
use dfdx::prelude::NoneTape;
use rand::{Rng, SeedableRng};

/// A fixed evaluation set of (x_t, t, y, ε).
pub struct HeldOut {
    /// Noised images, (n, C, H, W).
    x_t: Vec<f32>,
    /// Their noise, (n, C, H, W).
    eps: Vec<f32>,
    /// Timesteps.
    t: Vec<f32>,
    /// Labels.
    y: Vec<usize>,
    /// Values per image.
    image_len: usize,
}

impl HeldOut {
    /// The first `n` images of `data` noised under `sched` with noise from `seed`.
    pub fn new(data: &Dataset, n: usize, sched: &NoiseSchedule, seed: u64) -> Result<Self> {
        if n == 0 || n > data.len {
            bail!("held-out set: {n} images requested, `{}` has {}", data.name, data.len);
        }
        let idx: Vec<usize> = (0..n).collect();
        let mut x0 = Vec::new();
        data.fill_batch(&idx, &mut x0);
        let steps = sched.len();
        let t: Vec<usize> =
            (0..n).map(|i| (((i as f64 + 0.5) * steps as f64 / n as f64) as usize).min(steps - 1)).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let eps: Vec<f32> = (0..x0.len()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
        let mut x_t = Vec::new();
        sched.add_noise(&x0, &eps, &t, &mut x_t);
        let t = t.iter().map(|&v| v as f32).collect();
        Ok(Self { x_t, eps, t, y: data.labels_of(&idx), image_len: data.image_len() })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether the set is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Mean ε-MSE of the model in `store` over the set, `batch` images at a time.
    pub fn loss<D: Backend>(&self, dit: &Dit, store: &ParamStore<D>, batch: usize) -> Result<f64> {
        let p = store.view::<NoneTape>();
        let (n, m) = (self.len(), self.image_len);
        let mut sum = 0.0f64;
        for s in (0..n).step_by(batch.max(1)) {
            let e = (s + batch.max(1)).min(n);
            let pred = dit.predict(&p, &self.x_t[s * m..e * m], &self.t[s..e], &self.y[s..e])?;
            // ε-prediction graphs output exactly C channels.
            sum += pred.iter().zip(&self.eps[s * m..e * m]).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
        }
        Ok(sum / (n * m) as f64)
    }
}
