//! Sampling: the model-side denoiser with classifier-free guidance (handled
//! once, here, for every sampler) and the driver that runs a sampler plugin.
//!
//! Solvers themselves are plugins (`plugins/sampler-*`) behind
//! [`fine_plugin_api::Sampler`]: they see only host buffers and a callback.

use crate::diffusion::NoiseSchedule;
use crate::model::{Backend, Dit, ParamStore};
use anyhow::{bail, Result};
use dfdx::prelude::NoneTape;
pub use fine_plugin_api::sampler::{predict_x0, timesteps, Spacing};
pub use fine_plugin_api::{EpsFn, Options, Sampler, SamplerContext};
use rand::{Rng, SeedableRng};

/// Labels of `n` images to sample from `graph`: image i has class i mod the
/// class count, or 0 (unread) in an unconditional graph.
pub fn cycled_labels(graph: &fine_plugin_api::Graph, n: usize) -> Vec<usize> {
    let classes = graph.conditioning.num_classes;
    (0..n).map(|i| if classes == 0 { 0 } else { i % classes }).collect()
}

/// The model as a denoiser: ε̂(x_t, t) for fixed labels, with classifier-free
/// guidance `ε_u + s·(ε_c − ε_u)` when `cfg_scale ≠ 1`, evaluated in chunks.
pub struct Denoiser<'a, D: Backend> {
    /// Model structure.
    pub dit: &'a Dit,
    /// Weights (usually EMA).
    pub store: &'a ParamStore<D>,
    /// Label of every image in the batch.
    pub labels: Vec<usize>,
    /// Guidance scale (1 = no guidance).
    pub cfg_scale: f32,
    /// Images per forward pass.
    pub chunk: usize,
}

impl<'a, D: Backend> Denoiser<'a, D> {
    /// ε̂ for the whole batch `x` at timestep `t`.
    pub fn eps(&self, x: &[f32], t: usize) -> Result<Vec<f32>> {
        let per = self.dit.image_len();
        let n = self.labels.len();
        if x.len() != n * per {
            bail!("denoiser: {} values for {n} images", x.len());
        }
        let guided = self.cfg_scale != 1.0;
        let null = match (guided, self.dit.null_class()) {
            (true, None) if self.dit.graph.conditioning.num_classes == 0 => bail!(
                "the graph `{}` is unconditional (num_classes: 0): classifier-free guidance needs classes \
                 (use a guidance scale of 1)",
                self.dit.graph.name
            ),
            (true, None) => bail!("classifier-free guidance needs a null class (graph label_dropout > 0)"),
            (_, nc) => nc.unwrap_or(0),
        };
        let p = self.store.view::<NoneTape>();
        let mut out = Vec::with_capacity(x.len());
        for start in (0..n).step_by(self.chunk.max(1)) {
            let end = (start + self.chunk.max(1)).min(n);
            let xs = &x[start * per..end * per];
            let ys = &self.labels[start..end];
            if !guided {
                let tt = vec![t as f32; end - start];
                out.extend(self.dit.predict(&p, xs, &tt, ys)?);
                continue;
            }
            let mut x2 = xs.to_vec();
            x2.extend_from_slice(xs);
            let mut y2 = ys.to_vec();
            y2.extend(std::iter::repeat(null).take(end - start));
            let tt = vec![t as f32; 2 * (end - start)];
            let e = self.dit.predict(&p, &x2, &tt, &y2)?;
            let (c, u) = e.split_at(xs.len());
            out.extend(c.iter().zip(u).map(|(c, u)| u + self.cfg_scale * (c - u)));
        }
        Ok(out)
    }
}

/// Draws x_T ~ N(0, I) for `n_values` values from `seed` and runs `sampler` to x₀
/// (the sampler's own noise uses `seed + 1`).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    sampler: &dyn Sampler,
    opts: &Options,
    sched: &NoiseSchedule,
    steps: usize,
    clip_denoised: bool,
    n_values: usize,
    eps: &mut EpsFn,
    seed: u64,
) -> Result<Vec<f32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n_values).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    let ctx = SamplerContext { alphas_cumprod: &sched.alphas_cumprod, steps, clip_denoised };
    let out = sampler.sample(&ctx, opts, x, eps, seed.wrapping_add(1))?;
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        bail!("sampling gave a non-finite value ({} at index {i}): the model's weights or the guidance scale are not usable", out[i]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::CpuDevice;
    use fine_plugin_api::Init;

    /// Guidance is ε_u + s·(ε_c − ε_u), on a model whose conditional and unconditional
    /// outputs differ by construction: every weight drawn from N(0, 0.2²) (DiT's zero
    /// init of the modulation and the final layer would make every output 0), so the
    /// label embeddings of class 3 and of the null class differ.
    #[test]
    fn guidance_extrapolates_from_the_unconditional_output() {
        let g = crate::graph::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../graphs/fmnist-tiny.ron"
        )))
        .unwrap();
        let dit = Dit::new(&g);
        let mut spec = dit.plain_parameterization();
        spec.leaves.iter_mut().for_each(|l| l.init = Init::Normal { std: 0.2 });
        let store =
            ParamStore::init(CpuDevice::default(), spec, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap();
        let n = 3;
        let x: Vec<f32> = (0..n * dit.image_len()).map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0).collect();
        let null = dit.null_class().unwrap();
        let den =
            |labels: Vec<usize>, cfg_scale: f32| Denoiser { dit: &dit, store: &store, labels, cfg_scale, chunk: 2 };
        let c = den(vec![3; n], 1.0).eps(&x, 400).unwrap();
        let u = den(vec![null; n], 1.0).eps(&x, 400).unwrap();
        let diff = c.iter().zip(&u).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff > 1e-2, "conditional and unconditional outputs agree ({diff}): the check would be vacuous");
        for s in [0.0f32, 2.5, 4.0] {
            let guided = den(vec![3; n], s).eps(&x, 400).unwrap();
            for ((g, c), u) in guided.iter().zip(&c).zip(&u) {
                let want = u + s * (c - u);
                assert!((g - want).abs() <= 1e-5 * (1.0 + want.abs()), "scale {s}: {g} vs {want}");
            }
        }
    }

    /// An unconditional graph (`num_classes: 0`) has no label table, reads no
    /// label, and refuses guidance by name.
    #[test]
    fn an_unconditional_graph_has_no_label_table_and_refuses_guidance() {
        let mut g = crate::graph::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../graphs/pokemon-tiny.ron"
        )))
        .unwrap();
        assert_eq!(g.conditioning.num_classes, 0);
        let dit = Dit::new(&g);
        assert!(dit.weights().iter().all(|w| !w.name.starts_with("y_embedder")));
        assert_eq!(dit.null_class(), None);
        let mut spec = dit.plain_parameterization();
        spec.leaves.iter_mut().for_each(|l| l.init = Init::Normal { std: 0.2 });
        let store =
            ParamStore::init(CpuDevice::default(), spec, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap();
        let x: Vec<f32> = (0..2 * dit.image_len()).map(|i| ((i * 7 % 23) as f32 - 11.0) / 11.0).collect();
        let den =
            |labels: Vec<usize>, cfg_scale: f32| Denoiser { dit: &dit, store: &store, labels, cfg_scale, chunk: 2 };
        let a = den(cycled_labels(&g, 2), 1.0).eps(&x, 300).unwrap();
        assert_eq!(cycled_labels(&g, 3), [0, 0, 0]);
        assert_eq!(a, den(vec![7, 123], 1.0).eps(&x, 300).unwrap(), "labels must not be read");
        let e = den(vec![0, 0], 2.0).eps(&x, 300).unwrap_err().to_string();
        assert!(e.contains("pokemon-tiny") && e.contains("unconditional"), "{e}");
        // The same graph with classes has the table, and its labels matter.
        g.conditioning.num_classes = 4;
        assert!(Dit::new(&g).weights().iter().any(|w| w.name == "y_embedder.embedding_table.weight"));
        assert_eq!(cycled_labels(&g, 6), [0, 1, 2, 3, 0, 1]);
    }
}
