//! Helpers for testing strategy plugins: test graphs and leaf values.
//!
//! Checks that need the host (the real DiT weight list, materialization) use
//! `fine-core`, a dev-dependency of the strategy crates: see
//! `plugins/testing/host.rs`, which their tests include.

use crate::graph::Graph;
use crate::param::Parameterization;
use crate::tensors::{Tensor, Tensors};

/// The workspace's `graphs/fmnist-tiny.ron` (depth 2, width 32) at another depth and width.
pub fn tiny_graph(depth: usize, hidden: usize) -> Graph {
    let tiny = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../graphs/fmnist-tiny.ron")).unwrap();
    let text = tiny.replace("depth: 2", &format!("depth: {depth}")).replace("hidden: 32", &format!("hidden: {hidden}"));
    ron::from_str(&text).unwrap()
}

/// Distinct deterministic values for every leaf of `spec`.
pub fn leaf_values(spec: &Parameterization) -> Tensors {
    let mut x = 12345u64;
    spec.leaves
        .iter()
        .map(|l| {
            let n = l.shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            (l.name.clone(), Tensor::new(l.shape.clone(), data).unwrap())
        })
        .collect()
}
