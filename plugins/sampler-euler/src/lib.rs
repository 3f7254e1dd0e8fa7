//! Euler and Euler-ancestral sampling (Karras et al. 2022, "Elucidating the
//! design space of diffusion-based generative models"), as diffusers'
//! `EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler` on the
//! training schedule's discrete noise levels.
//!
//! With z = x_t/√ᾱ_t and σ_t = √((1−ᾱ_t)/ᾱ_t) the probability-flow ODE is
//! dz/dσ = (z − x₀(z, σ))/σ, the model seeing x_t = z/√(1+σ_t²) and
//! x₀ = z − σ_t·ε̂ (clipped to [-1, 1] with `clip_denoised`, which makes the
//! derivative the ε consistent with the clipped x₀). Over model timesteps
//! τ_K > … > τ_1 and σ = 0 after the last one:
//!
//! * Euler: z ← z + (σ_next − σ_t)·d, d = (z − x₀)/σ_t;
//! * ancestral: σ_up = √(σ_next²(σ_t²−σ_next²)/σ_t²), σ_down = √(σ_next²−σ_up²),
//!   z ← z + (σ_down − σ_t)·d + σ_up·n, n ~ N(0, I).
//!
//! The last step (σ_next = 0) gives z = x₀, the result.
//!
//! Start: the given x_T ~ N(0, I) is the variance-preserving state at τ_K, so
//! z = x_T/√ᾱ_{τ_K} = x_T·√(1+σ_max²), σ_max = σ_{τ_K} — diffusers'
//! `init_noise_sigma` for "leading" spacing. (diffusers uses σ_max for
//! "linspace"/"trailing", a 1/σ_max² ≈ 4e-5 relative difference at T = 1000;
//! √(1+σ_max²) is the exact change of variables, so the first model input is
//! x_T itself, as for the other samplers.)

use anyhow::{bail, Result};
use fine_plugin_api::sampler::{predict_x0, Spacing};
use fine_plugin_api::{EpsFn, OptionSpec, Options, PluginInfo, PluginKind, Sampler, SamplerContext};
use rand::{Rng, SeedableRng};

/// The Euler (ancestral) sampler.
#[derive(Debug, Clone, Default)]
pub struct Euler;

fine_plugin_api::builtin_plugin!(Sampler, Euler::default);

/// (σ_down, σ_up) of one step σ → σ_next; (σ_next, 0) for plain Euler.
fn step_sigmas(s: f64, s_next: f64, ancestral: bool) -> (f64, f64) {
    if !ancestral {
        return (s_next, 0.0);
    }
    let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).max(0.0).sqrt();
    ((s_next * s_next - up * up).max(0.0).sqrt(), up)
}

impl Sampler for Euler {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "euler".into(),
            kind: PluginKind::Sampler,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Euler / Euler-ancestral on the discrete σ levels (Karras et al. 2022)".into(),
            options: vec![
                Spacing::option(Spacing::Linspace),
                OptionSpec::bool("ancestral", false, "Euler-ancestral: step down to σ_down, add σ_up noise"),
            ],
        }
    }

    fn sample(
        &self,
        ctx: &SamplerContext,
        opts: &Options,
        x: Vec<f32>,
        eps: &mut EpsFn,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let ab = ctx.alphas_cumprod;
        let ts = Spacing::timesteps_from(opts, ab.len(), ctx.steps)?;
        let ancestral = opts.bool("ancestral")?;
        let sigma = |t: usize| ((1.0 - ab[t]) / ab[t]).sqrt();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let top = ts[ts.len() - 1];
        let scale = (1.0 / ab[top]).sqrt() as f32; // √(1+σ_max²)
        let mut z: Vec<f32> = x.iter().map(|v| v * scale).collect();
        for i in (0..ts.len()).rev() {
            let t = ts[i];
            let s = sigma(t);
            let to_x = ab[t].sqrt() as f32; // 1/√(1+σ²)
            let xt: Vec<f32> = z.iter().map(|v| v * to_x).collect();
            let e = eps(&xt, t)?;
            if e.len() != xt.len() {
                bail!("euler: the denoiser returned {} values for {}", e.len(), xt.len());
            }
            let x0 = predict_x0(&xt, &e, ab[t], ctx.clip_denoised);
            let s_next = if i == 0 { 0.0 } else { sigma(ts[i - 1]) };
            let (down, up) = step_sigmas(s, s_next, ancestral);
            // z + (σ_down − σ)·(z − x₀)/σ = (σ_down/σ)·z + (1 − σ_down/σ)·x₀.
            let (cz, c0, up) = ((down / s) as f32, (1.0 - down / s) as f32, up as f32);
            for (zv, x0v) in z.iter_mut().zip(&x0) {
                let n: f32 = if up > 0.0 { rng.sample(rand_distr::StandardNormal) } else { 0.0 };
                *zv = cz * *zv + c0 * x0v + up * n;
            }
        }
        Ok(z)
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
        testing::run_toy(&Euler, opts, steps, clip)
    }

    /// Reference numbers from the published equations (numpy, f64), cross-checked against
    /// diffusers 0.42.1 `EulerDiscreteScheduler` (linspace; agreement 7e-8 relative, diffusers
    /// keeps its σ table in f32). Script:
    ///
    /// ```python
    /// import numpy as np
    /// T, K = 1000, 10
    /// ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))            # linear β schedule, f64
    /// x_T = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.75, 1.25])
    /// eps = lambda x, t: 0.1 * x + 0.01 * t / 1000               # toy ε-model
    /// ts = [round(i * (T - 1) / (K - 1)) for i in range(K)][::-1]  # linspace: 999, 888, ..., 0
    /// sig = np.sqrt((1 - ab) / ab)                               # VE noise level of z = x_t / √ᾱ_t
    ///
    /// def euler(x, clip, n=K):                                   # Karras et al. 2022, Euler on dz/dσ
    ///     z = x * np.sqrt(1 + sig[ts[0]] ** 2)                   # z_T = x_T / √ᾱ_T
    ///     inputs = []
    ///     for i, t in enumerate(ts[:n]):
    ///         xt = z / np.sqrt(1 + sig[t] ** 2)                  # model input x_t = √ᾱ_t · z
    ///         inputs.append(xt)
    ///         x0 = z - sig[t] * eps(xt, t)
    ///         if clip:
    ///             x0 = np.clip(x0, -1, 1)
    ///         s_next = sig[ts[i + 1]] if i + 1 < K else 0.0
    ///         z = z + (s_next - sig[t]) * (z - x0) / sig[t]
    ///     return z, inputs
    ///
    /// (_, ins), (full, _), (full_clip, _) = euler(x_T, False, 1), euler(x_T, False), euler(x_T, True)
    /// print("in0", ins[0].tolist()); print("full", full.tolist()); print("clip", full_clip.tolist())
    /// _, ins = euler(x_T, False, 2); print("in1", ins[1].tolist())
    ///
    /// # Cross-check against diffusers' EulerDiscreteScheduler (ᾱ replaced by the f64 values above; diffusers
    /// # rounds its σ table to f32, hence rtol 1e-6). Its init_noise_sigma for "linspace" is σ_max, not
    /// # √(σ_max²+1), so the start z_T is set by hand.
    /// import torch
    /// from diffusers import EulerDiscreteScheduler
    /// s = EulerDiscreteScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    ///                            timestep_spacing="linspace")
    /// s.alphas_cumprod = torch.tensor(ab)
    /// s.set_timesteps(K)
    /// assert s.timesteps.tolist() == ts
    /// z = torch.tensor(x_T) * np.sqrt(1 + sig[ts[0]] ** 2)
    /// for t in s.timesteps:
    ///     xt = s.scale_model_input(z, t)
    ///     z = s.step(torch.tensor(eps(xt.numpy(), int(t))), t, z).prev_sample
    /// err = np.abs(z.numpy() - full).max() / np.abs(full).max()
    /// print("diffusers vs numpy", err)
    /// assert err < 1e-6
    /// ```
    #[test]
    fn matches_reference_numbers() {
        let (seen, full) = run_toy("", 10, false);
        assert_eq!(seen.len(), 10);
        // The first model input is x_T itself; after one step (999 → 888) the second one is:
        let in0: Vec<f64> = X_T.iter().map(|&v| v as f64).collect();
        assert_close(&seen[0], &in0, 1e-6, "first input");
        let in1 = [
            -4.0624880291910435,
            -2.7146001290561848,
            -1.3667122289213265,
            -0.6927682788538974,
            -0.018824328786468118,
            0.6551196212809611,
            2.0030075214158196,
            3.350895421550678,
        ];
        assert_close(&seen[1], &in1, 1e-5, "one step");
        let want = [
            -154.17782907911058,
            -103.13423983994778,
            -52.09065060078496,
            -26.56885598120355,
            -1.047061361622146,
            24.474733257959258,
            75.5183224971221,
            126.56191173628493,
        ];
        assert_close(&full, &want, 1e-5, "10 steps");
        let (_, clipped) = run_toy("", 10, true);
        assert_close(&clipped, &[-1.0, -1.0, -1.0, -1.0, -0.7549593448551228, 1.0, 1.0, 1.0], 1e-5, "clipped");
    }

    /// diffusers' EulerAncestralDiscreteScheduler: σ_up² + σ_down² = σ_next², σ_up = 0 onto σ = 0.
    #[test]
    fn ancestral_step_sigmas() {
        // σ = 3 → 1.5: σ_up² = 1.5²·(3² − 1.5²)/3² = 1.6875, σ_down² = 1.5² − 1.6875 = 0.5625
        // (not σ = 2, where 2·2 = 2 + 2 would hide a wrong operator).
        let (down, up) = step_sigmas(3.0, 1.5, true);
        assert!((up - 1.6875f64.sqrt()).abs() < 1e-15 && (down - 0.75).abs() < 1e-15, "{up} {down}");
        assert_eq!(step_sigmas(2.0, 0.0, true), (0.0, 0.0));
        assert_eq!(step_sigmas(2.0, 1.0, false), (1.0, 0.0));
    }

    /// Ancestral Euler on Gaussian data N(0.3, 0.25) with its exact ε: each step is linear in
    /// z plus independent noise σ_up·n, so the samples are N(m, v) exactly, m and v from the
    /// recursion below (float64; it gives DDPM's "small" variance at the same timesteps,
    /// 0.10422 at K = 10 and 0.19642 at K = 50). Bounds: 4.5 standard errors, n = 40,000.
    ///
    /// ```python
    /// import math
    /// T = 1000
    /// betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    /// ab, a = [], 1.0
    /// for b in betas:
    ///     a *= 1 - b
    ///     ab.append(a)
    /// def linspace(k):
    ///     s = (T - 1) / (k - 1)
    ///     return sorted(set(int(math.floor(i * s + 0.5)) for i in range(k)))
    /// MU, S2 = 0.3, 0.25
    /// def moments(k):
    ///     ts = linspace(k)
    ///     sig = lambda t: math.sqrt((1 - ab[t]) / ab[t])
    ///     m, v = 0.0, 1.0 / ab[ts[-1]]                    # z = x_T·√(1+σ_max²)
    ///     for i in reversed(range(len(ts))):
    ///         a = ab[ts[i]]; s = sig(ts[i]); sn = 0.0 if i == 0 else sig(ts[i - 1])
    ///         c = math.sqrt(1 - a) / (a * S2 + 1 - a)     # eps = c·x_t − c·√a·MU
    ///         ka, kb = (1 - math.sqrt(1 - a) * c) / math.sqrt(a), math.sqrt(1 - a) * c * MU
    ///         up = math.sqrt(max(sn * sn * (s * s - sn * sn) / (s * s), 0.0))
    ///         down = math.sqrt(max(sn * sn - up * up, 0.0))
    ///         cz, c0 = down / s, 1 - down / s
    ///         g = cz + c0 * ka * math.sqrt(a)              # x_t = z·√a
    ///         m, v = g * m + c0 * kb, g * g * v + up * up
    ///     return m, v
    /// for k in [10, 50]:
    ///     print(k, moments(k))
    /// ```
    #[test]
    fn ancestral_steps_match_reference_moments_on_gaussian_data() {
        for (steps, m, v) in
            [(10, 0.2999969730360536, 0.1042224895675854), (50, 0.29999697303605366, 0.19642023960197166)]
        {
            testing::assert_gaussian_moments(&Euler, "ancestral=true", steps, 40_000, (m, v));
        }
    }

    /// With the exact ε of a one-point data set the sampler must land on that point.
    #[test]
    fn oracle_denoiser_recovers_the_data_point() {
        let ab = schedule();
        let target: Vec<f32> = (0..16).map(|i| (i as f32 / 8.0) - 1.0).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let x_t: Vec<f32> = (0..16).map(|_| rng.sample(StandardNormal)).collect();
        for (opts, steps_list) in [
            ("", &[50, 10][..]),
            ("spacing=trailing", &[50, 10]),
            ("spacing=leading", &[50, 10]),
            ("ancestral=true", &[50]),
            ("ancestral=true,spacing=trailing", &[50]),
        ] {
            for &steps in steps_list {
                let mut eps = |x: &[f32], t: usize| {
                    let a = ab[t];
                    Ok(x.iter()
                        .zip(&target)
                        .map(|(x, x0)| (x - a.sqrt() as f32 * x0) / (1.0 - a).sqrt() as f32)
                        .collect())
                };
                let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: true };
                let o = Options::parse(&Euler.info(), opts).unwrap();
                let x = Euler.sample(&ctx, &o, x_t.clone(), &mut eps, 3).unwrap();
                let tol = if opts.contains("ancestral") { 1e-2 } else { 1e-3 };
                for (a, b) in x.iter().zip(&target) {
                    assert!((a - b).abs() < tol, "{opts:?}, {steps} steps: {a} vs {b}");
                }
            }
        }
    }

    /// Ancestral noise follows the seed; the deterministic sampler ignores it.
    #[test]
    fn noise_follows_the_seed() {
        let ab = schedule();
        let ctx = SamplerContext { alphas_cumprod: &ab, steps: 10, clip_denoised: false };
        let run = |opts: &str, seed| {
            let mut eps = |x: &[f32], _t: usize| Ok(x.iter().map(|v| 0.5 * v).collect());
            Euler.sample(&ctx, &Options::parse(&Euler.info(), opts).unwrap(), X_T.to_vec(), &mut eps, seed).unwrap()
        };
        let a = run("ancestral=true", 1);
        assert_eq!(a, run("ancestral=true", 1));
        assert_ne!(a, run("ancestral=true", 2));
        assert!(a.iter().all(|v| v.is_finite()));
        assert_eq!(run("", 1), run("", 2));
    }

    /// Solver accuracy on Gaussian data N(μ, s²) with its exact ε̂ = √(1−ᾱ)(x − √ᾱμ)/(ᾱs² + 1 − ᾱ): the
    /// probability-flow ODE keeps u = (x_t − √ᾱ_t μ)/√(ᾱ_t s² + 1 − ᾱ_t) constant, so the exact ODE from
    /// x_T at τ_K to τ_1, then x₀(τ_1) = μ + s²√ᾱ u/√(ᾱs² + 1 − ᾱ), is what the solver approximates.
    /// Bounds ≈ 1.5× the max errors of the numpy version (16 values): K = 10, 50, 200: 3.2e-1, 6.5e-2, 1.6e-2 (linspace; Euler on σ is DDIM's update, same numbers on the same timesteps).
    #[test]
    fn converges_on_gaussian_data() {
        let ab = schedule();
        let (mu, s2) = (0.3f64, 0.25f64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let x_t: Vec<f32> = (0..16).map(|_| rng.sample(StandardNormal)).collect();
        let mut errs = Vec::new();
        for (steps, bound) in [(10, 0.5), (50, 0.1), (200, 0.025)] {
            let mut eps = |x: &[f32], t: usize| {
                let a = ab[t];
                let c = ((1.0 - a).sqrt() / (a * s2 + 1.0 - a)) as f32;
                Ok(x.iter().map(|x| c * (x - (a.sqrt() * mu) as f32)).collect())
            };
            let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: false };
            let opts = Options::parse(&Euler.info(), "").unwrap();
            let x = Euler.sample(&ctx, &opts, x_t.clone(), &mut eps, 0).unwrap();
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
        let info = Euler.info();
        let o = Options::parse(&info, "").unwrap();
        assert_eq!((o.text("spacing").unwrap(), o.bool("ancestral").unwrap()), ("linspace", false));
        assert!(Options::parse(&info, "s_churn=1.0").is_err());
        assert!(Options::parse(&info, "spacing=middle").is_err());
        assert!(Options::parse(&info, "ancestral=yes").is_err());
    }
}
