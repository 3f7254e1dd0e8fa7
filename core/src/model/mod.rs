//! The model: a DiT built at run time from a [`crate::graph::Graph`] over a
//! named parameter store.
//!
//! * `expr` — parameterizations: model weights as expressions over leaves
//!   (plain data shared with plugins: `plugins/api/src/param.rs`);
//! * `device` — `--device cpu|cuda[:N]` and the `on_device!` dispatch;
//! * `store` — the leaves on the device, and the per-forward view;
//! * `init` — DiT's initialization, documented in one place;
//! * `kernels` — fused ops with hand-written backward passes, per device;
//! * `layers` — one file per layer, names built by prefix;
//! * `dit` — the whole network and the patchify/unpatchify helpers.

pub mod device;
pub mod dit;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod store;
pub mod summary;

pub use dit::Dit;
pub use fine_plugin_api::param::{self as expr, Expr, Init, LeafSpec, Parameterization};
pub use store::{Backend, Flat, Leaf, ParamStore, Params};
