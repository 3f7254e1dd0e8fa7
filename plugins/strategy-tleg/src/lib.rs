//! # TLEG — transformer as linear expansion of learngene (arXiv 2312.05614)
//!
//! **Ancestry.** Every block parameter p (attention qkv/proj, MLP fc1/fc2 and
//! the adaLN modulation linear, weights and biases) of block l of L is
//! `θ_l = θ_base + (l/L)·θ_delta`, l = 0..L−1, bound as
//! `Add(Leaf(tleg.{p}.base), Scale(Leaf(tleg.{p}.delta), l/L))`: two leaves
//! per parameter, shared by all blocks (the paper's `LELinear`; DiT's
//! LayerNorms have no affine parameters, so `LELayerNorm` has nothing to act
//! on). Embeddings and the final layer are ordinary leaves.
//!
//! *Init.* θ_base takes DiT's initialization of the weight it stands for
//! (Xavier-uniform for the linear weights, zero biases), where the TLEG code
//! uses trunc-normal(0.02) for its ViT; θ_delta of the linear weights is
//! Normal(0, 0.02²) (the code's trunc-normal(0.02); truncation at ±2 std is
//! not available and changes little), θ_delta of the biases is zero. The
//! adaLN modulation keeps adaLN-Zero: its base and delta (weight and bias)
//! start at zero, so every block starts as the identity as in DiT; their
//! gradients are not zero (the gates receive gradient), so training starts.
//!
//! *Training.* The paper trains the auxiliary net by soft distillation from a
//! teacher; here the host's ordinary denoising loss trains it.
//!
//! **Learngene.** {θ_base, θ_delta} of every block parameter, plus the
//! depth-independent weights: patch, timestep and label embeddings and the
//! final layer (the paper copies patch/position embedding, norm and head).
//!
//! **Descendant.** A plain DiT of depth L_d (same width, patch size, classes)
//! with `θ_i = θ_base + (i/L_d)·θ_delta`, i = 0..L_d−1 (the code's
//! `gene_tranfer`), computed here, and the inherited embeddings and final layer.
//! No initialization phase (`init_steps` 0); the paper then fine-tunes without
//! constraints (`fine train --from`).
//!
//! **Storage model** (`fine learngene info`): a descendant is a function of the
//! learngene and its depth, so it stores no per-layer values.

use anyhow::{anyhow, bail, Result};
use fine_plugin_api::strategy::dit::{self, block_of, plain};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{
    Descendant, Expr, Graph, Init, LeafSpec, Learngene, Options, Parameterization, PluginInfo, PluginKind, Strategy,
    WeightSpec,
};
use std::collections::BTreeMap;

/// The TLEG strategy.
#[derive(Debug, Clone, Default)]
pub struct Tleg;

fine_plugin_api::builtin_plugin!(Strategy, Tleg::default);

const NAME: &str = "tleg";

/// The leaf `tleg.{param}.{part}` (part: `base` or `delta`).
fn leaf(param: &str, part: &str) -> String {
    format!("tleg.{param}.{part}")
}

/// θ_delta's init for block parameter `param`: N(0, 0.02²) for the linear weights,
/// zero for the biases and for the adaLN modulation (adaLN-Zero).
fn delta_init(param: &str) -> Init {
    if param.ends_with(".weight") && !param.starts_with("adaLN_modulation") {
        Init::Normal { std: 0.02 }
    } else {
        Init::Zeros
    }
}

/// The weight of block `l` of `depth`: θ_base + (l/depth)·θ_delta.
fn expansion(param: &str, l: usize, depth: usize) -> Expr {
    Expr::Add(
        Box::new(Expr::leaf(leaf(param, "base"))),
        Box::new(Expr::Scale(Box::new(Expr::leaf(leaf(param, "delta"))), l as f32 / depth as f32)),
    )
}

impl Strategy for Tleg {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TLEG: every block parameter is θ_base + (l/L)·θ_delta; descendants expand to any depth"
                .into(),
            options: vec![],
        }
    }

    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], _opts: &Options) -> Result<Parameterization> {
        let mut leaves = Vec::new();
        let mut bindings = BTreeMap::new();
        for w in weights {
            match block_of(&w.name) {
                Some((l, param)) => {
                    if l == 0 {
                        let (shape, base) = (w.shape.clone(), w.init.clone());
                        let delta = delta_init(param);
                        leaves.push(LeafSpec::new(leaf(param, "base"), shape.clone(), base, true));
                        leaves.push(LeafSpec::new(leaf(param, "delta"), shape, delta, true));
                    }
                    bindings.insert(w.name.clone(), expansion(param, l, graph.depth));
                }
                None => dit::push_own_leaf(w, true, &mut leaves, &mut bindings),
            }
        }
        Ok(Parameterization { leaves, bindings })
    }

    fn extract(
        &self,
        graph: &Graph,
        _weights: &[WeightSpec],
        spec: &Parameterization,
        leaves: &Tensors,
        _opts: &Options,
    ) -> Result<Learngene> {
        let first = leaf("attn.qkv.weight", "base");
        if !spec.leaves.iter().any(|l| l.name == first) {
            bail!("this run is not a TLEG ancestry: it has no `{first}` leaf");
        }
        let tensors = dit::depth_independent(leaves);
        let mut meta = dit::ancestry_meta(graph);
        dit::insert_storage(&mut meta, dit::values_in(tensors.values()), 0);
        Ok(Learngene { strategy: NAME.into(), strategy_version: env!("CARGO_PKG_VERSION").into(), meta, tensors })
    }

    fn descendant(
        &self,
        lg: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        _opts: &Options,
    ) -> Result<Descendant> {
        dit::check_strategy(lg, NAME)?;
        dit::check_width(lg, target, "TLEG")?;
        let get = |name: &str, w: &WeightSpec| -> Result<&Tensor> {
            let t = lg.tensors.get(name).ok_or_else(|| anyhow!("the learngene lacks `{name}` (for `{}`)", w.name))?;
            if t.data.len() != w.shape.iter().product::<usize>() {
                bail!(
                    "the learngene's `{name}` has shape {:?}, but `{}` of the target graph `{}` needs {:?}",
                    t.shape,
                    w.name,
                    target.name,
                    w.shape
                );
            }
            Ok(t)
        };
        let mut values = Tensors::new();
        for w in weights {
            let data = match block_of(&w.name) {
                Some((i, param)) => {
                    let (base, delta) = (get(&leaf(param, "base"), w)?, get(&leaf(param, "delta"), w)?);
                    let f = i as f32 / target.depth as f32;
                    base.data.iter().zip(&delta.data).map(|(b, d)| b + f * d).collect()
                }
                None => get(&w.name, w)?.data.clone(),
            };
            values.insert(w.name.clone(), Tensor::new(w.shape.clone(), data)?);
        }
        Ok(Descendant { spec: plain(weights), values, init_steps: 0 })
    }
}

#[cfg(test)]
mod tests;
