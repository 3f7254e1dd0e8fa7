//! `heun`: a third-party sampler plugin — the deterministic second-order Heun
//! solver of Karras et al. 2022 (EDM, Algorithm 1 without churn) on the
//! training schedule's discrete noise levels.
//!
//! With z = x_t/√ᾱ_t and σ_t = √((1−ᾱ_t)/ᾱ_t) the probability-flow ODE is
//! dz/dσ = ε(z/√(1+σ²), t), so one step from σ to σ' is
//! z' = z + (σ'−σ)·(ε(z) + ε(z_euler))/2, with Euler on the last step to σ = 0.
//!
//! Build: `cargo build --release -p fine-example-heun`, then
//! `fine --plugin target/release/libfine_example_heun.so sample --sampler heun ...`.

use anyhow::Result;
use fine_plugin_api::sampler::{predict_x0, timesteps, Spacing};
use fine_plugin_api::{EpsFn, OptionSpec, Options, PluginInfo, PluginKind, Sampler, SamplerContext};

/// The Heun sampler.
#[derive(Default)]
pub struct Heun;

fine_plugin_api::export_plugin!(Sampler, Heun::default);

fn eps_at(x: &[f32], z: &[f32], t: usize, ab: f64, clip: bool, eps: &mut EpsFn) -> Result<Vec<f32>> {
    let e = eps(x, t)?;
    if !clip {
        return Ok(e);
    }
    // ε consistent with the clipped x₀ in z-space: (z − x₀)/σ.
    let x0 = predict_x0(x, &e, ab, true);
    let sigma = ((1.0 - ab) / ab).sqrt() as f32;
    Ok(z.iter().zip(&x0).map(|(z, x0)| (z - x0) / sigma).collect())
}

impl Sampler for Heun {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: "heun".into(),
            kind: PluginKind::Sampler,
            version: "0.1.0".into(),
            description: "deterministic 2nd-order Heun ODE solver (Karras et al. 2022), third-party example".into(),
            options: vec![OptionSpec::choice(
                "fail",
                &["none", "error", "panic"],
                "none",
                "make the plugin fail on purpose (to test the host's handling of broken plugins)",
            )],
        }
    }

    fn sample(
        &self,
        ctx: &SamplerContext,
        opts: &Options,
        x: Vec<f32>,
        eps: &mut EpsFn,
        _seed: u64,
    ) -> Result<Vec<f32>> {
        match opts.text("fail")? {
            "error" => anyhow::bail!("heun was asked to fail"),
            "panic" => panic!("heun was asked to panic"),
            _ => {}
        }
        let ab = ctx.alphas_cumprod;
        let ts = timesteps(Spacing::Linspace, ab.len(), ctx.steps)?;
        let sigma = |t: usize| ((1.0 - ab[t]) / ab[t]).sqrt();
        let to_x = |z: &[f32], t: usize| -> Vec<f32> { z.iter().map(|v| v * ab[t].sqrt() as f32).collect() };
        let top = *ts.last().unwrap();
        let mut z: Vec<f32> = x.iter().map(|v| v * (1.0 + sigma(top).powi(2)).sqrt() as f32).collect();
        for i in (0..ts.len()).rev() {
            let t = ts[i];
            let d = eps_at(&to_x(&z, t), &z, t, ab[t], ctx.clip_denoised, eps)?;
            let s_next = if i == 0 { 0.0 } else { sigma(ts[i - 1]) };
            let h = (s_next - sigma(t)) as f32;
            let z_euler: Vec<f32> = z.iter().zip(&d).map(|(z, d)| z + h * d).collect();
            if i == 0 {
                z = z_euler;
                break;
            }
            let tn = ts[i - 1];
            let d2 = eps_at(&to_x(&z_euler, tn), &z_euler, tn, ab[tn], ctx.clip_denoised, eps)?;
            z = z.iter().zip(d.iter().zip(&d2)).map(|(z, (a, b))| z + h * 0.5 * (a + b)).collect();
        }
        Ok(z)
    }
}
