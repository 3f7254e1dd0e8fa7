//! Architecture graphs: RON files that describe one diffusion transformer each.
//!
//! - the [`Graph`] data type and its fields live in `fine-plugin-api` (`plugins/api/src/graph.rs`),
//!   shared with plugins, and are re-exported here.
//! - [`load`]: parse a RON file or string into a validated [`Graph`], and back.
//! - [`validate`](mod@validate): shape and range checks that report every problem at once.
//! - [`cost`]: parameter names/shapes (DiT state-dict order), counts, FLOPs
//!   and a human-readable summary.

pub use fine_plugin_api::graph::*;

pub mod cost;
pub mod load;
pub mod validate;

pub use cost::{flops_per_image, Flops};
pub use load::{from_file, from_str, to_ron};
pub use validate::validate;

/// A DiT-style graph with default block/timestep settings, for unit tests.
#[cfg(test)]
pub(crate) fn test_graph(
    channels: usize,
    side: usize,
    patch_size: usize,
    hidden: usize,
    depth: usize,
    heads: usize,
) -> Graph {
    Graph {
        name: "test".into(),
        input: InputSpec { channels, height: side, width: side },
        patch_size,
        hidden,
        depth,
        heads,
        mlp_ratio: 4.0,
        conditioning: Conditioning { num_classes: 10, label_dropout: 0.1 },
        block: BlockSpec::default(),
        timestep: TimestepSpec::default(),
        stitch_after: None,
    }
}
