//! Host side of [`Strategy::pool`](fine_plugin_api::Strategy::pool) and
//! [`Strategy::probes`](fine_plugin_api::Strategy::probes): distilling pool
//! members from a trained ancestry, and computing token features of learngene
//! models on real data (Learngene Pool's auxiliary models and stitch fits).

use super::{materialize, store_from};
use crate::data::Dataset;
use crate::diffusion::NoiseSchedule;
use crate::graph::Graph;
use crate::model::store::CpuDevice;
use crate::model::{Backend, Dit, ParamStore, Parameterization};
use crate::train::{Teacher, TrainConfig, Trainer};
use anyhow::{anyhow, bail, Context, Result};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{PoolMember, Probes};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

// ------------------------------------------------------------------------
// Pool members
// ------------------------------------------------------------------------

/// The prefix of pool member `name`'s weights among the leaves `extract` sees.
pub fn member_prefix(name: &str) -> String {
    format!("pool.{name}.")
}

/// Checks a member against the ancestry before any training.
pub fn check_member(anc: &Graph, m: &PoolMember) -> Result<()> {
    if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("pool member name `{}` must be letters, digits, `-` or `_`", m.name);
    }
    crate::graph::validate(&m.graph).with_context(|| format!("pool member `{}`", m.name))?;
    let g = &m.graph;
    if g.input != anc.input || g.patch_size != anc.patch_size || g.conditioning != anc.conditioning {
        bail!("pool member `{}` ({}) must share the ancestry's input, patch size and classes", m.name, g.name);
    }
    let spec = member_spec(m);
    for w in &m.frozen {
        if !spec.leaves.iter().any(|l| &l.name == w) {
            bail!("pool member `{}`: frozen weight `{w}` is not a weight of {}", m.name, g.name);
        }
    }
    Ok(())
}

/// A member's plain parameterization with its frozen weights marked.
fn member_spec(m: &PoolMember) -> Parameterization {
    let mut spec = Dit::new(&m.graph).plain_parameterization();
    for l in spec.leaves.iter_mut() {
        l.trainable = !m.frozen.contains(&l.name);
    }
    spec
}

/// The trained ancestry (`leaves` of `spec` on `graph`) as a frozen teacher.
pub fn teacher<D: Backend>(
    dev: D,
    graph: &Graph,
    spec: &Parameterization,
    leaves: &Tensors,
    alpha: f32,
) -> Result<Teacher<D>> {
    let dit = Dit::new(graph);
    let values = leaves.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect();
    let store = ParamStore::from_values(dev, spec.clone(), values)?;
    Ok(Teacher { store: materialize(&dit, &store)?, dit, alpha })
}

/// A run that distils member `m` from `teacher` under `cfg` (steps set to the member's).
pub fn member_trainer<D: Backend>(dev: D, m: &PoolMember, teacher: Teacher<D>, cfg: TrainConfig) -> Result<Trainer<D>> {
    let dit = Dit::new(&m.graph);
    let store = store_from(dev, &dit, &member_spec(m), &m.values, cfg.seed)?;
    let cfg = TrainConfig { steps: m.steps.max(1), ckpt_every: m.steps.max(1), ..cfg };
    let provenance = crate::train::Provenance { pool_member: Some(m.name.clone()), ..Default::default() };
    let mut t = Trainer::with_store(dit, cfg, store, provenance)?;
    t.teacher = Some(teacher);
    Ok(t)
}

/// A member's plain weights from `store`, named with [`member_prefix`].
pub fn member_leaves<D: Backend>(m: &PoolMember, store: &ParamStore<D>) -> Result<Tensors> {
    let dit = Dit::new(&m.graph);
    let plain = materialize(&dit, store)?;
    let prefix = member_prefix(&m.name);
    plain
        .leaves()
        .map(|(n, l)| {
            Ok((format!("{prefix}{n}"), Tensor::new(l.shape.clone(), crate::model::store::flat_values(&l.value))?))
        })
        .collect()
}

/// An untrained member's leaves (its start values): for dry runs that check a
/// configuration before any training.
pub fn untrained_member_leaves(m: &PoolMember) -> Result<Tensors> {
    let dit = Dit::new(&m.graph);
    let store = store_from(CpuDevice::default(), &dit, &member_spec(m), &m.values, 0)?;
    member_leaves(m, &store)
}

// ------------------------------------------------------------------------
// Probes
// ------------------------------------------------------------------------

/// Runs every probe of `req` on the same `req.images` noisy images of `data`
/// (drawn with `seed`: images, uniform timesteps of the default schedule,
/// Gaussian noise, true labels) and returns the token features by probe name.
pub fn run_probes(lg: &Tensors, req: &Probes, data: &Dataset, seed: u64) -> Result<Tensors> {
    if req.probes.is_empty() {
        return Ok(Tensors::new());
    }
    if req.images == 0 || req.images > data.len {
        bail!("probes ask for {} images; the data has {}", req.images, data.len);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(0x9e37_79b9); // apart from the training streams
    let mut idx: Vec<usize> = (0..data.len).collect();
    idx.shuffle(&mut rng);
    idx.truncate(req.images);
    let mut x0 = Vec::new();
    data.fill_batch(&idx, &mut x0);
    let y = data.labels_of(&idx);
    let d = TrainConfig::default();
    let sched = NoiseSchedule::new(d.beta_schedule, d.diffusion_steps);
    let (x_t, t, _) = sched.noisy_batch(&x0, idx.len(), &mut rng);
    let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();

    let dev = CpuDevice::default();
    let mut out = Tensors::new();
    for p in &req.probes {
        let dit = Dit::new(&p.graph);
        let plain = dit.plain_parameterization();
        let mut values = BTreeMap::new();
        for l in &plain.leaves {
            let name = format!("{}{}", p.prefix, l.name);
            let t = lg.get(&name).ok_or_else(|| anyhow!("probe `{}`: the learngene has no tensor `{name}`", p.name))?;
            values.insert(l.name.clone(), t.data.clone());
        }
        let store = ParamStore::from_values(dev.clone(), plain, values)
            .with_context(|| format!("probe `{}`: weights of {}", p.name, p.graph.name))?;
        let view = store.view::<dfdx::prelude::NoneTape>();
        let mut feats = Vec::with_capacity(req.images * p.graph.tokens() * p.graph.hidden);
        let n = data.image_len();
        for a in (0..req.images).step_by(64) {
            let b = (a + 64).min(req.images);
            feats.extend(dit.tokens_after(&view, &x_t[a * n..b * n], &tf[a..b], &y[a..b], p.blocks)?);
        }
        out.insert(p.name.clone(), Tensor::new(vec![req.images * p.graph.tokens(), p.graph.hidden], feats)?);
    }
    Ok(out)
}
