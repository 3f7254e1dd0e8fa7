//! # `svd-independent` — FINE's "w/o Factorize" ablation (arXiv 2409.19289, Table 4)
//!
//! FINE trains shared factors U_t, V_t jointly from the start; this ablation
//! instead trains the ancestry normally and factorizes it afterwards, layer by
//! layer, with no sharing. Everything else mirrors the `fine` strategy, so the
//! two differ only in where U and V come from.
//!
//! **Ancestry.** A plain DiT trained normally (DiT's initialization).
//!
//! **Learngene.** For every ancestry block l and each of the five weight types
//! t ∈ {qkv, proj, fc1, fc2, ada} (`attn.qkv`, `attn.proj`, `mlp.fc1`,
//! `mlp.fc2`, `adaLN_modulation.1` weights, FINE's set), the SVD
//! `W_{t,l} = U_{t,l}·diag(σ_{t,l})·V_{t,l}ᵀ` (f64, singular values in
//! decreasing order), truncated to the top r_t (option `rank_{t}`, 0 = full
//! rank min(m1, m2), at which the weights are reconstructed exactly up to
//! rounding): `svd.{t}.{l}.U` (m1 × r), `svd.{t}.{l}.V` (m2 × r), and the
//! ancestry's singular values as a table `svd.{t}.S` (L × r). Plus, as in
//! FINE, the depth-independent weights (patch, timestep and label embeddings,
//! final layer) and the block biases as tables `biases.{param}`. The paper
//! keeps "the top singular vectors" without saying how many: at full rank the
//! learngene is every trained layer exactly (more values than the ancestry),
//! so a benchmark should also run it at FINE's storage — the rank r at which
//! the per-layer factors take as many values as FINE's shared ones,
//! L·r ≈ min(m1, m2) (**ours**). The ranks are read when the ancestry is made
//! (`fine pretrain`; a rank above min(m1, m2) is refused before training) and
//! at extraction; a descendant that asks for another rank than the
//! learngene's is refused.
//!
//! **Descendant.** Depth L_d, same width. The paper does not say which
//! ancestry layer a descendant layer takes (FINE needs no choice: its U, V are
//! shared); we take the nearest by relative depth, layer i ← ancestry layer
//! a(i) = round(i·(L−1)/(L_d−1)) (halves round up; a(0) = 0 when L_d = 1), so
//! L_d = L maps every layer to itself. Its weights are
//! `Factor(U_{t,a(i)}, σ_{t,i}, V_{t,a(i)})` with U, V frozen (two layers with
//! the same a(i) read the same frozen leaves) and σ_{t,i} row i of the
//! trainable table `svd.{t}.S` (L_d × r). σ starts the way FINE's does (the
//! shared σ-phase options, [`SigmaPhase`]: `sigma_init` default `stats`, per
//! component over the ancestry's layers, which for sorted singular values is a
//! like-for-like draw), or `nearest` — the singular values of layer a(i)
//! themselves. As in FINE's phase 2 the embeddings and final layer are
//! inherited and frozen, the block biases start by `bias_init` (default the
//! ancestry's, linear by depth) and train with σ for `sigma_steps` steps at
//! `sigma_lr_scale` times the run's rate; the host then materializes the plain
//! DiT, which trains normally (`fine train --from`).
//!
//! **Storage model** (`fine learngene info`): the learngene is every per-layer
//! U, V (no sharing, which is what makes it large) with the ancestry's σ
//! tables and the shared weights; a descendant stores σ rows and biases per layer.

use anyhow::{anyhow, bail, Context, Result};
use fine_plugin_api::strategy::dit::{self, plain, rank_of, type_of, type_shape, SigmaPhase};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{
    Descendant, Expr, Graph, Init, LeafSpec, Learngene, OptionSpec, Options, Parameterization, PluginInfo, PluginKind,
    Strategy, WeightSpec,
};
use nalgebra::DMatrix;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};

/// The five factorized weight types (the roles of a block's matrices), as in FINE.
pub use fine_plugin_api::strategy::dit::TYPES;

/// The `svd-independent` strategy.
#[derive(Debug, Clone, Default)]
pub struct SvdIndependent;

fine_plugin_api::builtin_plugin!(Strategy, SvdIndependent::default);

const NAME: &str = "svd-independent";

/// The factor `what` (`U` or `V`) of type `t` at ancestry layer `l`.
fn factor_leaf(t: &str, l: usize, what: &str) -> String {
    format!("svd.{t}.{l}.{what}")
}

/// The σ table of type `t`.
fn sigma_leaf(t: &str) -> String {
    format!("svd.{t}.S")
}

/// The truncated SVD of the row-major (m1 × m2) matrix `w`: U (m1 × r), σ (r, decreasing), V (m2 × r), row-major.
pub fn truncated_svd(w: &[f32], m1: usize, m2: usize, r: usize) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    if w.len() != m1 * m2 || r > m1.min(m2) {
        bail!("truncated_svd: {} values for {m1}×{m2}, rank {r}", w.len());
    }
    let a = DMatrix::<f64>::from_iterator(m2, m1, w.iter().map(|&x| x as f64)).transpose(); // row-major → (m1, m2)
    let svd = a.svd(true, true);
    let (u, vt) = (svd.u.ok_or_else(|| anyhow!("SVD gave no U"))?, svd.v_t.ok_or_else(|| anyhow!("SVD gave no Vᵀ"))?);
    let s = &svd.singular_values;
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
    order.truncate(r);
    let (u, vt, order) = (&u, &vt, &order);
    let uo: Vec<f32> = (0..m1).flat_map(|i| order.iter().map(move |&k| u[(i, k)] as f32)).collect();
    let vo: Vec<f32> = (0..m2).flat_map(|j| order.iter().map(move |&k| vt[(k, j)] as f32)).collect();
    let so: Vec<f32> = order.iter().map(|&k| s[k] as f32).collect();
    Ok((uo, so, vo))
}

/// The ancestry layer (of `ancestry`) that descendant layer `i` (of `depth`) takes:
/// round(i·(ancestry−1)/(depth−1)), halves up; 0 when `depth` is 1.
pub fn source_layer(i: usize, depth: usize, ancestry: usize) -> usize {
    if depth <= 1 {
        return 0;
    }
    (2 * i * (ancestry - 1) + (depth - 1)) / (2 * (depth - 1))
}

impl Strategy for SvdIndependent {
    fn info(&self) -> PluginInfo {
        let rank = |t: &str| {
            OptionSpec::int(
                &format!("rank_{t}"),
                0,
                &format!("rank kept of each layer's {t} SVD (0 = min(m1, m2), exact); set at pretrain"),
            )
        };
        let mut options: Vec<OptionSpec> = TYPES.iter().map(|t| rank(t)).collect();
        options.extend(SigmaPhase::options(&["nearest"]));
        options.push(OptionSpec::int("seed", 0, "seed of the random σ-init"));
        PluginInfo {
            name: NAME.into(),
            kind: PluginKind::Strategy,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "FINE w/o Factorize: per-layer SVDs of a plain ancestry; descendants train σ only".into(),
            options,
        }
    }

    fn ancestry(&self, _graph: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Parameterization> {
        for t in TYPES {
            let (m1, m2) = type_shape(weights, t)?;
            rank_of(opts, t, m1, m2)?;
        }
        Ok(plain(weights))
    }

    fn extract(
        &self,
        graph: &Graph,
        weights: &[WeightSpec],
        spec: &Parameterization,
        leaves: &Tensors,
        opts: &Options,
    ) -> Result<Learngene> {
        let mut tensors = Tensors::new();
        let mut meta = dit::ancestry_meta(graph);
        let mut per_layer = 0;
        for t in TYPES {
            let (m1, m2) = type_shape(weights, t)?;
            let r = rank_of(opts, t, m1, m2)?;
            let mut sigma = Vec::with_capacity(graph.depth * r);
            for l in 0..graph.depth {
                let name = &dit::weight(weights, l, t)?.name;
                let w =
                    leaves.get(name).ok_or_else(|| anyhow!("this run is not a plain ancestry: no leaf `{name}`"))?;
                if w.shape != [m1, m2] {
                    bail!("the leaf `{name}` has shape {:?}, not ({m1}, {m2})", w.shape);
                }
                let (u, s, v) = truncated_svd(&w.data, m1, m2, r).with_context(|| format!("SVD of `{name}`"))?;
                tensors.insert(factor_leaf(t, l, "U"), Tensor::new(vec![m1, r], u)?);
                tensors.insert(factor_leaf(t, l, "V"), Tensor::new(vec![m2, r], v)?);
                sigma.extend(s);
            }
            tensors.insert(sigma_leaf(t), Tensor::new(vec![graph.depth, r], sigma)?);
            meta.insert(format!("rank_{t}"), r.to_string());
            per_layer += r;
        }
        tensors.extend(dit::depth_independent(leaves));
        let tables = dit::bias_tables(leaves, graph.depth)?;
        let stored = dit::values_in(tensors.values());
        tensors.extend(tables);
        dit::insert_storage(&mut meta, stored, per_layer + dit::bias_values_per_layer(spec));
        Ok(Learngene { strategy: NAME.into(), strategy_version: env!("CARGO_PKG_VERSION").into(), meta, tensors })
    }

    fn descendant(&self, lg: &Learngene, target: &Graph, weights: &[WeightSpec], opts: &Options) -> Result<Descendant> {
        dit::check_strategy(lg, NAME)?;
        let anc_depth = dit::meta_num(lg, "ancestry_depth")?;
        dit::check_width(lg, target, "svd-independent")?;
        let depth = target.depth;
        let src: Vec<usize> = (0..depth).map(|i| source_layer(i, depth, anc_depth)).collect();
        let get = |name: &str| lg.tensors.get(name).ok_or_else(|| anyhow!("the learngene lacks `{name}`"));
        let phase = SigmaPhase::from_options(opts, &["nearest"])?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.int("seed")? as u64);
        let (mut leaves, mut bindings, mut values) = (Vec::new(), BTreeMap::new(), Tensors::new());
        let frozen = |name: String, t: &Tensor| LeafSpec::new(name, t.shape.clone(), Init::Zeros, false);
        for t in TYPES {
            let (m1, m2) = type_shape(weights, t)?;
            let table = get(&sigma_leaf(t))?;
            let r = match table.shape[..] {
                [l, r] if l == anc_depth => r,
                _ => bail!("the learngene's `{}` has shape {:?}, not ({anc_depth}, r)", sigma_leaf(t), table.shape),
            };
            dit::check_rank_option(opts, t, r)?;
            for a in src.iter().copied().collect::<BTreeSet<usize>>() {
                for (what, m) in [("U", m1), ("V", m2)] {
                    let name = factor_leaf(t, a, what);
                    let f = get(&name)?;
                    if f.shape != [m, r] {
                        bail!(
                            "the learngene's `{name}` has shape {:?}, but the {t} weights of the target graph `{}` \
                             ({m1}×{m2}) need ({m}, {r})",
                            f.shape,
                            target.name
                        );
                    }
                    leaves.push(frozen(name.clone(), f));
                    values.insert(name, f.clone());
                }
            }
            let sigma: Vec<f32> = match phase.sigma_init.as_str() {
                "nearest" => src.iter().flat_map(|&a| table.data[a * r..(a + 1) * r].iter().copied()).collect(),
                _ => phase.sigma_rows(t, table, depth, &mut rng).with_context(|| format!("σ-init of {t}"))?,
            };
            let name = sigma_leaf(t);
            leaves
                .push(LeafSpec { lr_scale: phase.lr_scale, ..LeafSpec::new(&name, vec![depth, r], Init::Zeros, true) });
            values.insert(name.clone(), Tensor::new(vec![depth, r], sigma)?);
            for (i, &a) in src.iter().enumerate() {
                let factor = Expr::Factor {
                    u: Box::new(Expr::leaf(factor_leaf(t, a, "U"))),
                    s: Box::new(Expr::Row { leaf: name.clone(), index: i }),
                    v: Box::new(Expr::leaf(factor_leaf(t, a, "V"))),
                };
                bindings.insert(dit::weight(weights, i, t)?.name.clone(), factor);
            }
        }
        let biases = dit::descendant_biases(lg, weights, depth, &phase.bias_init, &mut rng)?;
        for w in weights {
            match w.block {
                Some(_) if type_of(w).is_some() => {}
                // Block biases (and any other block parameter): by `bias_init`, trained with σ.
                Some(_) => {
                    dit::push_own_leaf(w, true, &mut leaves, &mut bindings);
                    leaves.last_mut().expect("just pushed").lr_scale = phase.lr_scale;
                    if let Some(b) = biases.get(&w.name) {
                        values.insert(w.name.clone(), b.clone());
                    }
                }
                None => {
                    let t = get(&w.name)?;
                    if t.shape != w.shape {
                        bail!(
                            "the learngene's `{}` has shape {:?}, but the target graph `{}` needs {:?}",
                            w.name,
                            t.shape,
                            target.name,
                            w.shape
                        );
                    }
                    dit::push_own_leaf(w, false, &mut leaves, &mut bindings);
                    values.insert(w.name.clone(), t.clone());
                }
            }
        }
        Ok(Descendant { spec: Parameterization { leaves, bindings }, values, init_steps: phase.steps })
    }
}

#[cfg(test)]
mod tests;
