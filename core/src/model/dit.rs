//! The Diffusion Transformer (DiT, Peebles & Xie 2023) built from a graph.
//!
//! ```text
//! x (B, C, H, W) ─patchify─▶ (B·T, C·p·p) ─x_embedder─▶ (B, T, D) + pos_embed
//! t (B) ─sin-cos─▶ (B, 256) ─t_embedder─▶ (B, D) ┐
//! y (B) ─────────────────────y_embedder─▶ (B, D) ┴▶ c = t + y
//! (B, T, D) ─blocks[0..L](·, SiLU(c))─▶ (B, T, D) ─final_layer─▶ (B·T, p·p·C)
//! ```
//! A graph with `stitch_after: Some(k)` applies the linear `stitch` (D → D) to
//! every token between blocks k and k+1 (Learngene Pool's stitching layer).
//! The output stays in DiT's pre-unpatchify layout (columns (i, j, c)); the
//! loss compares it with the target noise rearranged the same way, which is
//! exactly the MSE after `unpatchify` (a permutation).

use super::layers::{block::DitBlock, embed, final_layer::FinalLayer, linear::Linear, silu, WeightSpec, T2, T3};
use super::{init, Backend, Params};
use crate::graph::Graph;
use anyhow::{bail, Result};
use dfdx::prelude::*;
use fine_plugin_api::param::Parameterization;

/// A DiT whose weights come from a [`Params`] view.
#[derive(Debug, Clone)]
pub struct Dit {
    /// The architecture.
    pub graph: Graph,
    x_embedder: Linear,
    t_embedder: embed::TimestepEmbedder,
    /// Absent in an unconditional graph (`num_classes: 0`): c = t alone.
    y_embedder: Option<embed::LabelEmbedder>,
    blocks: Vec<DitBlock>,
    stitch: Option<(usize, Linear)>,
    final_layer: FinalLayer,
    pos_embed: Vec<f32>, // (T, D), fixed
}

impl Dit {
    /// Builds the layer structure of `graph` (which should be validated).
    pub fn new(graph: &Graph) -> Self {
        let g = graph;
        let d = g.hidden;
        let (gh, gw) = g.grid();
        let rows = crate::graph::cost::label_rows(g);
        Self {
            graph: g.clone(),
            x_embedder: Linear::new("x_embedder.proj", g.patch_dim(), d),
            t_embedder: embed::TimestepEmbedder::new(d, g.timestep.freq_dim, g.timestep.max_period),
            y_embedder: (rows > 0).then_some(embed::LabelEmbedder { rows, dim: d }),
            blocks: (0..g.depth)
                .map(|i| DitBlock::new(i, d, g.heads, g.mlp_hidden(), g.block.qkv_bias, g.block.norm_eps))
                .collect(),
            stitch: g.stitch_after.map(|k| (k, Linear::new("stitch", d, d))),
            final_layer: FinalLayer::new(d, g.patch_size * g.patch_size * g.out_channels(), g.block.norm_eps),
            pos_embed: embed::sincos_2d(d, gh, gw),
        }
    }

    /// Every weight the model reads, as its layers declare it (name, PyTorch
    /// shape, DiT's initialization, role), in DiT's state-dict order:
    /// x_embedder, t_embedder, y_embedder, blocks, stitch, final_layer. The
    /// fixed sin-cos `pos_embed` is a buffer, not a weight.
    pub fn weights(&self) -> Vec<WeightSpec> {
        let mut out = Vec::new();
        embed::declare_patch(&self.x_embedder, self.graph.input.channels, self.graph.patch_size, &mut out);
        self.t_embedder.declare(&mut out);
        if let Some(y) = &self.y_embedder {
            y.declare(&mut out);
        }
        for (l, block) in self.blocks.iter().enumerate() {
            block.declare(l, &mut out);
        }
        if let Some((_, stitch)) = &self.stitch {
            stitch.declare("stitch", None, init::identity(), &mut out);
        }
        self.final_layer.declare(&mut out);
        out
    }

    /// Every weight's name and PyTorch shape ([`Self::weights`]).
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.weights().into_iter().map(|w| (w.name, w.shape)).collect()
    }

    /// Number of values in the model's weights.
    pub fn param_count(&self) -> usize {
        self.weights().iter().map(|w| w.shape.iter().product::<usize>()).sum()
    }

    /// One leaf per weight with DiT's initialization.
    pub fn plain_parameterization(&self) -> Parameterization {
        let w: Vec<_> = self.weights().into_iter().map(|w| (w.name, w.shape, w.init)).collect();
        Parameterization::plain(&w)
    }

    /// Index of the null (unconditional) class, if the graph has one.
    pub fn null_class(&self) -> Option<usize> {
        let c = &self.graph.conditioning;
        (c.num_classes > 0 && c.label_dropout > 0.0).then_some(c.num_classes)
    }

    /// Number of values in one image, C·H·W.
    pub fn image_len(&self) -> usize {
        let i = &self.graph.input;
        i.channels * i.height * i.width
    }

    /// ε-prediction for NCHW images `x`, timesteps `t` and labels `y`, returned
    /// as (B·T, p·p·C) patch rows (see the module docs).
    pub fn forward<D: Backend, T: Tape<f32, D>>(
        &self,
        p: &Params<D, T>,
        x: &[f32],
        t: &[f32],
        y: &[usize],
    ) -> Result<T2<D, T>> {
        let (h, c_silu) = self.trunk(p, x, t, y, self.blocks.len())?;
        self.final_layer.forward(p, h, c_silu) // (B·T, p·p·C)
    }

    /// The token stream after the first `blocks` blocks (0: the patch
    /// embedding plus positions), as (B·T, D) rows without gradient tracking:
    /// the features Learngene Pool fits its stitching layers on.
    pub fn tokens_after<D: Backend>(
        &self,
        p: &Params<D, NoneTape>,
        x: &[f32],
        t: &[f32],
        y: &[usize],
        blocks: usize,
    ) -> Result<Vec<f32>> {
        if blocks > self.blocks.len() {
            bail!("the graph `{}` has {} blocks, not {blocks}", self.graph.name, self.blocks.len());
        }
        let (h, _) = self.trunk(p, x, t, y, blocks)?;
        Ok(h.as_vec())
    }

    /// Embeddings and the first `n` blocks: the tokens (B, T, D) and SiLU(c) (B, D).
    #[allow(clippy::type_complexity)]
    fn trunk<D: Backend, T: Tape<f32, D>>(
        &self,
        p: &Params<D, T>,
        x: &[f32],
        t: &[f32],
        y: &[usize],
        n: usize,
    ) -> Result<(T3<D, T>, T2<D, T>)> {
        let g = &self.graph;
        let (b, d, tok) = (t.len(), g.hidden, g.tokens());
        if x.len() != b * self.image_len() || y.len() != b {
            bail!(
                "forward: {} timesteps, {} labels and {} values (expected {} per image)",
                b,
                y.len(),
                x.len(),
                self.image_len()
            );
        }
        let patches = embed::patchify(x, b, g.input.channels, g.input.height, g.input.width, g.patch_size);
        let patches = p.dev().tensor_from_vec(patches, (b * tok, g.patch_dim())).retaped::<T>(); // (B·T, C·p·p)
        let pos = p.dev().tensor_from_vec(self.pos_embed.clone(), (tok, d)); // (T, D)
        let mut h = self.x_embedder.forward(p, patches)?.reshape_like(&(b, tok, d))
            + pos.broadcast_like::<_, Axis<0>>(&(b, tok, d)); // (B, T, D)

        let c = match &self.y_embedder {
            Some(emb) => self.t_embedder.forward(p, t)? + emb.forward(p, y)?, // (B, D)
            None => self.t_embedder.forward(p, t)?,                           // unconditional: labels unread
        };
        let c_silu = silu(c); // every adaLN applies SiLU to c first
        for (i, block) in self.blocks.iter().take(n).enumerate() {
            h = block.forward(p, h, c_silu.with_empty_tape())?;
            if let Some((_, stitch)) = self.stitch.as_ref().filter(|(k, _)| *k == i && i + 1 < n) {
                h = stitch.forward(p, h.reshape_like(&(b * tok, d)))?.reshape_like(&(b, tok, d));
                // (B, T, D)
            }
        }
        Ok((h, c_silu))
    }

    /// ε-prediction as NCHW images (no gradient tracking).
    pub fn predict<D: Backend>(&self, p: &Params<D, NoneTape>, x: &[f32], t: &[f32], y: &[usize]) -> Result<Vec<f32>> {
        let g = &self.graph;
        let out = self.forward(p, x, t, y)?.as_vec();
        Ok(embed::unpatchify(&out, t.len(), g.out_channels(), g.input.height, g.input.width, g.patch_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::CpuDevice;
    use crate::model::ParamStore;
    use rand::SeedableRng;

    /// A graph with `stitch_after` computes the plain DiT when its stitch is the
    /// identity (its init), and something else when it is not.
    #[test]
    fn identity_stitch_is_the_plain_model() {
        let g = crate::graph::test_graph(1, 8, 2, 16, 3, 2);
        let gs = Graph { stitch_after: Some(1), ..g.clone() };
        crate::graph::validate(&gs).unwrap();
        let (plain, stitched) = (Dit::new(&g), Dit::new(&gs));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let dev = CpuDevice::default();
        let store = ParamStore::init(dev.clone(), plain.plain_parameterization(), &mut rng).unwrap();
        let mut values = store.host_values();
        for v in values.values_mut() {
            v.iter_mut().enumerate().for_each(|(i, x)| *x += 0.01 * ((i % 7) as f32 - 3.0));
            // no zero gates
        }
        let s_store = |scale: f32| {
            let mut v = values.clone();
            v.insert("stitch.weight".into(), (0..256).map(|i| if i % 17 == 0 { scale } else { 0.0 }).collect());
            v.insert("stitch.bias".into(), vec![0.0; 16]);
            ParamStore::from_values(dev.clone(), stitched.plain_parameterization(), v).unwrap()
        };
        let store = ParamStore::from_values(dev.clone(), plain.plain_parameterization(), values.clone()).unwrap();
        let x: Vec<f32> = (0..2 * 64).map(|i| ((i * 37) % 19) as f32 / 9.0 - 1.0).collect();
        let (t, y) = ([3.0f32, 500.0], [1usize, 4]);
        let a = plain.predict(&store.view(), &x, &t, &y).unwrap();
        let b = stitched.predict(&s_store(1.0).view(), &x, &t, &y).unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6));
        let c = stitched.predict(&s_store(2.0).view(), &x, &t, &y).unwrap();
        assert!(a.iter().zip(&c).any(|(p, q)| (p - q).abs() > 1e-3));
        // Tokens after 2 blocks are taken before the stitch; after 3, past it.
        let k2 = stitched.tokens_after(&s_store(2.0).view(), &x, &t, &y, 2).unwrap();
        assert_eq!(k2, plain.tokens_after(&store.view(), &x, &t, &y, 2).unwrap());
        assert_eq!(k2.len(), 2 * 16 * 16);
        assert!(stitched.tokens_after(&store.view(), &x, &t, &y, 4).is_err());
        assert_eq!(stitched.param_count(), plain.param_count() + 16 * 16 + 16);
    }
}
