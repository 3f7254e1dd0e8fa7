//! Sampling: reverse-diffusion solvers behind the [`Sampler`] trait, and the
//! model-side denoiser with classifier-free guidance (handled once, here, for
//! every sampler).
//!
//! Samplers see only host buffers and a callback, so they can live outside
//! core (plugins) without knowing about dfdx or the model.

pub mod ddpm;

use crate::diffusion::NoiseSchedule;
use crate::model::{Backend, Dit, ParamStore};
use anyhow::{bail, Result};
use dfdx::prelude::NoneTape;
use rand::RngCore;

/// The ε-prediction callback: `(x_t, t) → ε̂` for the whole batch at model
/// timestep `t` (an index into the training schedule).
pub type EpsFn<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// What a solver is given.
pub struct SamplerContext<'a> {
    /// The training schedule's ᾱ_t, t = 0..T.
    pub alphas_cumprod: &'a [f64],
    /// Number of solver steps K (≤ T).
    pub steps: usize,
    /// Clip the predicted x₀ to [-1, 1] (pixel-space data).
    pub clip_denoised: bool,
}

/// A reverse-diffusion solver.
pub trait Sampler {
    /// Registry name, e.g. `ddpm`.
    fn name(&self) -> &str;
    /// Runs the solver from `x_T` (already drawn from N(0, I)) to x₀.
    fn sample(&self, ctx: &SamplerContext, x: Vec<f32>, eps: &mut EpsFn, rng: &mut dyn RngCore) -> Result<Vec<f32>>;
}

/// K model timesteps spread over [0, T−1], ascending, including both ends
/// (DiT's `space_timesteps(T, [K])`: round(i·(T−1)/(K−1))).
pub fn linspace_timesteps(t_total: usize, k: usize) -> Result<Vec<usize>> {
    if k == 0 || k > t_total {
        bail!("number of sampling steps must be in 1..={t_total}, got {k}");
    }
    if k == 1 {
        return Ok(vec![t_total - 1]);
    }
    let stride = (t_total - 1) as f64 / (k - 1) as f64;
    Ok((0..k).map(|i| (i as f64 * stride).round() as usize).collect())
}

/// Predicts x₀ from x_t and ε̂: (x_t − √(1−ᾱ)·ε̂)/√ᾱ, optionally clipped.
pub fn predict_x0(x: &[f32], eps: &[f32], ab: f64, clip: bool) -> Vec<f32> {
    let (a, b) = ((1.0 / ab).sqrt() as f32, ((1.0 - ab) / ab).sqrt() as f32);
    x.iter()
        .zip(eps)
        .map(|(x, e)| {
            let v = a * x - b * e;
            if clip {
                v.clamp(-1.0, 1.0)
            } else {
                v
            }
        })
        .collect()
}

/// The model as a denoiser: ε̂(x_t, t) for fixed labels, with classifier-free
/// guidance `ε_u + s·(ε_c − ε_u)` when `cfg_scale ≠ 1`, evaluated in chunks.
pub struct Denoiser<'a, D: Backend> {
    /// Model structure.
    pub dit: &'a Dit,
    /// Weights (usually EMA).
    pub store: &'a ParamStore<D>,
    /// Label of every image in the batch.
    pub labels: Vec<usize>,
    /// Guidance scale (1 = no guidance).
    pub cfg_scale: f32,
    /// Images per forward pass.
    pub chunk: usize,
}

impl<'a, D: Backend> Denoiser<'a, D> {
    /// ε̂ for the whole batch `x` at timestep `t`.
    pub fn eps(&self, x: &[f32], t: usize) -> Result<Vec<f32>> {
        let per = self.dit.image_len();
        let n = self.labels.len();
        if x.len() != n * per {
            bail!("denoiser: {} values for {n} images", x.len());
        }
        let guided = self.cfg_scale != 1.0;
        let null = match (guided, self.dit.null_class()) {
            (true, None) => bail!("classifier-free guidance needs a null class (graph label_dropout > 0)"),
            (_, nc) => nc.unwrap_or(0),
        };
        let p = self.store.view::<NoneTape>();
        let mut out = Vec::with_capacity(x.len());
        for start in (0..n).step_by(self.chunk.max(1)) {
            let end = (start + self.chunk.max(1)).min(n);
            let xs = &x[start * per..end * per];
            let ys = &self.labels[start..end];
            if !guided {
                let tt = vec![t as f32; end - start];
                out.extend(self.dit.predict(&p, xs, &tt, ys)?);
                continue;
            }
            let mut x2 = xs.to_vec();
            x2.extend_from_slice(xs);
            let mut y2 = ys.to_vec();
            y2.extend(std::iter::repeat(null).take(end - start));
            let tt = vec![t as f32; 2 * (end - start)];
            let e = self.dit.predict(&p, &x2, &tt, &y2)?;
            let (c, u) = e.split_at(xs.len());
            out.extend(c.iter().zip(u).map(|(c, u)| u + self.cfg_scale * (c - u)));
        }
        Ok(out)
    }
}

/// Draws x_T ~ N(0, I) for `n` images and runs `sampler` to x₀.
pub fn generate(
    sampler: &dyn Sampler,
    sched: &NoiseSchedule,
    steps: usize,
    clip_denoised: bool,
    n_values: usize,
    eps: &mut EpsFn,
    rng: &mut dyn RngCore,
) -> Result<Vec<f32>> {
    use rand::Rng;
    let x: Vec<f32> = (0..n_values).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    let ctx = SamplerContext { alphas_cumprod: &sched.alphas_cumprod, steps, clip_denoised };
    sampler.sample(&ctx, x, eps, rng)
}
