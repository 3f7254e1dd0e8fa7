//! A run folder: what a training run leaves behind, and the lock that keeps
//! two processes out of one.
//!
//! ```text
//! DIR/run.ron                  graph + training config, human-readable
//! DIR/checkpoint.safetensors   weights, EMA, AdamW moments, step, config (atomic writes)
//! DIR/metrics.jsonl            one JSON object per step
//! DIR/loss.svg                 loss curve, written at the end
//! DIR/.lock                    the pid of the process training here
//! ```

use crate::model::Backend;
use crate::train::Trainer;
use crate::util::{fsx, plot};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// `checkpoint.safetensors`: the whole state of the run.
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    /// `metrics.jsonl`: one line per step.
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    /// `loss.svg`: the loss curve.
    pub fn plot(&self) -> PathBuf {
        self.0.join("loss.svg")
    }
    /// `run.ron`: graph and config, for reading.
    pub fn run_ron(&self) -> PathBuf {
        self.0.join("run.ron")
    }
}

/// True if `path` already holds a run.
pub fn has_run(path: &Path) -> bool {
    RunDir(path.to_path_buf()).checkpoint().exists()
}

/// Creates the folder `dir` (and its parents).
pub fn create(dir: &RunDir) -> Result<()> {
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))
}

/// Writes `run.ron` describing the run.
pub fn write_run_ron<D: Backend>(dir: &RunDir, t: &Trainer<D>) -> Result<()> {
    let text = format!(
        "// Written by `fine train`. The authoritative copy lives in checkpoint.safetensors.\n(\n    graph: {},\n    train: {},\n)\n",
        crate::graph::load::to_ron(&t.dit.graph).replace('\n', "\n    "),
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
