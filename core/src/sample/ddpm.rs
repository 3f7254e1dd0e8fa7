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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{BetaSchedule, NoiseSchedule};
    use crate::sample::generate;
    use rand::SeedableRng;

    /// With the exact ε of a one-image data set, ancestral sampling must land on that image.
    #[test]
    fn oracle_denoiser_recovers_the_data_point() {
        let sched = NoiseSchedule::new(BetaSchedule::Linear, 1000);
        let target: Vec<f32> = (0..16).map(|i| (i as f32 / 8.0) - 1.0).collect();
        for steps in [1000, 50] {
            let mut eps = |x: &[f32], t: usize| {
                let ab = sched.alphas_cumprod[t];
                Ok(x.iter()
                    .zip(&target)
                    .map(|(x, x0)| (x - ab.sqrt() as f32 * x0) / (1.0 - ab).sqrt() as f32)
                    .collect())
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let x = generate(&Ddpm, &sched, steps, true, 16, &mut eps, &mut rng).unwrap();
            for (a, b) in x.iter().zip(&target) {
                assert!((a - b).abs() < 1e-3, "{steps} steps: {a} vs {b}");
            }
        }
    }
}
