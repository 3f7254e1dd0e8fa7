//! `fine` — learngene initialization of variable-sized diffusion transformers.
//!
//! Subcommands follow the pipeline: `graph` → `train` → `sample`, plus `demo`
//! (all of it in a few CPU minutes) and `bench` (speed).

mod bench;
mod demo;
mod graph_cmd;
mod run;
mod sample;
mod train;

use clap::{Parser, Subcommand};

/// Learngene initialization of variable-sized diffusion transformers (DiT on dfdx).
#[derive(Parser)]
#[command(name = "fine", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a DiT described by a RON graph on real images (or resume a run).
    Train(train::TrainArgs),
    /// Draw samples from a trained run and write a PNG grid.
    Sample(sample::SampleArgs),
    /// Inspect graph files.
    Graph {
        #[command(subcommand)]
        cmd: graph_cmd::GraphCmd,
    },
    /// Train a small model on the bundled Fashion-MNIST subset and sample from it.
    Demo(demo::DemoArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Train(a) => train::run(a),
        Cmd::Sample(a) => sample::run(a),
        Cmd::Graph { cmd } => graph_cmd::run(cmd),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Bench { cmd } => bench::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
