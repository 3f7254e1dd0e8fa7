//! DiT weight names and the bookkeeping every learngene strategy of this
//! workspace shares: which weights lie in a block, FINE's five weight types,
//! the plain parameterization, the learngene's metadata (ancestry width and
//! depth, storage model) and the checks a descendant makes before it reads a
//! learngene (made by this strategy, at this width).
//!
//! Block weights are named `blocks.{l}.{param}` (e.g. `blocks.3.attn.qkv.weight`);
//! every other weight (patch, timestep and label embeddings, final layer) has a
//! shape that does not depend on the depth.

use crate::graph::Graph;
use crate::info::Options;
use crate::param::{Expr, LeafSpec, Parameterization};
use crate::strategy::{Learngene, WeightSpec};
use crate::tensors::{Tensor, Tensors};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;

/// The five weight types FINE factorizes: (type name, weight suffix inside `blocks.{l}.`).
pub const TYPES: [(&str, &str); 5] = [
    ("qkv", "attn.qkv.weight"),
    ("proj", "attn.proj.weight"),
    ("fc1", "mlp.fc1.weight"),
    ("fc2", "mlp.fc2.weight"),
    ("ada", "adaLN_modulation.1.weight"),
];

/// Metadata key of the learngene's size in values (what a descendant inherits).
pub const STORAGE_LEARNGENE: &str = "storage.learngene";

/// Metadata key of the values a descendant stores per layer beyond the learngene.
pub const STORAGE_PER_LAYER: &str = "storage.per_layer";

/// `blocks.{l}.{param}` → (l, param); `None` for a weight outside the blocks.
pub fn block_of(name: &str) -> Option<(usize, &str)> {
    let (i, rest) = name.strip_prefix("blocks.")?.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// Whether `name` lies outside the blocks: a depth-independent weight (embeddings,
/// final layer) or, for a leaf name, one of a strategy's own leaves.
pub fn is_depth_independent(name: &str) -> bool {
    block_of(name).is_none()
}

/// The leaves of `leaves` that lie outside the blocks (see [`is_depth_independent`]).
pub fn depth_independent(leaves: &Tensors) -> Tensors {
    leaves.iter().filter(|(n, _)| is_depth_independent(n)).map(|(n, t)| (n.clone(), t.clone())).collect()
}

/// The type (of [`TYPES`]) of block parameter `param`, if it is one of the five.
pub fn type_of(param: &str) -> Option<&'static str> {
    TYPES.iter().find(|(_, s)| *s == param).map(|(t, _)| *t)
}

/// (m1, m2) of the weights with suffix `suffix` in the weight list (from block 0).
pub fn type_shape(weights: &[WeightSpec], suffix: &str) -> Result<(usize, usize)> {
    let w = weights
        .iter()
        .find(|w| w.name == format!("blocks.0.{suffix}"))
        .ok_or_else(|| anyhow!("the graph has no `blocks.0.{suffix}`"))?;
    match w.shape[..] {
        [m1, m2] => Ok((m1, m2)),
        _ => bail!("`{}` is not a matrix: {:?}", w.name, w.shape),
    }
}

/// Rank of type `t` from option `rank_{t}` (0 = full, min(m1, m2)), checked against (m1, m2).
pub fn rank_of(opts: &Options, t: &str, m1: usize, m2: usize) -> Result<usize> {
    let r = opts.int(&format!("rank_{t}"))?;
    let full = m1.min(m2);
    if r > full {
        bail!("rank_{t} = {r} exceeds min(m1, m2) = {full} for the {t} weights ({m1}×{m2})");
    }
    Ok(if r == 0 { full } else { r })
}

/// The plain parameterization of `weights`: one trainable leaf per weight, DiT's init.
pub fn plain(weights: &[WeightSpec]) -> Parameterization {
    let w: Vec<_> = weights.iter().map(|w| (w.name.clone(), w.shape.clone(), w.init.clone())).collect();
    Parameterization::plain(&w)
}

/// Adds `w` as its own leaf (its name, shape and DiT's init) bound to itself.
pub fn push_own_leaf(
    w: &WeightSpec,
    trainable: bool,
    leaves: &mut Vec<LeafSpec>,
    bindings: &mut BTreeMap<String, Expr>,
) {
    leaves.push(LeafSpec { name: w.name.clone(), shape: w.shape.clone(), init: w.init.clone(), trainable });
    bindings.insert(w.name.clone(), Expr::leaf(&w.name));
}

/// The metadata every learngene starts with: the ancestry's `hidden` (width) and `ancestry_depth`.
pub fn ancestry_meta(graph: &Graph) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("hidden".to_string(), graph.hidden.to_string()),
        ("ancestry_depth".to_string(), graph.depth.to_string()),
    ])
}

/// Number of values in `tensors`.
pub fn values_in<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> usize {
    tensors.into_iter().map(|t| t.data.len()).sum()
}

/// Values of one layer's block biases (the bias leaves of block 0 in `spec`).
pub fn bias_values_per_layer(spec: &Parameterization) -> usize {
    spec.leaves
        .iter()
        .filter(|l| matches!(block_of(&l.name), Some((0, p)) if p.ends_with(".bias")))
        .map(|l| l.shape.iter().product::<usize>())
        .sum()
}

/// Records the storage model (`fine learngene info`): `learngene` values inherited,
/// `per_layer` values a descendant stores for each of its layers.
pub fn insert_storage(meta: &mut BTreeMap<String, String>, learngene: usize, per_layer: usize) {
    meta.insert(STORAGE_LEARNGENE.into(), learngene.to_string());
    meta.insert(STORAGE_PER_LAYER.into(), per_layer.to_string());
}

/// Refuses a learngene made by another strategy than `name`.
pub fn check_strategy(lg: &Learngene, name: &str) -> Result<()> {
    if lg.strategy != name {
        bail!("this learngene was made by `{}`, not by `{name}`", lg.strategy);
    }
    Ok(())
}

/// The learngene's metadata entry `key`.
pub fn meta_text<'a>(lg: &'a Learngene, key: &str) -> Result<&'a str> {
    lg.meta.get(key).map(String::as_str).ok_or_else(|| anyhow!("the learngene's metadata lacks `{key}`"))
}

/// The learngene's metadata entry `key` as a number.
pub fn meta_num(lg: &Learngene, key: &str) -> Result<usize> {
    let v = meta_text(lg, key)?;
    v.parse().with_context(|| format!("learngene metadata `{key}` = `{v}`"))
}

/// Refuses a `target` whose width differs from the ancestry's (metadata `hidden`);
/// `who` names the strategy's descendants in the message (e.g. `TLEG`).
pub fn check_width(lg: &Learngene, target: &Graph, who: &str) -> Result<()> {
    let hidden = meta_num(lg, "hidden")?;
    if hidden != target.hidden {
        bail!(
            "the learngene has width {hidden}, but the target graph `{}` has width {}: \
             {who} descendants must have the ancestry's width",
            target.name,
            target.hidden
        );
    }
    Ok(())
}

/// The learngene's tensor `from`, which becomes weight `w` of `target` unchanged:
/// it must be there and have `w`'s shape.
pub fn inherited<'a>(lg: &'a Learngene, from: &str, w: &WeightSpec, target: &Graph) -> Result<&'a Tensor> {
    let t = lg.tensors.get(from).ok_or_else(|| anyhow!("the learngene lacks `{from}` (for `{}`)", w.name))?;
    if t.shape != w.shape {
        bail!(
            "the learngene's `{from}` has shape {:?}, but `{}` of the target graph `{}` needs {:?}",
            t.shape,
            w.name,
            target.name,
            w.shape
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names() {
        assert_eq!(block_of("blocks.3.attn.qkv.weight"), Some((3, "attn.qkv.weight")));
        assert_eq!(block_of("blocks.x.attn.qkv.weight"), None);
        assert_eq!(block_of("final_layer.linear.weight"), None);
        assert!(is_depth_independent("y_embedder.embedding_table.weight") && !is_depth_independent("blocks.0.mlp"));
        assert_eq!(type_of("mlp.fc2.weight"), Some("fc2"));
        assert_eq!(type_of("mlp.fc2.bias"), None);
    }
}
