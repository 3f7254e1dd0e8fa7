//! `fine plugins list` and `fine plugins info NAME`.

use anyhow::Result;
use clap::Subcommand;
use fine_core::plugin::Registry;

/// Plugin subcommands.
#[derive(Subcommand)]
pub enum PluginsCmd {
    /// Every sampler and strategy: name, kind, version, source.
    List,
    /// One plugin's description and options with defaults.
    Info {
        /// Plugin name.
        name: String,
    },
}

/// Runs a plugins subcommand.
pub fn run(cmd: PluginsCmd, reg: &Registry) -> Result<()> {
    match cmd {
        PluginsCmd::List => {
            println!("{:<16} {:<9} {:<9} source", "name", "kind", "version");
            for e in reg.entries() {
                println!("{:<16} {:<9} {:<9} {}", e.info.name, e.info.kind.to_string(), e.info.version, e.source);
            }
        }
        PluginsCmd::Info { name } => {
            let e = reg.get(&name)?;
            println!("{} {} ({}, {})", e.info.name, e.info.version, e.info.kind, e.source);
            println!("  {}", e.info.description);
            if e.info.options.is_empty() {
                println!("  no options");
            } else {
                println!("  options:");
                for o in &e.info.options {
                    println!("    {:<20} {:<24} default {:<12} {}", o.name, o.ty.to_string(), o.default, o.doc);
                }
            }
        }
    }
    Ok(())
}
