//! The sampler interface: a reverse-diffusion solver over host buffers.
//!
//! The host owns the model and classifier-free guidance; a sampler sees only
//! the training schedule's ᾱ, the state `x` and an ε-prediction callback.

use crate::info::{Options, PluginInfo};
use anyhow::{bail, Result};

/// The ε-prediction callback: `(x_t, t) → ε̂` for the whole batch at model
/// timestep `t` (an index into the training schedule, 0..T).
pub type EpsFn<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// What a solver is given besides the state.
#[derive(Debug, Clone, Copy)]
pub struct SamplerContext<'a> {
    /// The training schedule's ᾱ_t, t = 0..T.
    pub alphas_cumprod: &'a [f64],
    /// Number of solver steps K (≤ T).
    pub steps: usize,
    /// Clip the predicted x₀ to [-1, 1] (pixel-space data).
    pub clip_denoised: bool,
}

/// A reverse-diffusion solver.
pub trait Sampler: Send + Sync {
    /// Name, kind, version, options.
    fn info(&self) -> PluginInfo;
    /// Runs the solver from `x` = x_T ~ N(0, I) to x₀. Any noise the solver
    /// needs comes from a generator seeded with `seed`.
    fn sample(&self, ctx: &SamplerContext, opts: &Options, x: Vec<f32>, eps: &mut EpsFn, seed: u64)
        -> Result<Vec<f32>>;
}

/// How K sampling timesteps are placed in 0..T (the names of Lin et al. 2024, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// round(linspace(0, T−1, K)) — includes both ends (DiT's `space_timesteps`).
    Linspace,
    /// 0, s, 2s, … with s = T/K (DDIM's default) — never reaches T−1.
    Leading,
    /// T−1, T−1−s, … with s = T/K, counted from the end — always starts at T−1.
    Trailing,
}

impl std::str::FromStr for Spacing {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linspace" => Spacing::Linspace,
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            _ => bail!("unknown timestep spacing `{s}` (linspace | leading | trailing)"),
        })
    }
}

impl Spacing {
    /// The `spacing` option every sampler offers, defaulting to `default`.
    pub fn option(default: Spacing) -> crate::info::OptionSpec {
        let name = match default {
            Spacing::Linspace => "linspace",
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
        };
        crate::info::OptionSpec::choice(
            "spacing",
            &["linspace", "leading", "trailing"],
            name,
            "placement of the K timesteps in 0..T (trailing starts at T−1)",
        )
    }

    /// The K timesteps of the `spacing` chosen in `opts`.
    pub fn timesteps_from(opts: &Options, t_total: usize, k: usize) -> Result<Vec<usize>> {
        timesteps(opts.text("spacing")?.parse()?, t_total, k)
    }
}

/// K distinct model timesteps in 0..T, ascending.
pub fn timesteps(spacing: Spacing, t_total: usize, k: usize) -> Result<Vec<usize>> {
    if k == 0 || k > t_total {
        bail!("number of sampling steps must be in 1..={t_total}, got {k}");
    }
    let mut ts: Vec<usize> = match spacing {
        Spacing::Linspace if k == 1 => vec![t_total - 1],
        Spacing::Linspace => {
            let stride = (t_total - 1) as f64 / (k - 1) as f64;
            (0..k).map(|i| (i as f64 * stride).round() as usize).collect()
        }
        Spacing::Leading => {
            let s = t_total / k;
            (0..k).map(|i| i * s).collect()
        }
        Spacing::Trailing => {
            let s = t_total as f64 / k as f64;
            (0..k).map(|i| (t_total as f64 - i as f64 * s).round() as usize - 1).rev().collect()
        }
    };
    ts.dedup();
    Ok(ts)
}

/// x₀ from x_t and ε̂: (x_t − √(1−ᾱ)·ε̂)/√ᾱ, optionally clipped to [-1, 1].
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

/// ε consistent with x_t and a (possibly clipped) x₀: (x_t − √ᾱ·x₀)/√(1−ᾱ).
pub fn eps_from_x0(x: &[f32], x0: &[f32], ab: f64) -> Vec<f32> {
    let (a, b) = (ab.sqrt() as f32, (1.0 / (1.0 - ab)).sqrt() as f32);
    x.iter().zip(x0).map(|(x, x0)| (x - a * x0) * b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference spacings (diffusers' DDIMScheduler for leading/trailing, DiT's
    /// space_timesteps for linspace), T = 1000, K = 10:
    /// ```python
    /// import numpy as np
    /// T, K = 1000, 10
    /// print((np.arange(0, K) * (T // K)).tolist())                                  # leading
    /// print((np.round(np.arange(T, 0, -T / K)).astype(int) - 1)[::-1].tolist())    # trailing
    /// print([round(i * (T - 1) / (K - 1)) for i in range(K)])                        # linspace
    /// ```
    #[test]
    fn spacings_match_references() {
        assert_eq!(timesteps(Spacing::Leading, 1000, 10).unwrap(), [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
        assert_eq!(timesteps(Spacing::Trailing, 1000, 10).unwrap(), [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]);
        assert_eq!(timesteps(Spacing::Linspace, 1000, 10).unwrap(), [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]);
        assert!(timesteps(Spacing::Linspace, 1000, 0).is_err());
    }
}

/// Helpers for testing sampler plugins against reference numbers and oracles.
pub mod testing {
    use super::{EpsFn, Sampler, SamplerContext};
    use crate::info::Options;
    use rand::{Rng, SeedableRng};

    /// ᾱ of the linear β schedule 1e-4..0.02 over `t` steps (DDPM's), as
    /// `np.cumprod(1 - np.linspace(1e-4, 0.02, t))`.
    pub fn linear_alphas_cumprod(t: usize) -> Vec<f64> {
        (0..t)
            .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / (t - 1).max(1) as f64)
            .scan(1.0, |a, b| {
                *a *= 1.0 - b;
                Some(*a)
            })
            .collect()
    }

    /// The Gaussian data of the moment tests: N(GAUSS_MU, GAUSS_S2).
    pub const GAUSS_MU: f64 = 0.3;
    /// Its variance.
    pub const GAUSS_S2: f64 = 0.25;

    /// Sample mean and variance of `n` samples of `s` (options `opts`, `steps` steps, no
    /// clipping, sampler seed 11) from x_T ~ N(0, 1) (seed 3) on Gaussian data
    /// N([`GAUSS_MU`], [`GAUSS_S2`]) with its exact ε (T = 1000, linear β). A stochastic
    /// sampler there is linear in x plus independent noise, so its samples are exactly
    /// Gaussian with moments a recursion gives (each sampler's test has the script).
    pub fn gaussian_moments(s: &dyn Sampler, opts: &str, steps: usize, n: usize) -> (f64, f64) {
        let ab = linear_alphas_cumprod(1000);
        let mut eps = |x: &[f32], t: usize| {
            let a = ab[t];
            let c = (1.0 - a).sqrt() / (a * GAUSS_S2 + 1.0 - a);
            Ok(x.iter().map(|&x| (c * (x as f64 - a.sqrt() * GAUSS_MU)) as f32).collect())
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x_t: Vec<f32> = (0..n).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
        let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: false };
        let x = s.sample(&ctx, &Options::parse(&s.info(), opts).unwrap(), x_t, &mut eps, 11).unwrap();
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        (m, x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64)
    }

    /// Asserts [`gaussian_moments`] within 4.5 standard errors of the reference mean `m`
    /// and variance `v`.
    pub fn assert_gaussian_moments(s: &dyn Sampler, opts: &str, steps: usize, n: usize, (m, v): (f64, f64)) {
        let (gm, gv) = gaussian_moments(s, opts, steps, n);
        let (se_m, se_v) = ((v / n as f64).sqrt(), v * (2.0 / n as f64).sqrt());
        assert!((gm - m).abs() < 4.5 * se_m, "{opts:?} K={steps}: mean {gm} vs {m} (se {se_m:.1e})");
        assert!((gv - v).abs() < 4.5 * se_v, "{opts:?} K={steps}: variance {gv} vs {v} (se {se_v:.1e})");
    }

    /// The x_T of the toy reference problems.
    pub const TOY_X_T: [f32; 8] = [-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.75, 1.25];

    /// Runs `s` on the toy problem ε(x, t) = 0.1·x + 0.01·t/1000 (T = 1000, linear β) from
    /// [`TOY_X_T`]; returns every input the model saw and the result.
    pub fn run_toy(s: &dyn Sampler, opts: &str, steps: usize, clip: bool) -> (Vec<Vec<f32>>, Vec<f32>) {
        let ab = linear_alphas_cumprod(1000);
        let mut seen = Vec::new();
        let mut eps = |x: &[f32], t: usize| {
            seen.push(x.to_vec());
            Ok(x.iter().map(|v| 0.1 * v + (0.01 * t as f64 / 1000.0) as f32).collect())
        };
        let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: clip };
        let out = s.sample(&ctx, &Options::parse(&s.info(), opts).unwrap(), TOY_X_T.to_vec(), &mut eps, 0).unwrap();
        (seen, out)
    }

    /// Runs `s` with the exact ε of a one-point data set, (x − √ᾱ·x₀)/√(1−ᾱ), from a
    /// fixed random x_T; returns the result and the data point.
    pub fn oracle_run(s: &dyn Sampler, opts: &str, steps: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let ab = linear_alphas_cumprod(1000);
        let target: Vec<f32> = (0..16).map(|i| (i as f32 / 8.0) - 1.0).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let x_t: Vec<f32> = (0..16).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
        let mut eps = |x: &[f32], t: usize| -> anyhow::Result<Vec<f32>> {
            let a = ab[t];
            Ok(x.iter().zip(&target).map(|(x, x0)| (x - a.sqrt() as f32 * x0) / (1.0 - a).sqrt() as f32).collect())
        };
        let eps: &mut EpsFn = &mut eps;
        let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: true };
        let x = s.sample(&ctx, &Options::parse(&s.info(), opts).unwrap(), x_t, eps, seed).unwrap();
        (x, target)
    }

    /// Asserts |got − want| ≤ rtol·max(1, max|want|) elementwise.
    pub fn assert_close(got: &[f32], want: &[f64], rtol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() <= rtol * scale, "{what}: {got:?} vs {want:?}");
        }
    }
}
