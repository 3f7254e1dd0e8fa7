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
use crate::info::{OptionSpec, Options};
use crate::param::{Expr, LeafSpec, Parameterization};
use crate::strategy::{Learngene, WeightSpec};
use crate::tensors::{Tensor, Tensors};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;

/// The five weight types FINE factorizes: the roles ([`WeightSpec::role`]) of a
/// block's matrices.
pub const TYPES: [&str; 5] = ["qkv", "proj", "fc1", "fc2", "ada"];

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

/// The block and type (of [`TYPES`]) of `w`, if it is one of a block's five matrices.
pub fn type_of(w: &WeightSpec) -> Option<(usize, &'static str)> {
    Some((w.block?, TYPES.iter().find(|t| **t == w.role)?))
}

/// Block `l`'s weight of role `role` in the weight list.
pub fn weight<'a>(weights: &'a [WeightSpec], l: usize, role: &str) -> Result<&'a WeightSpec> {
    weights.iter().find(|w| w.is(l, role)).ok_or_else(|| anyhow!("the graph has no block-{l} `{role}` weight"))
}

/// (m1, m2) of the weights of type `t` in the weight list (from block 0).
pub fn type_shape(weights: &[WeightSpec], t: &str) -> Result<(usize, usize)> {
    let w = weight(weights, 0, t)?;
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

/// Refuses option `rank_{t}` when it is set (not 0) and differs from `made`,
/// the rank type `t` of the learngene was made at.
pub fn check_rank_option(opts: &Options, t: &str, made: usize) -> Result<()> {
    let want = opts.int(&format!("rank_{t}"))?;
    if want != 0 && want != made {
        bail!("rank_{t} = {want}, but the learngene was made at rank {made} (leave rank_{t} unset)");
    }
    Ok(())
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
    leaves.push(LeafSpec::new(w.name.clone(), w.shape.clone(), w.init.clone(), trainable));
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

// ----------------------------------------------------------------------------
// Per-layer tables: σ rows and block biases of a descendant from the ancestry's
// ----------------------------------------------------------------------------

/// How a descendant's per-layer rows (σ of one weight type, or one block bias)
/// are made from the ancestry's (L, n) table, whatever the descendant's depth:
/// the choices of FINE's Σ-init ablation plus two of ours.
pub const DEPTH_RULES: [&str; 5] = ["stats", "random", "identical", "linear", "zero"];

/// Prefix of the ancestry's block-bias tables in a learngene: `biases.{param}`
/// (L, n) holds row l = `blocks.{l}.{param}`.
pub const BIAS_TABLE: &str = "biases.";

/// The rows of an (L, n) table.
pub fn table_rows(t: &Tensor) -> Result<Vec<&[f32]>> {
    match t.shape[..] {
        [l, n] if l > 0 => Ok((0..l).map(|i| &t.data[i * n..(i + 1) * n]).collect()),
        _ => bail!("a per-layer table must be (L, n) with L ≥ 1, got {:?}", t.shape),
    }
}

/// `depth` rows (flattened, depth × n) from the ancestry's (L, n) table `anc` by `rule`:
///
/// * `stats` — every value drawn from N(μ_k, s_k²), μ_k and s_k the mean and
///   standard deviation of column k over the ancestry's layers: random, but
///   with each component's sign and scale as the ancestry learned them;
/// * `random` — N(0, ρ²) with ρ the RMS of the whole table: random signs;
/// * `identical` — the mean row for every layer;
/// * `linear` — row l interpolated linearly at relative depth l/(depth−1) of the
///   ancestry's rows (so depth L gives the ancestry's rows back exactly);
/// * `zero` — zeros.
pub fn depth_rows(rule: &str, anc: &Tensor, depth: usize, rng: &mut impl rand::Rng) -> Result<Vec<f32>> {
    use rand_distr::Distribution;
    let rs = table_rows(anc)?;
    let (la, n) = (rs.len(), anc.shape[1]);
    let normal = |m: f64, sd: f64| rand_distr::Normal::new(m, sd.max(0.0)).map_err(|e| anyhow!("{e}"));
    let mean: Vec<f64> = (0..n).map(|k| rs.iter().map(|row| row[k] as f64).sum::<f64>() / la as f64).collect();
    let mut out = Vec::with_capacity(depth * n);
    match rule {
        "stats" => {
            let sd: Vec<f64> = (0..n)
                .map(|k| (rs.iter().map(|row| (row[k] as f64 - mean[k]).powi(2)).sum::<f64>() / la as f64).sqrt())
                .collect();
            let dists = (0..n).map(|k| normal(mean[k], sd[k])).collect::<Result<Vec<_>>>()?;
            for _ in 0..depth {
                out.extend(dists.iter().map(|d| d.sample(rng) as f32));
            }
        }
        "random" => {
            let rms = (anc.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / anc.data.len() as f64).sqrt();
            let d = normal(0.0, rms)?;
            out.extend((0..depth * n).map(|_| d.sample(rng) as f32));
        }
        "identical" => (0..depth).for_each(|_| out.extend(mean.iter().map(|&m| m as f32))),
        "linear" => {
            for l in 0..depth {
                let p = if depth == 1 { 0.0 } else { l as f64 * (la - 1) as f64 / (depth - 1) as f64 };
                let (i, f) = (p.floor() as usize, (p - p.floor()) as f32);
                let j = (i + 1).min(la - 1);
                out.extend((0..n).map(|k| (1.0 - f) * rs[i][k] + f * rs[j][k]));
            }
        }
        "zero" => out.resize(depth * n, 0.0),
        m => bail!("unknown depth rule `{m}` (one of {})", DEPTH_RULES.join(", ")),
    }
    Ok(out)
}

/// The phase-2 options FINE and its ablations share (`sigma_init`,
/// `bias_init`, `sigma_lr_scale`, `sigma_steps`), read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaPhase {
    /// σ rule ([`SigmaPhase::SIGMA_INITS`] or one of the strategy's own).
    pub sigma_init: String,
    /// Bias rule ([`depth_rows`]), `same` already resolved.
    pub bias_init: String,
    /// Learning-rate scale of every leaf trained in the phase.
    pub lr_scale: f32,
    /// Steps of the phase.
    pub steps: usize,
}

impl SigmaPhase {
    /// The σ-inits every σ-phase strategy offers (FINE's Σ-init ablation plus `stats`).
    pub const SIGMA_INITS: [&'static str; 4] = ["stats", "random", "identical", "linear"];

    /// The options, with `extra` σ-inits of the strategy's own after the shared ones.
    pub fn options(extra: &[&str]) -> Vec<OptionSpec> {
        let inits: Vec<&str> = Self::SIGMA_INITS.iter().chain(extra).copied().collect();
        vec![
            OptionSpec::choice(
                "sigma_init",
                &inits,
                "stats",
                "initial σ of a descendant's layers (stats: per component N(mean, std²) of the ancestry's σ; \
                 random: N(0, RMS²), random signs, σ_ada = 0; identical: mean row; linear: by relative depth)",
            ),
            OptionSpec::choice(
                "bias_init",
                &["same", "stats", "identical", "linear", "zero"],
                "linear",
                "initial block biases from the ancestry's by depth (same: the sigma_init rule; zero: DiT's init)",
            ),
            OptionSpec::float(
                "sigma_lr_scale",
                30.0,
                "learning rate of σ and biases in the σ phase, as a multiple of the run's",
            ),
            OptionSpec::int("sigma_steps", 300, "steps of σ-and-bias training (the σ phase); 0 keeps the initial σ"),
        ]
    }

    /// Reads and checks the options (`extra` as given to [`SigmaPhase::options`]).
    pub fn from_options(opts: &Options, extra: &[&str]) -> Result<Self> {
        let sigma_init = opts.text("sigma_init")?.to_string();
        if !Self::SIGMA_INITS.contains(&sigma_init.as_str()) && !extra.contains(&sigma_init.as_str()) {
            bail!("unknown sigma_init `{sigma_init}`");
        }
        let bias_init = match opts.text("bias_init")? {
            "same" if sigma_init == "random" || !DEPTH_RULES.contains(&sigma_init.as_str()) => "zero".to_string(),
            "same" => sigma_init.clone(),
            m => m.to_string(),
        };
        let lr_scale = opts.float("sigma_lr_scale")?;
        if !(lr_scale.is_finite() && lr_scale > 0.0 && lr_scale < f32::MAX as f64) {
            bail!("option sigma_lr_scale must be finite and positive, got {lr_scale}");
        }
        Ok(Self { sigma_init, bias_init, lr_scale: lr_scale as f32, steps: opts.int("sigma_steps")? })
    }

    /// σ rows of weight type `t` for `depth` layers from the ancestry's table
    /// ([`depth_rows`]); `random` keeps adaLN-Zero: σ_ada = 0, as a fresh DiT
    /// block's modulation.
    pub fn sigma_rows(&self, t: &str, anc: &Tensor, depth: usize, rng: &mut impl rand::Rng) -> Result<Vec<f32>> {
        let rule = if self.sigma_init == "random" && t == "ada" { "zero" } else { self.sigma_init.as_str() };
        depth_rows(rule, anc, depth, rng)
    }

    /// Sets the phase's learning-rate scale on every trainable leaf of `spec`.
    pub fn scale_lr(&self, spec: &mut Parameterization) {
        spec.leaves.iter_mut().filter(|l| l.trainable).for_each(|l| l.lr_scale = self.lr_scale);
    }
}

/// The ancestry's block biases as tables `biases.{param}` (L, n), from its
/// trained leaves (a plain or factorized ancestry: biases are their own leaves).
pub fn bias_tables(leaves: &Tensors, depth: usize) -> Result<Tensors> {
    let params: Vec<String> = leaves
        .keys()
        .filter_map(|n| match block_of(n) {
            Some((0, p)) if p.ends_with(".bias") => Some(p.to_string()),
            _ => None,
        })
        .collect();
    let mut out = Tensors::new();
    for p in params {
        let mut data = Vec::new();
        let mut width = 0;
        for l in 0..depth {
            let name = format!("blocks.{l}.{p}");
            let t = leaves.get(&name).ok_or_else(|| anyhow!("the ancestry has no leaf `{name}`"))?;
            width = t.data.len();
            data.extend_from_slice(&t.data);
        }
        out.insert(format!("{BIAS_TABLE}{p}"), Tensor::new(vec![depth, width], data)?);
    }
    Ok(out)
}

/// Start values of a descendant's block biases (`weights` of a `depth`-block
/// target) from the learngene's `biases.*` tables by `rule` ([`depth_rows`]);
/// `rule` `zero` needs no table (DiT's own init).
pub fn descendant_biases(
    lg: &Learngene,
    weights: &[WeightSpec],
    depth: usize,
    rule: &str,
    rng: &mut impl rand::Rng,
) -> Result<Tensors> {
    let mut out = Tensors::new();
    let params: Vec<&str> = weights
        .iter()
        .filter_map(|w| match block_of(&w.name) {
            Some((0, p)) if p.ends_with(".bias") => Some(p),
            _ => None,
        })
        .collect();
    for p in params {
        let name = format!("{BIAS_TABLE}{p}");
        let table = match (rule, lg.tensors.get(&name)) {
            ("zero", _) => continue,
            (_, Some(t)) => t,
            (_, None) => bail!("the learngene lacks `{name}` (made before biases were inherited?): use bias_init=zero"),
        };
        let n = table.shape.get(1).copied().unwrap_or(0);
        let rows = depth_rows(rule, table, depth, rng).with_context(|| format!("biases of `{p}`"))?;
        for l in 0..depth {
            let w = format!("blocks.{l}.{p}");
            let want: usize = weights.iter().find(|x| x.name == w).map(|x| x.shape.iter().product()).unwrap_or(0);
            if want != n {
                bail!("the learngene's `{name}` has rows of {n} values, `{w}` needs {want}");
            }
            out.insert(w.clone(), Tensor::new(vec![n], rows[l * n..(l + 1) * n].to_vec())?);
        }
    }
    Ok(out)
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
        let w = |role: &str, block| WeightSpec {
            name: String::new(),
            shape: vec![2, 2],
            init: crate::param::Init::Zeros,
            role: role.into(),
            block,
        };
        assert_eq!(type_of(&w("fc2", Some(3))), Some((3, "fc2")));
        assert_eq!(type_of(&w("fc2.bias", Some(3))), None);
        assert_eq!(type_of(&w("head", None)), None);
        assert_eq!(weight(&[w("qkv", Some(0)), w("qkv", Some(1))], 1, "qkv").unwrap().block, Some(1));
        assert!(weight(&[w("qkv", Some(0))], 1, "qkv").is_err());
    }

    fn table() -> Tensor {
        // 3 layers, 2 columns.
        Tensor::new(vec![3, 2], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap()
    }

    #[test]
    fn depth_rules() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut rows = |rule: &str, d: usize| depth_rows(rule, &table(), d, &mut rng).unwrap();
        assert_eq!(rows("identical", 2), [3.0, -4.0, 3.0, -4.0]);
        // 5 layers over 3 ancestry rows: positions 0, 0.5, 1, 1.5, 2.
        assert_eq!(rows("linear", 5), [1.0, -2.0, 2.0, -3.0, 3.0, -4.0, 4.0, -5.0, 5.0, -6.0]);
        assert_eq!(rows("linear", 3), table().data, "linear at the ancestry's depth is the ancestry");
        assert_eq!(rows("linear", 1), [1.0, -2.0]);
        assert_eq!(rows("zero", 2), [0.0; 4]);
        // stats: column means 3, −4 and std √(8/3) ≈ 1.63; 2000 draws keep sign and scale.
        let s = rows("stats", 2000);
        let col = |k: usize| s.iter().skip(k).step_by(2).map(|&v| v as f64).collect::<Vec<_>>();
        for (k, m) in [(0, 3.0), (1, -4.0)] {
            let c = col(k);
            let mean = c.iter().sum::<f64>() / c.len() as f64;
            let sd = (c.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c.len() as f64).sqrt();
            assert!((mean - m).abs() < 0.1 && (sd - (8.0f64 / 3.0).sqrt()).abs() < 0.1, "column {k}: {mean} ± {sd}");
        }
        // random: mean 0 (random signs), RMS of the table √(91/6) ≈ 3.89.
        let r = rows("random", 2000);
        let pos = r.iter().step_by(2).filter(|v| **v > 0.0).count();
        assert!((800..1200).contains(&pos), "{pos} of 1000 positive");
        let rms = (r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
        assert!((rms - (91.0f64 / 6.0).sqrt()).abs() < 0.2, "rms {rms}");
        assert!(depth_rows("cubic", &table(), 2, &mut rng).is_err());
    }

    #[test]
    fn sigma_phase() {
        use crate::info::{PluginInfo, PluginKind};
        use rand::SeedableRng;
        let info = PluginInfo {
            name: "t".into(),
            kind: PluginKind::Strategy,
            version: "0".into(),
            description: String::new(),
            options: SigmaPhase::options(&["nearest"]),
        };
        let phase = |o: &str| SigmaPhase::from_options(&Options::parse(&info, o).unwrap(), &["nearest"]);
        let p = phase("").unwrap();
        assert_eq!((p.sigma_init.as_str(), p.bias_init.as_str(), p.lr_scale, p.steps), ("stats", "linear", 30.0, 300));
        assert_eq!(phase("sigma_init=random,bias_init=same").unwrap().bias_init, "zero");
        assert_eq!(phase("sigma_init=nearest,bias_init=same").unwrap().bias_init, "zero");
        assert_eq!(phase("sigma_init=identical,bias_init=same").unwrap().bias_init, "identical");
        for bad in ["sigma_lr_scale=0", "sigma_lr_scale=-1", "sigma_lr_scale=1e39"] {
            let e = phase(bad).unwrap_err();
            assert!(format!("{e}").contains("sigma_lr_scale"), "{bad}: {e}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let p = phase("sigma_init=random").unwrap();
        assert_eq!(p.sigma_rows("ada", &table(), 2, &mut rng).unwrap(), [0.0; 4], "adaLN-Zero kept");
        assert!(p.sigma_rows("qkv", &table(), 2, &mut rng).unwrap().iter().all(|v| *v != 0.0));
    }
}
