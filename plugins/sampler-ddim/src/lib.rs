//! DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models") on
//! K of the T training timesteps.
//!
//! With model timesteps τ_1 < … < τ_K, ᾱ = ᾱ[τ_i] and ᾱ_prev = ᾱ[τ_{i−1}]
//! (ᾱ_prev = 1 on the last step, so the last step lands on x₀):
//! x₀ = (x − √(1−ᾱ)·ε̂)/√ᾱ (clipped to [-1, 1] with `clip_denoised`, and then
//! ε̂ replaced by the ε consistent with the clipped x₀, as diffusers'
//! `use_clipped_model_output`),
//! x_prev = √ᾱ_prev·x₀ + √(1−ᾱ_prev−σ²)·ε̂ + σ·z, z ~ N(0, I),
//! σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev) (eq. 16). η = 0 is the
//! deterministic DDIM, η = 1 the DDPM posterior variance. No noise on the last step.
//!
//! Default spacing is "trailing", not DDIM's own "leading": leading never
//! reaches t = T−1 (for K = 10 it starts at t = 900, where ᾱ ≫ ᾱ_{T−1}), so
//! the given x_T ~ N(0, I) would not match the marginal at the first step;
//! trailing always starts at T−1 (Lin et al. 2024, "Common diffusion noise
//! schedules and sample steps are flawed", §3.3).

use anyhow::{bail, Result};
use fine_plugin_api::sampler::{eps_from_x0, predict_x0, Spacing};
use fine_plugin_api::{EpsFn, OptionSpec, Options, PluginInfo, PluginKind, Sampler, SamplerContext};
use rand::{Rng, SeedableRng};

/// The DDIM sampler.
#[derive(Debug, Clone, Default)]
pub struct Ddim;

fine_plugin_api::builtin_plugin!(Sampler, Ddim::default);

/// (c_x₀, c_ε, σ) of x_prev = c_x₀·x₀ + c_ε·ε̂ + σ·z (Song et al. 2021, eq. 12 and 16).
fn coefficients(ab: f64, ab_prev: f64, eta: f64) -> (f64, f64, f64) {
    let sigma = eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
    // 1−ᾱ_prev−σ² ≥ 0 for η ≤ 1; max() only guards rounding.
    (ab_prev.sqrt(), (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt(), sigma)
}

impl Sampler for Ddim {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "ddim".into(),
            kind: PluginKind::Sampler,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "DDIM (Song et al. 2021), deterministic at eta = 0, on K of the T timesteps".into(),
            options: vec![
                OptionSpec::float("eta", 0.0, "stochasticity η in [0, 1]: 0 deterministic DDIM, 1 DDPM-like"),
                Spacing::option(Spacing::Trailing),
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
        let ab = ctx.alphas_cumprod;
        let ts = Spacing::timesteps_from(opts, ab.len(), ctx.steps)?;
        let eta = opts.float("eta")?;
        if !(0.0..=1.0).contains(&eta) {
            bail!("ddim: eta must be in [0, 1], got {eta}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for i in (0..ts.len()).rev() {
            let (a, a_prev) = (ab[ts[i]], if i == 0 { 1.0 } else { ab[ts[i - 1]] });
            let mut e = eps(&x, ts[i])?;
            if e.len() != x.len() {
                bail!("ddim: the denoiser returned {} values for {}", e.len(), x.len());
            }
            let x0 = predict_x0(&x, &e, a, ctx.clip_denoised);
            if ctx.clip_denoised {
                e = eps_from_x0(&x, &x0, a);
            }
            let (c0, ce, sigma) = coefficients(a, a_prev, eta);
            let (c0, ce, s) = (c0 as f32, ce as f32, sigma as f32);
            let noisy = i > 0 && sigma > 0.0;
            for ((xv, x0v), ev) in x.iter_mut().zip(&x0).zip(&e) {
                let z: f32 = if noisy { rng.sample(rand_distr::StandardNormal) } else { 0.0 };
                *xv = c0 * x0v + ce * ev + s * z;
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fine_plugin_api::sampler::testing::{self, assert_close, TOY_X_T as X_T};
    use fine_plugin_api::sampler::timesteps;
    use rand_distr::StandardNormal;

    fn schedule() -> Vec<f64> {
        testing::linear_alphas_cumprod(1000)
    }

    fn run_toy(opts: &str, steps: usize, clip: bool) -> (Vec<Vec<f32>>, Vec<f32>) {
        testing::run_toy(&Ddim, opts, steps, clip)
    }

    /// Reference numbers from the published equations (numpy, f64), cross-checked against
    /// diffusers 0.42.1 `DDIMScheduler` (trailing, set_alpha_to_one, clip_sample,
    /// use_clipped_model_output; agreement 2e-16 / exact). Script:
    ///
    /// ```python
    /// import numpy as np
    /// T, K = 1000, 10
    /// ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))            # linear β schedule, f64
    /// x_T = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.75, 1.25])
    /// eps = lambda x, t: 0.1 * x + 0.01 * t / 1000               # toy ε-model
    /// ts = (np.round(np.arange(T, 0, -T / K)).astype(int) - 1)   # trailing: 999, 899, ..., 99
    ///
    /// def coeffs(a, ap, eta):                                    # Song et al. 2021, eq. 12 and 16
    ///     s = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
    ///     return np.sqrt(ap), np.sqrt(1 - ap - s * s), s
    ///
    /// def ddim(x, clip, n=K):                                    # η = 0
    ///     for i, t in enumerate(ts[:n]):
    ///         ap = ab[ts[i + 1]] if i + 1 < K else 1.0
    ///         e = eps(x, t)
    ///         x0 = (x - np.sqrt(1 - ab[t]) * e) / np.sqrt(ab[t])
    ///         if clip:
    ///             x0 = np.clip(x0, -1, 1)
    ///             e = (x - np.sqrt(ab[t]) * x0) / np.sqrt(1 - ab[t])
    ///         c0, ce, _ = coeffs(ab[t], ap, 0.0)
    ///         x = c0 * x0 + ce * e
    ///     return x
    ///
    /// one, full, full_clip = ddim(x_T, False, 1), ddim(x_T, False), ddim(x_T, True)
    /// print("one", one.tolist()); print("full", full.tolist()); print("clip", full_clip.tolist())
    /// print("coeffs eta=0.5 999->899", coeffs(ab[999], ab[899], 0.5), "eta=1 199->99", coeffs(ab[199], ab[99], 1.0))
    ///
    /// # Cross-check against diffusers' DDIMScheduler (ᾱ replaced by the f64 values above).
    /// import torch
    /// from diffusers import DDIMScheduler
    /// for clip, want in [(False, full), (True, full_clip)]:
    ///     s = DDIMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    ///                       clip_sample=clip, set_alpha_to_one=True, timestep_spacing="trailing")
    ///     s.alphas_cumprod = torch.tensor(ab)
    ///     s.set_timesteps(K)
    ///     assert s.timesteps.tolist() == ts.tolist()
    ///     x = torch.tensor(x_T)
    ///     for t in s.timesteps:
    ///         x = s.step(torch.tensor(eps(x.numpy(), int(t))), t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    ///     print("diffusers vs numpy, clip =", clip, np.abs(x.numpy() - want).max() / np.abs(want).max())
    ///     assert np.allclose(x.numpy(), want, rtol=1e-10, atol=1e-10)
    /// ```
    #[test]
    fn matches_reference_numbers() {
        // After one step (t = 999 → 899): the input of the second model call.
        let (seen, full) = run_toy("", 10, false);
        assert_eq!(seen.len(), 10);
        let one = [
            -3.691386537004158,
            -2.4662903837313377,
            -1.241194230458517,
            -0.6286461538221069,
            -0.016098077185696683,
            0.5964499994507136,
            1.8215461527235342,
            3.0466423059963548,
        ];
        assert_close(&seen[1], &one, 1e-5, "one step");
        let want = [
            -152.40331708611333,
            -101.94568931781303,
            -51.48806154951278,
            -26.259247665362647,
            -1.030433781212535,
            24.198380102937595,
            74.6560078712378,
            125.11363563953813,
        ];
        assert_close(&full, &want, 1e-5, "10 steps");
        let (_, clipped) = run_toy("", 10, true);
        assert_close(&clipped, &[-1.0, -1.0, -1.0, -1.0, -0.7484060084060391, 1.0, 1.0, 1.0], 1e-5, "clipped");

        // The stochastic coefficients.
        let ab = schedule();
        for ((t, tp, eta), want) in [
            ((999, 899, 0.5), [0.016589331267516435, 0.8868127244216472, 0.4618311226974123]),
            ((199, 99, 1.0), [0.9471104189454153, 0.1511690288060056, 0.2830720386313157]),
        ] {
            let (a, b, c) = coefficients(ab[t], ab[tp], eta);
            for (g, w) in [a, b, c].iter().zip(want) {
                assert!((g - w).abs() <= 1e-12 * w.abs(), "coefficients {t}→{tp}, η = {eta}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn oracle_denoiser_recovers_the_data_point() {
        for opts in ["", "spacing=linspace", "spacing=leading", "eta=0.5", "eta=1.0"] {
            for steps in [50, 10] {
                let (x, target) = testing::oracle_run(&Ddim, opts, steps, 0);
                for (a, b) in x.iter().zip(&target) {
                    assert!((a - b).abs() < 1e-3, "{opts:?}, {steps} steps: {a} vs {b}");
                }
            }
        }
    }

    /// η = 1 draws noise from the seed: same seed, same trajectory; the model sees different inputs otherwise.
    #[test]
    fn eta_noise_follows_the_seed() {
        let ab = schedule();
        let ctx = SamplerContext { alphas_cumprod: &ab, steps: 10, clip_denoised: false };
        let opts = Options::parse(&Ddim.info(), "eta=1.0").unwrap();
        let run = |seed| {
            let mut eps = |x: &[f32], _t: usize| Ok(x.iter().map(|v| 0.5 * v).collect());
            Ddim.sample(&ctx, &opts, X_T.to_vec(), &mut eps, seed).unwrap()
        };
        let (a, b, c) = (run(1), run(1), run(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| v.is_finite()));
    }

    /// η > 0 on Gaussian data N(0.3, 0.25) with its exact ε: every step is linear in x plus
    /// independent noise σ·z, so from x_T ~ N(0, 1) the samples are N(m, v) exactly, m and v
    /// by the recursion below (float64; at η = 1 it gives DDPM's "small" variance, 0.19722 at
    /// K = 50, as the DDPM sampler's reference does). Bounds: 4.5 standard errors, n = 40,000.
    ///
    /// ```python
    /// import math
    /// T = 1000
    /// betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    /// ab, a = [], 1.0
    /// for b in betas:
    ///     a *= 1 - b
    ///     ab.append(a)
    /// def trailing(k):
    ///     s = T / k
    ///     return sorted(set(int(math.floor(T - i * s + 0.5)) - 1 for i in range(k)))
    /// MU, S2 = 0.3, 0.25
    /// def moments(k, eta):
    ///     ts, m, v = trailing(k), 0.0, 1.0
    ///     for i in reversed(range(len(ts))):
    ///         a = ab[ts[i]]; ap = ab[ts[i - 1]] if i > 0 else 1.0
    ///         c = math.sqrt(1 - a) / (a * S2 + 1 - a)              # eps = c·x − c·√a·MU
    ///         ka, kb = (1 - math.sqrt(1 - a) * c) / math.sqrt(a), math.sqrt(1 - a) * c * MU
    ///         sig = eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(1 - a / ap)
    ///         d = math.sqrt(max(1 - ap - sig * sig, 0.0))
    ///         g = math.sqrt(ap) * ka + d * c
    ///         h = math.sqrt(ap) * kb - d * c * math.sqrt(a) * MU
    ///         m, v = g * m + h, g * g * v + sig * sig
    ///     return m, v
    /// for k in [50, 10]:
    ///     for eta in [1.0, 0.5]:
    ///         print(k, eta, moments(k, eta))
    /// ```
    #[test]
    fn stochastic_steps_match_reference_moments_on_gaussian_data() {
        let cases = [
            (50, "eta=1.0", 0.2999969730360536, 0.19722488261725107),
            (50, "eta=0.5", 0.2997503177622554, 0.21694130356452415),
            (10, "eta=1.0", 0.2999969730360536, 0.11120561703793333),
            (10, "eta=0.5", 0.29969021103015625, 0.13219352965153883),
        ];
        for (steps, opts, m, v) in cases {
            testing::assert_gaussian_moments(&Ddim, opts, steps, 40_000, (m, v));
        }
    }

    /// Solver accuracy on Gaussian data N(μ, s²) with its exact ε̂ = √(1−ᾱ)(x − √ᾱμ)/(ᾱs² + 1 − ᾱ): the
    /// probability-flow ODE keeps u = (x_t − √ᾱ_t μ)/√(ᾱ_t s² + 1 − ᾱ_t) constant, so the exact ODE from
    /// x_T at τ_K to τ_1, then x₀(τ_1) = μ + s²√ᾱ u/√(ᾱs² + 1 − ᾱ), is what the solver approximates.
    /// Bounds ≈ 1.5× the max errors of the numpy version (16 values): K = 10, 50, 200: 1.0e-1, 5.3e-2, 1.6e-2 (trailing).
    #[test]
    fn converges_on_gaussian_data() {
        let ab = schedule();
        let (mu, s2) = (0.3f64, 0.25f64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let x_t: Vec<f32> = (0..16).map(|_| rng.sample(StandardNormal)).collect();
        let mut errs = Vec::new();
        for (steps, bound) in [(10, 0.15), (50, 0.08), (200, 0.025)] {
            let mut eps = |x: &[f32], t: usize| {
                let a = ab[t];
                let c = ((1.0 - a).sqrt() / (a * s2 + 1.0 - a)) as f32;
                Ok(x.iter().map(|x| c * (x - (a.sqrt() * mu) as f32)).collect())
            };
            let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: false };
            let opts = Options::parse(&Ddim.info(), "").unwrap();
            let x = Ddim.sample(&ctx, &opts, x_t.clone(), &mut eps, 0).unwrap();
            let ts = timesteps(opts.text("spacing").unwrap().parse().unwrap(), 1000, steps).unwrap();
            let (a_k, a_1) = (ab[*ts.last().unwrap()], ab[ts[0]]);
            let err = x.iter().zip(&x_t).fold(0.0f64, |m, (&got, &xt)| {
                let u = (xt as f64 - a_k.sqrt() * mu) / (a_k * s2 + 1.0 - a_k).sqrt();
                m.max((got as f64 - (mu + s2 * a_1.sqrt() * u / (a_1 * s2 + 1.0 - a_1).sqrt())).abs())
            });
            assert!(err < bound, "{steps} steps: max error {err} ≥ {bound}");
            errs.push(err);
        }
        assert!(errs.windows(2).all(|w| w[1] < w[0]), "errors do not shrink with K: {errs:?}");
    }

    #[test]
    fn options_are_checked() {
        let info = Ddim.info();
        let o = Options::parse(&info, "").unwrap();
        assert_eq!((o.float("eta").unwrap(), o.text("spacing").unwrap()), (0.0, "trailing"));
        assert!(Options::parse(&info, "etta=1").is_err());
        assert!(Options::parse(&info, "spacing=middle").is_err());
        assert!(Options::parse(&info, "eta=true").is_err());
        let ab = schedule();
        let ctx = SamplerContext { alphas_cumprod: &ab, steps: 10, clip_denoised: false };
        let mut eps = |x: &[f32], _t: usize| Ok(x.to_vec());
        let bad = Options::parse(&info, "eta=1.5").unwrap();
        assert!(Ddim.sample(&ctx, &bad, X_T.to_vec(), &mut eps, 0).is_err());
        let too_many = SamplerContext { steps: 1001, ..ctx };
        assert!(Ddim.sample(&too_many, &o, X_T.to_vec(), &mut eps, 0).is_err());
    }
}
