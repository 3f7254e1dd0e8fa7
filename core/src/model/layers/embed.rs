//! Embeddings: patches, fixed 2-D sin-cos positions, timesteps and labels.

use super::linear::{weight, Linear};
use super::{silu, WeightSpec, T2};
use crate::model::{init, Backend, Params};
use anyhow::{bail, Result};
use dfdx::prelude::*;

/// DiT's `get_2d_sincos_pos_embed` for a (gh × gw) grid: (gh·gw, dim), row-major
/// over tokens. The first half of the channels encodes the column (w) index,
/// the second half the row (h) index; each half is `[sin, cos]`.
pub fn sincos_2d(dim: usize, gh: usize, gw: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; gh * gw * dim];
    for i in 0..gh {
        for j in 0..gw {
            let row = &mut out[(i * gw + j) * dim..(i * gw + j + 1) * dim];
            sincos_1d(&mut row[..half], j as f64);
            sincos_1d(&mut row[half..], i as f64);
        }
    }
    out
}

/// DiT's `get_1d_sincos_pos_embed_from_grid` for one position: `[sin(pos·ω), cos(pos·ω)]`
/// with ω_k = 1 / 10000^(k / (n/2)).
fn sincos_1d(out: &mut [f32], pos: f64) {
    let q = out.len() / 2;
    for k in 0..q {
        let omega = 1.0 / 10000f64.powf(k as f64 / q as f64);
        out[k] = (pos * omega).sin() as f32;
        out[q + k] = (pos * omega).cos() as f32;
    }
}

/// Declares the patch embedding `x` (DiT's stride-p conv, read as the linear
/// (D, C·p·p) over [`patchify`]'s rows): its weight with the conv's shape
/// (D, C, p, p), Xavier-uniform over the (D, C·p·p) view, and its bias with
/// PyTorch's conv default, which DiT keeps.
pub fn declare_patch(x: &Linear, channels: usize, patch: usize, out: &mut Vec<WeightSpec>) {
    let shape = vec![x.out, channels, patch, patch];
    out.push(weight(format!("{}.weight", x.prefix), shape.clone(), init::xavier(&shape), "patch", None));
    out.push(weight(format!("{}.bias", x.prefix), vec![x.out], init::conv_bias(x.inp), "patch.bias", None));
}

/// DiT's `TimestepEmbedder.timestep_embedding`: (B, dim) = `[cos(t·f), sin(t·f)]`
/// with f_k = exp(−ln(max_period)·k/half). Computed in f64 on the host.
pub fn timestep_frequencies(t: &[f32], dim: usize, max_period: f64) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; t.len() * dim];
    for (b, &tb) in t.iter().enumerate() {
        for k in 0..half {
            let f = (-(max_period.ln()) * k as f64 / half as f64).exp();
            let a = tb as f64 * f;
            out[b * dim + k] = a.cos() as f32;
            out[b * dim + half + k] = a.sin() as f32;
        }
    }
    out
}

/// `t_embedder`: frequencies → `mlp.0` (freq → D) → SiLU → `mlp.2` (D → D).
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    /// `t_embedder.mlp.0`.
    pub fc1: Linear,
    /// `t_embedder.mlp.2`.
    pub fc2: Linear,
    /// Size of the sinusoidal embedding.
    pub freq_dim: usize,
    /// Max period of the sinusoids.
    pub max_period: f64,
}

impl TimestepEmbedder {
    /// DiT's timestep embedder of width `dim`.
    pub fn new(dim: usize, freq_dim: usize, max_period: f64) -> Self {
        Self {
            fc1: Linear::new("t_embedder.mlp.0", freq_dim, dim),
            fc2: Linear::new("t_embedder.mlp.2", dim, dim),
            freq_dim,
            max_period,
        }
    }

    /// Its weights: Normal(0, 0.02²), biases zero.
    pub fn declare(&self, out: &mut Vec<WeightSpec>) {
        self.fc1.declare("time.fc1", None, init::embedding(), out);
        self.fc2.declare("time.fc2", None, init::embedding(), out);
    }

    /// Timesteps (B) → (B, D).
    pub fn forward<D: Backend, T: Tape<f32, D>>(&self, p: &Params<D, T>, t: &[f32]) -> Result<T2<D, T>> {
        let f = timestep_frequencies(t, self.freq_dim, self.max_period);
        let f = p.dev().tensor_from_vec(f, (t.len(), self.freq_dim)).retaped::<T>(); // (B, freq)
        let h = silu(self.fc1.forward(p, f)?);
        self.fc2.forward(p, h)
    }
}

/// `y_embedder.embedding_table`: (classes [+1 null], D).
#[derive(Debug, Clone)]
pub struct LabelEmbedder {
    /// Rows of the table (classes, plus one null class when CFG dropout is on).
    pub rows: usize,
    /// Width D.
    pub dim: usize,
}

impl LabelEmbedder {
    /// The table's name.
    const TABLE: &'static str = "y_embedder.embedding_table.weight";

    /// Its weight: the table, Normal(0, 0.02²).
    pub fn declare(&self, out: &mut Vec<WeightSpec>) {
        out.push(weight(Self::TABLE.into(), vec![self.rows, self.dim], init::embedding(), "label", None));
    }

    /// Labels (B) → (B, D). Label `rows − 1` is the null class when it exists.
    pub fn forward<D: Backend, T: Tape<f32, D>>(&self, p: &Params<D, T>, y: &[usize]) -> Result<T2<D, T>> {
        if let Some(bad) = y.iter().find(|&&l| l >= self.rows) {
            bail!("label {bad} out of range: the label table has {} rows", self.rows);
        }
        let table = p.matrix(Self::TABLE, self.rows, self.dim)?;
        let idx = p.dev().tensor_from_vec(y.to_vec(), (y.len(),));
        Ok(table.gather(idx))
    }
}

/// Cuts NCHW images into patch rows: (B·gh·gw, C·p·p), columns ordered (c, i, j)
/// like the flattened weight of DiT's stride-p conv, so `patch · Wᵀ` equals the conv.
pub fn patchify(x: &[f32], b: usize, c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(x.len());
    for n in 0..b {
        for gi in 0..gh {
            for gj in 0..gw {
                for ch in 0..c {
                    for i in 0..p {
                        let row = ((n * c + ch) * h + gi * p + i) * w + gj * p;
                        out.extend_from_slice(&x[row..row + p]);
                    }
                }
            }
        }
    }
    out
}

/// Rearranges NCHW images into DiT's output layout: (B·gh·gw, p·p·C), columns
/// ordered (i, j, c) — the layout `final_layer.linear` produces before unpatchify.
pub fn patchify_channels_last(x: &[f32], b: usize, c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(x.len());
    for n in 0..b {
        for gi in 0..gh {
            for gj in 0..gw {
                for i in 0..p {
                    for j in 0..p {
                        for ch in 0..c {
                            out.push(x[((n * c + ch) * h + gi * p + i) * w + gj * p + j]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Inverse of [`patchify_channels_last`]: DiT's `unpatchify` (einsum `nhwpqc->nchpwq`).
pub fn unpatchify(y: &[f32], b: usize, c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (gh, gw) = (h / p, w / p);
    let mut out = vec![0f32; b * c * h * w];
    let mut k = 0;
    for n in 0..b {
        for gi in 0..gh {
            for gj in 0..gw {
                for i in 0..p {
                    for j in 0..p {
                        for ch in 0..c {
                            out[((n * c + ch) * h + gi * p + i) * w + gj * p + j] = y[k];
                            k += 1;
                        }
                    }
                }
            }
        }
    }
    out
}
