//! The named parameter store and the per-forward view that evaluates bindings.

use anyhow::{anyhow, bail, Context, Result};
use dfdx::prelude::*;
use fine_plugin_api::param::{Expr, Init, Parameterization};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// The CPU device.
pub type CpuDevice = dfdx::tensor::Cpu;

// The backend trait and flat tensors are the kernels' (the store builds on them).
pub use super::kernels::{flat_values, Backend, Flat};

/// One stored tensor.
#[derive(Clone, Debug)]
pub struct Leaf<D: Backend> {
    /// Logical shape (row-major); `value` holds `product(shape)` elements.
    pub shape: Vec<usize>,
    /// The data, flat, on the device.
    pub value: Flat<D>,
    /// Whether the optimiser updates this leaf.
    pub trainable: bool,
    /// Its learning rate as a multiple of the run's ([`fine_plugin_api::LeafSpec::lr_scale`]).
    pub lr_scale: f32,
}

/// All leaves of a model, by name, plus the parameterization that binds model
/// weights to them.
#[derive(Clone, Debug)]
pub struct ParamStore<D: Backend> {
    /// Device the leaves live on.
    pub dev: D,
    /// How model weights are made from the leaves.
    pub spec: Parameterization,
    leaves: BTreeMap<String, Leaf<D>>,
}

/// Samples host values for one leaf according to its [`Init`].
pub fn sample_init(init: &Init, n: usize, rng: &mut impl Rng) -> Result<Vec<f32>> {
    Ok(match init {
        Init::Zeros => vec![0.0; n],
        Init::Const(c) => vec![*c; n],
        Init::Normal { std } => {
            let d = Normal::new(0.0f32, *std).map_err(|e| anyhow!("Normal(std {std}): {e}"))?;
            (0..n).map(|_| d.sample(rng)).collect()
        }
        Init::XavierUniform { fan_in, fan_out } => {
            let a = (6.0 / (*fan_in + *fan_out) as f64).sqrt() as f32;
            let d = Uniform::new_inclusive(-a, a);
            (0..n).map(|_| d.sample(rng)).collect()
        }
        Init::Eye => {
            let side = (n as f64).sqrt() as usize;
            if side * side != n {
                bail!("identity init needs a square leaf, this one has {n} values");
            }
            (0..n).map(|i| if i % (side + 1) == 0 { 1.0 } else { 0.0 }).collect()
        }
        Init::Uniform { lo, hi } => {
            if !(lo < hi) {
                bail!("Uniform init needs lo < hi, got {lo}..{hi}");
            }
            let d = Uniform::new(*lo, *hi);
            (0..n).map(|_| d.sample(rng)).collect()
        }
    })
}

impl<D: Backend> ParamStore<D> {
    /// Creates every leaf from its init, drawing from `rng` in leaf order.
    pub fn init(dev: D, spec: Parameterization, rng: &mut impl Rng) -> Result<Self> {
        let mut values = BTreeMap::new();
        for l in &spec.leaves {
            let n = l.shape.iter().product();
            values.insert(l.name.clone(), sample_init(&l.init, n, rng).with_context(|| format!("leaf `{}`", l.name))?);
        }
        Self::from_values(dev, spec, values)
    }

    /// Creates the store from given host values (e.g. a checkpoint). Every leaf of
    /// `spec` must be present with the right number of elements.
    pub fn from_values(dev: D, spec: Parameterization, mut values: BTreeMap<String, Vec<f32>>) -> Result<Self> {
        let mut leaves = BTreeMap::new();
        for l in &spec.leaves {
            let v = values.remove(&l.name).ok_or_else(|| anyhow!("missing tensor for leaf `{}`", l.name))?;
            let n: usize = l.shape.iter().product();
            if v.len() != n {
                bail!("leaf `{}`: expected {} values for shape {:?}, got {}", l.name, n, l.shape, v.len());
            }
            let value = dev.tensor_from_vec(v, (n,));
            leaves.insert(
                l.name.clone(),
                Leaf { shape: l.shape.clone(), value, trainable: l.trainable, lr_scale: l.lr_scale },
            );
        }
        Ok(Self { dev, spec, leaves })
    }

    /// The leaf called `name`.
    pub fn leaf(&self, name: &str) -> Result<&Leaf<D>> {
        self.leaves.get(name).ok_or_else(|| anyhow!("no leaf named `{name}` in the store"))
    }

    /// All leaves in name order.
    pub fn leaves(&self) -> impl Iterator<Item = (&String, &Leaf<D>)> {
        self.leaves.iter()
    }

    /// Replaces a leaf's values (same element count).
    pub fn set(&mut self, name: &str, data: Vec<f32>) -> Result<()> {
        let dev = self.dev.clone();
        let leaf = self.leaves.get_mut(name).ok_or_else(|| anyhow!("no leaf named `{name}`"))?;
        if data.len() != leaf.value.shape().0 {
            bail!("leaf `{name}`: expected {} values, got {}", leaf.value.shape().0, data.len());
        }
        leaf.value = dev.tensor_from_vec(data, (leaf.value.shape().0,));
        Ok(())
    }

    /// A leaf's values on the device, to update in place (the optimizer).
    pub fn value_mut(&mut self, name: &str) -> Result<&mut Flat<D>> {
        Ok(&mut self.leaves.get_mut(name).ok_or_else(|| anyhow!("no leaf named `{name}`"))?.value)
    }

    /// Host copies of all leaves.
    pub fn host_values(&self) -> BTreeMap<String, Vec<f32>> {
        self.leaves.iter().map(|(n, l)| (n.clone(), flat_values(&l.value))).collect()
    }

    /// Total number of stored values.
    pub fn num_values(&self) -> usize {
        self.leaves.values().map(|l| l.value.shape().0).sum()
    }

    /// Number of values the optimiser updates.
    pub fn num_trainable(&self) -> usize {
        self.leaves.values().filter(|l| l.trainable).map(|l| l.value.shape().0).sum()
    }

    /// A view that evaluates weights with tape type `T` (`OwnedTape` to train,
    /// `NoneTape` to sample).
    pub fn view<T: Tape<f32, D>>(&self) -> Params<'_, D, T> {
        Params { store: self, _tape: PhantomData }
    }
}

/// Evaluates model weights from the store for one forward pass.
pub struct Params<'a, D: Backend, T> {
    store: &'a ParamStore<D>,
    _tape: PhantomData<T>,
}

impl<'a, D: Backend, T: Tape<f32, D>> Params<'a, D, T> {
    /// The device.
    pub fn dev(&self) -> &D {
        &self.store.dev
    }

    /// The weight `name`, flat, with `n` elements.
    pub fn flat(&self, name: &str, n: usize) -> Result<Flat<D, T>> {
        let expr = self.store.spec.bindings.get(name).ok_or_else(|| anyhow!("no binding for weight `{name}`"))?;
        let v = self.eval(expr).with_context(|| format!("evaluating weight `{name}`"))?;
        if v.shape().0 != n {
            bail!("weight `{name}`: expected {n} elements, expression gives {}", v.shape().0);
        }
        Ok(v)
    }

    /// The weight `name` as a (rows, cols) matrix.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor<(usize, usize), f32, D, T>> {
        Ok(self.flat(name, rows * cols)?.reshape_like(&(rows, cols)))
    }

    /// The weight `name` as a vector of length `n`.
    pub fn vector(&self, name: &str, n: usize) -> Result<Flat<D, T>> {
        self.flat(name, n)
    }

    fn eval(&self, e: &Expr) -> Result<Flat<D, T>> {
        Ok(match e {
            Expr::Leaf(n) => self.store.leaf(n)?.value.retaped::<T>(),
            Expr::Row { leaf, index } => {
                let l = self.store.leaf(leaf)?;
                let (rows, cols) = match l.shape[..] {
                    [r, c] if *index < r => (r, c),
                    _ => bail!("Row {index} of leaf `{leaf}` with shape {:?}", l.shape),
                };
                l.value
                    .retaped::<T>()
                    .reshape_like(&(rows, cols))
                    .slice((*index..*index + 1, ..))
                    .reshape_like(&(cols,))
            }
            Expr::Factor { u, s, v } => {
                let (u, s, v) = (self.eval(u)?, self.eval(s)?, self.eval(v)?);
                let r = s.shape().0;
                let (m1, m2) = (u.shape().0 / r.max(1), v.shape().0 / r.max(1));
                if r == 0 || m1 * r != u.shape().0 || m2 * r != v.shape().0 {
                    bail!("Factor: U has {} values, V {}, s {r}", u.shape().0, v.shape().0);
                }
                let u = u.reshape_like(&(m1, r)); // (m1, r)
                let us = u * s.broadcast_like::<_, Axis<0>>(&(m1, r)); // (m1, r): columns scaled by σ
                let vt = v.reshape_like(&(m2, r)).permute::<_, Axes2<1, 0>>(); // (r, m2)
                us.matmul(vt).reshape_like(&(m1 * m2,))
            }
            Expr::Add(a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                if a.shape() != b.shape() {
                    bail!("Add: {} vs {} elements", a.shape().0, b.shape().0);
                }
                a + b
            }
            Expr::Scale(a, c) => self.eval(a)? * *c,
            Expr::Project { x, p, axis, chunks } => {
                let shapes = self.store.spec.leaf_shapes();
                let shape = e.shape(&shapes)?; // checks every size
                let (n_out, n_in) = match p.shape(&shapes)?[..] {
                    [a, b] => (a, b),
                    _ => unreachable!("checked by Expr::shape"),
                };
                let (x, p) = (self.eval(x)?, self.eval(p)?.reshape_like(&(n_out, n_in))); // P: (n', n)
                let k = *chunks;
                let numel = x.shape().0;
                let out = if *axis == 0 {
                    let c = numel / (k * n_in);
                    if k == 1 {
                        p.matmul(x.reshape_like(&(n_in, c))).reshape_like(&(n_out * c,))
                    // (n', c)
                    } else {
                        let xb = x.reshape_like(&(k, n_in, c)).permute::<_, Axes3<1, 0, 2>>(); // (n, k, c)
                        let y = p.matmul(xb.reshape_like(&(n_in, k * c))); // (n', k·c)
                        let y = y.reshape_like(&(n_out, k, c)).permute::<_, Axes3<1, 0, 2>>(); // (k, n', c)
                        y.reshape_like(&(k * n_out * c,))
                    }
                } else {
                    let r = numel / (k * n_in);
                    let pt = p.permute::<_, Axes2<1, 0>>(); // (n, n')
                    x.reshape_like(&(r * k, n_in)).matmul(pt).reshape_like(&(r * k * n_out,))
                    // (r, k·n')
                };
                debug_assert_eq!(out.shape().0, shape.iter().product::<usize>());
                out
            }
        })
    }
}
