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
    let req = s.probes(lg, &g, opts)?;
    let features =
        if req.probes.is_empty() { Tensors::new() } else { pool::run_probes(&lg.tensors, &req, &data()?, seed)? };
    let d = s.descendant_probed(lg, &g, &weights_of(&dit), opts, &features)?;
    Ok((dit, d))
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
