//! The host side of learngene strategies: what the runtime does around a
//! [`fine_plugin_api::Strategy`] — weight lists, learngene files, building a
//! descendant's store, and materializing any parameterization into a plain DiT.
//! [`pool`] runs the optional hooks (pool distillation, feature probes) and
//! [`build_descendant`] puts a descendant together with them.

pub mod pool;

use crate::data::Dataset;
use crate::graph::Graph;
use crate::model::{Backend, Dit, ParamStore, Parameterization};
use crate::util::crc;
use anyhow::{anyhow, bail, Context, Result};
use dfdx::prelude::NoneTape;
use fine_plugin_api::tensors::{from_safetensors, to_safetensors, Tensor, Tensors};
use fine_plugin_api::{Descendant, Learngene, Options, Strategy, WeightSpec};
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::Path;

/// Format tag of learngene files.
pub const LEARNGENE_FORMAT: &str = "fine-learngene/1";

/// The weights of `dit` with DiT's initialization and their roles, as strategies see them.
pub fn weights_of(dit: &Dit) -> Vec<WeightSpec> {
    dit.weights()
}

/// The store's leaves as named tensors.
pub fn leaves_as_tensors<D: Backend>(store: &ParamStore<D>) -> Result<Tensors> {
    store.leaves().map(|(n, l)| Ok((n.clone(), Tensor::new(l.shape.clone(), l.value.as_vec())?))).collect()
}

/// Leaf values from a host map (e.g. a checkpoint's EMA) as named tensors.
pub fn values_as_tensors(spec: &Parameterization, values: &BTreeMap<String, Vec<f32>>) -> Result<Tensors> {
    spec.leaves
        .iter()
        .map(|l| {
            let v = values.get(&l.name).ok_or_else(|| anyhow!("no value for leaf `{}`", l.name))?;
            Ok((l.name.clone(), Tensor::new(l.shape.clone(), v.clone())?))
        })
        .collect()
}

/// A descendant of `target` by `s` from `lg`, with the optional hooks run:
/// the strategy's graph (`descendant_graph`), its probes on `data` (drawn with
/// `seed`), then `descendant_probed`. Returns the descendant's model and
/// parameterization. `data` is called only when the strategy asks for probes.
pub fn build_descendant(
    s: &dyn Strategy,
    lg: &Learngene,
    target: &Graph,
    opts: &Options,
    data: impl FnOnce() -> Result<Dataset>,
    seed: u64,
) -> Result<(Dit, Descendant)> {
    let g = s.descendant_graph(lg, target, opts)?;
    crate::graph::validate(&g).context("the strategy's descendant graph")?;
    if (g.input != target.input) || g.patch_size != target.patch_size || g.conditioning != target.conditioning {
        bail!("the strategy changed the input, patch size or classes of `{}`", target.name);
    }
    let dit = Dit::new(&g);
    // Another width is a strategy's own business (FINE projects its learngene;
    // the others refuse): shape-bound weights are fitted at the ancestry's width only.
    let same_width = lg.meta.get("hidden").is_none_or(|h| *h == g.hidden.to_string());
    let (fitted, fresh) =
        if same_width { fit_shape_bound(lg, &weights_of(&dit), seed)? } else { (lg.clone(), Vec::new()) };
    let lg = &fitted;
    if !fresh.is_empty() {
        eprintln!(
            "`{}` has another input shape or class count than the learngene's ancestry: {} start fresh \
             (DiT's initialization, trained from the first step)",
            target.name,
            fresh.join(", ")
        );
    }
    let req = s.probes(lg, &g, opts)?;
    let features =
        if req.probes.is_empty() { Tensors::new() } else { pool::run_probes(&lg.tensors, &req, &data()?, seed)? };
    let mut d = s.descendant_probed(lg, &g, &weights_of(&dit), opts, &features)?;
    d.spec.leaves.iter_mut().filter(|l| fresh.contains(&l.name)).for_each(|l| l.trainable = true);
    Ok((dit, d))
}

/// A descendant of another input shape (channels, image size, patch size) or
/// class count than its ancestry: the learngene with every shape-bound tensor
/// — a weight outside the blocks (patch embedding, label table, final linear)
/// whose learngene shape differs from the target's, under its own name or a
/// strategy's prefix (`pool.d3.x_embedder.proj.weight`) — replaced by a fresh
/// draw of the target weight's DiT initialization, and a label table added when
/// the ancestry had none. Returns it with the names of the fresh weights, which
/// the caller makes trainable. The blocks are never touched: what a strategy
/// does with them is its own.
pub fn fit_shape_bound(lg: &Learngene, weights: &[WeightSpec], seed: u64) -> Result<(Learngene, Vec<String>)> {
    let mut out = lg.clone();
    let mut fresh = Vec::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX - 1);
    for w in weights.iter().filter(|w| w.block.is_none()) {
        let suffix = format!(".{}", w.name);
        let holders: Vec<String> =
            lg.tensors.keys().filter(|n| **n == w.name || n.ends_with(&suffix)).cloned().collect();
        let misfit: Vec<&String> = holders.iter().filter(|n| lg.tensors[*n].shape != w.shape).collect();
        let missing_table = holders.is_empty() && w.role == "label";
        if misfit.is_empty() && !missing_table {
            continue;
        }
        let n = w.shape.iter().product();
        let value = Tensor::new(w.shape.clone(), crate::model::store::sample_init(&w.init, n, &mut rng)?)?;
        for name in misfit {
            out.tensors.insert(name.clone(), value.clone());
        }
        if missing_table {
            out.tensors.insert(w.name.clone(), value);
        }
        fresh.push(w.name.clone());
    }
    Ok((out, fresh))
}

/// Steps of a descendant's initialization phase: `requested` (a flag or a
/// benchmark's `init.steps`) or else the strategy's own choice; a strategy
/// without an initialization phase (`strategy_steps` 0) goes straight to
/// ordinary training whatever was requested. `fine init` and `fine bench
/// learngene` both follow this rule.
pub fn init_phase_steps(requested: Option<usize>, strategy_steps: usize) -> usize {
    if strategy_steps == 0 {
        0
    } else {
        requested.unwrap_or(strategy_steps)
    }
}

/// Builds a descendant's store: leaves drawn from their `Init` with `seed`,
/// then every value the strategy provided put in place (shapes checked).
pub fn descendant_store<D: Backend>(dev: D, dit: &Dit, d: &Descendant, seed: u64) -> Result<ParamStore<D>> {
    store_from(dev, dit, &d.spec, &d.values, seed)
}

/// Leaves of `spec` drawn from their `Init` with `seed`, then `values` put in place.
pub fn store_from<D: Backend>(
    dev: D,
    dit: &Dit,
    spec: &Parameterization,
    values: &Tensors,
    seed: u64,
) -> Result<ParamStore<D>> {
    spec.validate(&dit.weight_shapes())
        .context("the strategy's descendant parameterization does not fit the target graph")?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    let mut store = ParamStore::init(dev, spec.clone(), &mut rng)?;
    let shapes = spec.leaf_shapes();
    for (name, t) in values {
        match shapes.get(name) {
            None => bail!("the strategy gave a value for `{name}`, which is not a leaf of the descendant"),
            Some(s) if s.iter().product::<usize>() != t.data.len() => {
                bail!("the strategy's value for leaf `{name}` has shape {:?}, the leaf has {s:?}", t.shape)
            }
            _ => store.set(name, t.data.clone())?,
        }
    }
    Ok(store)
}

/// Evaluates every weight of `dit` from `store` and returns a plain store (one
/// trainable leaf per weight, DiT's inits recorded): phase 3 of FINE, and the
/// end of every strategy's initialization.
pub fn materialize<D: Backend>(dit: &Dit, store: &ParamStore<D>) -> Result<ParamStore<D>> {
    let p = store.view::<NoneTape>();
    let plain = dit.plain_parameterization();
    let mut values = BTreeMap::new();
    for l in &plain.leaves {
        let n = l.shape.iter().product();
        values.insert(l.name.clone(), p.flat(&l.name, n)?.as_vec());
    }
    ParamStore::from_values(store.dev.clone(), plain, values)
}

/// Writes a learngene file (safetensors; strategy, version and metadata in the header).
pub fn save_learngene(path: &Path, lg: &Learngene) -> Result<()> {
    let mut meta: BTreeMap<String, String> = lg.meta.iter().map(|(k, v)| (format!("meta.{k}"), v.clone())).collect();
    meta.insert("format".into(), LEARNGENE_FORMAT.into());
    meta.insert("strategy".into(), lg.strategy.clone());
    meta.insert("strategy_version".into(), lg.strategy_version.clone());
    meta.insert(crc::DATA_KEY.into(), tensors_crc(&lg.tensors));
    meta.insert(crc::META_KEY.into(), crc::of_meta(&meta));
    crate::util::fsx::write_atomic(path, &to_safetensors(&lg.tensors, &meta)?)
}

/// CRC-32 of a learngene's tensors: names, shapes and values, in name order.
fn tensors_crc(t: &fine_plugin_api::tensors::Tensors) -> String {
    let mut h = crc32fast::Hasher::new();
    for (name, t) in t {
        h.update(name.as_bytes());
        t.shape.iter().for_each(|d| h.update(&(*d as u64).to_le_bytes()));
        t.data.iter().for_each(|x| h.update(&x.to_le_bytes()));
    }
    format!("{:08x}", h.finalize())
}

/// Reads a learngene file; every defect is an error naming `path`. Files
/// written with checksums (data and metadata) are verified.
pub fn load_learngene(path: &Path) -> Result<Learngene> {
    let bytes = crate::util::fsx::read_input(path, "learngene")?;
    let (tensors, meta) =
        from_safetensors(&bytes).with_context(|| format!("learngene {} is unusable", path.display()))?;
    let damaged = |e: anyhow::Error| e.context(format!("learngene {} is unusable", path.display()));
    crc::check_meta(&meta).map_err(damaged)?;
    if let Some(stored) = meta.get(crc::DATA_KEY) {
        let computed = tensors_crc(&tensors);
        if *stored != computed {
            return Err(damaged(anyhow!("data checksum mismatch (stored {stored}, computed {computed})")));
        }
    }
    let get = |k: &str| {
        meta.get(k).cloned().ok_or_else(|| anyhow!("learngene {}: metadata `{k}` is missing", path.display()))
    };
    if get("format")? != LEARNGENE_FORMAT {
        bail!("{}: format `{}` is not `{LEARNGENE_FORMAT}`", path.display(), get("format")?);
    }
    Ok(Learngene {
        strategy: get("strategy")?,
        strategy_version: get("strategy_version")?,
        meta: meta.iter().filter_map(|(k, v)| k.strip_prefix("meta.").map(|k| (k.to_string(), v.clone()))).collect(),
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(name: &str) -> Graph {
        crate::graph::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs").join(name)).unwrap()
    }

    /// A learngene of every weight of `g` (plain names), each filled with its index.
    fn plain_learngene(g: &Graph) -> Learngene {
        let tensors = Dit::new(g)
            .weights()
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let n = w.shape.iter().product();
                (w.name, Tensor::new(w.shape, vec![i as f32; n]).unwrap())
            })
            .collect();
        Learngene { strategy: "x".into(), strategy_version: "0".into(), meta: BTreeMap::new(), tensors }
    }

    #[test]
    fn shape_bound_weights_start_fresh_and_blocks_are_kept() {
        // 1×28×28, patch 4, 10 classes → 3×32×32, patch 8, unconditional; same blocks.
        let (grey, rgb) = (graph("fmnist-tiny.ron"), graph("pokemon-tiny.ron"));
        let mut lg = plain_learngene(&grey);
        let qkv = lg.tensors["blocks.0.attn.qkv.weight"].clone();
        lg.tensors.insert("pool.d1.x_embedder.proj.weight".into(), lg.tensors["x_embedder.proj.weight"].clone());
        let weights = weights_of(&Dit::new(&rgb));
        let (fitted, fresh) = fit_shape_bound(&lg, &weights, 3).unwrap();
        assert_eq!(fresh, ["x_embedder.proj.weight", "final_layer.linear.weight", "final_layer.linear.bias"]);
        let shape = |n: &str| weights.iter().find(|w| w.name == n).unwrap().shape.clone();
        for name in ["x_embedder.proj.weight", "pool.d1.x_embedder.proj.weight"] {
            let t = &fitted.tensors[name];
            assert_eq!(t.shape, shape("x_embedder.proj.weight"), "{name}");
            assert!(t.data.iter().any(|v| *v != 0.0) && t.data.iter().all(|v| v.abs() < 1.0), "{name}: Xavier");
        }
        assert!(fitted.tensors["final_layer.linear.weight"].data.iter().all(|v| *v == 0.0), "DiT's zero init");
        assert_eq!(fitted.tensors["blocks.0.attn.qkv.weight"], qkv);
        assert_eq!(fitted.tensors["x_embedder.proj.bias"], lg.tensors["x_embedder.proj.bias"], "same shape: kept");
        // The same shape: nothing changes.
        let (same, none) = fit_shape_bound(&lg, &weights_of(&Dit::new(&grey)), 3).unwrap();
        assert!(none.is_empty() && same.tensors == lg.tensors);
        // An unconditional ancestry, a conditional target: a fresh label table.
        let uncond = plain_learngene(&rgb);
        let mut cond = rgb.clone();
        cond.conditioning.num_classes = 5;
        let (fitted, fresh) = fit_shape_bound(&uncond, &weights_of(&Dit::new(&cond)), 3).unwrap();
        assert_eq!(fresh, ["y_embedder.embedding_table.weight"]);
        assert_eq!(fitted.tensors["y_embedder.embedding_table.weight"].shape, [6, 32]);
    }
}
