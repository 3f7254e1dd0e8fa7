//! The Diffusion Transformer (DiT, Peebles & Xie 2023) built from a graph.
//!
//! ```text
//! x (B, C, H, W) ─patchify─▶ (B·T, C·p·p) ─x_embedder─▶ (B, T, D) + pos_embed
//! t (B) ─sin-cos─▶ (B, 256) ─t_embedder─▶ (B, D) ┐
//! y (B) ─────────────────────y_embedder─▶ (B, D) ┴▶ c = t + y
//! (B, T, D) ─blocks[0..L](·, SiLU(c))─▶ (B, T, D) ─final_layer─▶ (B·T, p·p·C)
//! ```
//! The output stays in DiT's pre-unpatchify layout (columns (i, j, c)); the
//! loss compares it with the target noise rearranged the same way, which is
//! exactly the MSE after `unpatchify` (a permutation).

use super::init::dit_init;
use super::layers::{block::DitBlock, embed, final_layer::FinalLayer, linear::Linear, silu, T2};
use super::{Backend, Params};
use crate::graph::{cost::param_shapes, Graph};
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
    y_embedder: embed::LabelEmbedder,
    blocks: Vec<DitBlock>,
    final_layer: FinalLayer,
    pos_embed: Vec<f32>, // (T, D), fixed
}

impl Dit {
    /// Builds the layer structure of `graph` (which should be validated).
    pub fn new(graph: &Graph) -> Self {
        let g = graph;
        let d = g.hidden;
        let (gh, gw) = g.grid();
        let rows = g.conditioning.num_classes + usize::from(g.conditioning.label_dropout > 0.0);
        Self {
            graph: g.clone(),
            x_embedder: Linear::new("x_embedder.proj", g.patch_dim(), d),
            t_embedder: embed::TimestepEmbedder::new(d, g.timestep.freq_dim, g.timestep.max_period),
            y_embedder: embed::LabelEmbedder { rows, dim: d },
            blocks: (0..g.depth)
                .map(|i| DitBlock::new(i, d, g.heads, g.mlp_hidden(), g.block.qkv_bias, g.block.norm_eps))
                .collect(),
            final_layer: FinalLayer::new(d, g.patch_size * g.patch_size * g.out_channels(), g.block.norm_eps),
            pos_embed: embed::sincos_2d(d, gh, gw),
        }
    }

    /// Every weight the model reads, in DiT state-dict order, with PyTorch shapes.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        param_shapes(&self.graph)
    }

    /// One leaf per weight with DiT's initialization.
    pub fn plain_parameterization(&self) -> Parameterization {
        let w: Vec<_> = self
            .weight_shapes()
            .into_iter()
            .map(|(n, s)| {
                let init = dit_init(&n, &s, &self.graph);
                (n, s, init)
            })
            .collect();
        Parameterization::plain(&w)
    }

    /// Index of the null (unconditional) class, if the graph has one.
    pub fn null_class(&self) -> Option<usize> {
        (self.graph.conditioning.label_dropout > 0.0).then_some(self.graph.conditioning.num_classes)
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

        let c = self.t_embedder.forward(p, t)? + self.y_embedder.forward(p, y)?; // (B, D)
        let c_silu = silu(c); // every adaLN applies SiLU to c first
        for block in &self.blocks {
            h = block.forward(p, h, c_silu.with_empty_tape())?;
        }
        self.final_layer.forward(p, h, c_silu) // (B·T, p·p·C)
    }

    /// ε-prediction as NCHW images (no gradient tracking).
    pub fn predict<D: Backend>(&self, p: &Params<D, NoneTape>, x: &[f32], t: &[f32], y: &[usize]) -> Result<Vec<f32>> {
        let g = &self.graph;
        let out = self.forward(p, x, t, y)?.as_vec();
        Ok(embed::unpatchify(&out, t.len(), g.out_channels(), g.input.height, g.input.width, g.patch_size))
    }
}
