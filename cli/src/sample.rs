//! `fine sample`: a PNG grid from a trained run.

use anyhow::{bail, Context, Result};
use clap::Args;
use fine_core::checkpoint::Checkpoint;
use fine_core::diffusion::NoiseSchedule;
use fine_core::model::device::DeviceSpec;
use fine_core::model::{Dit, ParamStore};
use fine_core::pipeline::{Meter, RunDir};
use fine_core::plugin::Registry;
use fine_core::sample::{self as smp, Denoiser, Options};
use fine_core::util::image::{display_scale, save_grid_png_scaled};
use std::path::PathBuf;

/// Options of `fine sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run folder (holds checkpoint.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Output PNG grid.
    #[arg(long)]
    pub out: PathBuf,
    /// Class of every image (default: cycle through the classes, one per column).
    #[arg(long)]
    pub class: Option<usize>,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f32,
    /// Sampling steps (respaced; default: the full schedule).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seed of the initial noise and the sampler's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampler plugin (`fine plugins list`).
    #[arg(long, default_value = "ddpm")]
    pub sampler: String,
    /// Sampler options: `name=value,...` or a RON map (`fine plugins info NAME`).
    #[arg(long, default_value = "")]
    pub sampler_opts: String,
    /// Use the live weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Do not clip the predicted x₀ to [-1, 1].
    #[arg(long)]
    pub no_clip: bool,
}

/// Samples `n` images from a checkpoint; returns NCHW values in [-1, 1] and the labels.
/// Runs on the `--device`.
pub fn sample_images(
    ck: &Checkpoint,
    a: &SampleArgs,
    reg: &Registry,
    device: DeviceSpec,
) -> Result<(Vec<f32>, Vec<usize>)> {
    fine_core::on_device!(device, |dev| sample_on(dev, ck, a, reg))
}

fn sample_on<D: fine_core::model::Backend>(
    dev: D,
    ck: &Checkpoint,
    a: &SampleArgs,
    reg: &Registry,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let g = &ck.graph;
    let classes = g.conditioning.num_classes;
    let labels = match a.class {
        Some(_) if classes == 0 => bail!("--class: the graph `{}` is unconditional (num_classes: 0)", g.name),
        Some(c) if c >= classes => {
            bail!("--class {c} is out of range: the graph has {classes} classes (0..{})", classes - 1)
        }
        Some(c) => vec![c; a.n],
        None => fine_core::sample::cycled_labels(g, a.n),
    };
    let dit = Dit::new(g);
    let weights = if a.no_ema { ck.params.clone() } else { ck.ema.clone() };
    let store = ParamStore::from_values(dev, ck.spec.clone(), weights)?;
    let sched = NoiseSchedule::new(ck.train.beta_schedule, ck.train.diffusion_steps);
    let steps = a.steps.unwrap_or(sched.len());
    let sampler = reg.sampler(&a.sampler)?;
    let opts = Options::parse(&sampler.info(), &a.sampler_opts).context("--sampler-opts")?;
    let den = Denoiser { dit: &dit, store: &store, labels: labels.clone(), cfg_scale: a.cfg, chunk: 64 };
    let mut meter = Meter::new(&format!("sampling {} images", a.n), steps);
    let mut eps = |x: &[f32], t: usize| {
        meter.inc(1);
        den.eps(x, t)
    };
    let x = smp::generate(sampler, &opts, &sched, steps, !a.no_clip, a.n * dit.image_len(), &mut eps, a.seed)?;
    meter.finish();
    Ok((x, labels))
}

/// Runs `fine sample`.
pub fn run(a: SampleArgs, reg: &Registry, device: DeviceSpec) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    if !a.cfg.is_finite() {
        bail!("--cfg must be finite, got {}", a.cfg);
    }
    fine_core::util::fsx::refuse_run_file(&a.out, &a.run, "--out")?;
    let ck = Checkpoint::load(&RunDir(a.run.clone()).checkpoint())?;
    // x, ε̂, x₀ and the sampler's state: a few image-sized f32 buffers per image.
    let bytes = a.n as f64 * ck.graph.input.channels as f64 * (ck.graph.input.height * ck.graph.input.width) as f64;
    fine_core::util::mem::check_fits(6.0 * 4.0 * bytes, &format!("--n {}", a.n))?;
    let (x, _) = sample_images(&ck, &a, reg, device)?;
    let i = &ck.graph.input;
    let nrow = if a.class.is_some() || ck.graph.conditioning.num_classes == 0 {
        (a.n as f64).sqrt().ceil() as usize
    } else {
        ck.graph.conditioning.num_classes.min(a.n)
    };
    save_grid_png_scaled(&a.out, &x, a.n, i.channels, i.height, i.width, nrow, display_scale(i.height, i.width))?;
    println!(
        "wrote {} ({} images, {} steps, sampler {}, cfg {}, {} weights, step {})",
        a.out.display(),
        a.n,
        a.steps.unwrap_or(ck.train.diffusion_steps),
        a.sampler,
        a.cfg,
        if a.no_ema { "live" } else { "EMA" },
        ck.step
    );
    Ok(())
}
