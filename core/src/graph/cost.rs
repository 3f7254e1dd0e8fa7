//! Static cost of a graph: parameter names and shapes, counts, FLOPs, summary.
//!
//! Parameter names and shapes follow the PyTorch state dict of
//! facebookresearch/DiT `models.py` (a `Linear` weight is `(out, in)`), in
//! module registration order: `x_embedder`, `t_embedder`, `y_embedder`,
//! `blocks.{i}` (norm1, attn, norm2, mlp, adaLN_modulation; the norms have no
//! parameters) and `final_layer` (norm_final, linear, adaLN_modulation).
//! The fixed sin-cos `pos_embed` is a buffer here and is not listed.
//!
//! # FLOP convention
//! A matmul of an `m×k` by a `k×n` matrix counts `2·m·n·k` FLOPs (one multiply
//! and one add per MAC). Elementwise work (norms, activations, softmax,
//! modulation, residuals, biases) and the label-table lookup are ignored.
//! Training counts `3 ×` forward (forward + backward ≈ 2 × forward).
//! DiT's paper reports MACs as "Gflops", so its numbers are half of ours
//! (DiT-XL/2: 118.6 G in the paper, ≈ 237 GFLOPs here).

use super::Graph;

/// Every trainable parameter as `(state-dict name, PyTorch shape)`, in DiT order.
pub fn param_shapes(g: &Graph) -> Vec<(String, Vec<usize>)> {
    let (d, c, p) = (g.hidden, g.input.channels, g.patch_size);
    let hm = g.mlp_hidden();
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |name: String, shape: &[usize]| v.push((name, shape.to_vec()));
    push("x_embedder.proj.weight".into(), &[d, c, p, p]);
    push("x_embedder.proj.bias".into(), &[d]);
    push("t_embedder.mlp.0.weight".into(), &[d, g.timestep.freq_dim]);
    push("t_embedder.mlp.0.bias".into(), &[d]);
    push("t_embedder.mlp.2.weight".into(), &[d, d]);
    push("t_embedder.mlp.2.bias".into(), &[d]);
    push("y_embedder.embedding_table.weight".into(), &[label_rows(g), d]);
    for i in 0..g.depth {
        let b = format!("blocks.{i}");
        push(format!("{b}.attn.qkv.weight"), &[3 * d, d]);
        if g.block.qkv_bias {
            push(format!("{b}.attn.qkv.bias"), &[3 * d]);
        }
        push(format!("{b}.attn.proj.weight"), &[d, d]);
        push(format!("{b}.attn.proj.bias"), &[d]);
        push(format!("{b}.mlp.fc1.weight"), &[hm, d]);
        push(format!("{b}.mlp.fc1.bias"), &[hm]);
        push(format!("{b}.mlp.fc2.weight"), &[d, hm]);
        push(format!("{b}.mlp.fc2.bias"), &[d]);
        push(format!("{b}.adaLN_modulation.1.weight"), &[6 * d, d]);
        push(format!("{b}.adaLN_modulation.1.bias"), &[6 * d]);
    }
    if g.stitch_after.is_some() {
        push("stitch.weight".into(), &[d, d]);
        push("stitch.bias".into(), &[d]);
    }
    let out = out_patch_dim(g);
    push("final_layer.linear.weight".into(), &[out, d]);
    push("final_layer.linear.bias".into(), &[out]);
    push("final_layer.adaLN_modulation.1.weight".into(), &[2 * d, d]);
    push("final_layer.adaLN_modulation.1.bias".into(), &[2 * d]);
    v
}

/// Rows of the label table: one per class, plus the null class iff labels are
/// dropped during training (DiT: `use_cfg_embedding = dropout_prob > 0`).
pub fn label_rows(g: &Graph) -> usize {
    let null = usize::from(g.conditioning.label_dropout > 0.0);
    g.conditioning.num_classes + null
}

/// Total number of trainable parameters.
pub fn param_count(g: &Graph) -> usize {
    param_shapes(g).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// Parameter counts per group: `embeddings` (x/t/y embedders), `blocks`, `final layer`.
pub fn param_groups(g: &Graph) -> [(&'static str, usize); 3] {
    let mut groups = [("embeddings", 0), ("blocks", 0), ("final layer", 0)];
    for (name, shape) in param_shapes(g) {
        let i = if name.starts_with("blocks.") || name.starts_with("stitch.") {
            1
        } else if name.starts_with("final_layer.") {
            2
        } else {
            0
        };
        groups[i].1 += shape.iter().product::<usize>();
    }
    groups
}

/// FLOPs for one image (see the module docs for the convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flops {
    /// One forward pass: `2·m·n·k` summed over every matmul.
    pub forward: u64,
    /// One training step: `3 × forward` (forward + backward).
    pub training: u64,
}

/// Matmul FLOPs of one image's forward pass, and of a training step.
pub fn flops_per_image(g: &Graph) -> Flops {
    let mm = |m: usize, n: usize, k: usize| 2 * (m as u64) * (n as u64) * (k as u64);
    let (t, d, hm) = (g.tokens(), g.hidden, g.mlp_hidden());
    let embed = mm(t, d, g.patch_dim())
        + mm(1, d, g.timestep.freq_dim) // t_embedder.mlp.0
        + mm(1, d, d); // t_embedder.mlp.2
    let block = mm(1, 6 * d, d) // adaLN_modulation
        + mm(t, 3 * d, d) // qkv
        + mm(t, t, d) // Q·Kᵀ over all heads
        + mm(t, d, t) // attention·V over all heads
        + mm(t, d, d) // proj
        + mm(t, hm, d) // fc1
        + mm(t, d, hm); // fc2
    let final_layer = mm(1, 2 * d, d) + mm(t, out_patch_dim(g), d);
    let stitch = if g.stitch_after.is_some() { mm(t, d, d) } else { 0 };
    let forward = embed + g.depth as u64 * block + stitch + final_layer;
    Flops { forward, training: 3 * forward }
}

/// Width of the per-token output vector, `p·p·out_channels`.
fn out_patch_dim(g: &Graph) -> usize {
    g.patch_size * g.patch_size * g.out_channels()
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
    s += &format!("  classes      {}{null}\n", g.conditioning.num_classes);
    s += &format!("  parameters   {} ({})\n", thousands(n as u64), human(n as f64));
    for (group, count) in param_groups(g) {
        s += &format!("    {group:<12} {:>14} ({})\n", thousands(count as u64), human(count as f64));
    }
    s += &format!("  GFLOPs/image forward {}, training {}\n", gflops(f.forward), gflops(f.training));
    s
}

/// `32858896` → `"32,858,896"`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `32858896.0` → `"32.9 M"`.
pub fn human(n: f64) -> String {
    for (scale, unit) in [(1e9, "G"), (1e6, "M"), (1e3, "K")] {
        if n >= scale {
            return format!("{:.1} {unit}", n / scale);
        }
    }
    format!("{n}")
}

/// FLOPs as GFLOPs with three significant digits (one decimal at least).
pub fn gflops(flops: u64) -> String {
    let x = flops as f64 / 1e9;
    if x == 0.0 {
        return "0".into();
    }
    let decimals = (2 - x.log10().floor() as i32).clamp(1, 12) as usize;
    format!("{x:.decimals$}")
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

    #[test]
    fn names_order_and_optional_params() {
        let mut g = test_graph(1, 8, 4, 8, 2, 2);
        let shapes = param_shapes(&g);
        assert_eq!(shapes[0], ("x_embedder.proj.weight".into(), vec![8, 1, 4, 4]));
        assert_eq!(shapes[6], ("y_embedder.embedding_table.weight".into(), vec![11, 8]));
        assert_eq!(shapes[7], ("blocks.0.attn.qkv.weight".into(), vec![24, 8]));
        assert_eq!(shapes[14].0, "blocks.0.mlp.fc2.bias");
        assert_eq!(shapes[17].0, "blocks.1.attn.qkv.weight");
        let last = shapes.last().unwrap();
        assert_eq!(last, &("final_layer.adaLN_modulation.1.bias".into(), vec![16]));
        assert_eq!(shapes.len(), 7 + 2 * 10 + 4);
        g.block.qkv_bias = false;
        g.conditioning.label_dropout = 0.0;
        let shapes = param_shapes(&g);
        assert_eq!(shapes.len(), 7 + 2 * 9 + 4);
        assert!(shapes.iter().all(|(n, _)| !n.ends_with("qkv.bias")));
        assert_eq!(shapes[6].1, vec![10, 8]);
    }

    #[test]
    fn groups_sum_to_total() {
        let g = dit(384, 12, 6);
        let groups = param_groups(&g);
        assert_eq!(groups.iter().map(|(_, n)| n).sum::<usize>(), param_count(&g));
        assert_eq!(groups[1].1, 12 * (18 * 384 * 384 + 15 * 384));
    }

    #[test]
    fn tiny_flops_by_hand() {
        // C=1, 8×8, p=4 → T=4, patch dim 16; D=8; Hm=16; freq_dim=4; depth 1.
        let mut g = test_graph(1, 8, 4, 8, 1, 2);
        g.mlp_ratio = 2.0;
        g.timestep.freq_dim = 4;
        let patch = 2 * 4 * 16 * 8; // 1024
        let temb = 2 * (4 * 8 + 8 * 8); // 192
        let ada = 2 * 8 * 48; // 768
        let qkv = 2 * 4 * 8 * 24; // 1536
        let attn = 2 * (2 * 4 * 4 * 8); // QKᵀ + A·V = 512
        let proj = 2 * 4 * 8 * 8; // 512
        let mlp = 2 * (2 * 4 * 8 * 16); // fc1 + fc2 = 2048
        let fin = 2 * 8 * 16 + 2 * 4 * 8 * 16; // adaLN 256 + linear 1024
        let forward = patch + temb + ada + qkv + attn + proj + mlp + fin;
        assert_eq!(forward, 7872);
        assert_eq!(flops_per_image(&g), Flops { forward, training: 3 * forward });
    }

    #[test]
    fn dit_xl2_macs_match_paper() {
        // The DiT paper lists 118.6 G(MACs) for DiT-XL/2 (with 32 outputs;
        // our 16-output final linear changes that by 0.005 G).
        let macs = flops_per_image(&dit(1152, 28, 16)).forward as f64 / 2.0;
        assert!((macs / 1e9 - 118.6).abs() < 0.05, "{macs}");
    }

    #[test]
    fn describe_mentions_the_numbers() {
        let mut g = dit(384, 12, 6);
        g.name = "DiT-S/2".into();
        let s = describe(&g);
        for needle in ["DiT-S/2", "32,858,896", "32.9 M", "256 tokens", "head_dim 64", "(+1 null)"] {
            assert!(s.contains(needle), "{needle:?} missing from\n{s}");
        }
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(human(512.0), "512");
        assert_eq!(gflops(7872), "0.00000787");
        assert_eq!(gflops(3_500_000), "0.00350");
        assert_eq!(gflops(18_240_000_000), "18.2");
        assert_eq!(gflops(711_900_000_000), "711.9");
    }
}
