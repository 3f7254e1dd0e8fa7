//! `fine` — learngene initialization of variable-sized diffusion transformers.
//!
//! Subcommands follow the pipeline: `graph` → `train` → `sample`, plus `demo`
//! (all of it in a few CPU minutes) and `bench` (speed).

mod bench;
mod bench_gemm;
mod bench_learngene;
mod data_cmd;
mod demo;
mod eval;
mod export;
mod graph_cmd;
mod learngene;
mod plugins;
mod sample;
mod train;

use clap::{Parser, Subcommand};

/// Learngene initialization of variable-sized diffusion transformers (DiT on dfdx).
#[derive(Parser)]
#[command(name = "fine", version, about, long_about = None)]
struct Cli {
    /// Load a plugin library (a file, or every library in a folder). Repeatable.
    /// Also read: $FINE_PLUGIN_PATH (colon-separated) and ~/.local/share/fine/plugins.
    #[arg(long, global = true, value_name = "PATH")]
    plugin: Vec<std::path::PathBuf>,
    /// Device of every command that computes: `cpu`, `cuda` or `cuda:N`
    /// (CUDA needs a build with the `cuda` feature: scripts/build-cuda.sh).
    #[arg(long, global = true, default_value = "cpu")]
    device: fine_core::model::device::DeviceSpec,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a DiT described by a RON graph on real images (or resume a run).
    Train(train::TrainArgs),
    /// Pre-train an ancestry model parameterized by a learngene strategy.
    Pretrain(learngene::PretrainArgs),
    /// Learngene files: extract from an ancestry run, inspect.
    Learngene {
        #[command(subcommand)]
        cmd: learngene::LearngeneCmd,
    },
    /// Build and initialize a descendant of another graph from a learngene.
    Init(learngene::InitArgs),
    /// Draw samples from a trained run and write a PNG grid.
    Sample(sample::SampleArgs),
    /// Sample-quality metrics (FID, sFID, precision/recall, FID on classifier features).
    Eval(eval::EvalArgs),
    /// Write a run's weights as a plain DiT state dict (facebookresearch DiT's names and shapes).
    Export(export::ExportArgs),
    /// Look at data sets.
    Data {
        #[command(subcommand)]
        cmd: data_cmd::DataCmd,
    },
    /// Inspect graph files.
    Graph {
        #[command(subcommand)]
        cmd: graph_cmd::GraphCmd,
    },
    /// Train a small model on the bundled Fashion-MNIST subset and sample from it.
    Demo(demo::DemoArgs),
    /// List and describe samplers and strategies.
    Plugins {
        #[command(subcommand)]
        cmd: plugins::PluginsCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
}

// `link_builtins()`: one `link()` per built-in plugin crate of cli/Cargo.toml.
include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Ctrl-C while a training loop runs stops it after its step, with a
/// checkpoint ([`fine_core::pipeline::request_stop`]); at any other time, or a
/// second time, the process ends at once (exit 130).
fn catch_interrupts() {
    let _ = ctrlc::set_handler(|| {
        if !fine_core::pipeline::request_stop() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after this step (Ctrl-C again to quit at once, without a checkpoint)");
    });
}

/// Parses the command line. Whatever follows a flag that takes a value is its
/// value (`--lr -1`, `--cfg -inf`), checked by that flag's parser with the flag
/// named, not taken for an unknown argument.
fn parse_args() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    fn negatives(c: clap::Command) -> clap::Command {
        c.mut_args(|a| {
            let valued = a.get_long().is_some() && a.get_action().takes_values();
            if valued {
                a.allow_hyphen_values(true)
            } else {
                a
            }
        })
        .mut_subcommands(negatives)
    }
    let matches = negatives(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

// ============================================================================
// Allocator
// ============================================================================

// glibc's malloc hands the freed pages of its thread arenas back to the kernel
// after a step at some model sizes and faults them in again on the next one
// (698 k page faults in a 200-step run against 406, up to 1.9x the step time
// of `fine train`, measured in docs/results/allocator.md). mimalloc, with
// purging off, keeps them: a training process reuses the same buffers every step. Plugins free what they allocate
// themselves (plugins/api/src/abi.rs), so the host's allocator never frees theirs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: in mimalloc.h's `mi_option_e` it comes right before
/// `mi_option_use_numa_nodes`, which libmimalloc-sys exports (this one it does not).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Every training step allocates and frees the same large activation and
/// gradient buffers: keep them in the process.
fn keep_freed_memory() {
    // -1: never return freed memory to the OS while the process runs.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() {
    // Die quietly on a closed pipe (`fine plugins list | head`) instead of panicking in println!.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    link_builtins();
    let cli = parse_args();
    catch_interrupts();
    let dev = cli.device;
    // The command runs on a rayon worker, so the kernels' parallel sections
    // share the pool's threads with the serial work instead of spinning
    // beside it (two busy threads on two cores, not three).
    let result = rayon::scope(|_| {
        fine_core::plugin::Registry::load(&cli.plugin).and_then(|reg| {
            for n in &reg.notes {
                eprintln!("warning: {n}");
            }
            match cli.cmd {
                Cmd::Train(a) => train::run(a, &reg, dev),
                Cmd::Sample(a) => sample::run(a, &reg, dev),
                Cmd::Eval(a) => eval::run(a, &reg, dev),
                Cmd::Export(a) => export::run(a),
                Cmd::Pretrain(a) => learngene::pretrain(a, &reg, dev),
                Cmd::Learngene { cmd } => learngene::learngene(cmd, &reg, dev),
                Cmd::Init(a) => learngene::init(a, &reg, dev),
                Cmd::Graph { cmd } => graph_cmd::run(cmd),
                Cmd::Data { cmd } => data_cmd::run(cmd),
                Cmd::Demo(a) => demo::run(a, &reg, dev),
                Cmd::Plugins { cmd } => plugins::run(cmd, &reg),
                Cmd::Bench { cmd } => bench::run(cmd, &reg, dev),
            }
        })
    });
    if let Err(e) = result {
        if let Some(i) = e.chain().find_map(|c| c.downcast_ref::<fine_core::pipeline::Interrupted>()) {
            eprintln!("{i}");
            std::process::exit(130);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is ours (libmimalloc-sys does not export it): it must
    /// name an option with purge_delay's default (1000 ms in mimalloc v3's
    /// `src/options.c`; no option next to it has that default), and the setting
    /// must take.
    #[test]
    fn purge_delay_index_names_an_option_with_its_default_and_takes_the_setting() {
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
