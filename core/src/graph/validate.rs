//! Semantic checks on a parsed [`Graph`]: every size must be positive and the
//! shapes must fit together (patches tile the image, heads split the width).
//!
//! All problems are collected and reported together, one per line, each
//! naming the offending field path and its value.

use super::Graph;

/// Checks that `g` describes a buildable DiT.
///
/// On failure the error message lists every problem found, one per line,
/// e.g. `hidden (100) is not divisible by heads (3)`.
pub fn validate(g: &Graph) -> anyhow::Result<()> {
    let problems = problems(g);
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    anyhow::bail!("graph `{}` has {} problem(s):\n{}", g.name, problems.len(), list.join("\n"))
}

/// Every problem with `g`, one message each; empty when the graph is valid.
pub fn problems(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    check_sizes(g, &mut out);
    check_mlp(g, &mut out);
    check_conditioning(g, &mut out);
    check_block_and_timestep(g, &mut out);
    check_stitch(g, &mut out);
    if out.is_empty() {
        check_scale(g, &mut out);
    }
    out
}

/// Largest size of any one field (hidden, depth, heads, image sides, classes, …).
pub const MAX_FIELD: usize = 1 << 24;

/// Largest model accepted, in parameters (2³¹: 8 GiB of f32 per copy; training
/// holds the weights, their gradients, the EMA and two AdamW moments).
pub const MAX_PARAMS: f64 = (1u64 << 31) as f64;

/// Sizes that would overflow the parameter count or no machine could hold,
/// computed in f64 before any size is multiplied as an integer.
fn check_scale(g: &Graph, out: &mut Vec<String>) {
    let more = [
        ("depth", g.depth),
        ("conditioning.num_classes", g.conditioning.num_classes),
        ("timestep.freq_dim", g.timestep.freq_dim),
    ];
    for (field, v) in sizes(g).into_iter().chain(more) {
        if v > MAX_FIELD {
            out.push(format!("{field} ({v}) exceeds {MAX_FIELD}"));
        }
    }
    let d = g.hidden as f64;
    let hm = (d * g.mlp_ratio).floor();
    if hm > MAX_FIELD as f64 {
        out.push(format!("mlp_ratio ({}) × hidden ({}) = {hm:e} exceeds {MAX_FIELD}", g.mlp_ratio, g.hidden));
    }
    if !out.is_empty() {
        return;
    }
    let (c, p) = (g.input.channels as f64, g.patch_size as f64);
    let tokens = (g.input.height as f64 / p) * (g.input.width as f64 / p);
    if tokens > MAX_FIELD as f64 {
        out.push(format!("the image gives {tokens:e} tokens, more than {MAX_FIELD}"));
    }
    let rows = g.conditioning.num_classes as f64 + 1.0;
    let block = 3.0 * d * d + 3.0 * d + d * d + d + 2.0 * hm * d + hm + d + 6.0 * d * d + 6.0 * d;
    let embed = c * p * p * d + d + g.timestep.freq_dim as f64 * d + d + d * d + d + rows * d;
    let last = 2.0 * d * d + 2.0 * d + d * p * p * c + p * p * c;
    let total = embed + g.depth as f64 * block + last + if g.stitch_after.is_some() { d * d + d } else { 0.0 };
    if total > MAX_PARAMS {
        out.push(format!("the model would have {total:.3e} parameters, more than {MAX_PARAMS:.3e}"));
    }
}

/// The sizes that must be at least 1, by field path.
fn sizes(g: &Graph) -> [(&'static str, usize); 6] {
    [
        ("input.channels", g.input.channels),
        ("input.height", g.input.height),
        ("input.width", g.input.width),
        ("patch_size", g.patch_size),
        ("hidden", g.hidden),
        ("heads", g.heads),
    ]
}

/// Positive sizes and the divisibility constraints between them.
fn check_sizes(g: &Graph, out: &mut Vec<String>) {
    for (field, value) in sizes(g) {
        if value == 0 {
            out.push(format!("{field} must be at least 1 (got 0)"));
        }
    }
    if g.depth == 0 {
        out.push("depth must be at least 1 (got 0)".into());
    }
    if g.patch_size > 0 {
        for (field, side) in [("input.height", g.input.height), ("input.width", g.input.width)] {
            if side > 0 && side % g.patch_size != 0 {
                out.push(format!("{field} ({side}) is not divisible by patch_size ({})", g.patch_size));
            }
        }
    }
    if g.heads > 0 && g.hidden > 0 && g.hidden % g.heads != 0 {
        out.push(format!("hidden ({}) is not divisible by heads ({})", g.hidden, g.heads));
    }
}

/// `mlp_ratio` must be a positive finite number giving a non-empty MLP.
fn check_mlp(g: &Graph, out: &mut Vec<String>) {
    let r = g.mlp_ratio;
    if !r.is_finite() || r <= 0.0 {
        out.push(format!("mlp_ratio ({r}) must be a finite number > 0"));
    } else if g.hidden > 0 && g.mlp_hidden() == 0 {
        out.push(format!("mlp_ratio ({r}) × hidden ({}) gives an MLP hidden width of 0", g.hidden));
    }
}

/// Class count and label dropout.
fn check_conditioning(g: &Graph, out: &mut Vec<String>) {
    let c = &g.conditioning;
    let p = c.label_dropout;
    if !(0.0..1.0).contains(&p) {
        out.push(format!("conditioning.label_dropout ({p}) must be in [0, 1)"));
    }
}

/// LayerNorm epsilon and the sinusoidal timestep embedding.
fn check_block_and_timestep(g: &Graph, out: &mut Vec<String>) {
    let eps = g.block.norm_eps;
    if !eps.is_finite() || eps <= 0.0 {
        out.push(format!("block.norm_eps ({eps}) must be a finite number > 0"));
    }
    let f = g.timestep.freq_dim;
    if f == 0 || f % 2 != 0 {
        out.push(format!("timestep.freq_dim ({f}) must be even and at least 2"));
    }
    let mp = g.timestep.max_period;
    if !mp.is_finite() || mp <= 0.0 {
        out.push(format!("timestep.max_period ({mp}) must be a finite number > 0"));
    }
}

/// A stitching layer sits between two blocks.
fn check_stitch(g: &Graph, out: &mut Vec<String>) {
    if let Some(k) = g.stitch_after {
        if g.depth > 0 && k.saturating_add(1) >= g.depth {
            out.push(format!(
                "stitch_after ({k}) must name a block followed by another (0..={}); the graph has depth {}",
                g.depth.saturating_sub(2),
                g.depth
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::test_graph;

    fn tiny() -> Graph {
        test_graph(1, 28, 4, 32, 2, 2)
    }

    fn only_problem(g: &Graph) -> String {
        let p = problems(g);
        assert_eq!(p.len(), 1, "expected exactly one problem, got {p:?}");
        p[0].clone()
    }

    #[test]
    fn valid_graph_passes() {
        validate(&tiny()).unwrap();
        // Odd head_dim is allowed (hidden 30, heads 2 → 15).
        validate(&test_graph(1, 28, 4, 30, 2, 2)).unwrap();
    }

    #[test]
    fn divisibility_names_fields_and_values() {
        let mut g = tiny();
        g.hidden = 100;
        g.heads = 3;
        assert_eq!(only_problem(&g), "hidden (100) is not divisible by heads (3)");
        let mut g = tiny();
        g.patch_size = 3;
        let p = problems(&g);
        assert_eq!(p[0], "input.height (28) is not divisible by patch_size (3)");
        assert_eq!(p[1], "input.width (28) is not divisible by patch_size (3)");
    }

    #[test]
    fn zero_sizes_are_rejected() {
        let mut g = tiny();
        g.depth = 0;
        assert!(only_problem(&g).starts_with("depth must be at least 1"));
        for set in [
            |g: &mut Graph| g.input.channels = 0,
            |g: &mut Graph| g.input.height = 0,
            |g: &mut Graph| g.input.width = 0,
            |g: &mut Graph| g.patch_size = 0,
            |g: &mut Graph| g.hidden = 0,
            |g: &mut Graph| g.heads = 0,
        ] {
            let mut g = tiny();
            set(&mut g);
            assert!(only_problem(&g).contains("must be at least 1 (got 0)"));
        }
    }

    #[test]
    fn ranges_are_checked() {
        type Case = (fn(&mut Graph), &'static str);
        let cases: [Case; 14] = [
            (|g| g.mlp_ratio = 0.0, "mlp_ratio (0)"),
            (|g| g.mlp_ratio = f64::NAN, "mlp_ratio (NaN)"),
            (|g| g.mlp_ratio = 0.01, "MLP hidden width of 0"),
            (|g| g.mlp_ratio = 1e30, "exceeds 16777216"),
            (|g| g.depth = 1_000_000_000_000, "depth (1000000000000) exceeds"),
            (|g| g.hidden = 65536, "parameters, more than"),
            (|g| g.input.height = 1 << 25, "input.height (33554432) exceeds"),
            (|g| g.conditioning.label_dropout = 1.0, "conditioning.label_dropout (1)"),
            (|g| g.conditioning.label_dropout = -0.1, "conditioning.label_dropout (-0.1)"),
            (|g| g.timestep.freq_dim = 255, "timestep.freq_dim (255)"),
            (|g| g.timestep.freq_dim = 0, "timestep.freq_dim (0)"),
            (|g| g.stitch_after = Some(1), "stitch_after (1) must name a block followed by another (0..=0)"),
            (|g| g.stitch_after = Some(usize::MAX), "stitch_after (18446744073709551615) must name a block"),
            (|g| g.block.norm_eps = 0.0, "block.norm_eps (0)"),
        ];
        for (set, expected) in cases {
            let mut g = tiny();
            set(&mut g);
            let p = only_problem(&g);
            assert!(p.contains(expected), "{p:?} should contain {expected:?}");
        }
        let mut g = tiny();
        g.conditioning.label_dropout = 0.0;
        validate(&g).unwrap();
        // Unconditional: no classes at all.
        g.conditioning.num_classes = 0;
        validate(&g).unwrap();
    }

    #[test]
    fn all_problems_are_reported_one_per_line() {
        let mut g = tiny();
        g.depth = 0;
        g.hidden = 100;
        g.heads = 3;
        g.conditioning.label_dropout = 1.0;
        let msg = validate(&g).unwrap_err().to_string();
        assert!(msg.contains("3 problem(s)"), "{msg}");
        assert_eq!(msg.lines().count(), 4, "{msg}");
        assert!(msg.contains("depth must be at least 1"));
        assert!(msg.contains("hidden (100) is not divisible by heads (3)"));
        assert!(msg.contains("conditioning.label_dropout"));
    }
}
