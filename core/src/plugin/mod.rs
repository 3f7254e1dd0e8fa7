//! Plugins: the registry of built-in and drop-in samplers and strategies.
//!
//! * `registry` — built-ins (collected with `inventory`) plus libraries the user
//!   named: `--plugin PATH`, `$FINE_PLUGIN_PATH` (colon-separated files or
//!   folders) and the per-user folder `~/.local/share/fine/plugins`. Nothing is
//!   ever loaded implicitly from the working directory.
//! * `dynlib` — the host side of the C ABI (`fine_plugin_api::abi`).

pub mod dynlib;
pub mod registry;

pub use registry::{Entry, Registry, Source};
