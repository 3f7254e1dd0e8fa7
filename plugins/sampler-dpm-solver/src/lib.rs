//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast solver for guided
//! sampling of diffusion probabilistic models", algorithm 2): the multistep
//! second-order solver of the probability-flow ODE in data prediction, as
//! diffusers' `DPMSolverMultistepScheduler` with `algorithm_type =
//! "dpmsolver++"`, `solver_order = 2`, `solver_type = "midpoint"`,
//! `lower_order_final = True`, `final_sigmas_type = "zero"`.
//!
//! With α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), λ_t = log(α_t/σ_t), model timesteps
//! τ_K > … > τ_1 and the model's data prediction x₀(t) = (x − σ_t·ε̂)/α_t
//! (clipped to [-1, 1] with `clip_denoised`), one step t → s, h = λ_s − λ_t:
//!
//! * first order (the first step): x_s = (σ_s/σ_t)·x − α_s(e^{−h}−1)·x₀(t);
//! * second order (midpoint) after it: with r = h_prev/h and
//!   D₁ = (x₀(t) − x₀(t_prev))/r,
//!   x_s = (σ_s/σ_t)·x − α_s(e^{−h}−1)·x₀(t) − ½·α_s(e^{−h}−1)·D₁.
//!
//! End of the trajectory: the step from τ_1 goes to the clean sample, σ = 0,
//! α = 1 (λ = +∞; diffusers' default `final_sigmas_type = "zero"`, and ᾱ_prev = 1
//! at the end as for every sampler here). There e^{−h} = 0 and only the
//! first-order update is defined (D₁ would be multiplied by h/h_prev = ∞), and
//! the first-order update to σ = 0 is exactly x₀(τ_1): the result is the
//! model's data prediction at the last timestep. K model evaluations in all.
//! (The original DPM-Solver code ends at ᾱ[0] instead and optionally denoises
//! with one more model call: K+1 evaluations, or σ ≈ √(1−ᾱ[0]) of noise left.)
//!
//! `lower_order_final` (diffusers' flag, default true): the step onto σ = 0 is
//! first order anyway (diffusers forces it for `final_sigmas_type = "zero"`,
//! where the flag has no effect for a second-order solver). The flag acts
//! where diffusers' `final_sigmas_type = "sigma_min"` would: when the last
//! model timestep is τ_1 = 0 (linspace and leading spacing), the step τ_2 → 0
//! lands on the schedule's smallest noise level with a large h, and it is made
//! first order when fewer than 15 solver steps precede the final denoising
//! (K − 1 < 15). This is exactly diffusers' `sigma_min` run over τ_K … τ_2
//! followed by x₀(0). With trailing spacing (τ_1 > 0, the default) the flag
//! changes nothing and the sampler equals diffusers' default configuration.

use anyhow::{bail, Result};
use fine_plugin_api::sampler::{predict_x0, Spacing};
use fine_plugin_api::{EpsFn, OptionSpec, Options, PluginInfo, PluginKind, Sampler, SamplerContext};

/// The DPM-Solver++(2M) sampler.
#[derive(Debug, Clone, Default)]
pub struct DpmSolver;

fine_plugin_api::builtin_plugin!(Sampler, DpmSolver::default);

impl Sampler for DpmSolver {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "dpm-solver".into(),
            kind: PluginKind::Sampler,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd-order ODE solver in data prediction".into(),
            options: vec![
                Spacing::option(Spacing::Trailing),
                OptionSpec::bool(
                    "lower_order_final",
                    true,
                    "with K ≤ 15, a step onto t = 0 (linspace/leading spacing) is first order",
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
        _seed: u64,
    ) -> Result<Vec<f32>> {
        let ab = ctx.alphas_cumprod;
        let ts = Spacing::timesteps_from(opts, ab.len(), ctx.steps)?;
        // A step onto t = 0 (σ_min) is first order with few steps (see the crate docs).
        let lower_order_final = opts.bool("lower_order_final")? && ts.len() - 1 < 15;
        let alpha = |t: usize| ab[t].sqrt();
        let sigma = |t: usize| (1.0 - ab[t]).sqrt();
        let lambda = |t: usize| 0.5 * (ab[t] / (1.0 - ab[t])).ln();
        // (x₀ of the previous step, its h) for the second-order update.
        let mut prev: Option<(Vec<f32>, f64)> = None;
        for i in (0..ts.len()).rev() {
            let t = ts[i];
            let e = eps(&x, t)?;
            if e.len() != x.len() {
                bail!("dpm-solver: the denoiser returned {} values for {}", e.len(), x.len());
            }
            let x0 = predict_x0(&x, &e, ab[t], ctx.clip_denoised);
            if i == 0 {
                // First-order step onto σ = 0, α = 1: x = 0·x + 1·(1 − 0)·x₀.
                return Ok(x0);
            }
            let s = ts[i - 1];
            let h = lambda(s) - lambda(t);
            let cx = (sigma(s) / sigma(t)) as f32;
            let c0 = -alpha(s) * (-h).exp_m1(); // −α_s(e^{−h}−1)
            match prev.as_ref().filter(|_| !(lower_order_final && s == 0)) {
                None => {
                    let c0 = c0 as f32;
                    for (xv, x0v) in x.iter_mut().zip(&x0) {
                        *xv = cx * *xv + c0 * x0v;
                    }
                }
                Some((x0_prev, h_prev)) => {
                    let c1 = 0.5 * c0 * h / h_prev; // ½·(−α_s(e^{−h}−1))/r
                    let (c0, c1) = (c0 as f32, c1 as f32);
                    for ((xv, x0v), x0p) in x.iter_mut().zip(&x0).zip(x0_prev) {
                        *xv = cx * *xv + c0 * x0v + c1 * (x0v - x0p);
                    }
                }
            }
            prev = Some((x0, h));
        }
        unreachable!("timesteps() returns at least one step")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fine_plugin_api::sampler::testing::{self, assert_close, TOY_X_T as X_T};
    use fine_plugin_api::sampler::timesteps;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    fn schedule() -> Vec<f64> {
        testing::linear_alphas_cumprod(1000)
    }

    fn run_toy(opts: &str, steps: usize, clip: bool) -> (Vec<Vec<f32>>, Vec<f32>) {
        testing::run_toy(&DpmSolver, opts, steps, clip)
    }

    /// Reference numbers from the published equations (numpy, f64), cross-checked against
    /// diffusers 0.42.1 `DPMSolverMultistepScheduler` (dpmsolver++, order 2, midpoint,
    /// lower_order_final, final_sigmas_type="zero", trailing; clipping as thresholding with
    /// ratio 0 and max 1; agreement 2.5e-7 / 5e-8 relative, diffusers keeps its σ table in f32).
    /// With lower_order_final=False diffusers gives the same numbers. Script:
    ///
    /// ```python
    /// import numpy as np
    /// T, K = 1000, 10
    /// ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))            # linear β schedule, f64
    /// x_T = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.75, 1.25])
    /// eps = lambda x, t: 0.1 * x + 0.01 * t / 1000               # toy ε-model
    /// ts = (np.round(np.arange(T, 0, -T / K)).astype(int) - 1)   # trailing: 999, 899, ..., 99
    ///
    /// def dpmpp_2m(x, clip, n=K):                                # Lu et al. 2022, DPM-Solver++(2M), alg. 2
    ///     al, sg = np.sqrt(ab), np.sqrt(1 - ab)
    ///     lam = np.log(al / sg)
    ///     x0_prev = h_prev = None
    ///     for i, t in enumerate(ts[:n]):
    ///         x0 = (x - sg[t] * eps(x, t)) / al[t]
    ///         if clip:
    ///             x0 = np.clip(x0, -1, 1)
    ///         if i + 1 == K:                                     # last step: to σ = 0, α = 1 (first order) → x0
    ///             return x0
    ///         s = ts[i + 1]
    ///         h = lam[s] - lam[t]
    ///         x_new = sg[s] / sg[t] * x - al[s] * np.expm1(-h) * x0
    ///         if i > 0:                                          # second order (midpoint), r = h_prev / h
    ///             x_new -= 0.5 * al[s] * np.expm1(-h) * (h / h_prev) * (x0 - x0_prev)
    ///         x, x0_prev, h_prev = x_new, x0, h
    ///     return x
    ///
    /// one, two, full, full_clip = dpmpp_2m(x_T, False, 1), dpmpp_2m(x_T, False, 2), dpmpp_2m(x_T, False), dpmpp_2m(x_T, True)
    /// for k, v in [("one", one), ("two", two), ("full", full), ("clip", full_clip)]:
    ///     print(k, v.tolist())
    ///
    /// # Cross-check against diffusers' DPMSolverMultistepScheduler (ᾱ replaced by the f64 values above;
    /// # diffusers rounds its σ table to f32, hence rtol 1e-6).
    /// import torch
    /// from diffusers import DPMSolverMultistepScheduler
    /// for clip, want in [(False, full), (True, full_clip)]:
    ///     s = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    ///                                     algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
    ///                                     lower_order_final=True, final_sigmas_type="zero", timestep_spacing="trailing",
    ///                                     thresholding=clip, dynamic_thresholding_ratio=0.0, sample_max_value=1.0)
    ///     s.alphas_cumprod = torch.tensor(ab)
    ///     s.set_timesteps(K)
    ///     assert s.timesteps.tolist() == ts.tolist()
    ///     x = torch.tensor(x_T).reshape(1, 1, -1)               # (B, C, …) for thresholding
    ///     for t in s.timesteps:
    ///         x = s.step(torch.tensor(eps(x.numpy(), int(t))), t, x).prev_sample
    ///     x = x.reshape(-1)
    ///     err = np.abs(x.numpy() - want).max() / np.abs(want).max()
    ///     print("diffusers vs numpy, clip =", clip, err)
    ///     assert err < 1e-6
    /// ```
    #[test]
    fn matches_reference_numbers() {
        let (seen, full) = run_toy("", 10, false);
        assert_eq!(seen.len(), 10);
        // After the first (first-order) step, 999 → 899: the input of the second model call.
        let one = [
            -3.6913865370041585,
            -2.4662903837313377,
            -1.241194230458517,
            -0.628646153822107,
            -0.016098077185696686,
            0.5964499994507135,
            1.8215461527235342,
            3.0466423059963548,
        ];
        assert_close(&seen[1], &one, 1e-5, "one step");
        // After the second (second-order) step, 899 → 799.
        let two = [
            -8.085973934977629,
            -5.406126349463723,
            -2.7262787639498196,
            -1.3863549711928675,
            -0.04643117843591523,
            1.293492614321037,
            3.9733401998349414,
            6.653187785348847,
        ];
        assert_close(&seen[2], &two, 1e-5, "two steps");
        let want = [
            -138.97464679038973,
            -92.95379352090248,
            -46.9329402514153,
            -23.922513616671633,
            -0.9120869819280084,
            22.098339652815607,
            68.11919292230283,
            114.1400461917901,
        ];
        assert_close(&full, &want, 1e-5, "10 steps");
        // With τ_1 > 0 lower_order_final changes nothing (as in diffusers).
        assert_eq!(run_toy("lower_order_final=false", 10, false).1, full);
        let (_, clipped) = run_toy("", 10, true);
        assert_close(&clipped, &[-1.0, -1.0, -1.0, -1.0, -0.6945650679808919, 1.0, 1.0, 1.0], 1e-5, "clipped");
    }

    /// `lower_order_final` with linspace spacing (τ_1 = 0): the step 111 → 0 is first order.
    /// Numbers from the equations (numpy, f64), cross-checked against diffusers 0.42.1
    /// `DPMSolverMultistepScheduler` with final_sigmas_type="sigma_min" over τ_K … τ_2 followed by
    /// x₀ at t = 0 (agreement 7e-8 / 3e-8 relative). Script:
    ///
    /// ```python
    /// import numpy as np
    /// T, K = 1000, 10
    /// ab = np.cumprod(1 - np.linspace(1e-4, 0.02, T))            # linear β schedule, f64
    /// x_T = np.array([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.75, 1.25])
    /// eps = lambda x, t: 0.1 * x + 0.01 * t / 1000               # toy ε-model
    /// al, sg = np.sqrt(ab), np.sqrt(1 - ab)
    /// lam = np.log(al / sg)
    ///
    /// def dpmpp_2m(x, ts, lof):                                  # ts descending; steps τ_i → τ_{i+1}, then → σ = 0
    ///     x0_prev = h_prev = None
    ///     for i, t in enumerate(ts):
    ///         x0 = (x - sg[t] * eps(x, t)) / al[t]
    ///         if i + 1 == len(ts):
    ///             return x0
    ///         s = ts[i + 1]
    ///         h = lam[s] - lam[t]
    ///         x_new = sg[s] / sg[t] * x - al[s] * np.expm1(-h) * x0
    ///         if i > 0 and not (lof and s == 0 and len(ts) < 15):   # the step onto t = 0 (σ_min) first order
    ///             x_new -= 0.5 * al[s] * np.expm1(-h) * (h / h_prev) * (x0 - x0_prev)
    ///         x, x0_prev, h_prev = x_new, x0, h
    ///     return x
    ///
    /// lin = [round(i * (T - 1) / (K - 1)) for i in range(K)][::-1]  # linspace: 999, 888, ..., 111, 0
    /// lof_on, lof_off = dpmpp_2m(x_T, lin, True), dpmpp_2m(x_T, lin, False)
    /// print("linspace lof", lof_on.tolist()); print("linspace no lof", lof_off.tolist())
    ///
    /// # diffusers: final_sigmas_type="sigma_min" ends at σ(ᾱ[0]) = our t = 0; run it over τ_K..τ_2 and denoise at t = 0.
    /// import torch
    /// from diffusers import DPMSolverMultistepScheduler
    /// for lof, want in [(True, lof_on), (False, lof_off)]:
    ///     s = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    ///                                     algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
    ///                                     lower_order_final=lof, final_sigmas_type="sigma_min")
    ///     s.alphas_cumprod = torch.tensor(ab)
    ///     s.set_timesteps(timesteps=lin[:-1])
    ///     x = torch.tensor(x_T)
    ///     for t in s.timesteps:
    ///         x = s.step(torch.tensor(eps(x.numpy(), int(t))), t, x).prev_sample
    ///     x = x.numpy()
    ///     x = (x - sg[0] * eps(x, 0)) / al[0]
    ///     err = np.abs(x - want).max() / np.abs(want).max()
    ///     print("diffusers vs numpy, lower_order_final =", lof, err)
    ///     assert err < 1e-6
    /// ```
    #[test]
    fn lower_order_final_matches_diffusers_sigma_min() {
        let on = [
            -140.20824245726675,
            -93.78021934180877,
            -47.352196226350834,
            -24.138184668621875,
            -0.9241731108928929,
            22.28983844683608,
            68.71786156229402,
            115.14588467775202,
        ];
        let off = [
            -135.62305894368893,
            -90.71258867870348,
            -45.80211841371802,
            -23.346883281225296,
            -0.8916481487325498,
            21.563586983760185,
            66.47405724874562,
            111.3845275137312,
        ];
        let (seen, x) = run_toy("spacing=linspace", 10, false);
        assert_eq!(seen.len(), 10);
        assert_close(&x, &on, 1e-5, "linspace, lower_order_final");
        assert_close(&run_toy("spacing=linspace,lower_order_final=false", 10, false).1, &off, 1e-5, "linspace");
    }

    /// `lower_order_final` acts as diffusers' `len(timesteps) < 15` does on the K − 1
    /// timesteps it solves over before the step onto t = 0 (see the reference test above):
    /// at 14 and 15 steps it changes the result, at 16 it does not (linspace spacing, whose
    /// last step lands on t = 0, where the option matters).
    #[test]
    fn lower_order_final_applies_below_15_steps() {
        for (steps, acts) in [(14, true), (15, true), (16, false)] {
            let on = run_toy("spacing=linspace", steps, false).1;
            let off = run_toy("spacing=linspace,lower_order_final=false", steps, false).1;
            assert_eq!(on != off, acts, "{steps} steps: lower_order_final acts = {}", on != off);
        }
    }

    /// With the exact ε of a one-point data set the solver must land on that point.
    #[test]
    fn oracle_denoiser_recovers_the_data_point() {
        let ab = schedule();
        let target: Vec<f32> = (0..16).map(|i| (i as f32 / 8.0) - 1.0).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let x_t: Vec<f32> = (0..16).map(|_| rng.sample(StandardNormal)).collect();
        for opts in ["", "spacing=linspace", "spacing=leading", "lower_order_final=false"] {
            for steps in [50, 10] {
                let mut eps = |x: &[f32], t: usize| {
                    let a = ab[t];
                    Ok(x.iter()
                        .zip(&target)
                        .map(|(x, x0)| (x - a.sqrt() as f32 * x0) / (1.0 - a).sqrt() as f32)
                        .collect())
                };
                let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: true };
                let o = Options::parse(&DpmSolver.info(), opts).unwrap();
                let x = DpmSolver.sample(&ctx, &o, x_t.clone(), &mut eps, 0).unwrap();
                for (a, b) in x.iter().zip(&target) {
                    assert!((a - b).abs() < 1e-3, "{opts:?}, {steps} steps: {a} vs {b}");
                }
            }
        }
    }

    /// Solver accuracy on Gaussian data N(μ, s²) with its exact ε̂ = √(1−ᾱ)(x − √ᾱμ)/(ᾱs² + 1 − ᾱ): the
    /// probability-flow ODE keeps u = (x_t − √ᾱ_t μ)/√(ᾱ_t s² + 1 − ᾱ_t) constant, so the exact ODE from
    /// x_T at τ_K to τ_1, then x₀(τ_1) = μ + s²√ᾱ u/√(ᾱs² + 1 − ᾱ), is what the solver approximates.
    /// Bounds ≈ 1.5× the max errors of the numpy version (16 values): K = 10, 50, 200: 2.1e-2, 1.5e-2, 2.1e-3 (trailing) — second order, vs DDIM's 1.0e-1, 5.3e-2, 1.6e-2.
    #[test]
    fn converges_on_gaussian_data() {
        let ab = schedule();
        let (mu, s2) = (0.3f64, 0.25f64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let x_t: Vec<f32> = (0..16).map(|_| rng.sample(StandardNormal)).collect();
        let mut errs = Vec::new();
        for (steps, bound) in [(10, 0.035), (50, 0.022), (200, 0.0035)] {
            let mut eps = |x: &[f32], t: usize| {
                let a = ab[t];
                let c = ((1.0 - a).sqrt() / (a * s2 + 1.0 - a)) as f32;
                Ok(x.iter().map(|x| c * (x - (a.sqrt() * mu) as f32)).collect())
            };
            let ctx = SamplerContext { alphas_cumprod: &ab, steps, clip_denoised: false };
            let opts = Options::parse(&DpmSolver.info(), "").unwrap();
            let x = DpmSolver.sample(&ctx, &opts, x_t.clone(), &mut eps, 0).unwrap();
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
        let info = DpmSolver.info();
        let o = Options::parse(&info, "").unwrap();
        assert_eq!((o.text("spacing").unwrap(), o.bool("lower_order_final").unwrap()), ("trailing", true));
        assert!(Options::parse(&info, "order=3").is_err());
        assert!(Options::parse(&info, "spacing=middle").is_err());
        assert!(Options::parse(&info, "lower_order_final=1").is_err());
        let ab = schedule();
        let ctx = SamplerContext { alphas_cumprod: &ab, steps: 0, clip_denoised: false };
        let mut eps = |x: &[f32], _t: usize| Ok(x.to_vec());
        assert!(DpmSolver.sample(&ctx, &o, X_T.to_vec(), &mut eps, 0).is_err());
    }
}
