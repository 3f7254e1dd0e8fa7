//! # Learngene Pool — stitching blocks of distilled pool members (arXiv 2312.05743)
//!
//! **Ancestry.** A plain DiT trained normally.
//!
//! **Pool.** Auxiliary DiTs with fewer blocks (option `pool`, member depths,
//! e.g. `3:5`; default `auto` = ⌈L/2⌉ and L−1) are distilled from the trained
//! ancestry by the host ([`Strategy::pool`]): target (1−α)·ε + α·ε_ancestry
//! (option `alpha`, the paper's soft-distillation weight 0.5), `distill_steps`
//! steps on the ancestry's data, batch and learning rate. Each member starts
//! with the ancestry's patch, timestep and label embeddings, **frozen** so
//! every member computes the same conditioning vector c and their token
//! streams can be stitched, the ancestry's final layer (trainable) and fresh
//! blocks (DiT's init). The paper also matches block and attention outputs
//! (dense distillation); only the output is matched here.
//!
//! **Learngene.** The members' weights, `pool.d{depth}.{weight}` (the pool
//! members' blocks are the learngene instances; embeddings are stored with
//! each member, 2–5% of it at these sizes).
//!
//! **Descendant** of depth L_d, same width as the ancestry:
//! - a member of depth L_d: that member, whole;
//! - otherwise front member A (the shallowest, depth a) and end member B (the
//!   deepest, depth b), as in the paper's code (stitching goes from the
//!   smaller instance to the larger): A's embeddings and first n_f blocks →
//!   a linear **stitching layer** → B's last n_e blocks and final layer, with
//!   n_f + n_e = L_d, n_f ≈ L_d·a/(a+b) (each side at least one block, at most
//!   its member's depth; so 2 ≤ L_d ≤ a+b). The descendant's graph is the
//!   target plus `stitch_after: n_f − 1` (D² + D values more than the target).
//! - The stitching layer is initialized by least squares on features of real
//!   data (SN-Net's `ps_inv`, the paper's "snnet" mode): the host runs A for n_f
//!   blocks and B for b − n_e blocks on the same `probe_images` noisy training
//!   images ([`Strategy::probes`]); W, b minimize ‖X·Wᵀ + b − Y‖² over all
//!   tokens (normal equations in f64 with a 1e-6 relative ridge).
//! - No initialization phase: the descendant trains normally. Descendants
//!   narrower than the ancestry (the paper's tiny/small instances) are not
//!   offered: pool members keep the ancestry's width.
//!
//! The hooks exist only for built-in strategies; a dynamic-library build of
//! this crate cannot run them (the C ABI carries the four required methods).

use anyhow::{anyhow, bail, Context, Result};
use fine_plugin_api::strategy::dit::{self, block_of, plain};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{
    Descendant, Graph, Learngene, OptionSpec, Options, Parameterization, PluginInfo, PluginKind, PoolMember, Probe,
    Probes, Strategy, WeightSpec,
};

/// The Learngene Pool strategy.
#[derive(Debug, Clone, Default)]
pub struct Stitch;

fine_plugin_api::builtin_plugin!(Strategy, Stitch::default);

const NAME: &str = "stitch";

/// A member's name: `d{depth}`.
fn member_name(depth: usize) -> String {
    format!("d{depth}")
}

/// The pool's member depths from option `pool`, checked against the ancestry depth.
fn pool_depths(opts: &Options, depth: usize) -> Result<Vec<usize>> {
    let text = opts.text("pool")?.trim();
    let mut v: Vec<usize> = if text == "auto" {
        // ⌈L/2⌉ and L − 1 are distinct from L = 4 on.
        if depth < 4 {
            bail!("option `pool=auto` needs an ancestry of depth ≥ 4 (it has {depth}); list member depths");
        }
        vec![depth.div_ceil(2), depth - 1]
    } else {
        text.split(':')
            .map(|s| s.trim().parse::<usize>().map_err(|_| anyhow!("option `pool`: `{s}` is not a depth")))
            .collect::<Result<_>>()?
    };
    v.sort_unstable();
    if v.is_empty() || v[0] == 0 || v.windows(2).any(|w| w[0] == w[1]) {
        bail!("option `pool` = `{text}` must list distinct member depths ≥ 1, e.g. `3:5`");
    }
    if let Some(&d) = v.iter().find(|&&d| d > depth) {
        bail!("option `pool`: member depth {d} exceeds the ancestry depth {depth} (members are smaller models)");
    }
    Ok(v)
}

/// The graph of pool member `d` of ancestry `g`.
fn member_graph(g: &Graph, d: usize) -> Graph {
    Graph { name: format!("{}-pool-d{d}", g.name), depth: d, stitch_after: None, ..g.clone() }
}

/// Weights a pool member inherits frozen from the ancestry (the embeddings).
fn is_embedding(name: &str) -> bool {
    name.starts_with("x_embedder.") || name.starts_with("t_embedder.") || name.starts_with("y_embedder.")
}

/// How a descendant of depth `ld` is made from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The member of this depth, whole.
    Whole(usize),
    /// Front member depth a, its first `front` blocks; end member depth b, its last `end` blocks.
    Stitched { a: usize, front: usize, b: usize, end: usize },
}

fn plan(pool: &[usize], ld: usize) -> Result<Plan> {
    if pool.contains(&ld) {
        return Ok(Plan::Whole(ld));
    }
    let (a, b) = (pool[0], pool[pool.len() - 1]);
    if pool.len() < 2 || ld < 2 || ld > a + b {
        bail!(
            "depth {ld} cannot be built from the pool {pool:?}: a member of that depth, or a stitch of the \
             {a}- and {b}-block members (depths 2..={}), is needed",
            a + b
        );
    }
    // front = round(ld·a/(a+b)), at least 1. With a ≤ b and 2 ≤ ld ≤ a + b no
    // other bound is needed: front ≤ ld·a/(a+b) + ½ ≤ min(a, ld/2) + ½ gives
    // front ≤ a and front ≤ ld − 1, and end = ld − front ≤ ld·b/(a+b) + ½ ≤ b + ½
    // gives end ≤ b.
    let front = (((ld * a) as f64 / (a + b) as f64).round() as usize).max(1);
    Ok(Plan::Stitched { a, front, b, end: ld - front })
}

/// The learngene's pool depths (metadata `pool`).
fn lg_pool(lg: &Learngene) -> Result<Vec<usize>> {
    let text = dit::meta_text(lg, "pool")?;
    let v: Vec<usize> = text
        .split(':')
        .map(|s| s.parse::<usize>().map_err(|_| anyhow!("learngene metadata `pool`: `{s}` is not a depth")))
        .collect::<Result<_>>()?;
    // `plan` relies on increasing depths ≥ 1, as `extract` writes them.
    if v[0] == 0 || v.windows(2).any(|w| w[0] >= w[1]) {
        bail!("learngene metadata `pool` = `{text}` must list increasing depths ≥ 1");
    }
    Ok(v)
}

/// Checks the learngene's strategy and the target's width; returns the plan for `target`.
fn plan_for(lg: &Learngene, target: &Graph) -> Result<Plan> {
    dit::check_strategy(lg, NAME)?;
    dit::check_width(lg, target, "Learngene Pool")?;
    plan(&lg_pool(lg)?, target.depth).with_context(|| format!("target graph `{}`", target.name))
}

impl Strategy for Stitch {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Learngene Pool: distilled pool members stitched by a least-squares linear layer".into(),
            options: vec![
                OptionSpec::text(
                    "pool",
                    "auto",
                    "member depths `a:b:…` (each ≤ the ancestry depth), or `auto` = ⌈L/2⌉ and L−1; set at pretrain",
                ),
                OptionSpec::int("distill_steps", 1000, "distillation steps per pool member"),
                OptionSpec::float("alpha", 0.5, "teacher weight: target (1−α)·ε + α·ε_ancestry"),
                OptionSpec::int(
                    "probe_images",
                    256,
                    "noisy training images whose tokens fit the stitching layer (least squares)",
                ),
            ],
        }
    }

    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization> {
        pool_depths(opts, graph.depth)?;
        let alpha = opts.float("alpha")?;
        if !(0.0..=1.0).contains(&alpha) {
            bail!("option `alpha` = {alpha} must be in [0, 1]");
        }
        if opts.int("distill_steps")? == 0 {
            bail!("option `distill_steps` must be at least 1");
        }
        Ok(plain(weights))
    }

    fn pool(
        &self,
        graph: &Graph,
        _spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Vec<PoolMember>> {
        let steps = opts.int("distill_steps")?;
        let alpha = opts.float("alpha")? as f32;
        // Embeddings (frozen) and final layer (trainable) start from the ancestry; blocks are fresh.
        let inherited: Tensors = leaves
            .iter()
            .filter(|(n, _)| block_of(n).is_none() && !n.starts_with("pool.") && !n.starts_with("stitch."))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        if let Some(missing) =
            ["final_layer.linear.weight", "x_embedder.proj.weight"].into_iter().find(|n| !inherited.contains_key(*n))
        {
            bail!("this run is not a plain ancestry: it has no leaf `{missing}`");
        }
        let frozen: Vec<String> = inherited.keys().filter(|n| is_embedding(n)).cloned().collect();
        Ok(pool_depths(opts, graph.depth)?
            .into_iter()
            .map(|d| PoolMember {
                name: member_name(d),
                graph: member_graph(graph, d),
                values: inherited.clone(),
                frozen: frozen.clone(),
                steps,
                alpha,
            })
            .collect())
    }

    fn extract(
        &self,
        graph: &Graph,
        _weights: &[WeightSpec],
        _spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Learngene> {
        let depths = pool_depths(opts, graph.depth)?;
        let mut tensors = Tensors::new();
        for &d in &depths {
            let prefix = format!("pool.{}.", member_name(d));
            let last = format!("{prefix}blocks.{}.mlp.fc2.weight", d - 1);
            if !leaves.contains_key(&last) || !leaves.contains_key(&format!("{prefix}final_layer.linear.weight")) {
                bail!("pool member `{}` was not distilled: no leaf `{last}` (extract with `fine`)", member_name(d));
            }
            tensors.extend(leaves.iter().filter(|(n, _)| n.starts_with(&prefix)).map(|(n, t)| (n.clone(), t.clone())));
        }
        let mut meta = dit::ancestry_meta(graph);
        let pool: Vec<String> = depths.iter().map(|d| d.to_string()).collect();
        meta.insert("pool".into(), pool.join(":"));
        meta.insert("distill_steps".into(), opts.int("distill_steps")?.to_string());
        meta.insert("alpha".into(), opts.float("alpha")?.to_string());
        dit::insert_storage(&mut meta, dit::values_in(tensors.values()), 0);
        Ok(Learngene { strategy: NAME.into(), strategy_version: env!("CARGO_PKG_VERSION").into(), meta, tensors })
    }

    fn descendant_graph(&self, lg: &Learngene, target: &Graph, _opts: &Options) -> Result<Graph> {
        Ok(match plan_for(lg, target)? {
            Plan::Whole(_) => Graph { stitch_after: None, ..target.clone() },
            Plan::Stitched { front, .. } => Graph { stitch_after: Some(front - 1), ..target.clone() },
        })
    }

    fn probes(&self, lg: &Learngene, target: &Graph, opts: &Options) -> Result<Probes> {
        let Plan::Stitched { a, front, b, end } = plan_for(lg, target)? else {
            return Ok(Probes::default());
        };
        let probe = |name: &str, d: usize, blocks: usize| Probe {
            name: name.into(),
            graph: member_graph(target, d),
            prefix: format!("pool.{}.", member_name(d)),
            blocks,
        };
        let images = opts.int("probe_images")?;
        if images == 0 {
            bail!("option `probe_images` must be at least 1");
        }
        Ok(Probes { images, probes: vec![probe("front", a, front), probe("end", b, b - end)] })
    }

    fn descendant(&self, lg: &Learngene, target: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Descendant> {
        match plan_for(lg, target)? {
            Plan::Whole(_) => self.descendant_probed(lg, target, weights, opts, &Tensors::new()),
            Plan::Stitched { .. } => bail!(
                "a stitched descendant needs features of real data for its stitching layer; \
                 build it through the host (`fine init`, `fine bench learngene`)"
            ),
        }
    }

    fn descendant_probed(
        &self,
        lg: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        _opts: &Options,
        features: &Tensors,
    ) -> Result<Descendant> {
        let plan = plan_for(lg, target)?;
        let mut values = Tensors::new();
        let (front_member, end_member, stitch) = match plan {
            Plan::Whole(d) => (d, d, None),
            Plan::Stitched { a, front, b, end } => {
                if target.stitch_after != Some(front - 1) {
                    bail!(
                        "the target graph `{}` must have `stitch_after: Some({})` (see `descendant_graph`)",
                        target.name,
                        front - 1
                    );
                }
                let get = |n: &str| features.get(n).ok_or_else(|| anyhow!("the host did not compute features `{n}`"));
                let (w, bias) = least_squares(get("front")?, get("end")?)?;
                (a, b, Some((front, b - end, w, bias)))
            }
        };
        let (front_name, end_name) = (member_name(front_member), member_name(end_member));
        for w in weights {
            let from = match (block_of(&w.name), &stitch) {
                (_, Some((_, _, sw, sb))) if w.name.starts_with("stitch.") => {
                    let t = if w.name == "stitch.weight" { sw } else { sb };
                    if t.shape != w.shape {
                        bail!("the stitching layer fit has shape {:?}, `{}` needs {:?}", t.shape, w.name, w.shape);
                    }
                    values.insert(w.name.clone(), t.clone());
                    continue;
                }
                // Blocks after the stitch: the end member's last blocks.
                (Some((i, param)), Some((front, skip, _, _))) if i >= *front => {
                    format!("pool.{end_name}.blocks.{}.{param}", i - front + skip)
                }
                // Blocks before it, and the embeddings: the front member's.
                (Some(_), _) => format!("pool.{front_name}.{}", w.name),
                (None, _) if is_embedding(&w.name) => format!("pool.{front_name}.{}", w.name),
                // The final layer: the end member's.
                (None, _) => format!("pool.{end_name}.{}", w.name),
            };
            values.insert(w.name.clone(), dit::inherited(lg, &from, w, target)?.clone());
        }
        Ok(Descendant { spec: plain(weights), values, init_steps: 0 })
    }
}

/// Least squares Y ≈ X·Wᵀ + b over the rows of `x` (N, Din) and `y` (N, Dout):
/// normal equations of [X 1] in f64, ridge 1e-6·mean diagonal. Returns W
/// (Dout, Din) and b (Dout).
pub fn least_squares(x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, din) = match x.shape[..] {
        [n, d] => (n, d),
        _ => bail!("features must be 2-D, got {:?}", x.shape),
    };
    let (m, dout) = match y.shape[..] {
        [m, d] => (m, d),
        _ => bail!("features must be 2-D, got {:?}", y.shape),
    };
    if n != m || n == 0 {
        bail!("least squares needs the same (non-zero) number of rows, got {n} and {m}");
    }
    let k = din + 1;
    let mut a = nalgebra::DMatrix::<f64>::zeros(k, k);
    let mut rhs = nalgebra::DMatrix::<f64>::zeros(k, dout);
    let mut row = vec![0f64; k];
    for r in 0..n {
        for (j, v) in x.data[r * din..(r + 1) * din].iter().enumerate() {
            row[j] = *v as f64;
        }
        row[din] = 1.0;
        for i in 0..k {
            let ri = row[i];
            for j in i..k {
                a[(i, j)] += ri * row[j];
            }
            for (j, yv) in y.data[r * dout..(r + 1) * dout].iter().enumerate() {
                rhs[(i, j)] += ri * *yv as f64;
            }
        }
    }
    for i in 0..k {
        for j in 0..i {
            a[(i, j)] = a[(j, i)];
        }
    }
    let ridge = 1e-6 * (0..k).map(|i| a[(i, i)]).sum::<f64>() / k as f64;
    for i in 0..k {
        a[(i, i)] += ridge;
    }
    let sol = a.cholesky().ok_or_else(|| anyhow!("the stitch fit's normal equations are singular"))?.solve(&rhs); // (k, Dout)
    let w: Vec<f32> = (0..dout).flat_map(|o| (0..din).map(move |i| (o, i))).map(|(o, i)| sol[(i, o)] as f32).collect();
    let b: Vec<f32> = (0..dout).map(|o| sol[(din, o)] as f32).collect();
    Ok((Tensor::new(vec![dout, din], w)?, Tensor::new(vec![dout], b)?))
}

#[cfg(test)]
mod tests;
