//! # SWS — stage-wise weight sharing (arXiv 2404.16897)
//!
//! **Ancestry.** The ancestry's L blocks are cut into S consecutive *stages*;
//! every block of a stage reads one set of leaves `sws.stage{s}.{param}` for
//! every block parameter (attention qkv/proj, MLP fc1/fc2 and the adaLN
//! modulation linear, weights and biases), so a stage is one block applied
//! several times. Embeddings and the final layer are ordinary leaves. Option
//! `stages` gives the stage sizes (`3:3:4:3:3`, the paper's 16-layer example;
//! they must sum to the ancestry depth). Default (not fixed by the paper, which
//! only shows 16 = 3+3+4+3+3): S = max(1, round(L/3)) stages of about three
//! blocks, sizes differing by at most one, the larger ones in the middle
//! (16 → 3:3:4:3:3, 12 → 3:3:3:3, 6 → 3:3, 4 → 4). The leaves start from DiT's
//! initialization of the weight they stand for (adaLN-Zero included).
//!
//! *Training.* The paper trains the auxiliary model by soft distillation from a
//! LeViT teacher; here it is trained like every ancestry, by the host's
//! ordinary denoising loss (there is no teacher for a DiT).
//!
//! **Learngene.** One block per stage (the `sws.stage{s}.*` leaves) plus the
//! depth-independent weights: patch, timestep and label embeddings and the
//! final layer (the paper copies patch embedding, norm and head).
//!
//! **Descendant.** A plain DiT of depth L_d (same width, patch size and
//! classes) whose block i is a copy of stage `src(i)`'s block; embeddings and
//! final layer are copied. Option `layers_source` lists src(i) for every block
//! (`0:0:0:1:1:1:2:2:3:3:4:4`, the paper's 12-layer descendant; its length must
//! be L_d and every entry < S). Default (the paper gives only examples): block i
//! takes the stage containing ancestry block ⌊(i+½)·L/L_d⌋, i.e. the L_d blocks
//! are spread over the stages in proportion to the stage sizes (each stage gets
//! ⌊n_s·L_d/L⌋ or ⌈n_s·L_d/L⌉ blocks, in order; L_d = L reproduces the
//! ancestry; with L_d < S some stages are skipped). There is no initialization
//! phase (`init_steps` 0): the copy is ordinarily trained (`fine train --from`).
//!
//! `stages` is read by `fine pretrain` (a sum other than the depth is refused
//! before training) and at extraction, which records it in the learngene;
//! `layers_source` is read by `fine init`.
//!
//! Options given as `name=value` pairs are comma-separated on the command line,
//! so the lists also accept `:`, `;` or spaces between numbers
//! (`layers_source=0:0:1:1`), or use the RON map form
//! `{"layers_source": "0,0,1,1"}`.
//!
//! **Storage model** (`fine learngene info`): a descendant is a function of the
//! learngene and its `layers_source`, so it stores no per-layer values.

use anyhow::{anyhow, bail, Result};
use fine_plugin_api::strategy::dit::{self, block_of, plain};
use fine_plugin_api::tensors::Tensors;
use fine_plugin_api::{
    Descendant, Expr, Graph, LeafSpec, Learngene, OptionSpec, Options, Parameterization, PluginInfo, PluginKind,
    Strategy, WeightSpec,
};
use std::collections::BTreeMap;

/// The SWS strategy.
#[derive(Debug, Clone, Default)]
pub struct Sws;

fine_plugin_api::builtin_plugin!(Strategy, Sws::default);

const NAME: &str = "sws";

/// The leaf holding parameter `param` of stage `s`.
fn stage_leaf(s: usize, param: &str) -> String {
    format!("sws.stage{s}.{param}")
}

/// Parses a list of non-negative integers separated by `,`, `;`, `:` or whitespace.
fn parse_list(what: &str, text: &str) -> Result<Vec<usize>> {
    text.split(|c: char| c == ',' || c == ';' || c == ':' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<usize>().map_err(|_| anyhow!("{what}: `{p}` is not a non-negative integer (in `{text}`)")))
        .collect()
}

fn join(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// The default stage sizes of an ancestry of `depth` blocks: max(1, round(depth/3))
/// stages, sizes differing by at most one, the larger ones nearest the middle.
pub fn default_stages(depth: usize) -> Vec<usize> {
    let n = ((depth + 1) / 3).clamp(1, depth.max(1));
    let (base, rem) = (depth / n, depth % n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ((2 * i).abs_diff(n - 1), i));
    let mut sizes = vec![base; n];
    order.iter().take(rem).for_each(|&i| sizes[i] += 1);
    sizes
}

/// Stage sizes from option `stages` (empty: [`default_stages`]), checked against `depth`.
pub fn stage_sizes(opt: &str, depth: usize) -> Result<Vec<usize>> {
    if opt.trim().is_empty() {
        return Ok(default_stages(depth));
    }
    let sizes = parse_list("option `stages`", opt)?;
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("option `stages` = `{opt}`: every stage needs at least one block");
    }
    let sum: usize = sizes.iter().sum();
    if sum != depth {
        bail!("option `stages` = `{opt}` has {sum} blocks in all, but the ancestry has depth {depth}");
    }
    Ok(sizes)
}

/// The stage of every ancestry block, from the stage sizes.
fn stage_of_blocks(sizes: &[usize]) -> Vec<usize> {
    sizes.iter().enumerate().flat_map(|(s, &n)| std::iter::repeat(s).take(n)).collect()
}

/// The stage each of `depth` descendant blocks copies: option `layers_source`, or
/// (empty) block i takes the stage holding ancestry block ⌊(i+½)·L/depth⌋.
pub fn layers_source(opt: &str, sizes: &[usize], depth: usize) -> Result<Vec<usize>> {
    let stages = sizes.len();
    if opt.trim().is_empty() {
        let of_block = stage_of_blocks(sizes);
        let l = of_block.len();
        // (2i + 1)·L / (2·depth) < L for every i < depth, so the index is in range.
        return Ok((0..depth).map(|i| of_block[(2 * i + 1) * l / (2 * depth)]).collect());
    }
    let src = parse_list("option `layers_source`", opt)?;
    if src.len() != depth {
        bail!("option `layers_source` = `{opt}` lists {} blocks, but the target graph has depth {depth}", src.len());
    }
    if let Some(bad) = src.iter().find(|&&s| s >= stages) {
        bail!(
            "option `layers_source` = `{opt}` names stage {bad}, but the learngene has {stages} stages (0..{})",
            stages - 1
        );
    }
    Ok(src)
}

/// The stage-shared parameterization of an ancestry with the given stage sizes.
fn shared(weights: &[WeightSpec], sizes: &[usize]) -> Result<Parameterization> {
    let of_block = stage_of_blocks(sizes);
    let mut leaves = Vec::new();
    let mut bindings = BTreeMap::new();
    for w in weights {
        match block_of(&w.name) {
            Some((l, param)) => {
                let s = *of_block.get(l).ok_or_else(|| anyhow!("`{}` lies beyond the stages {sizes:?}", w.name))?;
                // The stage's leaf takes its shape and init from the stage's first block.
                if l == 0 || of_block[l - 1] != s {
                    leaves.push(LeafSpec::new(stage_leaf(s, param), w.shape.clone(), w.init.clone(), true));
                }
                bindings.insert(w.name.clone(), Expr::leaf(stage_leaf(s, param)));
            }
            None => dit::push_own_leaf(w, true, &mut leaves, &mut bindings),
        }
    }
    Ok(Parameterization { leaves, bindings })
}

impl Strategy for Sws {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SWS: blocks of a stage share one weight set; descendants repeat each stage's block".into(),
            options: vec![
                OptionSpec::text(
                    "stages",
                    "",
                    "ancestry stage sizes, e.g. 3:3:4:3:3 (sum = ancestry depth); empty: about 3 blocks per stage",
                ),
                OptionSpec::text(
                    "layers_source",
                    "",
                    "stage copied by each descendant block, e.g. 0:0:1:1:2 (one per block); empty: proportional",
                ),
            ],
        }
    }

    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization> {
        let sizes = stage_sizes(opts.text("stages")?, graph.depth)?;
        shared(weights, &sizes)
    }

    fn extract(
        &self,
        graph: &Graph,
        _weights: &[WeightSpec],
        spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Learngene> {
        let sizes = stage_sizes(opts.text("stages")?, graph.depth)?;
        let first = stage_leaf(0, "attn.qkv.weight");
        if !spec.leaves.iter().any(|l| l.name == first) {
            bail!("this run is not an SWS ancestry: it has no `{first}` leaf");
        }
        let tensors = dit::depth_independent(leaves);
        for s in 0..sizes.len() {
            if !tensors.contains_key(&stage_leaf(s, "attn.qkv.weight")) {
                bail!("the ancestry lacks stage {s} of the stages {sizes:?}");
            }
        }
        let mut meta = dit::ancestry_meta(graph);
        meta.insert("stages".to_string(), join(&sizes));
        dit::insert_storage(&mut meta, dit::values_in(tensors.values()), 0);
        Ok(Learngene { strategy: NAME.into(), strategy_version: env!("CARGO_PKG_VERSION").into(), meta, tensors })
    }

    fn descendant(&self, lg: &Learngene, target: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Descendant> {
        dit::check_strategy(lg, NAME)?;
        dit::check_width(lg, target, "SWS")?;
        let sizes = parse_list("learngene metadata `stages`", dit::meta_text(lg, "stages")?)?;
        let src = layers_source(opts.text("layers_source")?, &sizes, target.depth)?;
        let mut values = Tensors::new();
        for w in weights {
            let from = match block_of(&w.name) {
                Some((l, param)) => stage_leaf(src[l], param),
                None => w.name.clone(),
            };
            values.insert(w.name.clone(), dit::inherited(lg, &from, w, target)?.clone());
        }
        Ok(Descendant { spec: plain(weights), values, init_steps: 0 })
    }
}

#[cfg(test)]
mod tests;
