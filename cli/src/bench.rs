//! `fine bench step`: the time of one full training step.

use crate::run;
use anyhow::Result;
use clap::Subcommand;
use fine_core::graph;
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
    /// Compare learngene strategies: ancestries, descendants at several sizes and
    /// seeds, one table (markdown + JSON) and metric-vs-step plots.
    Learngene(crate::bench_learngene::BenchLearngeneArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd, reg: &fine_core::plugin::Registry) -> Result<()> {
    let (gpath, batch, steps, warmup) = match cmd {
        BenchCmd::Step { graph, batch, steps, warmup } => (graph, batch, steps, warmup),
        BenchCmd::Learngene(a) => return crate::bench_learngene::run(a, reg),
    };
    let g = graph::load::from_file(&gpath)?;
    let cfg = TrainConfig { data: "synthetic".into(), batch, steps: warmup + steps, ..Default::default() };
    let mut t = Trainer::new(run::cpu(), &g, cfg, None)?;
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
        serde_json::json!({"impl": "fine-dfdx", "gemm": fine_core::model::kernels::GEMM, "graph": g.name, "batch": batch, "steps": steps, "threads": threads,
            "step_ms": median, "min_ms": ms[0], "images_per_s": batch as f64 / (median / 1e3), "params": t.store.num_values()})
    );
    Ok(())
}
