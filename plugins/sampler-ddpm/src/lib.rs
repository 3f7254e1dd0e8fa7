//! DDPM ancestral sampling (Ho et al. 2020) on a possibly respaced schedule.
//!
//! With model timesteps τ_1 < … < τ_K, ᾱ_i = ᾱ[τ_i], β_i = 1 − ᾱ_i/ᾱ_{i−1}:
//! x₀ = (x − √(1−ᾱ_i) ε̂)/√ᾱ_i (optionally clipped), posterior mean
//! μ = √ᾱ_{i−1} β_i/(1−ᾱ_i)·x₀ + √(1−β_i)(1−ᾱ_{i−1})/(1−ᾱ_i)·x, variance
//! β̃_i = β_i(1−ᾱ_{i−1})/(1−ᾱ_i) ("fixed small") or β_i ("fixed large");
//! no noise on the last step.

use anyhow::Result;
use fine_plugin_api::info::OptionType;
use fine_plugin_api::sampler::{predict_x0, Spacing};
use fine_plugin_api::{EpsFn, OptionSpec, Options, PluginInfo, PluginKind, Sampler, SamplerContext};
use rand::{Rng, SeedableRng};

/// The DDPM ancestral sampler.
#[derive(Debug, Clone, Default)]
pub struct Ddpm;

fine_plugin_api::builtin_plugin!(Sampler, Ddpm::default);

impl Sampler for Ddpm {
    fn info(&self) -> PluginInfo {
        let choice = |v: &[&str]| OptionType::Choice(v.iter().map(|s| s.to_string()).collect());
        PluginInfo {
            name: "ddpm".into(),
            kind: PluginKind::Sampler,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "DDPM ancestral sampling (Ho et al. 2020), respaced to K steps".into(),
            options: vec![
                Spacing::option(Spacing::Linspace),
                OptionSpec::new(
                    "variance",
                    choice(&["small", "large"]),
                    "\"small\"",
                    "posterior variance β̃ (small) or β (large)",
                ),
            ],
        }
    }

    fn sample(
        &self,
        ctx: &SamplerContext,
        opts: &Options,
        mut x: Vec<f32>,
        eps: &mut EpsFn,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let ts = Spacing::timesteps_from(opts, ctx.alphas_cumprod.len(), ctx.steps)?;
        let large = opts.text("variance")? == "large";
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for i in (0..ts.len()).rev() {
            let ab = ctx.alphas_cumprod[ts[i]];
            let ab_prev = if i == 0 { 1.0 } else { ctx.alphas_cumprod[ts[i - 1]] };
            let beta = 1.0 - ab / ab_prev;
            let e = eps(&x, ts[i])?;
            let x0 = predict_x0(&x, &e, ab, ctx.clip_denoised);
            let c0 = (ab_prev.sqrt() * beta / (1.0 - ab)) as f32;
            let ct = ((1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab)) as f32;
            let var = if large { beta } else { beta * (1.0 - ab_prev) / (1.0 - ab) };
            let sigma = var.sqrt() as f32;
            for (xv, x0v) in x.iter_mut().zip(&x0) {
                let z: f32 = if i > 0 { rng.sample(rand_distr::StandardNormal) } else { 0.0 };
                *xv = c0 * x0v + ct * *xv + sigma * z;
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fine_plugin_api::sampler::testing;

    /// With the exact ε of a one-point data set, ancestral sampling must land on that point.
    #[test]
    fn oracle_denoiser_recovers_the_data_point() {
        for opts in ["", "variance=large", "spacing=trailing"] {
            for steps in [1000, 50] {
                let (x, target) = testing::oracle_run(&Ddpm, opts, steps, 0);
                for (a, b) in x.iter().zip(&target) {
                    assert!((a - b).abs() < 1e-3, "{opts:?}, {steps} steps: {a} vs {b}");
                }
            }
        }
    }
}
