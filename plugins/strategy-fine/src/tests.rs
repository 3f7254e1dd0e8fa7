use super::*;
use fine_core::model::store::CpuDevice;
use fine_core::model::Dit;
use fine_core::strategy::{descendant_store, materialize, weights_of};
use fine_plugin_api::strategy::testing::{leaf_values, tiny_graph};

fn opts(text: &str) -> Options {
    Options::parse(&Fine.info(), text).unwrap()
}

/// A trained-looking FINE ancestry of `depth` blocks (width 32): its spec,
/// leaf values and learngene.
fn ancestry(depth: usize) -> (Graph, Parameterization, Tensors, Learngene) {
    let g = tiny_graph(depth, 32);
    let w = weights_of(&Dit::new(&g));
    let spec = Fine.ancestry(&g, &w, &opts("")).unwrap();
    let leaves = leaf_values(&spec);
    let lg = Fine.extract(&g, &w, &spec, &leaves, &opts("")).unwrap();
    (g, spec, leaves, lg)
}

fn leaf_spec<'a>(spec: &'a Parameterization, name: &str) -> &'a LeafSpec {
    spec.leaves.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no leaf `{name}`"))
}

/// Every block matrix is U_t·diag(σ_t[l])·V_tᵀ of its type's shared factors;
/// everything else is its own leaf; U, V ~ N(0, s²) with
/// r·s⁴ = 2/(m1+m2) (Xavier's variance at σ = 1), σ_ada = 0 (adaLN-Zero).
#[test]
fn ancestry_factorizes_every_block_matrix_by_type() {
    let g = tiny_graph(3, 32);
    let w = weights_of(&Dit::new(&g));
    let spec = Fine.ancestry(&g, &w, &opts("")).unwrap();
    let mut factored = 0;
    for x in &w {
        match (type_of(x), &spec.bindings[&x.name]) {
            (Some((l, t)), Expr::Factor { u, s, v }) => {
                assert_eq!(**u, Expr::leaf(leaf(t, "U")), "{}", x.name);
                assert_eq!(**v, Expr::leaf(leaf(t, "V")), "{}", x.name);
                assert_eq!(**s, Expr::Row { leaf: leaf(t, "S"), index: l }, "{}", x.name);
                factored += 1;
            }
            (None, e) => assert_eq!(*e, Expr::leaf(&x.name)),
            (Some(_), e) => panic!("{} is bound to {e:?}", x.name),
        }
    }
    assert_eq!(factored, 3 * 5);
    assert!(spec.leaves.iter().all(|l| l.trainable), "an ancestry trains everything");
    for t in TYPES {
        let (m1, m2) = type_shape(&w, t).unwrap();
        let r = m1.min(m2);
        let (u, v, s) =
            (leaf_spec(&spec, &leaf(t, "U")), leaf_spec(&spec, &leaf(t, "V")), leaf_spec(&spec, &leaf(t, "S")));
        assert_eq!((u.shape.clone(), v.shape.clone(), s.shape.clone()), (vec![m1, r], vec![m2, r], vec![3, r]), "{t}");
        let std = (2.0 / ((m1 + m2) as f64 * r as f64)).powf(0.25) as f32;
        assert_eq!(u.init, Init::Normal { std }, "{t}");
        assert_eq!(v.init, Init::Normal { std }, "{t}");
        assert_eq!(s.init, Init::Const(if t == "ada" { 0.0 } else { 1.0 }), "{t}");
    }
    // factor_init=sigma: U ~ N(0, 1/m1), V ~ N(0, 1/m2), the scale in σ; same variance of W.
    let spec = Fine.ancestry(&g, &w, &opts("factor_init=sigma")).unwrap();
    let (m1, m2) = type_shape(&w, "fc1").unwrap();
    let r = m1.min(m2) as f64;
    assert_eq!(leaf_spec(&spec, &leaf("fc1", "U")).init, Init::Normal { std: (1.0 / m1 as f64).sqrt() as f32 });
    assert_eq!(leaf_spec(&spec, &leaf("fc1", "V")).init, Init::Normal { std: (1.0 / m2 as f64).sqrt() as f32 });
    let sigma = (2.0 * m1 as f64 * m2 as f64 / ((m1 + m2) as f64 * r)).sqrt() as f32;
    assert_eq!(leaf_spec(&spec, &leaf("fc1", "S")).init, Init::Const(sigma));
    // A rank option sets that type's rank only.
    let spec = Fine.ancestry(&g, &w, &opts("rank_fc2=5")).unwrap();
    assert_eq!(leaf_spec(&spec, &leaf("fc2", "U")).shape[1], 5);
    assert_eq!(leaf_spec(&spec, &leaf("fc1", "U")).shape[1], 32);
}

/// The learngene holds the factors, the σ tables, the biases by layer and the
/// depth-independent weights — no block weight whole — and states its storage.
#[test]
fn extract_keeps_the_learngene_and_its_storage_model() {
    let (g, spec, leaves, lg) = ancestry(3);
    assert_eq!(lg.strategy, "fine");
    for t in TYPES {
        for what in ["U", "V", "S"] {
            assert_eq!(lg.tensors[&leaf(t, what)], leaves[&leaf(t, what)], "{t} {what}");
        }
        assert_eq!(lg.meta[&format!("rank_{t}")], "32");
    }
    assert!(!lg.tensors.keys().any(|n| n.starts_with("blocks.")), "no block weight is stored whole");
    assert_eq!(lg.tensors["y_embedder.embedding_table.weight"], leaves["y_embedder.embedding_table.weight"]);
    let fc1 = &lg.tensors["biases.mlp.fc1.bias"];
    assert_eq!(fc1.shape, [3, 64]);
    assert_eq!(&fc1.data[64..128], &leaves["blocks.1.mlp.fc1.bias"].data[..], "row l is block l's bias");
    assert_eq!((lg.meta["hidden"].as_str(), lg.meta["ancestry_depth"].as_str()), ("32", "3"));
    assert_eq!(lg.meta["heads"], g.heads.to_string());
    // Storage: U, V and the shared weights once; σ rows and biases per layer.
    let per_layer_tables = |n: &str| n.ends_with(".S") || n.starts_with("biases.");
    let shared: usize = lg.tensors.iter().filter(|(n, _)| !per_layer_tables(n)).map(|(_, t)| t.data.len()).sum();
    let bias_per_layer: usize =
        lg.tensors.iter().filter(|(n, _)| n.starts_with("biases.")).map(|(_, t)| t.shape[1]).sum();
    assert_eq!(lg.meta["storage.learngene"], shared.to_string());
    assert_eq!(lg.meta["storage.per_layer"], (5 * 32 + bias_per_layer).to_string());
    // Not a FINE ancestry: refused.
    let w = weights_of(&Dit::new(&g));
    let plain = Dit::new(&g).plain_parameterization();
    let e = Fine.extract(&g, &w, &plain, &leaf_values(&plain), &opts("")).unwrap_err().to_string();
    assert!(e.contains("not a FINE ancestry"), "{e}");
}

/// At the ancestry's depth with σ and biases `linear` (exact at the same
/// depth), the materialized descendant is the ancestry; U, V and the shared
/// weights are frozen, σ and block biases train at the σ phase's learning rate.
#[test]
fn same_depth_descendant_is_the_ancestry_and_trains_sigma_and_biases_only() {
    let (g, spec, leaves, lg) = ancestry(3);
    let dit = Dit::new(&g);
    let w = weights_of(&dit);
    let d = Fine.descendant(&lg, &g, &w, &opts("sigma_init=linear,bias_init=linear")).unwrap();
    assert_eq!(d.init_steps, 300, "the paper's σ phase");
    for l in &d.spec.leaves {
        let trains = l.name.ends_with(".S") || (l.name.starts_with("blocks.") && l.name.ends_with(".bias"));
        assert_eq!(l.trainable, trains, "{}", l.name);
        assert_eq!(l.lr_scale, if trains { 30.0 } else { 1.0 }, "{}", l.name);
    }
    let dev = CpuDevice::default();
    let anc = fine_core::model::ParamStore::from_values(
        dev.clone(),
        spec.clone(),
        leaves.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect(),
    )
    .unwrap();
    let want = materialize(&dit, &anc).unwrap().host_values();
    let got = materialize(&dit, &descendant_store(dev, &dit, &d, 0).unwrap()).unwrap().host_values();
    for (name, v) in &want {
        let err = v.iter().zip(&got[name]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{name}: {err}");
    }
    let d = Fine.descendant(&lg, &g, &w, &opts("sigma_steps=7,sigma_lr_scale=2")).unwrap();
    assert_eq!(d.init_steps, 7);
    assert!(d.spec.leaves.iter().filter(|l| l.trainable).all(|l| l.lr_scale == 2.0));
}

/// Another depth: σ tables of the new depth, from the ancestry's rows by the
/// σ-init rule; the default `stats` draws by the seed; `random` keeps σ_ada = 0.
#[test]
fn deeper_descendant_sigma_by_rule_and_seed() {
    let (_, _, leaves, lg) = ancestry(3);
    let g5 = tiny_graph(5, 32);
    let w5 = weights_of(&Dit::new(&g5));
    let sigma = |o: &str, t: &str| Fine.descendant(&lg, &g5, &w5, &opts(o)).unwrap().values[&leaf(t, "S")].clone();
    let s = sigma("sigma_init=identical", "qkv");
    assert_eq!(s.shape, [5, 32]);
    let anc = &leaves[&leaf("qkv", "S")].data;
    let mean: Vec<f32> = (0..32).map(|k| (anc[k] + anc[32 + k] + anc[64 + k]) / 3.0).collect();
    for l in 0..5 {
        let err = s.data[l * 32..(l + 1) * 32].iter().zip(&mean).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-6, "layer {l}: {err}");
    }
    assert_eq!(sigma("seed=1", "fc1"), sigma("seed=1", "fc1"));
    assert_ne!(sigma("seed=1", "fc1"), sigma("seed=2", "fc1"));
    assert!(sigma("sigma_init=random", "ada").data.iter().all(|x| *x == 0.0));
    assert!(sigma("sigma_init=random", "fc2").data.iter().any(|x| *x != 0.0));
    // Biases: `zero` leaves DiT's init (no values), `linear` fills every layer.
    let d = Fine.descendant(&lg, &g5, &w5, &opts("bias_init=zero")).unwrap();
    assert!(!d.values.keys().any(|n| n.starts_with("blocks.")));
    let d = Fine.descendant(&lg, &g5, &w5, &opts("bias_init=linear")).unwrap();
    assert_eq!(d.values["blocks.4.mlp.fc1.bias"].data, leaves["blocks.2.mlp.fc1.bias"].data, "last to last");
}

/// A learngene of another strategy, or asked for at another rank, is refused.
#[test]
fn misfits_are_refused() {
    let (g, _, _, mut lg) = ancestry(2);
    let w = weights_of(&Dit::new(&g));
    let e = Fine.descendant(&lg, &g, &w, &opts("rank_qkv=4")).unwrap_err().to_string();
    assert!(e.contains("rank_qkv"), "{e}");
    lg.strategy = "tleg".into();
    let e = Fine.descendant(&lg, &g, &w, &opts("")).unwrap_err().to_string();
    assert!(e.contains("tleg"), "{e}");
}

/// A target of the learngene's width whose MLP is narrower (mlp_ratio 2 against
/// 4) fits fc1's V (width × width) but not its U: refused as a misfit, naming the
/// graph, before any leaf is built.
#[test]
fn a_factor_that_fits_on_one_side_only_is_refused() {
    let (g, _, _, lg) = ancestry(2);
    let narrow = Graph { name: "narrow-mlp".into(), mlp_ratio: g.mlp_ratio / 2.0, ..g.clone() };
    let w = weights_of(&Dit::new(&narrow));
    let e = Fine.descendant(&lg, &narrow, &w, &opts("")).unwrap_err().to_string();
    assert!(e.contains("does not fit this graph") && e.contains("narrow-mlp"), "{e}");
}
