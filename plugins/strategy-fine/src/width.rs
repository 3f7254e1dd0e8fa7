//! # Beyond the paper: descendants of another width
//!
//! The paper validates depth only; U_t (m1 × r) ties a learngene to one width.
//! This module builds a descendant of width D from an ancestry of width D_a by
//! **learned width projections** (a LiGO-style width operator on top of the
//! frozen learngene):
//!
//! * Three projections, one per space the ancestry's weights live in:
//!   `R` (D × D_a) for the residual stream (which also carries the
//!   conditioning vector c and the adaLN outputs), `Ra` (D × D_a) for the
//!   attention inner space (the q, k, v features and the input of the output
//!   projection) and `Rh` (H × H_a) for the MLP hidden units.
//! * Every factor is mapped on its rows: e.g. `U'_qkv = blockdiag(Ra, Ra, Ra)·U_qkv`,
//!   `V'_qkv = R·V_qkv`, `U'_ada = blockdiag(R ×6)·U_ada`, `V'_fc2 = Rh·V_fc2`
//!   ([`Expr::Project`]), so `W'_{t,l} = U'_t · diag(σ_{t,l}) · V'_tᵀ` keeps the
//!   shared basis (rank r) and each layer keeps its own σ.
//! * The depth-independent weights (embeddings, final layer) are the ancestry's,
//!   mapped the same way on every axis whose length is k·D_a in the ancestry
//!   and k·D in the target (e.g. `t_embedder.mlp.2.weight` → R·W·Rᵀ).
//! * Phase 2 trains σ, the block biases **and R, Ra, Rh**; U, V and the
//!   ancestry's embeddings stay frozen (so the learngene itself is untouched
//!   and the projections learn how to read it at the new width). Phase 3
//!   materializes a plain DiT as for depth.
//!
//! **Init of the projections ("keep the top components").** Each coordinate of
//! each space gets an importance from the learngene: the energy it carries in
//! the shared basis, Σ_k X[i,k]² · mean_l σ_{t,l,k}² · ‖Y[:,k]‖² over the
//! factors X that have the space on their rows (Y the factor on the other
//! side), each type's share normalized to 1 and the types summed. A narrower
//! space keeps its most important coordinates (rows of R are unit vectors,
//! in their original order), so at init the descendant is the ancestry pruned
//! to its top coordinates; the attention space is selected head by head (top
//! heads, then the top coordinates within each head) so heads stay intact. A
//! wider space keeps every ancestry coordinate and its extra rows are small
//! random combinations (N(0, (0.1)²/D_a)), so the new coordinates start
//! nearly silent but get gradients.

use super::{leaf, Expr, LeafSpec, Parameterization, TYPES};
use anyhow::{anyhow, bail, Result};
use fine_plugin_api::strategy::dit::{self, type_of};
use fine_plugin_api::tensors::{Tensor, Tensors};
use fine_plugin_api::{Graph, Init, Learngene, WeightSpec};
use rand_distr::Distribution;
use std::collections::BTreeMap;

/// Leaf names of the three projections.
pub const R: &str = "fine.width.R";
/// Attention inner space projection.
pub const RA: &str = "fine.width.Ra";
/// MLP hidden space projection.
pub const RH: &str = "fine.width.Rh";

/// Prefix of the frozen ancestry copies of the depth-independent weights.
const ANC: &str = "fine.anc.";

/// Which projection maps the rows of U_t and of V_t, and into how many blocks.
fn sides(t: &str) -> ((&'static str, usize), (&'static str, usize)) {
    match t {
        "qkv" => ((RA, 3), (R, 1)),
        "proj" => ((R, 1), (RA, 1)),
        "fc1" => ((RH, 1), (R, 1)),
        "fc2" => ((R, 1), (RH, 1)),
        "ada" => ((R, 6), (R, 1)),
        _ => unreachable!("unknown FINE type {t}"),
    }
}

fn project(x: Expr, p: &str, axis: usize, chunks: usize) -> Expr {
    Expr::Project { x: Box::new(x), p: Box::new(Expr::leaf(p)), axis, chunks }
}

/// Sizes of the three spaces: (D, heads, H).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Widths {
    /// Residual stream width D (also the attention inner width).
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden units H.
    pub mlp: usize,
}

impl Widths {
    /// The widths of `g`.
    pub fn of(g: &Graph) -> Self {
        Self { hidden: g.hidden, heads: g.heads, mlp: g.mlp_hidden() }
    }

    /// The ancestry's widths, from the learngene (shapes and metadata).
    pub fn of_learngene(lg: &Learngene) -> Result<Self> {
        let u = lg.tensors.get(&leaf("fc1", "U")).ok_or_else(|| anyhow!("learngene lacks `{}`", leaf("fc1", "U")))?;
        let v = lg.tensors.get(&leaf("fc1", "V")).ok_or_else(|| anyhow!("learngene lacks `{}`", leaf("fc1", "V")))?;
        let heads = match lg.meta.get("heads") {
            Some(h) => h.parse().map_err(|_| anyhow!("learngene metadata `heads` = `{h}` is not a number"))?,
            None => bail!("learngene metadata lacks `heads` (made by an older FINE): it cannot seed another width"),
        };
        Ok(Self { hidden: v.shape[0], heads, mlp: u.shape[0] })
    }
}

/// The parameterization of a descendant of `target` at another width.
/// `ranks[t]` = (m1, m2, r) of the *ancestry*.
pub fn parameterization(
    weights: &[WeightSpec],
    target: &Graph,
    lg: &Learngene,
    ranks: &BTreeMap<&str, (usize, usize, usize)>,
) -> Result<Parameterization> {
    let (a, d) = (Widths::of_learngene(lg)?, Widths::of(target));
    let mut leaves = Vec::new();
    let mut bindings = BTreeMap::new();
    for t in TYPES {
        let (m1, m2, r) = ranks[t];
        for (what, shape, trainable) in
            [("U", vec![m1, r], false), ("V", vec![m2, r], false), ("S", vec![target.depth, r], true)]
        {
            leaves.push(LeafSpec::new(leaf(t, what), shape, Init::Zeros, trainable));
        }
    }
    for (name, rows, cols) in [(R, d.hidden, a.hidden), (RA, d.hidden, a.hidden), (RH, d.mlp, a.mlp)] {
        leaves.push(LeafSpec::new(name, vec![rows, cols], Init::Zeros, true));
    }
    for w in weights {
        if w.block.is_some() {
            if let Some((l, t)) = type_of(w) {
                let ((pu, ku), (pv, kv)) = sides(t);
                let e = Expr::Factor {
                    u: Box::new(project(Expr::leaf(leaf(t, "U")), pu, 0, ku)),
                    s: Box::new(Expr::Row { leaf: leaf(t, "S"), index: l }),
                    v: Box::new(project(Expr::leaf(leaf(t, "V")), pv, 0, kv)),
                };
                bindings.insert(w.name.clone(), e);
            } else {
                // Block biases: fresh (DiT's init), trained in phase 2.
                dit::push_own_leaf(w, true, &mut leaves, &mut bindings);
            }
            continue;
        }
        let anc = lg.tensors.get(&w.name).ok_or_else(|| anyhow!("learngene lacks `{}`", w.name))?;
        let name = format!("{ANC}{}", w.name);
        let mut e = Expr::leaf(&name);
        for (axis, (&la, &lt)) in anc.shape.iter().zip(&w.shape).enumerate() {
            if la == lt {
                continue;
            }
            if anc.shape.len() != w.shape.len() || la % a.hidden != 0 || lt != la / a.hidden * d.hidden {
                bail!(
                    "learngene `{}` has shape {:?}; `{}` needs {:?}, which is not the same tensor at width {} instead of {}",
                    w.name,
                    anc.shape,
                    target.name,
                    w.shape,
                    d.hidden,
                    a.hidden
                );
            }
            e = project(e, R, axis, la / a.hidden);
        }
        leaves.push(LeafSpec::new(name, anc.shape.clone(), Init::Zeros, false));
        bindings.insert(w.name.clone(), e);
    }
    Ok(Parameterization { leaves, bindings })
}

/// Initial values of U, V (the learngene's), the ancestry's depth-independent
/// weights, and the three projections (top coordinates).
pub fn values(lg: &Learngene, target: &Graph, seed: u64) -> Result<Tensors> {
    let (a, d) = (Widths::of_learngene(lg)?, Widths::of(target));
    let mut out = Tensors::new();
    for (name, t) in &lg.tensors {
        if name.ends_with(".U") || name.ends_with(".V") {
            out.insert(name.clone(), t.clone());
        } else if !name.starts_with("fine.") && !name.starts_with(dit::BIAS_TABLE) {
            out.insert(format!("{ANC}{name}"), t.clone());
        }
    }
    let imp = importance(lg, &a)?;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5eed_0f_0d7);
    let hd_a = a.hidden / a.heads;
    let hd = d.hidden / d.heads;
    out.insert(R.into(), select(&imp.residual, d.hidden, &mut rng)?);
    out.insert(RH.into(), select(&imp.mlp, d.mlp, &mut rng)?);
    // Attention: the top heads, and the top coordinates within each.
    let head_imp: Vec<f64> = (0..a.heads).map(|h| imp.attn[h * hd_a..(h + 1) * hd_a].iter().sum()).collect();
    let mut heads: Vec<usize> = top(&head_imp, d.heads.min(a.heads));
    heads.sort_unstable();
    let mut groups: Vec<Vec<usize>> = heads.iter().map(|h| (h * hd_a..(h + 1) * hd_a).collect()).collect();
    groups.resize(d.heads, Vec::new()); // heads beyond the ancestry's: new
    out.insert(RA.into(), select_grouped(&imp.attn, a.hidden, &groups, hd, &mut rng)?);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Importance of coordinates
// ---------------------------------------------------------------------------

/// Importance of every coordinate of the three ancestry spaces.
struct Importance {
    residual: Vec<f64>,
    attn: Vec<f64>,
    mlp: Vec<f64>,
}

fn importance(lg: &Learngene, a: &Widths) -> Result<Importance> {
    let mut imp = Importance { residual: vec![0.0; a.hidden], attn: vec![0.0; a.hidden], mlp: vec![0.0; a.mlp] };
    let get = |n: String| lg.tensors.get(&n).ok_or_else(|| anyhow!("learngene lacks `{n}`"));
    for t in TYPES {
        let (u, v, s) = (get(leaf(t, "U"))?, get(leaf(t, "V"))?, get(leaf(t, "S"))?);
        let r = u.shape[1];
        // mean_l σ_{l,k}²
        let l = s.shape[0].max(1);
        let sig2: Vec<f64> =
            (0..r).map(|k| (0..l).map(|i| (s.data[i * r + k] as f64).powi(2)).sum::<f64>() / l as f64).collect();
        let ((pu, _), (pv, _)) = sides(t);
        for (x, y, space) in [(u, v, pu), (v, u, pv)] {
            let dst = match space {
                R => &mut imp.residual,
                RA => &mut imp.attn,
                _ => &mut imp.mlp,
            };
            let col2: Vec<f64> =
                (0..r).map(|k| (0..y.shape[0]).map(|i| (y.data[i * r + k] as f64).powi(2)).sum()).collect();
            let n = dst.len();
            let mut e = vec![0.0; n];
            for i in 0..x.shape[0] {
                let row = &x.data[i * r..(i + 1) * r];
                e[i % n] += (0..r).map(|k| (row[k] as f64).powi(2) * sig2[k] * col2[k]).sum::<f64>();
            }
            let total: f64 = e.iter().sum();
            if total > 0.0 {
                dst.iter_mut().zip(&e).for_each(|(d, e)| *d += e / total);
            }
        }
    }
    Ok(imp)
}

/// Indices of the `k` largest values (ties by index).
fn top(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[j].total_cmp(&v[i]).then(i.cmp(&j)));
    idx.truncate(k);
    idx
}

/// A (rows × n) projection: unit rows on the top coordinates (in their
/// original order), then small random rows.
fn select(imp: &[f64], rows: usize, rng: &mut impl rand::Rng) -> Result<Tensor> {
    let mut keep = top(imp, rows.min(imp.len()));
    keep.sort_unstable();
    let mut src: Vec<Option<usize>> = keep.iter().map(|&i| Some(i)).collect();
    src.resize(rows, None);
    build(&src, imp.len(), rng)
}

/// Like [`select`] per group of `per` target rows: group g keeps the top
/// coordinates among `groups[g]`.
fn select_grouped(
    imp: &[f64],
    n: usize,
    groups: &[Vec<usize>],
    per: usize,
    rng: &mut impl rand::Rng,
) -> Result<Tensor> {
    let mut rows_src: Vec<Option<usize>> = Vec::with_capacity(groups.len() * per);
    for g in groups {
        let gi: Vec<f64> = g.iter().map(|&i| imp[i]).collect();
        let mut keep: Vec<usize> = top(&gi, per.min(g.len())).into_iter().map(|j| g[j]).collect();
        keep.sort_unstable();
        rows_src.extend(keep.iter().map(|&i| Some(i)));
        rows_src.extend(std::iter::repeat(None).take(per - keep.len()));
    }
    build(&rows_src, n, rng)
}

/// Row i is the unit vector e_{src[i]}, or N(0, 0.1²/n) noise when `None`.
fn build(src: &[Option<usize>], n: usize, rng: &mut impl rand::Rng) -> Result<Tensor> {
    let noise = rand_distr::Normal::new(0.0f32, 0.1 / (n as f32).sqrt()).map_err(|e| anyhow!("{e}"))?;
    let mut data = vec![0.0f32; src.len() * n];
    for (i, s) in src.iter().enumerate() {
        match s {
            Some(j) => data[i * n + j] = 1.0,
            None => data[i * n..(i + 1) * n].iter_mut().for_each(|v| *v = noise.sample(rng)),
        }
    }
    Tensor::new(vec![src.len(), n], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_coordinates_then_noise() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let imp = [0.1, 5.0, 0.2, 3.0];
        // Narrower: the two most important coordinates (1 and 3), in their original order.
        let r = select(&imp, 2, &mut rng).unwrap();
        assert_eq!(r.shape, [2, 4]);
        assert_eq!(r.data, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        // Wider: every coordinate once, then small random rows.
        let r = select(&imp, 6, &mut rng).unwrap();
        assert_eq!(&r.data[..16], &[1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.]);
        assert!(r.data[16..].iter().all(|v| *v != 0.0 && v.abs() < 0.5));
        // Grouped (heads): group 0 keeps its best coordinate, group 1 is new.
        let r = select_grouped(&imp, 4, &[vec![2, 3], vec![]], 1, &mut rng).unwrap();
        assert_eq!(&r.data[..4], &[0., 0., 0., 1.]);
        assert!(r.data[4..].iter().all(|v| *v != 0.0));
    }
}
