//! Static cost of a graph: FLOPs, and the number formats of its summary. The
//! weights themselves (names, shapes, counts) are declared by the model's
//! layers: `model::Dit::weights`, `model::summary`.
//!
//! # FLOP convention
//! A matmul of an `m×k` by a `k×n` matrix counts `2·m·n·k` FLOPs (one multiply
//! and one add per MAC). Elementwise work (norms, activations, softmax,
//! modulation, residuals, biases) and the label-table lookup are ignored.
//! Training counts `3 ×` forward (forward + backward ≈ 2 × forward).
//! DiT's paper reports MACs as "Gflops", so its numbers are half of ours
//! (DiT-XL/2: 118.6 G in the paper, ≈ 237 GFLOPs here).

use super::Graph;

/// Rows of the label table: one per class, plus the null class iff labels are
/// dropped during training (DiT: `use_cfg_embedding = dropout_prob > 0`); 0
/// (no table) in an unconditional graph, `num_classes: 0`.
pub fn label_rows(g: &Graph) -> usize {
    if g.conditioning.num_classes == 0 {
        return 0;
    }
    let null = usize::from(g.conditioning.label_dropout > 0.0);
    g.conditioning.num_classes + null
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

/// `32858896` → `"32,858,896"`.
pub fn thousands(n: u64) -> String {
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
    fn number_formats() {
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(32_858_896), "32,858,896");
        assert_eq!(human(512.0), "512");
        assert_eq!(human(32_858_896.0), "32.9 M");
        assert_eq!(gflops(7872), "0.00000787");
        assert_eq!(gflops(3_500_000), "0.00350");
        assert_eq!(gflops(18_240_000_000), "18.2");
        assert_eq!(gflops(711_900_000_000), "711.9");
    }
}
