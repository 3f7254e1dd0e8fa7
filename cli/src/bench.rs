//! `fine bench step`: the time of one full training step.
//! `fine bench inception`: FID-Inception feature throughput on CPU.
//! `fine bench gemm`: matrix-product backends on a DiT block's shapes.

use anyhow::Result;
use clap::Subcommand;
use fine_core::graph;
use fine_core::model::device::DeviceSpec;
use fine_core::train::{TrainConfig, Trainer};
use std::path::PathBuf;
use std::time::Instant;

/// Benchmark subcommands.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Time full training steps (forward, ε-MSE, backward, clipping, AdamW, EMA)
    /// on synthetic data of the graph's shape; prints one JSON line.
    Step {
        /// Graph file.
        #[arg(long)]
        graph: PathBuf,
        /// Images per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed warmup steps.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
    },
    /// Time FID-Inception features (pool3 + sFID spatial) of the first N bundled
    /// Fashion-MNIST images, with pytorch-fid's preprocessing; prints one JSON line.
    Inception {
        /// Images (after one untimed warmup batch).
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Images per batch.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Check the `--device` against the CPU on one graph: a few optimizer
    /// steps from the same weights and batches (the device running its own
    /// optimizer on the device), then forward and every gradient from the
    /// same trained weights; prints one JSON line and fails when a relative
    /// error exceeds `--tol`.
    Parity {
        /// Graph file.
        #[arg(long)]
        graph: PathBuf,
        /// Images per batch.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Optimizer steps compared after the first forward/backward.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Largest accepted relative error (max |a−b| / max |a|, per tensor).
        #[arg(long, default_value_t = 1e-4)]
        tol: f64,
    },
    /// Time every matrix-product backend on one DiT block's linear layers
    /// (forward, input and weight gradients), interleaved; prints a table.
    Gemm {
        /// Rows of the activations (batch × tokens; DiT-S/2 at batch 8: 2048).
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// Hidden width (DiT-S: 384).
        #[arg(long, default_value_t = 384)]
        hidden: usize,
        /// Timed repetitions per product (the best is kept).
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
    /// Compare learngene strategies: ancestries, descendants at several sizes and
    /// seeds, one table (markdown + JSON) and metric-vs-step plots.
    Learngene(crate::bench_learngene::BenchLearngeneArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd, reg: &fine_core::plugin::Registry, device: DeviceSpec) -> Result<()> {
    let (gpath, batch, steps, warmup) = match cmd {
        BenchCmd::Step { graph, batch, steps, warmup } => (graph, batch, steps, warmup),
        BenchCmd::Learngene(a) => return crate::bench_learngene::run(a, reg, device),
        BenchCmd::Inception { n, batch, threads } => return inception(n, batch, threads),
        BenchCmd::Gemm { tokens, hidden, reps } => return crate::bench_gemm::run(tokens, hidden, reps),
        BenchCmd::Parity { graph, batch, steps, tol } => {
            if !(tol.is_finite() && tol >= 0.0) {
                anyhow::bail!("--tol must be a finite number ≥ 0, got {tol}");
            }
            return fine_core::on_device!(device, |dev| parity(dev, device, &graph, batch, steps, tol));
        }
    };
    if steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    fine_core::on_device!(device, |dev| step(dev, device, &gpath, batch, steps, warmup))
}

/// `fine bench step`.
fn step<D: fine_core::model::Backend>(
    dev: D,
    device: DeviceSpec,
    gpath: &std::path::Path,
    batch: usize,
    steps: usize,
    warmup: usize,
) -> Result<()> {
    let g = graph::load::from_file(gpath)?;
    let cfg = TrainConfig { data: "synthetic".into(), batch, steps: warmup + steps, ..Default::default() };
    let mut t = Trainer::new(dev, &g, cfg, None)?;
    for _ in 0..warmup {
        t.train_step()?;
    }
    let mut ms = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t0 = Instant::now();
        t.train_step()?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "{}",
        serde_json::json!({"impl": "fine-dfdx", "device": device.to_string(), "gemm": fine_core::model::kernels::gemm_backend(), "graph": g.name, "batch": batch, "steps": steps, "threads": threads,
            "step_ms": median, "min_ms": ms[0], "images_per_s": batch as f64 / (median / 1e3), "params": t.store.num_values()})
    );
    Ok(())
}

/// `fine bench inception`.
fn inception(n: usize, batch: usize, threads: Option<usize>) -> Result<()> {
    use fine_core::data::{self, Split};
    use fine_core::eval::inception::Inception;
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let net = Inception::load(&Inception::default_path())?.with_threads(threads).with_batch_size(batch);
    let ds = data::load("bundled", Split::Train)?;
    let px = ds.channels * ds.height * ds.width;
    if n == 0 || batch + n > ds.len {
        anyhow::bail!("--n must be in 1..={} (the bundled images after one warmup batch)", ds.len - batch);
    }
    net.features_u8(&ds.images[..batch * px], batch, ds.height, ds.width, true, &|_| {})?; // warmup
    let t0 = Instant::now();
    net.features_u8(&ds.images[..n * px], n, ds.height, ds.width, true, &|_| {})?;
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"impl": "fine", "gemm": fine_core::model::kernels::gemm_backend(), "images": n, "batch": batch, "threads": threads, "seconds": s, "images_per_s": n as f64 / s})
    );
    Ok(())
}

/// Largest |a−b| over largest |a| (0 when both are 0).
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    let scale = a.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(1e-30)
    }
}

/// `fine bench parity`: the `--device` against the CPU.
fn parity<D: fine_core::model::Backend>(
    dev: D,
    device: DeviceSpec,
    gpath: &std::path::Path,
    batch: usize,
    steps: usize,
    tol: f64,
) -> Result<()> {
    use fine_core::train::{loss, trainer::step_rng};
    let g = graph::load::from_file(gpath)?;
    let cfg = TrainConfig { data: "synthetic".into(), batch, steps: steps.max(1), ..Default::default() };
    let mut cpu = Trainer::new(fine_core::model::store::CpuDevice::default(), &g, cfg.clone(), None)?;
    let mut other = Trainer::new(dev, &g, cfg, None)?;
    // CPU against CPU compares the host optimizer with the device one (tensor
    // ops, what a GPU runs); a GPU runs its own device optimizer anyway.
    other.set_device_step(true);
    // Optimizer steps from the same weights and batches.
    let mut losses = Vec::new();
    for _ in 0..steps {
        let (a, b) = (cpu.train_step()?, other.train_step()?);
        losses.push(rel_err(&[a.loss], &[b.loss]));
    }
    let (pa, pb) = (cpu.store.host_values(), other.store.host_values());
    let params = pa.iter().map(|(n, a)| rel_err(a, &pb[n])).fold(0.0, f64::max);
    // Then, from the CPU's trained weights on both, one fixed noisy batch:
    // forward and every gradient. (Not at initialization, where adaLN-Zero's
    // zeroed final layer makes every prediction exactly 0 and most gradients 0.)
    for (name, v) in pa {
        other.store.set(&name, v)?;
    }
    let mut rng = step_rng(7, 0);
    let idx: Vec<usize> = (0..batch).map(|i| i % cpu.data.len).collect();
    let mut x0 = Vec::new();
    cpu.data.fill_batch(&idx, &mut x0);
    let y = cpu.data.labels_of(&idx);
    let (x_t, t, eps) = cpu.schedule().noisy_batch(&x0, batch, &mut rng);
    let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let fa = cpu.dit.predict(&cpu.store.view(), &x_t, &tf, &y)?;
    let fb = other.dit.predict(&other.store.view(), &x_t, &tf, &y)?;
    let forward = rel_err(&fa, &fb);
    let (la, ga) = loss::eps_mse_and_grads(&cpu.dit, &cpu.store, &x_t, &tf, &y, &eps)?;
    let (lb, gb) = loss::eps_mse_and_grads(&other.dit, &other.store, &x_t, &tf, &y, &eps)?;
    let mut grad = (0.0f64, String::new());
    for (name, a) in &ga {
        let e = rel_err(a, gb.get(name).ok_or_else(|| anyhow::anyhow!("no gradient of `{name}` on the device"))?);
        if e >= grad.0 {
            grad = (e, name.clone());
        }
    }
    let worst =
        [forward, grad.0, rel_err(&[la], &[lb]), params].into_iter().chain(losses.iter().copied()).fold(0.0, f64::max);
    println!(
        "{}",
        serde_json::json!({"device": device.to_string(), "graph": g.name, "batch": batch,
            // On the CPU both sides run the same kernels: forward and gradients agree by
            // construction and only the optimizers (host against device) are compared.
            "same_kernels": device.to_string() == "cpu",
            "forward_rel": forward, "loss_rel": rel_err(&[la], &[lb]), "grad_rel": grad.0, "grad_worst": grad.1,
            "step_loss_rel": losses, "params_rel_after_steps": params, "tol": tol, "ok": worst <= tol})
    );
    if !(worst <= tol) {
        anyhow::bail!("{} differs from the CPU by {worst:.3e} (relative), above --tol {tol:.1e}", device);
    }
    Ok(())
}
