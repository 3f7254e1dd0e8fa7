//! Parameterizations: how the weights a model asks for are made from leaves.
//!
//! A model asks for a weight by its DiT name (`blocks.3.attn.qkv.weight`). A
//! [`Parameterization`] binds every such name to an [`Expr`] over *leaves*, the
//! tensors that actually live in the store and are optimised. This is the one
//! seam learngene strategies use, without touching model code:
//!
//! * tie several weights to one leaf: bind them all to `Leaf("shared.qkv")`;
//! * factorize: `Factor { u, s, v }` is `U · diag(s) · Vᵀ` (FINE);
//! * linear expansion: `Add(Leaf(base), Scale(Leaf(delta), l / L))` (TLEG);
//! * change width: `Project { x, p, axis, chunks }` maps an axis through a
//!   (learned) matrix P, e.g. a wider model's rows `P·U` (FINE width extension);
//! * freeze: mark the leaf `trainable: false`.
//!
//! It is plain data (serde/RON), so it travels inside checkpoints and across
//! the plugin boundary.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a leaf is initialised (see [`crate::model::init`] for DiT's choices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// Every element equal to the value.
    Const(f32),
    /// Normal(0, std²).
    Normal { std: f32 },
    /// Uniform(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot/Xavier).
    XavierUniform { fan_in: usize, fan_out: usize },
    /// Uniform(lo, hi).
    Uniform { lo: f32, hi: f32 },
    /// The identity matrix (a square 2-D leaf; a stitching layer's start).
    Eye,
}

/// One tensor in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeafSpec {
    /// Unique name (for plain models, the DiT parameter name itself).
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Initialisation used when the store is created from scratch.
    pub init: Init,
    /// Whether the optimiser updates it. Frozen leaves still receive no update
    /// even though gradients may flow through them to other leaves.
    pub trainable: bool,
    /// The leaf's learning rate as a multiple of the run's (the schedule's
    /// value at each step times this; like a PyTorch parameter group's `lr`).
    /// Finite and positive; 1 when a spec written before this field is read.
    #[serde(default = "one")]
    pub lr_scale: f32,
}

fn one() -> f32 {
    1.0
}

impl LeafSpec {
    /// A leaf at the run's learning rate (`lr_scale` 1).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, init: Init, trainable: bool) -> Self {
        Self { name: name.into(), shape, init, trainable, lr_scale: 1.0 }
    }
}

/// An expression producing one model weight from leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// The leaf itself (reshaped to the weight's shape; element counts must match).
    Leaf(String),
    /// Row `index` of a 2-D leaf, as a vector (e.g. σ_l from a (L, r) Σ table).
    Row { leaf: String, index: usize },
    /// `U · diag(s) · Vᵀ` with U (m1 × r), s (r), V (m2 × r): an (m1 × m2) matrix.
    Factor { u: Box<Expr>, s: Box<Expr>, v: Box<Expr> },
    /// Element-wise sum of two expressions of the same shape.
    Add(Box<Expr>, Box<Expr>),
    /// Expression times a constant.
    Scale(Box<Expr>, f32),
    /// `x` viewed as a matrix, each of its `chunks` equal blocks along `axis`
    /// mapped through `p` (n' × n): axis 0 views x as (chunks·n, c) and gives
    /// (chunks·n', c) with block b ↦ P·X_b; axis 1 views x as (r, chunks·n) and
    /// gives (r, chunks·n') with block b ↦ X_b·Pᵀ. A vector of length chunks·n
    /// is a (chunks·n, 1) matrix. Changes a tensor's width, e.g. the q, k, v
    /// blocks of a qkv factor with `chunks: 3`.
    Project { x: Box<Expr>, p: Box<Expr>, axis: usize, chunks: usize },
}

impl Expr {
    /// Shorthand for `Expr::Leaf(name)`.
    pub fn leaf(name: impl Into<String>) -> Self {
        Expr::Leaf(name.into())
    }

    /// The shape this expression evaluates to, given the leaves' shapes.
    pub fn shape(&self, leaves: &BTreeMap<String, Vec<usize>>) -> Result<Vec<usize>> {
        let get = |n: &str| leaves.get(n).cloned().ok_or_else(|| anyhow!("unknown leaf `{n}`"));
        match self {
            Expr::Leaf(n) => get(n),
            Expr::Row { leaf, index } => {
                let s = get(leaf)?;
                if s.len() != 2 || *index >= s[0] {
                    bail!("Row {{ leaf: `{leaf}`, index: {index} }}: leaf has shape {s:?}");
                }
                Ok(vec![s[1]])
            }
            Expr::Factor { u, s, v } => {
                let (us, ss, vs) = (u.shape(leaves)?, s.shape(leaves)?, v.shape(leaves)?);
                let ok = us.len() == 2 && vs.len() == 2 && ss.len() == 1 && us[1] == ss[0] && vs[1] == ss[0];
                if !ok {
                    bail!("Factor: need U (m1, r), s (r), V (m2, r); got U {us:?}, s {ss:?}, V {vs:?}");
                }
                Ok(vec![us[0], vs[0]])
            }
            Expr::Add(a, b) => {
                let (sa, sb) = (a.shape(leaves)?, b.shape(leaves)?);
                if sa.iter().product::<usize>() != sb.iter().product::<usize>() {
                    bail!("Add: shapes {sa:?} and {sb:?} differ");
                }
                Ok(sa)
            }
            Expr::Scale(a, _) => a.shape(leaves),
            Expr::Project { x, p, axis, chunks } => {
                let (xs, ps) = (x.shape(leaves)?, p.shape(leaves)?);
                let numel: usize = xs.iter().product();
                let [n_out, n_in] = ps[..] else { bail!("Project: P must be a matrix, got shape {ps:?}") };
                let block = chunks * n_in;
                if *axis > 1 || *chunks == 0 || n_in == 0 || numel % block != 0 || (*axis == 1 && xs.len() < 2) {
                    bail!("Project: cannot map {chunks} blocks of axis {axis} of a {xs:?} tensor through P {ps:?}");
                }
                let (other, along) = (numel / block, chunks * n_out);
                let along_x = if *axis == 0 { xs[0] } else { xs[xs.len() - 1] };
                if along_x != block {
                    bail!("Project: axis {axis} of {xs:?} is not {chunks} × {n_in} long");
                }
                Ok(if *axis == 0 { vec![along, other] } else { vec![other, along] })
            }
        }
    }

    /// Names of the leaves this expression reads.
    pub fn leaves(&self, out: &mut Vec<String>) {
        match self {
            Expr::Leaf(n) | Expr::Row { leaf: n, .. } => out.push(n.clone()),
            Expr::Factor { u, s, v } => {
                u.leaves(out);
                s.leaves(out);
                v.leaves(out);
            }
            Expr::Add(a, b) => {
                a.leaves(out);
                b.leaves(out);
            }
            Expr::Scale(a, _) => a.leaves(out),
            Expr::Project { x, p, .. } => {
                x.leaves(out);
                p.leaves(out);
            }
        }
    }
}

/// Leaves plus the binding of every model weight to an expression over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameterization {
    /// Tensors in the store, in a stable order.
    pub leaves: Vec<LeafSpec>,
    /// Model weight name → expression.
    pub bindings: BTreeMap<String, Expr>,
}

impl Parameterization {
    /// The plain parameterization: one leaf per weight, bound to itself.
    pub fn plain(weights: &[(String, Vec<usize>, Init)]) -> Self {
        let leaves = weights.iter().map(|(n, s, i)| LeafSpec::new(n.clone(), s.clone(), i.clone(), true)).collect();
        let bindings = weights.iter().map(|(n, _, _)| (n.clone(), Expr::leaf(n))).collect();
        Self { leaves, bindings }
    }

    /// Leaf shapes by name.
    pub fn leaf_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.leaves.iter().map(|l| (l.name.clone(), l.shape.clone())).collect()
    }

    /// Checks that every weight the model needs is bound to an expression of the
    /// right size, that leaf names are unique, and that every leaf is used.
    pub fn validate(&self, weights: &[(String, Vec<usize>)]) -> Result<()> {
        let shapes = self.leaf_shapes();
        if shapes.len() != self.leaves.len() {
            bail!("parameterization: duplicate leaf names");
        }
        let mut errors = Vec::new();
        for l in &self.leaves {
            if !(l.lr_scale.is_finite() && l.lr_scale > 0.0) {
                errors.push(format!("leaf `{}`: lr_scale must be finite and positive, got {}", l.name, l.lr_scale));
            }
        }
        for (name, shape) in weights {
            match self.bindings.get(name) {
                None => errors.push(format!("weight `{name}` {shape:?} has no binding")),
                Some(e) => match e.shape(&shapes) {
                    Err(err) => errors.push(format!("weight `{name}`: {err}")),
                    Ok(s) if s.iter().product::<usize>() != shape.iter().product::<usize>() => {
                        errors.push(format!("weight `{name}` needs shape {shape:?}, its expression gives {s:?}"))
                    }
                    Ok(_) => {}
                },
            }
        }
        let known: std::collections::BTreeSet<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
        for name in self.bindings.keys() {
            if !known.contains(name.as_str()) {
                errors.push(format!("binding `{name}` names no weight of this model"));
            }
        }
        let mut used = Vec::new();
        self.bindings.values().for_each(|e| e.leaves(&mut used));
        let used: std::collections::BTreeSet<String> = used.into_iter().collect();
        for l in &self.leaves {
            if !used.contains(&l.name) {
                errors.push(format!("leaf `{}` is not used by any binding", l.name));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("invalid parameterization:\n  {}", errors.join("\n  "))
        }
    }

    /// Marks leaves trainable or frozen by a predicate on their names.
    pub fn set_trainable(&mut self, mut pred: impl FnMut(&str) -> bool) {
        for l in &mut self.leaves {
            l.trainable = pred(&l.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lr_scale` defaults to 1 in specs written without it and must be finite and positive.
    #[test]
    fn lr_scale_default_and_checks() {
        let old = "(name: \"w\", shape: [2], init: Zeros, trainable: true)";
        assert_eq!(ron::from_str::<LeafSpec>(old).unwrap().lr_scale, 1.0);
        let w = [("w".to_string(), vec![2])];
        let mut p = Parameterization::plain(&[("w".into(), vec![2], Init::Zeros)]);
        p.validate(&w).unwrap();
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            p.leaves[0].lr_scale = bad;
            let e = p.validate(&w).unwrap_err().to_string();
            assert!(e.contains("`w`: lr_scale must be finite and positive"), "{bad}: {e}");
        }
    }
}
