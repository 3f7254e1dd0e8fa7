//! # Heur-LG — heuristic learngene inheritance (arXiv 2106.06788)
//!
//! **Ancestry.** A plain DiT trained normally (every weight its own leaf, DiT's
//! initialization). The paper's "collective" model is a VGG-like network grown
//! over a task sequence with EWC; that part has no DiT counterpart here, the
//! ancestry is trained by the host's denoising loss on one data set.
//!
//! **Learngene.** The last k ancestry blocks (option `k`, default 2), stored
//! bottom to top as `heur.block{j}.{param}` (j = 0..k−1 is ancestry block
//! L−k+j), plus the depth-independent weights: patch, timestep and label
//! embeddings and the final layer. The paper picks the layers by a
//! gradient-information criterion whose code returns the last layers
//! (`get_layers_19_20`); we take the last k directly. `k` is read when the
//! ancestry is made (`fine pretrain`, so a k larger than the ancestry depth is
//! refused before training) and when the learngene is extracted; the learngene
//! records it, and `fine init` uses the recorded k (an init-time `k` is ignored).
//!
//! **Descendant.** A plain DiT of depth L_d ≥ k (same width, patch size and
//! classes): its top k blocks (L_d−k .. L_d−1) are the inherited ones, in
//! order; the lower L_d−k blocks are fresh, with DiT's initialization drawn
//! from the run's seed; embeddings and final layer are inherited (the paper
//! inherits only the layers; a DiT's embeddings are depth-independent, so we
//! copy them as every other strategy here does). No initialization phase
//! (`init_steps` 0): the descendant is trained normally (`fine train --from`).
//!
//! **Storage model** (`fine learngene info`): a descendant is a function of the
//! learngene and the seed of its fresh blocks, so it stores no per-layer values.

use anyhow::{bail, Result};
use fine_plugin_api::strategy::dit::{self, block_of, plain};
use fine_plugin_api::tensors::Tensors;
use fine_plugin_api::{
    Descendant, Graph, Learngene, OptionSpec, Options, Parameterization, PluginInfo, PluginKind, Strategy, WeightSpec,
};

/// The Heur-LG strategy.
#[derive(Debug, Clone, Default)]
pub struct Heur;

fine_plugin_api::builtin_plugin!(Strategy, Heur::default);

const NAME: &str = "heur";

/// The learngene's name for parameter `param` of its `j`-th inherited block (bottom to top).
fn gene(j: usize, param: &str) -> String {
    format!("heur.block{j}.{param}")
}

/// Option `k`, checked against the ancestry depth.
fn k_for(opts: &Options, depth: usize) -> Result<usize> {
    let k = opts.int("k")?;
    if k == 0 {
        bail!("option `k` must be at least 1 (the number of inherited blocks)");
    }
    if k > depth {
        bail!("option `k` = {k} exceeds the ancestry depth {depth}: the learngene cannot hold more blocks than it has");
    }
    Ok(k)
}

impl Strategy for Heur {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Heur-LG: the last k ancestry blocks on top of fresh blocks".into(),
            options: vec![OptionSpec::int(
                "k",
                2,
                "ancestry blocks inherited (the last k), set at pretrain; descendants need depth ≥ k",
            )],
        }
    }

    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization> {
        k_for(opts, graph.depth)?;
        Ok(plain(weights))
    }

    fn extract(
        &self,
        graph: &Graph,
        _weights: &[WeightSpec],
        _spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Learngene> {
        let (depth, k) = (graph.depth, k_for(opts, graph.depth)?);
        let mut tensors = Tensors::new();
        for (name, t) in leaves {
            match block_of(name) {
                Some((l, param)) if l >= depth - k => {
                    tensors.insert(gene(l + k - depth, param), t.clone());
                }
                Some(_) => {}
                None => {
                    tensors.insert(name.clone(), t.clone());
                }
            }
        }
        for j in 0..k {
            let want = gene(j, "attn.qkv.weight");
            if !tensors.contains_key(&want) {
                bail!("this run is not a plain ancestry: it has no leaf `blocks.{}.attn.qkv.weight`", depth - k + j);
            }
        }
        let mut meta = dit::ancestry_meta(graph);
        meta.insert("k".to_string(), k.to_string());
        meta.insert("inherited_blocks".to_string(), format!("{}..{}", depth - k, depth - 1));
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
        dit::check_width(lg, target, "Heur-LG")?;
        let k = dit::meta_num(lg, "k")?;
        if k > target.depth {
            bail!(
                "the learngene holds k = {k} blocks, but the target graph `{}` has depth {}: \
                 a descendant needs depth ≥ k",
                target.name,
                target.depth
            );
        }
        let mut values = Tensors::new();
        for w in weights {
            let from = match block_of(&w.name) {
                Some((i, param)) if i + k >= target.depth => gene(i + k - target.depth, param),
                Some(_) => continue, // a fresh block: DiT's init
                None => w.name.clone(),
            };
            values.insert(w.name.clone(), dit::inherited(lg, &from, w, target)?.clone());
        }
        Ok(Descendant { spec: plain(weights), values, init_steps: 0 })
    }
}

#[cfg(test)]
mod tests;
