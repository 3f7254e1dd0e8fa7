//! `fine graph check FILE`.

use anyhow::Result;
use clap::Subcommand;
use fine_core::graph;
use std::path::PathBuf;

/// Graph subcommands.
#[derive(Subcommand)]
pub enum GraphCmd {
    /// Validate a graph file; print its parameter count and training FLOPs per image.
    Check {
        /// The RON graph file.
        file: PathBuf,
    },
}

/// Runs a graph subcommand.
pub fn run(cmd: GraphCmd) -> Result<()> {
    match cmd {
        GraphCmd::Check { file } => {
            let g = graph::load::from_file(&file)?;
            println!("{}: ok", file.display());
            println!("{}", fine_core::model::summary::describe(&g).trim_end());
            Ok(())
        }
    }
}
