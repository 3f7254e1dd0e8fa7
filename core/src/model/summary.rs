//! What a graph's model holds: its parameter count, by group, the memory a
//! training step needs, and the summary
//! `fine graph check` prints. Counts come from the weights the layers declare
//! ([`Dit::weights`]), FLOPs from [`crate::graph::cost`].

use super::Dit;
use crate::graph::cost::{flops_per_image, gflops, human, label_rows, thousands};
use crate::graph::Graph;

/// Number of values in the weights of `g`'s model.
pub fn param_count(g: &Graph) -> usize {
    Dit::new(g).param_count()
}

/// Parameter counts per group: `embeddings` (x/t/y embedders), `blocks` (and
/// a stitching layer between them), `final layer`.
pub fn param_groups(g: &Graph) -> [(&'static str, usize); 3] {
    let mut groups = [("embeddings", 0), ("blocks", 0), ("final layer", 0)];
    for w in Dit::new(g).weights() {
        let i = if w.block.is_some() || w.role.starts_with("stitch") {
            1
        } else if w.role.starts_with("head") {
            2
        } else {
            0
        };
        groups[i].1 += w.shape.iter().product::<usize>();
    }
    groups
}

/// Estimated bytes of a training step of `g` at `batch` images: five f32 copies of
/// the parameters (weights, gradients, EMA, two AdamW moments) plus the
/// activations the tape keeps, ≈ 20 f32 values per token and width per block
/// (LayerNorms, modulated inputs, q/k/v, attention output, the MLP's 4× hidden
/// and its activation), plus the attention probabilities. A lower bound more
/// than a forecast: it refuses only what cannot fit.
pub fn training_bytes(g: &Graph, batch: usize) -> f64 {
    let (d, t) = (g.hidden as f64, g.tokens() as f64);
    let params = param_count(g) as f64;
    let per_block = 20.0 * t * d + g.heads as f64 * t * t;
    4.0 * (5.0 * params + batch as f64 * g.depth as f64 * per_block)
}

/// A multi-line human-readable summary: shapes, parameters and FLOPs.
pub fn describe(g: &Graph) -> String {
    let (gh, gw) = g.grid();
    let (c, h, w, p) = (g.input.channels, g.input.height, g.input.width, g.patch_size);
    let n = param_count(g);
    let f = flops_per_image(g);
    let null = if label_rows(g) > g.conditioning.num_classes { " (+1 null)" } else { "" };
    let mut s = format!("graph {}\n", g.name);
    s += &format!("  input        {c}×{h}×{w} (C×H×W)\n");
    s += &format!("  patch        {p}×{p} → {gh}×{gw} grid = {} tokens\n", g.tokens());
    s += &format!(
        "  transformer  hidden {}, depth {}, heads {} (head_dim {}), mlp hidden {}\n",
        g.hidden,
        g.depth,
        g.heads,
        g.head_dim(),
        g.mlp_hidden()
    );
    if let Some(k) = g.stitch_after {
        s += &format!("  stitch       linear {0}→{0} between blocks {k} and {1}\n", g.hidden, k + 1);
    }
    match g.conditioning.num_classes {
        0 => s += "  classes      none (unconditional)\n",
        c => s += &format!("  classes      {c}{null}\n"),
    }
    s += &format!("  parameters   {} ({})\n", thousands(n as u64), human(n as f64));
    for (group, count) in param_groups(g) {
        s += &format!("    {group:<12} {:>14} ({})\n", thousands(count as u64), human(count as f64));
    }
    s += &format!("  GFLOPs/image forward {}, training {}\n", gflops(f.forward), gflops(f.training));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::test_graph;

    /// Latent DiT preset: 4×32×32 input, patch 2, 1000 classes, dropout 0.1.
    fn dit(hidden: usize, depth: usize, heads: usize) -> Graph {
        let mut g = test_graph(4, 32, 2, hidden, depth, heads);
        g.conditioning.num_classes = 1000;
        g
    }

    #[test]
    fn dit_s2_matches_pytorch_count() {
        // Real DiT-S/2 (learn_sigma, pos_embed) has 32,963,360 params. Without
        // learned sigma the final linear has 16 outputs instead of 32
        // (−16·384 − 16 = −6,160) and pos_embed (256·384 = 98,304) is a buffer:
        // 32,963,360 − 6,160 − 98,304 = 32,858,896.
        assert_eq!(param_count(&dit(384, 12, 6)), 32_858_896);
    }

    #[test]
    fn dit_xl2_matches_pytorch_count() {
        // Real DiT-XL/2: 675,129,632 incl. pos_embed (256·1152 = 294,912) and a
        // final linear with 2·2·8 = 32 outputs. With 16 outputs the final linear
        // loses 16·1152 + 16 = 18,448 params:
        // 675,129,632 − 294,912 − 18,448 = 674,816,272.
        assert_eq!(param_count(&dit(1152, 28, 16)), 674_816_272);
    }

    /// DiT's state-dict order, shapes, roles, and the optional weights.
    #[test]
    fn names_order_roles_and_optional_params() {
        let mut g = test_graph(1, 8, 4, 8, 2, 2);
        let shapes = Dit::new(&g).weight_shapes();
        assert_eq!(shapes[0], ("x_embedder.proj.weight".into(), vec![8, 1, 4, 4]));
        assert_eq!(shapes[6], ("y_embedder.embedding_table.weight".into(), vec![11, 8]));
        assert_eq!(shapes[7], ("blocks.0.attn.qkv.weight".into(), vec![24, 8]));
        assert_eq!(shapes[14].0, "blocks.0.mlp.fc2.bias");
        assert_eq!(shapes[17].0, "blocks.1.attn.qkv.weight");
        let last = shapes.last().unwrap();
        assert_eq!(last, &("final_layer.adaLN_modulation.1.bias".into(), vec![16]));
        assert_eq!(shapes.len(), 7 + 2 * 10 + 4);
        let w = Dit::new(&g).weights();
        let role = |name: &str| w.iter().find(|w| w.name == name).map(|w| (w.role.as_str(), w.block)).unwrap();
        assert_eq!(role("blocks.1.attn.qkv.weight"), ("qkv", Some(1)));
        assert_eq!(role("blocks.0.adaLN_modulation.1.bias"), ("ada.bias", Some(0)));
        assert_eq!(role("blocks.1.mlp.fc1.weight"), ("fc1", Some(1)));
        assert_eq!(role("t_embedder.mlp.2.weight"), ("time.fc2", None));
        assert_eq!(role("final_layer.linear.weight"), ("head", None));
        // Every block matrix has a role and every role occurs once per block.
        for l in 0..2 {
            let roles: Vec<_> = w.iter().filter(|w| w.block == Some(l)).map(|w| w.role.as_str()).collect();
            let want =
                ["qkv", "qkv.bias", "proj", "proj.bias", "fc1", "fc1.bias", "fc2", "fc2.bias", "ada", "ada.bias"];
            assert_eq!(roles, want);
        }
        g.block.qkv_bias = false;
        g.conditioning.label_dropout = 0.0;
        let shapes = Dit::new(&g).weight_shapes();
        assert_eq!(shapes.len(), 7 + 2 * 9 + 4);
        assert!(shapes.iter().all(|(n, _)| !n.ends_with("qkv.bias")));
        assert_eq!(shapes[6].1, vec![10, 8]);
    }

    /// DiT's `initialize_weights`, weight by weight ([`crate::model::init`]).
    #[test]
    fn initializations_follow_dit() {
        use fine_plugin_api::param::Init;
        let g = Graph { stitch_after: Some(0), ..test_graph(1, 8, 4, 8, 2, 2) };
        let w = Dit::new(&g).weights();
        let init = |name: &str| w.iter().find(|w| w.name == name).map(|w| w.init.clone()).unwrap();
        assert_eq!(init("x_embedder.proj.weight"), Init::XavierUniform { fan_in: 16, fan_out: 8 });
        assert_eq!(init("x_embedder.proj.bias"), Init::Uniform { lo: -0.25, hi: 0.25 });
        assert_eq!(init("t_embedder.mlp.0.weight"), Init::Normal { std: 0.02 });
        assert_eq!(init("t_embedder.mlp.0.bias"), Init::Zeros);
        assert_eq!(init("y_embedder.embedding_table.weight"), Init::Normal { std: 0.02 });
        assert_eq!(init("blocks.1.mlp.fc1.weight"), Init::XavierUniform { fan_in: 8, fan_out: 32 });
        assert_eq!(init("blocks.1.mlp.fc1.bias"), Init::Zeros);
        assert_eq!(init("blocks.0.adaLN_modulation.1.weight"), Init::Zeros);
        assert_eq!(init("stitch.weight"), Init::Eye);
        assert_eq!(init("stitch.bias"), Init::Zeros);
        assert_eq!(init("final_layer.linear.weight"), Init::Zeros);
        assert_eq!(init("final_layer.adaLN_modulation.1.weight"), Init::Zeros);
    }

    #[test]
    fn groups_sum_to_total() {
        let g = dit(384, 12, 6);
        let groups = param_groups(&g);
        assert_eq!(groups.iter().map(|(_, n)| n).sum::<usize>(), param_count(&g));
        assert_eq!(groups[1].1, 12 * (18 * 384 * 384 + 15 * 384));
    }

    #[test]
    fn describe_mentions_the_numbers() {
        let mut g = dit(384, 12, 6);
        g.name = "DiT-S/2".into();
        let s = describe(&g);
        for needle in ["DiT-S/2", "32,858,896", "32.9 M", "256 tokens", "head_dim 64", "(+1 null)"] {
            assert!(s.contains(needle), "{needle:?} missing from\n{s}");
        }
    }
}
