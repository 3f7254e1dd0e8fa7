//! Checkpoints: one safetensors file per run holding weights, EMA weights,
//! AdamW moments, the step, and — in its metadata — the resolved graph,
//! training config and parameterization (the config travels with the weights).
//!
//! Tensor names: `param/<leaf>`, `ema/<leaf>`, `adam.m/<leaf>`, `adam.v/<leaf>`.
//! A CRC-32 of all tensor bytes (in name order) is stored in the metadata and
//! checked on load, so a flipped bit is refused, not trained on. Writes are
//! atomic (see [`crate::util::fsx::write_atomic`]).
//!
//! The random state is `(seed, step)`: every random draw of step `s` comes
//! from ChaCha8 stream `s` of the seed (see `train::trainer`), so the step
//! fully determines it.

use crate::graph::{self, Graph};
use crate::model::Parameterization;
use crate::model::{Dit, ParamStore};
use crate::train::optim::OptState;
use crate::train::{Provenance, TrainConfig, Trainer};
use crate::util::crc as crc_meta;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Format tag written into every checkpoint.
pub const FORMAT: &str = "fine-checkpoint/1";

/// Everything needed to resume a run exactly.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The architecture.
    pub graph: Graph,
    /// The run configuration.
    pub train: TrainConfig,
    /// How weights are made from leaves.
    pub spec: Parameterization,
    /// Optimizer steps completed.
    pub step: usize,
    /// Leaf values.
    pub params: BTreeMap<String, Vec<f32>>,
    /// EMA leaf values.
    pub ema: BTreeMap<String, Vec<f32>>,
    /// AdamW first moments (trainable leaves).
    pub adam_m: BTreeMap<String, Vec<f32>>,
    /// AdamW second moments (trainable leaves).
    pub adam_v: BTreeMap<String, Vec<f32>>,
    /// Where the run came from (metadata `extra.<field>`).
    pub provenance: Provenance,
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Checkpoint {
    /// The first tensor (weights, EMA or moments, as `params.NAME`, `ema.NAME`, …)
    /// holding a value that is not finite; `None` when every value is.
    pub fn first_non_finite(&self) -> Option<String> {
        let maps = [("params", &self.params), ("ema", &self.ema), ("adam_m", &self.adam_m), ("adam_v", &self.adam_v)];
        maps.iter().find_map(|(what, m)| {
            m.iter().find(|(_, v)| v.iter().any(|x| !x.is_finite())).map(|(n, _)| format!("{what}.{n}"))
        })
    }

    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let shapes = self.spec.leaf_shapes();
        let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (prefix, map) in
            [("param", &self.params), ("ema", &self.ema), ("adam.m", &self.adam_m), ("adam.v", &self.adam_v)]
        {
            for (name, v) in map {
                let shape = shapes.get(name).cloned().unwrap_or_else(|| vec![v.len()]);
                named.push((format!("{prefix}/{name}"), shape, to_bytes(v)));
            }
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut crc = crc32fast::Hasher::new();
        named.iter().for_each(|(_, _, b)| crc.update(b));
        let mut meta: HashMap<String, String> =
            self.provenance.to_map().into_iter().map(|(k, v)| (format!("extra.{k}"), v)).collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("graph".into(), graph::load::to_ron(&self.graph));
        meta.insert("train".into(), ron::ser::to_string_pretty(&self.train, Default::default())?);
        meta.insert("parameterization".into(), ron::to_string(&self.spec)?);
        meta.insert("crc32".into(), format!("{:08x}", crc.finalize()));
        meta.insert(crc_meta::META_KEY.into(), crc_meta::of_meta(&meta));
        let views = named
            .iter()
            .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        Ok(safetensors::serialize(views, &Some(meta))?)
    }

    /// Writes atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.check_consistent().and_then(|_| self.to_bytes());
        crate::util::fsx::write_atomic(path, &bytes.with_context(|| format!("saving checkpoint {}", path.display()))?)
    }

    /// Reads and verifies a checkpoint; every defect is an error naming `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::util::fsx::read_input(path, "checkpoint")?;
        Self::from_bytes(&bytes).with_context(|| format!("checkpoint {} is unusable", path.display()))
    }

    /// Parses and verifies checkpoint bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |e: safetensors::SafeTensorError| {
            anyhow!("not a usable safetensors file: {}", fine_plugin_api::tensors::explain(&e))
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let st = SafeTensors::deserialize(bytes).map_err(bad)?;
        let meta = header.metadata().clone().ok_or_else(|| anyhow!("no metadata: not a fine checkpoint"))?;
        crc_meta::check_meta(&meta)?;
        let get = |k: &str| meta.get(k).ok_or_else(|| anyhow!("metadata field `{k}` is missing"));
        if get("format")? != FORMAT {
            bail!("format `{}` is not `{FORMAT}`", get("format")?);
        }
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        let mut crc = crc32fast::Hasher::new();
        let mut maps: BTreeMap<&str, BTreeMap<String, Vec<f32>>> = BTreeMap::new();
        for n in &names {
            let t = st.tensor(n).map_err(|e| anyhow!("tensor `{n}`: {}", fine_plugin_api::tensors::explain(&e)))?;
            if t.dtype() != Dtype::F32 {
                bail!("tensor `{n}` has dtype {:?}, expected F32", t.dtype());
            }
            crc.update(t.data());
            let (prefix, leaf) = n.split_once('/').ok_or_else(|| anyhow!("unexpected tensor name `{n}`"))?;
            let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let key = match prefix {
                "param" => "param",
                "ema" => "ema",
                "adam.m" => "adam.m",
                "adam.v" => "adam.v",
                _ => bail!("unexpected tensor name `{n}`"),
            };
            maps.entry(key).or_default().insert(leaf.to_string(), v);
        }
        let crc = format!("{:08x}", crc.finalize());
        if &crc != get("crc32")? {
            bail!("data checksum mismatch (stored {}, computed {crc}): the file is corrupted", get("crc32")?);
        }
        let graph = graph::load::from_str(get("graph")?, "checkpoint metadata `graph`")?;
        let train: TrainConfig = ron::from_str(get("train")?).map_err(|e| anyhow!("metadata `train`: {e}"))?;
        let spec: Parameterization =
            ron::from_str(get("parameterization")?).map_err(|e| anyhow!("metadata `parameterization`: {e}"))?;
        let step = get("step")?.parse().map_err(|e| anyhow!("metadata `step`: {e}"))?;
        let extra =
            meta.iter().filter_map(|(k, v)| k.strip_prefix("extra.").map(|k| (k.to_string(), v.clone()))).collect();
        let provenance = Provenance::from_map(extra).context("checkpoint metadata")?;
        let mut take = |k: &str| maps.remove(k).unwrap_or_default();
        let ck = Checkpoint {
            graph,
            train,
            spec,
            step,
            params: take("param"),
            ema: take("ema"),
            adam_m: take("adam.m"),
            adam_v: take("adam.v"),
            provenance,
        };
        ck.check_consistent()?;
        Ok(ck)
    }

    /// Every leaf has params and EMA values of the right size.
    fn check_consistent(&self) -> Result<()> {
        for l in &self.spec.leaves {
            let n: usize = l.shape.iter().product();
            for (what, map) in [("param", &self.params), ("ema", &self.ema)] {
                match map.get(&l.name) {
                    None => bail!("{what} tensor for leaf `{}` is missing", l.name),
                    Some(v) if v.len() != n => {
                        bail!("{what} `{}` has {} values, shape {:?} needs {n}", l.name, v.len(), l.shape)
                    }
                    _ => {}
                }
            }
            // After a step every trainable leaf has both AdamW moments; resuming without
            // them would silently restart the optimizer and no longer be exact.
            for (what, map) in [("adam.m", &self.adam_m), ("adam.v", &self.adam_v)] {
                match map.get(&l.name) {
                    None if self.step > 0 && l.trainable => {
                        bail!("{what} tensor for trainable leaf `{}` is missing (step {})", l.name, self.step)
                    }
                    Some(v) if v.len() != n => {
                        bail!("{what} `{}` has {} values, shape {:?} needs {n}", l.name, v.len(), l.shape)
                    }
                    _ => {}
                }
            }
        }
        let leaves: std::collections::BTreeSet<&str> = self.spec.leaves.iter().map(|l| l.name.as_str()).collect();
        for (what, map) in
            [("param", &self.params), ("ema", &self.ema), ("adam.m", &self.adam_m), ("adam.v", &self.adam_v)]
        {
            if let Some(n) = map.keys().find(|n| !leaves.contains(n.as_str())) {
                bail!("{what} tensor `{n}` belongs to no leaf of the stored parameterization");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// A trainer to and from a checkpoint (here, so that `train` does not depend on
// `checkpoint`: the checkpoint format is built on the trainer's types)
// ---------------------------------------------------------------------------

impl<D: crate::model::Backend> Trainer<D> {
    /// Resumes from a checkpoint (its own graph and config).
    pub fn from_checkpoint(dev: D, ck: Checkpoint) -> Result<Self> {
        ck.train.validate().context("the checkpoint's stored training config")?;
        let dit = Dit::new(&ck.graph);
        ck.spec.validate(&dit.weight_shapes()).context("checkpoint parameterization does not fit its graph")?;
        let store = ParamStore::from_values(dev, ck.spec.clone(), ck.params)?;
        let opt = OptState::host(ck.adam_m, ck.adam_v, ck.ema, ck.step as u64);
        let data = crate::train::trainer::load_data(&ck.train, &ck.graph)?;
        Self::assemble(dit, ck.train, store, opt, ck.step, ck.provenance, data)
    }

    /// The complete state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        let (adam_m, adam_v, ema) = self.opt().host_copy(); // one read of the device state
        Checkpoint {
            graph: self.dit.graph.clone(),
            train: self.cfg.clone(),
            spec: self.store.spec.clone(),
            step: self.step,
            params: self.store.host_values(),
            ema,
            adam_m,
            adam_v,
            provenance: self.provenance.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::CpuDevice;
    use crate::train::Trainer;

    /// A checkpoint after a step must carry both moments of every trainable leaf, of the
    /// leaf's size, and nothing for leaves it does not have; the message names the leaf.
    #[test]
    fn moments_are_checked_on_load() {
        let g = crate::graph::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../graphs/fmnist-tiny.ron"
        )))
        .unwrap();
        let cfg = TrainConfig { data: "synthetic".into(), batch: 2, ..Default::default() };
        let mut t = Trainer::new(CpuDevice::default(), &g, cfg, None).unwrap();
        t.train_step().unwrap();
        let ck = t.checkpoint();
        Checkpoint::from_bytes(&ck.to_bytes().unwrap()).unwrap();
        let leaf = "blocks.0.attn.qkv.weight";
        let mut missing = ck.clone();
        missing.adam_m.remove(leaf);
        let e = format!("{:#}", Checkpoint::from_bytes(&missing.to_bytes().unwrap()).unwrap_err());
        assert!(e.contains("adam.m") && e.contains(leaf) && e.contains("missing"), "{e}");
        let mut short = ck.clone();
        short.adam_v.get_mut(leaf).unwrap().pop();
        let e = format!("{:#}", short.check_consistent().unwrap_err());
        assert!(e.contains("adam.v") && e.contains(leaf), "{e}");
        let mut stray = ck;
        stray.ema.insert("nobody".into(), vec![0.0]);
        let e = format!("{:#}", stray.check_consistent().unwrap_err());
        assert!(e.contains("`nobody`"), "{e}");
    }
}
