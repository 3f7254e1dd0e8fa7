//! The training loop around [`Trainer::train_step`]: metrics, checkpoints,
//! progress, the loss plot, and a clean stop on Ctrl-C.

use super::meter::Meter;
use super::run_dir::{truncate_metrics, write_loss_plot, RunDir, RunLock};
use crate::model::Backend;
use crate::train::Trainer;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Instant;

/// Set by the first Ctrl-C (SIGINT) while a training loop runs: the loop writes
/// a checkpoint of the step it is at and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether a training loop is running ([`train_loop`]).
static TRAINING: AtomicBool = AtomicBool::new(false);

/// Asks the running training loop to stop after its step (with a checkpoint);
/// the program's Ctrl-C handler calls it. False when no loop runs or a stop was
/// already asked for: the caller then ends the process at once.
pub fn request_stop() -> bool {
    TRAINING.load(SeqCst) && !INTERRUPTED.swap(true, SeqCst)
}

/// A run stopped by Ctrl-C after writing the checkpoint of `step` into `dir`.
#[derive(Debug)]
pub struct Interrupted {
    /// The step whose checkpoint was written.
    pub step: usize,
    /// The run folder.
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
    let mut meter = Meter::new(label, total);
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.metrics())
        .with_context(|| format!("opening {}", dir.metrics().display()))?;
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
        meter.set_message(&format!("step {}/{until} loss {:.4}", s.step, s.loss));
        meter.inc(1);
        let interrupted = INTERRUPTED.load(SeqCst);
        if s.step % t.cfg.ckpt_every == 0 || t.step == until || interrupted {
            metrics.flush()?;
            let ck = t.checkpoint();
            if let Some(name) = ck.first_non_finite() {
                let kept = match crate::checkpoint::Checkpoint::load(&dir.checkpoint()) {
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
            meter.finish();
            write_loss_plot(dir, label)?;
            return Err(Interrupted { step: s.step, dir: dir.0.clone() }.into());
        }
    }
    meter.finish();
    write_loss_plot(dir, label)?;
    Ok(())
}

/// Marks a training loop as running while it lives ([`TRAINING`]).
struct Training;

impl Training {
    fn start() -> Self {
        TRAINING.store(true, SeqCst);
        Training
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        TRAINING.store(false, SeqCst);
    }
}
