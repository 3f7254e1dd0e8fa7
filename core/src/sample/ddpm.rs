//! DDPM ancestral sampling (Ho et al. 2020) on a possibly respaced schedule.
//!
//! With model timesteps τ_1 < … < τ_K, ᾱ_i = ᾱ[τ_i], β_i = 1 − ᾱ_i/ᾱ_{i−1}:
//! x₀ = (x − √(1−ᾱ_i) ε̂)/√ᾱ_i (optionally clipped), posterior mean
//! μ = √ᾱ_{i−1} β_i/(1−ᾱ_i)·x₀ + √(1−β_i)(1−ᾱ_{i−1})/(1−ᾱ_i)·x, variance
//! β̃_i = β_i(1−ᾱ_{i−1})/(1−ᾱ_i) ("fixed small"); no noise on the last step.

use super::{linspace_timesteps, predict_x0, EpsFn, Sampler, SamplerContext};
use anyhow::Result;
use rand::{Rng, RngCore};

/// The DDPM ancestral sampler.
#[derive(Debug, Clone, Default)]
pub struct Ddpm;

impl Sampler for Ddpm {
    fn name(&self) -> &str {
        "ddpm"
    }

    fn sample(
        &self,
        ctx: &SamplerContext,
        mut x: Vec<f32>,
        eps: &mut EpsFn,
        mut rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>> {
        let ts = linspace_timesteps(ctx.alphas_cumprod.len(), ctx.steps)?;
        for i in (0..ts.len()).rev() {
            let ab = ctx.alphas_cumprod[ts[i]];
            let ab_prev = if i == 0 { 1.0 } else { ctx.alphas_cumprod[ts[i - 1]] };
            let beta = 1.0 - ab / ab_prev;
            let e = eps(&x, ts[i])?;
            let x0 = predict_x0(&x, &e, ab, ctx.clip_denoised);
            let c0 = (ab_prev.sqrt() * beta / (1.0 - ab)) as f32;
            let ct = ((1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab)) as f32;
            let sigma = (beta * (1.0 - ab_prev) / (1.0 - ab)).sqrt() as f32;
            for (xv, x0v) in x.iter_mut().zip(&x0) {
                let z: f32 = if i > 0 { (&mut rng).sample(rand_distr::StandardNormal) } else { 0.0 };
                *xv = c0 * x0v + ct * *xv + sigma * z;
            }
        }
        Ok(x)
    }
}
