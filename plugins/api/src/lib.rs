//! # fine-plugin-api
//!
//! Everything a `fine` plugin needs, and nothing of the runtime: no dfdx, no
//! model code. Two kinds of plugins:
//!
//! * a [`Sampler`] — a reverse-diffusion solver over a noise schedule and a
//!   denoiser callback (host buffers only);
//! * a [`Strategy`] — a learngene method: how to parameterize an ancestry
//!   model, what to extract from it as the learngene, and how to build and
//!   initialize a descendant of another graph.
//!
//! Built-in plugins register with [`inventory`] through [`register!`]; the
//! same crates (and third-party ones) build as cdylibs that export the
//! versioned C ABI of [`abi`] through [`export_plugin!`].

pub mod abi;
pub mod graph;
pub mod info;
pub mod param;
pub mod sampler;
pub mod strategy;
pub mod tensors;

pub use graph::Graph;
pub use info::{OptionSpec, Options, PluginInfo, PluginKind};
pub use param::{Expr, Init, LeafSpec, Parameterization};
pub use sampler::{EpsFn, Sampler, SamplerContext};
pub use strategy::{Descendant, Learngene, PoolMember, Probe, Probes, Strategy, WeightSpec};
pub use tensors::Tensors;

// Re-exported for the macros.
#[doc(hidden)]
pub use inventory;

/// A plugin instance of either kind.
pub enum Plugin {
    /// A reverse-diffusion solver.
    Sampler(Box<dyn Sampler>),
    /// A learngene strategy.
    Strategy(Box<dyn Strategy>),
}

impl Plugin {
    /// The plugin's self-description.
    pub fn info(&self) -> PluginInfo {
        match self {
            Plugin::Sampler(s) => s.info(),
            Plugin::Strategy(s) => s.info(),
        }
    }
}

/// A statically linked plugin, collected with `inventory`.
pub struct Builtin {
    /// Creates the plugin.
    pub make: fn() -> Plugin,
}

inventory::collect!(Builtin);

/// All statically registered plugins.
pub fn builtins() -> impl Iterator<Item = &'static Builtin> {
    inventory::iter::<Builtin>.into_iter()
}

/// Registers a built-in plugin: `register!(Sampler, MySampler::default)` or
/// `register!(Strategy, MyStrategy::default)`.
#[macro_export]
macro_rules! register {
    (Sampler, $make:expr) => {
        $crate::inventory::submit! {
            $crate::Builtin { make: || $crate::Plugin::Sampler(Box::new(($make)())) }
        }
    };
    (Strategy, $make:expr) => {
        $crate::inventory::submit! {
            $crate::Builtin { make: || $crate::Plugin::Strategy(Box::new(($make)())) }
        }
    };
}

/// Everything a built-in plugin crate declares, in one line:
/// `builtin_plugin!(Sampler, MySampler::default)` registers it with
/// [`register!`], exports the C ABI with [`export_plugin!`] when the crate's
/// `dylib` feature is on (so it can also be dropped in), and defines
/// `pub fn link()`, which a binary calls so the linker keeps the registration.
#[macro_export]
macro_rules! builtin_plugin {
    ($kind:ident, $make:expr) => {
        $crate::register!($kind, $make);
        #[cfg(feature = "dylib")]
        $crate::export_plugin!($kind, $make);
        /// Call from a binary to make sure the linker keeps this crate's registration.
        pub fn link() {}
    };
}
