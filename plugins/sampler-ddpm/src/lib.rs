//! DDPM ancestral sampling (Ho et al. 2020) on a possibly respaced schedule.
//!
//! With model timesteps τ_1 < … < τ_K, ᾱ_i = ᾱ[τ_i], β_i = 1 − ᾱ_i/ᾱ_{i−1}:
//! x₀ = (x − √(1−ᾱ_i) ε̂)/√ᾱ_i (optionally clipped), posterior mean
//! μ = √ᾱ_{i−1} β_i/(1−ᾱ_i)·x₀ + √(1−β_i)(1−ᾱ_{i−1})/(1−ᾱ_i)·x, variance
//! β̃_i = β_i(1−ᾱ_{i−1})/(1−ᾱ_i) ("fixed small") or β_i ("fixed large");
//! no noise on the last step.

use anyhow::Result;
use fine_plugin_api::sampler::{predict_x0, Spacing};
use fine_plugin_api::{EpsFn, OptionSpec, Options, PluginInfo, PluginKind, Sampler, SamplerContext};
use rand::{Rng, SeedableRng};

/// The DDPM ancestral sampler.
#[derive(Debug, Clone, Default)]
pub struct Ddpm;

fine_plugin_api::builtin_plugin!(Sampler, Ddpm::default);

impl Sampler for Ddpm {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "ddpm".into(),
            kind: PluginKind::Sampler,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "DDPM ancestral sampling (Ho et al. 2020), respaced to K steps".into(),
            options: vec![
                Spacing::option(Spacing::Linspace),
                OptionSpec::choice(
                    "variance",
                    &["small", "large"],
                    "small",
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
    use rand_distr::StandardNormal;

    /// Every DDPM step is linear in x plus independent noise when ε is the exact ε of Gaussian
    /// data, so x₀ ~ N(m, v) exactly for x_T ~ N(0, 1); m and v from the published equations
    /// (Ho et al. 2020, eq. 6–7, as diffusers' `DDPMScheduler` with `variance_type`
    /// "fixed_small"/"fixed_large", no clipping), in float64 by this script:
    ///
    /// ```python
    /// import math
    /// T = 1000
    /// betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    /// ab, a = [], 1.0
    /// for b in betas:
    ///     a *= 1 - b
    ///     ab.append(a)
    /// def timesteps(spacing, k):
    ///     if spacing == "linspace":
    ///         s = (T - 1) / (k - 1)
    ///         return sorted(set(int(math.floor(i * s + 0.5)) for i in range(k)))
    ///     s = T / k                                                  # trailing
    ///     return sorted(set(int(math.floor(T - i * s + 0.5)) - 1 for i in range(k)))
    /// MU, S2 = 0.3, 0.25
    /// def moments(spacing, k, large):
    ///     ts, m, v = timesteps(spacing, k), 0.0, 1.0
    ///     for i in reversed(range(len(ts))):
    ///         a = ab[ts[i]]; ap = ab[ts[i - 1]] if i > 0 else 1.0
    ///         beta = 1 - a / ap
    ///         c = math.sqrt(1 - a) / (a * S2 + 1 - a)            # eps = c·x − c·√a·MU
    ///         ka, kb = (1 - math.sqrt(1 - a) * c) / math.sqrt(a), math.sqrt(1 - a) * c * MU   # x0 = ka·x + kb
    ///         c0 = math.sqrt(ap) * beta / (1 - a)                # posterior mean coefficients
    ///         ct = math.sqrt(1 - beta) * (1 - ap) / (1 - a)
    ///         var = 0.0 if i == 0 else (beta if large else beta * (1 - ap) / (1 - a))
    ///         g = c0 * ka + ct
    ///         m, v = g * m + c0 * kb, g * g * v + var
    ///     return m, v
    /// for spacing, k in [("linspace", 1000), ("linspace", 50), ("trailing", 50), ("linspace", 10)]:
    ///     for large in [False, True]:
    ///         print(spacing, k, large, moments(spacing, k, large))
    /// ```
    ///
    /// Tolerances: 4.5 standard errors of the sample mean and variance (n = 200,000 for the
    /// full schedule, where small and large differ by 0.0046 in v; 40,000 otherwise).
    #[test]
    fn matches_reference_moments_on_gaussian_data() {
        let cases = [
            ("", 1000, 200_000, 0.2999969730359501, 0.24612521136027726),
            ("variance=large", 1000, 200_000, 0.2999969730359501, 0.25075207500735786),
            ("", 50, 40_000, 0.29999697303605505, 0.19642023960197355),
            ("variance=large", 50, 40_000, 0.29999697303605505, 0.26788287064298333),
            ("spacing=trailing", 50, 40_000, 0.29999697303605366, 0.1972248826172512),
            ("spacing=trailing,variance=large", 50, 40_000, 0.29999697303605366, 0.26185673522874686),
            ("", 10, 40_000, 0.2999969730360537, 0.10422248956758541),
            ("variance=large", 10, 40_000, 0.2999969730360537, 0.35852121726800984),
        ];
        for (opts, steps, n, m, v) in cases {
            testing::assert_gaussian_moments(&Ddpm, opts, steps, n, (m, v));
        }
    }

    /// With the exact ε of a one-point data set x₀, the "small" posterior is exact: every
    /// state the model sees is distributed as q(x_t | x₀) = N(√ᾱ_t·x₀, 1 − ᾱ_t), so the
    /// standardized residuals of 4096 values have mean ≈ 0 and mean square ≈ 1 at every
    /// step (bounds ≈ 5 standard errors) — a wrong coefficient breaks it within a few
    /// steps — and the last step returns x₀.
    #[test]
    fn oracle_denoiser_keeps_the_forward_marginals() {
        let ab = testing::linear_alphas_cumprod(1000);
        let n = 4096;
        let x0: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 / 8.0) - 1.0).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let x_t: Vec<f32> = (0..n)
            .map(|i| {
                ab[999].sqrt() as f32 * x0[i] + (1.0 - ab[999]).sqrt() as f32 * rng.sample::<f32, _>(StandardNormal)
            })
            .collect();
        for (opts, steps) in [("", 1000), ("", 50), ("spacing=trailing", 50)] {
            let mut worst = (0.0f64, 0.0f64);
            let mut eps = |x: &[f32], t: usize| {
                let a = ab[t];
                let r: Vec<f64> =
                    x.iter().zip(&x0).map(|(x, x0)| (*x as f64 - a.sqrt() * *x0 as f64) / (1.0 - a).sqrt()).collect();
                let mean = r.iter().sum::<f64>() / n as f64;
                let ms = r.iter().map(|v| v * v).sum::<f64>() / n as f64;
                worst = (worst.0.max(mean.abs()), worst.1.max((ms - 1.0).abs()));
                Ok(r.iter().map(|&v| v as f32).collect())
            };
            let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: true };
            let opts_p = Options::parse(&Ddpm.info(), opts).unwrap();
            let x = Ddpm.sample(&ctx, &opts_p, x_t.clone(), &mut eps, 5).unwrap();
            assert!(worst.0 < 0.08 && worst.1 < 0.12, "{opts:?} K={steps}: residual mean/mean-square off by {worst:?}");
            let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-3, "{opts:?} K={steps}: last step {err} from x₀");
        }
        // The last step adds no noise with either variance (β at that step is ≥ 1e-4, so
        // noise there would put the result ≥ 0.01·|z| from x₀).
        for steps in [1000, 50] {
            let mut eps = |x: &[f32], t: usize| {
                let a = ab[t];
                Ok(x.iter().zip(&x0).map(|(x, x0)| (x - a.sqrt() as f32 * x0) / (1.0 - a).sqrt() as f32).collect())
            };
            let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: true };
            let opts = Options::parse(&Ddpm.info(), "variance=large").unwrap();
            let x = Ddpm.sample(&ctx, &opts, x_t.clone(), &mut eps, 5).unwrap();
            let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-3, "variance=large K={steps}: last step {err} from x₀");
        }
    }
}
