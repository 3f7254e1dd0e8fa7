use super::*;
use fine_core::model::store::CpuDevice;
use fine_core::model::Dit;
use fine_core::strategy::{descendant_store, materialize, weights_of};
use fine_plugin_api::strategy::testing::{leaf_values, tiny_graph};

fn opts(text: &str) -> Options {
    Options::parse(&SvdIndependent.info(), text).unwrap()
}

/// U·diag(s)·Vᵀ of row-major U (m1 × r), V (m2 × r), in f64.
fn product(u: &[f32], s: &[f32], v: &[f32], m1: usize, m2: usize) -> Vec<f64> {
    let r = s.len();
    let mut w = vec![0f64; m1 * m2];
    for i in 0..m1 {
        for j in 0..m2 {
            w[i * m2 + j] = (0..r).map(|k| u[i * r + k] as f64 * s[k] as f64 * v[j * r + k] as f64).sum();
        }
    }
    w
}

fn max_err(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max)
}

#[test]
fn svd_reconstructs_at_full_rank_and_is_optimal_when_truncated() {
    let mut x = 7u64;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for (m1, m2) in [(12, 5), (5, 12), (7, 7)] {
        let w: Vec<f32> = (0..m1 * m2).map(|_| next()).collect();
        let full = m1.min(m2);
        let (u, s, v) = truncated_svd(&w, m1, m2, full).unwrap();
        assert!(s.windows(2).all(|p| p[0] >= p[1]) && s[full - 1] >= 0.0, "{s:?}");
        assert!(max_err(&product(&u, &s, &v, m1, m2), &w) < 1e-5);
        // Eckart–Young: the rank-r error is exactly the discarded singular values.
        for r in 1..full {
            let (u, sr, v) = truncated_svd(&w, m1, m2, r).unwrap();
            assert_eq!(sr, s[..r]);
            let err2: f64 = product(&u, &sr, &v, m1, m2).iter().zip(&w).map(|(a, b)| (a - *b as f64).powi(2)).sum();
            let want: f64 = s[r..].iter().map(|x| (*x as f64).powi(2)).sum();
            assert!((err2 - want).abs() < 1e-5, "{m1}×{m2} rank {r}: {err2} vs {want}");
        }
    }
    assert!(truncated_svd(&[1.0; 6], 2, 3, 3).is_err());
}

#[test]
fn source_layers_by_relative_depth() {
    let map = |d: usize, l: usize| (0..d).map(|i| source_layer(i, d, l)).collect::<Vec<_>>();
    assert_eq!(map(4, 6), [0, 2, 3, 5]);
    assert_eq!(map(6, 6), [0, 1, 2, 3, 4, 5]);
    assert_eq!(map(11, 6), [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(map(1, 6), [0]);
    assert_eq!(map(3, 1), [0, 0, 0]);
}

#[test]
fn ancestry_is_plain_and_ranks_are_checked_before_training() {
    let g = tiny_graph(3, 32);
    let dit = Dit::new(&g);
    let spec = SvdIndependent.ancestry(&g, &weights_of(&dit), &opts("")).unwrap();
    spec.validate(&dit.weight_shapes()).unwrap();
    assert_eq!(spec, dit.plain_parameterization());
    let e = SvdIndependent.ancestry(&g, &weights_of(&dit), &opts("rank_fc1=33")).unwrap_err().to_string();
    assert!(e.contains("rank_fc1 = 33") && e.contains("32"), "{e}");
}

#[test]
fn learngene_reconstructs_the_ancestry_and_a_same_depth_descendant_is_the_ancestry() {
    let g = tiny_graph(3, 32);
    let dit = Dit::new(&g);
    let spec = SvdIndependent.ancestry(&g, &weights_of(&dit), &opts("")).unwrap();
    let leaves = leaf_values(&spec);
    let lg = SvdIndependent.extract(&g, &weights_of(&Dit::new(&g)), &spec, &leaves, &opts("")).unwrap();
    let weights = weights_of(&dit);
    for t in TYPES {
        assert_eq!(lg.meta[&format!("rank_{t}")], "32");
        let s = &lg.tensors[&sigma_leaf(t)];
        for l in 0..3 {
            let (u, v) = (&lg.tensors[&factor_leaf(t, l, "U")], &lg.tensors[&factor_leaf(t, l, "V")]);
            let w = &leaves[&dit::weight(&weights, l, t).unwrap().name];
            let (m1, m2) = (w.shape[0], w.shape[1]);
            let err = max_err(&product(&u.data, &s.data[l * 32..(l + 1) * 32], &v.data, m1, m2), &w.data);
            assert!(err < 1e-5, "{t} layer {l}: {err}");
        }
    }
    assert!(!lg.tensors.keys().any(|n| n.starts_with("blocks.")), "no block weight is stored whole");
    assert_eq!(lg.tensors["biases.mlp.fc1.bias"].shape, [3, 64], "the biases as a table per parameter");
    assert!(lg.tensors.contains_key("y_embedder.embedding_table.weight"));
    // Same depth, full rank, σ of the nearest layer: the materialized descendant is the ancestry,
    // block biases included (`bias_init` linear at the same depth).
    let d = SvdIndependent.descendant(&lg, &g, &weights_of(&dit), &opts("sigma_init=nearest")).unwrap();
    assert_eq!(d.init_steps, 300);
    assert!(d.spec.leaves.iter().filter(|l| l.trainable).all(|l| l.lr_scale == 30.0), "σ-phase learning rate");
    let trainable: Vec<&str> = d.spec.leaves.iter().filter(|l| l.trainable).map(|l| l.name.as_str()).collect();
    assert!(trainable.iter().all(|n| n.ends_with(".S") || n.ends_with(".bias")), "{trainable:?}");
    let w = materialize(&dit, &descendant_store(CpuDevice::default(), &dit, &d, 0).unwrap()).unwrap().host_values();
    let factorized: Vec<&str> = weights.iter().filter(|w| dit::type_of(w).is_some()).map(|w| w.name.as_str()).collect();
    assert_eq!(factorized.len(), 3 * 5);
    for (name, v) in &w {
        match factorized.contains(&name.as_str()) {
            true => {
                let a: Vec<f64> = leaves[name].data.iter().map(|x| *x as f64).collect();
                assert!(max_err(&a, v) < 1e-5, "{name}: {}", max_err(&a, v));
            }
            false => assert_eq!(v, &leaves[name].data, "{name}"),
        }
    }
}

#[test]
fn shallower_descendant_at_low_rank_and_misfits() {
    let g = tiny_graph(3, 32);
    let dit = Dit::new(&g);
    let o = opts("rank_qkv=4,rank_ada=2");
    let spec = SvdIndependent.ancestry(&g, &weights_of(&dit), &o).unwrap();
    let leaves = leaf_values(&spec);
    let lg = SvdIndependent.extract(&g, &weights_of(&Dit::new(&g)), &spec, &leaves, &o).unwrap();
    assert_eq!(lg.tensors["svd.qkv.1.U"].shape, [96, 4]);
    assert_eq!(lg.tensors["svd.ada.S"].shape, [3, 2]);
    // storage: σ rows 4 + 32 + 32 + 32 + 2 and the biases 96 + 32 + 64 + 32 + 192 per layer.
    assert_eq!(lg.meta["storage.per_layer"], (102 + 416).to_string());
    let g2 = tiny_graph(2, 32);
    let dit2 = Dit::new(&g2);
    let d = SvdIndependent.descendant(&lg, &g2, &weights_of(&dit2), &opts("sigma_steps=0,sigma_init=nearest")).unwrap();
    assert_eq!(d.init_steps, 0);
    // Layers 0 and 1 take ancestry layers 0 and 2; layer 1 is never read.
    assert!(d.values.contains_key("svd.fc2.2.V") && !d.values.contains_key("svd.fc2.1.V"));
    assert_eq!(d.values["svd.qkv.S"].data[4..], lg.tensors["svd.qkv.S"].data[8..]);
    let w = materialize(&dit2, &descendant_store(CpuDevice::default(), &dit2, &d, 0).unwrap()).unwrap().host_values();
    let anc = &leaves["blocks.2.mlp.fc1.weight"].data;
    let err = w["blocks.1.mlp.fc1.weight"].iter().zip(anc).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 1e-5, "{err}");
    let e = SvdIndependent.descendant(&lg, &g2, &weights_of(&dit2), &opts("rank_qkv=8")).unwrap_err();
    assert!(e.to_string().contains("rank_qkv = 8") && e.to_string().contains("rank 4"), "{e}");
    // The default σ-init (stats) keeps each singular value's scale: the table's column means.
    let d = SvdIndependent.descendant(&lg, &g2, &weights_of(&dit2), &opts("")).unwrap();
    let (anc, new) = (&lg.tensors["svd.fc1.S"].data, &d.values["svd.fc1.S"].data);
    assert!(new.iter().all(|v| *v > 0.0) && new != &anc[..64].to_vec(), "{new:?}");
    let wide = tiny_graph(3, 64);
    let e = SvdIndependent.descendant(&lg, &wide, &weights_of(&Dit::new(&wide)), &opts("")).unwrap_err();
    assert!(e.to_string().contains("width 32") && e.to_string().contains("width 64"), "{e}");
    // A σ table with another number of rows than the ancestry's depth is refused.
    let mut tampered = lg.clone();
    let t = tampered.tensors.get_mut("svd.fc1.S").unwrap();
    *t = Tensor::new(vec![2, 32], t.data[..64].to_vec()).unwrap();
    let e = SvdIndependent.descendant(&tampered, &g2, &weights_of(&dit2), &opts("")).unwrap_err().to_string();
    assert!(e.contains("svd.fc1.S") && e.contains("[2, 32]") && e.contains("not (3, r)"), "{e}");
    let other = Learngene { strategy: "fine".into(), ..lg };
    let e = SvdIndependent.descendant(&other, &g2, &weights_of(&dit2), &opts("")).unwrap_err();
    assert!(e.to_string().contains("made by `fine`"), "{e}");
}
