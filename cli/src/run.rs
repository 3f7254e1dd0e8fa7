//! A run folder and the loop that fills it.
//!
//! ```text
//! DIR/run.ron                  graph + training config, human-readable
//! DIR/checkpoint.safetensors   weights, EMA, AdamW moments, step, config (atomic writes)
//! DIR/metrics.jsonl            one JSON object per step
//! DIR/loss.svg                 loss curve, written at the end
//! ```

use anyhow::{Context, Result};
use fine_core::model::device::DeviceSpec;
use fine_core::model::Backend;
use fine_core::train::Trainer;
use fine_core::util::{fsx, plot};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Progress of a long loop: on a terminal a bar with rate and ETA; otherwise
/// (a log file, CI) a plain line at every tenth of the way.
pub struct Meter {
    bar: ProgressBar,
    label: String,
    total: u64,
    t0: Instant,
    next_line: u64,
}

/// The bar's layout: label, elapsed<remaining, bar, count, rate, message.
pub const BAR_TEMPLATE: &str = "{prefix} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} {per_sec} {msg}";

impl Meter {
    /// A meter of `total` units of `label`.
    pub fn new(label: &str, total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(ProgressStyle::with_template(BAR_TEMPLATE).expect("a valid template"));
        bar.set_prefix(label.to_string());
        let total = total as u64;
        Meter { bar, label: label.to_string(), total, t0: Instant::now(), next_line: total.div_ceil(10).max(1) }
    }

    /// `k` more units done.
    pub fn inc(&mut self, k: usize) {
        self.bar.inc(k as u64);
        let pos = self.bar.position();
        if self.bar.is_hidden() && pos >= self.next_line {
            let s = self.t0.elapsed().as_secs_f64();
            let rate = pos as f64 / s.max(1e-9);
            let eta = (self.total.saturating_sub(pos)) as f64 / rate.max(1e-9);
            eprintln!("{}: {pos}/{} ({rate:.2}/s, {s:.0} s elapsed, about {eta:.0} s left)", self.label, self.total);
            self.next_line = pos + self.total.div_ceil(10).max(1);
        }
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend(&self, f: impl FnOnce()) {
        self.bar.suspend(f)
    }

    /// Ends the bar (it disappears from a terminal).
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Paths inside a run folder.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn plot(&self) -> PathBuf {
        self.0.join("loss.svg")
    }
    pub fn run_ron(&self) -> PathBuf {
        self.0.join("run.ron")
    }
}

/// The device `--device` named (set once by `main`; default CPU).
static DEVICE: std::sync::OnceLock<DeviceSpec> = std::sync::OnceLock::new();

/// Records the `--device` of this process.
pub fn set_device(d: DeviceSpec) {
    let _ = DEVICE.set(d);
}

/// The device this process computes on.
pub fn device() -> DeviceSpec {
    DEVICE.get().copied().unwrap_or_default()
}

/// Set by the first Ctrl-C (SIGINT) while a training loop runs: the loop writes
/// a checkpoint of the step it is at and stops. Outside training, or at a
/// second Ctrl-C, the process ends at once (exit 130).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether a training loop is running ([`train_loop`]).
static TRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the Ctrl-C handler ([`INTERRUPTED`]); `main` calls it once.
pub fn catch_interrupts() {
    use std::sync::atomic::Ordering::SeqCst;
    let _ = ctrlc::set_handler(|| {
        if !TRAINING.load(SeqCst) || INTERRUPTED.swap(true, SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after this step (Ctrl-C again to quit at once, without a checkpoint)");
    });
}

/// A run stopped by Ctrl-C after writing the checkpoint of `step` into `dir`.
#[derive(Debug)]
pub struct Interrupted {
    pub step: usize,
    pub dir: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.dir.display();
        write!(
            f,
            "interrupted at step {}: its checkpoint is {d}/checkpoint.safetensors; `fine train --resume {d}` \
             continues it (`fine init` and `fine bench learngene`: run the same command again)",
            self.step
        )
    }
}

impl std::error::Error for Interrupted {}

/// The CPU device, for work that stays on the host whatever `--device` says.
pub fn cpu() -> fine_core::model::store::CpuDevice {
    Default::default()
}

/// Writes `run.ron` describing the run.
pub fn write_run_ron<D: Backend>(dir: &RunDir, t: &Trainer<D>) -> Result<()> {
    let text = format!(
        "// Written by `fine train`. The authoritative copy lives in checkpoint.safetensors.\n(\n    graph: {},\n    train: {},\n)\n",
        fine_core::graph::load::to_ron(&t.dit.graph).replace('\n', "\n    "),
        ron::ser::to_string_pretty(&t.cfg, Default::default())?.replace('\n', "\n    ")
    );
    fsx::write_atomic(&dir.run_ron(), text.as_bytes())
}

/// Drops metric lines past `step` (written by an interrupted run after its last checkpoint).
pub fn truncate_metrics(dir: &RunDir, step: usize) -> Result<()> {
    let path = dir.metrics();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fsx::write_atomic(&path, kept.as_bytes())
}

/// Work done after every step while a run is watched (`fine train
/// --eval-every/--sample-every`); the fields it returns join that step's line
/// of `metrics.jsonl`.
pub type Watch<'a, D> = dyn FnMut(&Trainer<D>) -> Result<serde_json::Map<String, serde_json::Value>> + 'a;

/// Trains until step `until` (≤ config steps), appending metrics, writing
/// checkpoints every `ckpt_every` steps and at the end, then the loss plot.
pub fn train_loop<D: Backend>(t: &mut Trainer<D>, dir: &RunDir, until: usize, label: &str) -> Result<()> {
    train_loop_watched(t, dir, until, label, &mut |_| Ok(Default::default()))
}

/// [`train_loop`] with `watch` run after every step.
pub fn train_loop_watched<D: Backend>(
    t: &mut Trainer<D>,
    dir: &RunDir,
    until: usize,
    label: &str,
    watch: &mut Watch<D>,
) -> Result<()> {
    let _lock = RunLock::take(dir)?;
    let _training = Training::start();
    // Lines past the step the run starts from were written by a process that died
    // before its next checkpoint (or before its first one): they are not this run's.
    truncate_metrics(dir, t.step)?;
    let start = t.step;
    let total = until.saturating_sub(start);
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(BAR_TEMPLATE).expect("a valid template"));
    bar.set_prefix(label.to_string());
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.metrics())
        .with_context(|| format!("opening {}", dir.metrics().display()))?;
    let t0 = Instant::now();
    let report_every = (total / 10).max(1);
    while t.step < until {
        let ts = Instant::now();
        let s = t.train_step()?;
        let ms = ts.elapsed().as_secs_f64() * 1e3;
        let ips = t.cfg.batch as f64 / (ms / 1e3);
        let mut line = serde_json::json!({"step": s.step, "loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr, "step_ms": ms, "images_per_s": ips});
        if let Some(fields) = line.as_object_mut() {
            fields.extend(watch(t)?);
        }
        writeln!(metrics, "{line}")?;
        let done = s.step - start;
        let it_s = done as f64 / t0.elapsed().as_secs_f64();
        bar.set_message(format!("loss {:.4} | {:.2} it/s", s.loss, it_s));
        bar.inc(1);
        if bar.is_hidden() && (done % report_every == 0 || t.step == until) {
            eprintln!("{label} step {}/{} loss {:.4} ({:.2} it/s)", s.step, until, s.loss, it_s);
        }
        let interrupted = INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
        if s.step % t.cfg.ckpt_every == 0 || t.step == until || interrupted {
            metrics.flush()?;
            let ck = t.checkpoint();
            if let Some(name) = ck.first_non_finite() {
                let kept = match fine_core::checkpoint::Checkpoint::load(&dir.checkpoint()) {
                    Ok(old) => format!("the checkpoint of step {} is kept", old.step),
                    Err(_) => "no checkpoint was written".to_string(),
                };
                anyhow::bail!(
                    "`{name}` became non-finite by step {} (learning rate {}): {kept}; lower the learning rate (`lr`, --lr)",
                    s.step,
                    s.lr
                );
            }
            ck.save(&dir.checkpoint())?;
        }
        if interrupted {
            bar.abandon();
            write_loss_plot(dir, label)?;
            return Err(Interrupted { step: s.step, dir: dir.0.clone() }.into());
        }
    }
    bar.finish();
    write_loss_plot(dir, label)?;
    Ok(())
}

/// Marks a training loop as running while it lives ([`TRAINING`]).
struct Training;

impl Training {
    fn start() -> Self {
        TRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
        Training
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        TRAINING.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `DIR/.lock`: one process at a time trains in a run folder. Holds the pid; a
/// lock whose process no longer runs (killed) is taken over; removed on drop.
pub struct RunLock(PathBuf);

impl RunLock {
    /// Takes the lock of `dir`, or says which live process holds it.
    pub fn take(dir: &RunDir) -> Result<Self> {
        let path = dir.0.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())?;
                    return Ok(Self(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = pid.trim().parse::<u32>().is_ok_and(|p| {
                        p == std::process::id()
                            || !Path::new("/proc/self").exists()
                            || Path::new(&format!("/proc/{p}")).exists()
                    });
                    if alive {
                        anyhow::bail!(
                            "{} is being trained by another fine process (pid {}); wait for it or stop it",
                            dir.0.display(),
                            pid.trim()
                        );
                    }
                    let _ = std::fs::remove_file(&path); // its process is gone
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        anyhow::bail!("{}: cannot take the run lock", dir.0.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Draws `loss.svg` from `metrics.jsonl` (raw and EMA-smoothed).
pub fn write_loss_plot(dir: &RunDir, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(dir.metrics()).unwrap_or_default();
    let pts: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
        .collect();
    let smooth = plot::smooth_ema(&pts, 0.05);
    let series = [
        plot::Series { name: "loss".into(), points: pts, marked: false },
        plot::Series { name: "EMA(0.05)".into(), points: smooth, marked: false },
    ];
    plot::line_plot_svg(&dir.plot(), &format!("{title}: training loss"), "step", "ε-MSE", &series, true)
}

/// True if `path` already holds a run.
pub fn has_run(path: &Path) -> bool {
    RunDir(path.to_path_buf()).checkpoint().exists()
}
