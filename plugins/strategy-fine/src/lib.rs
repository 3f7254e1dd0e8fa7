//! # FINE — factorized learngene (arXiv 2409.19289), the reference implementation
//!
//! No official code exists; every choice the paper leaves open is documented
//! here and in the README (`../shared/method-notes.md` tags what is read vs
//! inferred).
//!
//! **Phase 1 (ancestry).** In every DiT block the five weight types
//! t ∈ {qkv, proj, fc1, fc2, ada} are `W_{t,l} = U_t · diag(σ_{t,l}) · V_tᵀ`
//! with `U_t` (m1 × r_t) and `V_t` (m2 × r_t) shared by all blocks (leaves
//! `fine.{t}.U`, `fine.{t}.V`) and `σ_{t,l}` row l of `fine.{t}.S` (L × r_t).
//! U, V, σ train jointly from scratch; the weights are rebuilt from the
//! factors every step (the host evaluates the `Factor` expressions on the
//! tape), so gradients reach the shared factors. Biases, embeddings and the
//! final layer are ordinary leaves. Rank per type: option `rank_{t}`, 0 (the
//! default) = min(m1, m2).
//!
//! *Init (inferred).* U, V ~ N(0, s²) with s = (2/((m1+m2)·r))^¼, so that with
//! σ = 1 every entry of W has Xavier variance r·s⁴ = 2/(m1+m2). σ = 1 for
//! qkv/proj/fc1/fc2 and σ = 0 for ada: adaLN-Zero holds at initialization (the
//! U/V gradients of ada are then zero at step 1, σ_ada's are not, so training
//! starts).
//!
//! **Learngene.** {U_t, V_t} for every type, plus the ancestry's Σ tables
//! (`fine.{t}.S`, needed by the `identical`/`linear` σ-inits), plus the
//! depth-independent weights: patch, timestep and label embeddings and the
//! final layer. These carry no per-layer information, their shapes depend
//! only on width/patch/classes, and the paper reports FINE transferring ≈ 35 %
//! of parameters, which fits U/V plus embeddings.
//!
//! **Phase 2 (descendant).** For a target of any depth L (same width), U, V and
//! the inherited embeddings/final layer are frozen; every target layer gets a
//! fresh σ row and zero biases (DiT's init); σ and the block biases train for
//! `sigma_steps` steps (default 300). σ-init (`sigma_init`): `random` —
//! N(0, ρ_t²) with ρ_t the RMS of the ancestry's σ of that type (uninformed but
//! on the right scale; FINE's default, then trained); `identical` — every
//! layer gets the mean of the ancestry's σ rows; `linear` — σ at relative depth
//! l/(L−1) interpolated linearly between the ancestry's rows. The paper's
//! Σ-init ablation rows are `random`/`identical`/`linear` with
//! `sigma_steps=0`, against FINE = `random` + training.
//!
//! **Other widths** (beyond the paper): learned width projections over the
//! frozen learngene, see [`width`].
//!
//! **Phase 3.** The host materializes W = U·diag(σ)·Vᵀ into a plain DiT and
//! trains everything (`fine train --from`).

use anyhow::{anyhow, bail, Context, Result};
use fine_plugin_api::info::OptionType;
use fine_plugin_api::strategy::dit::{self, block_of, rank_of, type_of, type_shape};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{
    Descendant, Expr, Graph, Init, LeafSpec, Learngene, OptionSpec, Options, Parameterization, PluginInfo, PluginKind,
    Strategy, WeightSpec,
};
use rand::SeedableRng;
use rand_distr::Distribution;
use std::collections::BTreeMap;

pub mod width;

/// The five factorized weight types: (type name, weight suffix inside `blocks.{l}.`).
pub use fine_plugin_api::strategy::dit::TYPES;

/// The FINE strategy.
#[derive(Debug, Clone, Default)]
pub struct Fine;

fine_plugin_api::builtin_plugin!(Strategy, Fine::default);

const NAME: &str = "fine";

fn leaf(t: &str, what: &str) -> String {
    format!("fine.{t}.{what}")
}

/// Weights that are neither in a block nor factorized: inherited by descendants.
fn is_shared_weight(name: &str) -> bool {
    !name.starts_with("fine.") && dit::is_depth_independent(name)
}

fn factor(t: &str, l: usize) -> Expr {
    Expr::Factor {
        u: Box::new(Expr::leaf(leaf(t, "U"))),
        s: Box::new(Expr::Row { leaf: leaf(t, "S"), index: l }),
        v: Box::new(Expr::leaf(leaf(t, "V"))),
    }
}

/// The factorized parameterization of a graph with `depth` blocks. `ranks[t]` and
/// `inits` choose leaf inits; `trainable` decides per leaf.
fn factorized(
    weights: &[WeightSpec],
    depth: usize,
    ranks: &BTreeMap<&str, (usize, usize, usize)>,
    trainable: impl Fn(&str) -> bool,
) -> Parameterization {
    let mut leaves = Vec::new();
    let mut bindings = BTreeMap::new();
    for (t, _) in TYPES {
        let (m1, m2, r) = ranks[t];
        let s = (2.0 / ((m1 + m2) as f64 * r as f64)).powf(0.25) as f32;
        let sigma0 = if t == "ada" { 0.0 } else { 1.0 };
        for (what, shape, init) in [
            ("U", vec![m1, r], Init::Normal { std: s }),
            ("V", vec![m2, r], Init::Normal { std: s }),
            ("S", vec![depth, r], Init::Const(sigma0)),
        ] {
            let name = leaf(t, what);
            leaves.push(LeafSpec { trainable: trainable(&name), name, shape, init });
        }
    }
    for w in weights {
        match block_of(&w.name).and_then(|(l, suffix)| Some((l, type_of(suffix)?))) {
            Some((l, t)) => {
                bindings.insert(w.name.clone(), factor(t, l));
            }
            None => dit::push_own_leaf(w, trainable(&w.name), &mut leaves, &mut bindings),
        }
    }
    Parameterization { leaves, bindings }
}

fn ranks_for(weights: &[WeightSpec], opts: &Options) -> Result<BTreeMap<&'static str, (usize, usize, usize)>> {
    TYPES
        .iter()
        .map(|(t, suffix)| {
            let (m1, m2) = type_shape(weights, suffix)?;
            Ok((*t, (m1, m2, rank_of(opts, t, m1, m2)?)))
        })
        .collect()
}

/// Row-wise statistics of an (L, r) Σ table.
fn rows(t: &Tensor) -> Result<Vec<&[f32]>> {
    match t.shape[..] {
        [l, r] if l > 0 => Ok((0..l).map(|i| &t.data[i * r..(i + 1) * r]).collect()),
        _ => bail!("a Σ table must be (L, r), got {:?}", t.shape),
    }
}

/// σ rows for `depth` target layers from the ancestry's Σ table.
fn init_sigma(mode: &str, anc: &Tensor, depth: usize, rng: &mut impl rand::Rng) -> Result<Vec<f32>> {
    let rs = rows(anc)?;
    let (la, r) = (rs.len(), anc.shape[1]);
    let mut out = Vec::with_capacity(depth * r);
    match mode {
        "random" => {
            let rms = (anc.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / anc.data.len() as f64).sqrt();
            let d = rand_distr::Normal::new(0.0, rms.max(1e-8)).map_err(|e| anyhow!("{e}"))?;
            out.extend((0..depth * r).map(|_| d.sample(rng) as f32));
        }
        "identical" => {
            let mean: Vec<f32> = (0..r).map(|k| rs.iter().map(|row| row[k]).sum::<f32>() / la as f32).collect();
            (0..depth).for_each(|_| out.extend_from_slice(&mean));
        }
        "linear" => {
            for l in 0..depth {
                let p = if depth == 1 { 0.0 } else { l as f64 * (la - 1) as f64 / (depth - 1) as f64 };
                let (i, f) = (p.floor() as usize, (p - p.floor()) as f32);
                let j = (i + 1).min(la - 1);
                out.extend((0..r).map(|k| (1.0 - f) * rs[i][k] + f * rs[j][k]));
            }
        }
        m => bail!("unknown sigma_init `{m}`"),
    }
    Ok(out)
}

impl Strategy for Fine {
    fn info(&self) -> PluginInfo {
        let rank = |t: &str| {
            OptionSpec::new(
                &format!("rank_{t}"),
                OptionType::Int,
                "0",
                &format!("rank r of the shared {t} factors (0 = min(m1, m2))"),
            )
        };
        let mut options: Vec<OptionSpec> = TYPES.iter().map(|(t, _)| rank(t)).collect();
        options.push(OptionSpec::new(
            "sigma_init",
            OptionType::Choice(vec!["random".into(), "identical".into(), "linear".into()]),
            "\"random\"",
            "initial σ of a descendant's layers (random: N(0, RMS of ancestry σ))",
        ));
        options.push(OptionSpec::new(
            "sigma_steps",
            OptionType::Int,
            "300",
            "steps of σ-only training (phase 2); 0 keeps the initial σ",
        ));
        options.push(OptionSpec::new("seed", OptionType::Int, "0", "seed of the random σ-init"));
        PluginInfo {
            name: NAME.into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "FINE: shared factors U·diag(σ_l)·Vᵀ per weight type; descendants train fresh σ only, then train normally".into(),
            options,
        }
    }

    fn ancestry(&self, graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization> {
        let ranks = ranks_for(weights, opts)?;
        Ok(factorized(weights, graph.depth, &ranks, |_| true))
    }

    fn extract(&self, graph: &Graph, spec: &Parameterization, leaves: &Tensors, _opts: &Options) -> Result<Learngene> {
        if !spec.leaves.iter().any(|l| l.name == leaf("qkv", "U")) {
            bail!("this run is not a FINE ancestry: it has no `{}` leaf", leaf("qkv", "U"));
        }
        let mut tensors = Tensors::new();
        for (name, t) in leaves {
            if name.starts_with("fine.") || is_shared_weight(name) {
                tensors.insert(name.clone(), t.clone());
            }
        }
        let mut meta = dit::ancestry_meta(graph);
        meta.insert("heads".to_string(), graph.heads.to_string());
        let mut per_layer = 0usize;
        for (t, _) in TYPES {
            let u = &tensors[&leaf(t, "U")];
            meta.insert(format!("rank_{t}"), u.shape[1].to_string());
            per_layer += u.shape[1];
        }
        // Storage model (values): a descendant stores σ rows and biases per layer.
        let shared = dit::values_in(tensors.iter().filter(|(n, _)| !n.ends_with(".S")).map(|(_, t)| t));
        dit::insert_storage(&mut meta, shared, per_layer + dit::bias_values_per_layer(spec));
        Ok(Learngene { strategy: NAME.into(), strategy_version: env!("CARGO_PKG_VERSION").into(), meta, tensors })
    }

    fn descendant(&self, lg: &Learngene, target: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Descendant> {
        dit::check_strategy(lg, NAME)?;
        let anc_hidden = lg.tensors.get(&leaf("qkv", "V")).map(|v| v.shape[0]);
        if anc_hidden.is_some_and(|h| h != target.hidden) {
            return self.wider_or_narrower(lg, target, weights, opts);
        }
        let mut ranks = BTreeMap::new();
        for (t, suffix) in TYPES {
            let (m1, m2) = type_shape(weights, suffix)?;
            let u = lg.tensors.get(&leaf(t, "U")).ok_or_else(|| anyhow!("learngene lacks `{}`", leaf(t, "U")))?;
            let v = lg.tensors.get(&leaf(t, "V")).ok_or_else(|| anyhow!("learngene lacks `{}`", leaf(t, "V")))?;
            if u.shape[0] != m1 || v.shape[0] != m2 {
                bail!(
                    "the learngene's {t} factors are U {:?}, V {:?} (width {}), but `{}` needs {m1}×{m2} weights (hidden {}): \
                     the learngene does not fit this graph",
                    u.shape,
                    v.shape,
                    lg.meta.get("hidden").map(String::as_str).unwrap_or("?"),
                    target.name,
                    target.hidden
                );
            }
            ranks.insert(t, (m1, m2, u.shape[1]));
        }
        let frozen = |n: &str| n.ends_with(".U") || n.ends_with(".V") || is_shared_weight(n);
        let spec = factorized(weights, target.depth, &ranks, |n| !frozen(n));
        let mut values = Tensors::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.int("seed")? as u64);
        let mode = opts.text("sigma_init")?;
        for l in &spec.leaves {
            if l.name.ends_with(".U") || l.name.ends_with(".V") || is_shared_weight(&l.name) {
                let t = lg.tensors.get(&l.name).ok_or_else(|| anyhow!("learngene lacks `{}`", l.name))?;
                if t.shape != l.shape {
                    bail!("learngene `{}` has shape {:?}, `{}` needs {:?}", l.name, t.shape, target.name, l.shape);
                }
                values.insert(l.name.clone(), t.clone());
            } else if l.name.ends_with(".S") {
                let anc = lg.tensors.get(&l.name).ok_or_else(|| anyhow!("learngene lacks `{}`", l.name))?;
                let s =
                    init_sigma(mode, anc, target.depth, &mut rng).with_context(|| format!("σ-init of `{}`", l.name))?;
                values.insert(l.name.clone(), Tensor::new(l.shape.clone(), s)?);
            }
        }
        Ok(Descendant { spec, values, init_steps: opts.int("sigma_steps")? })
    }
}

impl Fine {
    /// A descendant of another width: see [`width`].
    fn wider_or_narrower(
        &self,
        lg: &Learngene,
        target: &Graph,
        weights: &[WeightSpec],
        opts: &Options,
    ) -> Result<Descendant> {
        let mut ranks = BTreeMap::new();
        for (t, _) in TYPES {
            let u = lg.tensors.get(&leaf(t, "U")).ok_or_else(|| anyhow!("learngene lacks `{}`", leaf(t, "U")))?;
            let v = lg.tensors.get(&leaf(t, "V")).ok_or_else(|| anyhow!("learngene lacks `{}`", leaf(t, "V")))?;
            ranks.insert(t, (u.shape[0], v.shape[0], u.shape[1]));
        }
        let spec = width::parameterization(weights, target, lg, &ranks).map_err(|e| {
            anyhow!(
                "{e:#}\n(the learngene is {} wide, `{}` is {} wide)",
                lg.meta.get("hidden").map(String::as_str).unwrap_or("?"),
                target.name,
                target.hidden
            )
        })?;
        let seed = opts.int("seed")? as u64;
        let mut values = width::values(lg, target, seed)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mode = opts.text("sigma_init")?;
        for (t, _) in TYPES {
            let name = leaf(t, "S");
            let anc = lg.tensors.get(&name).ok_or_else(|| anyhow!("learngene lacks `{name}`"))?;
            let s = init_sigma(mode, anc, target.depth, &mut rng).with_context(|| format!("σ-init of `{name}`"))?;
            values.insert(name, Tensor::new(vec![target.depth, anc.shape[1]], s)?);
        }
        Ok(Descendant { spec, values, init_steps: opts.int("sigma_steps")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anc() -> Tensor {
        // 3 layers, rank 2.
        Tensor::new(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap()
    }

    #[test]
    fn sigma_inits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(init_sigma("identical", &anc(), 2, &mut rng).unwrap(), [3.0, 4.0, 3.0, 4.0]);
        // 5 layers over 3 ancestry rows: positions 0, 0.5, 1, 1.5, 2.
        assert_eq!(
            init_sigma("linear", &anc(), 5, &mut rng).unwrap(),
            [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0]
        );
        assert_eq!(init_sigma("linear", &anc(), 1, &mut rng).unwrap(), [1.0, 2.0]);
        let r = init_sigma("random", &anc(), 4, &mut rng).unwrap();
        assert_eq!(r.len(), 8);
        assert!(r.iter().any(|v| *v != r[0]));
        assert!(init_sigma("cubic", &anc(), 2, &mut rng).is_err());
    }
}
