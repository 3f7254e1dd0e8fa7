//! Library-level tests of the runtime: the DiT against PyTorch, gradients
//! against finite differences, parameter expressions.
//!
//! The PyTorch numbers come from `scripts/make_torch_reference.py` (run
//! `python3 scripts/make_torch_reference.py --out tests/data`; torch 2.15.0),
//! which builds DiT's own modules (a faithful copy of facebookresearch/DiT
//! `models.py` in `scripts/torch_dit.py`), computes in float64 and stores
//! float32 inputs, outputs and gradients of `sum(out · R)`.

use dfdx::prelude::*;
use fine_core::graph::{self, Graph};
use fine_core::model::layers::{block::DitBlock, embed, silu};
use fine_core::model::{Dit, Expr, Init, LeafSpec, ParamStore, Parameterization};
use safetensors::SafeTensors;
use std::collections::BTreeMap;

type Dev = Cpu;

fn load_ref(name: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let path = format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (n, (t.shape().to_vec(), v))
        })
        .collect()
}

/// max |a − b| / max(|b|, 1e-6): relative to the reference's scale.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// A store holding every `prefix*` tensor of the reference file as a plain leaf.
fn store_from_ref(r: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, keep: impl Fn(&str) -> bool) -> ParamStore<Dev> {
    let w: Vec<(String, Vec<usize>, Init)> =
        r.iter().filter(|(n, _)| keep(n)).map(|(n, (s, _))| (n.clone(), s.clone(), Init::Zeros)).collect();
    let values = w.iter().map(|(n, _, _)| (n.clone(), r[n].1.clone())).collect();
    ParamStore::from_values(Dev::default(), Parameterization::plain(&w), values).unwrap()
}

fn tiny_ref_graph() -> Graph {
    graph::load::from_str(
        "(name: \"ref\", input: (channels: 1, height: 8, width: 8), patch_size: 2, hidden: 32, depth: 2, heads: 4,
          conditioning: (num_classes: 3, label_dropout: 0.1))",
        "inline",
    )
    .unwrap()
}

#[test]
fn dit_block_matches_pytorch_forward_and_gradients() {
    let r = load_ref("torch_ref_block.safetensors");
    let store = store_from_ref(&r, |n| n.starts_with("blocks."));
    let dev = Dev::default();
    let block = DitBlock::new(0, 32, 4, 128, true, 1e-6);
    let p = store.view::<OwnedTape<f32, Dev>>();
    let x = dev.tensor_from_vec(r["input.x"].1.clone(), (2usize, 5usize, 32usize));
    let c = dev.tensor_from_vec(r["input.c"].1.clone(), (2usize, 32usize));
    let out = block.forward(&p, x.retaped(), silu(c.retaped())).unwrap();
    assert!(
        rel_err(&out.as_vec(), &r["output.out"].1) < 1e-5,
        "forward differs: {}",
        rel_err(&out.as_vec(), &r["output.out"].1)
    );
    let rr = dev.tensor_from_vec(r["input.r"].1.clone(), (2usize, 5usize, 32usize));
    let grads = (out * rr).sum::<Rank0, _>().backward();
    let e = rel_err(&grads.get(&x).as_vec(), &r["grad.x"].1);
    assert!(e < 1e-4, "grad x: {e}");
    let e = rel_err(&grads.get(&c).as_vec(), &r["grad.c"].1);
    assert!(e < 1e-4, "grad c: {e}");
    for (name, leaf) in store.leaves() {
        let e = rel_err(&grads.get(&leaf.value).as_vec(), &r[&format!("grad.{name}")].1);
        assert!(e < 1e-4, "grad {name}: {e}");
    }
}

#[test]
fn whole_dit_matches_pytorch_forward_and_gradients() {
    let r = load_ref("torch_ref_dit.safetensors");
    let g = tiny_ref_graph();
    let dit = Dit::new(&g);
    let shapes = dit.weight_shapes();
    // Every weight the model reads exists in DiT's state dict with the same shape.
    for (n, s) in &shapes {
        assert_eq!(&r[n].0, s, "{n}");
    }
    let store = store_from_ref(&r, |n| shapes.iter().any(|(w, _)| w == n));
    let (x, t) = (&r["input.x"].1, &r["input.t"].1);
    let y: Vec<usize> = r["input.y"].1.iter().map(|&v| v as usize).collect();
    // Fixed pieces: timestep frequencies and 2-D position embedding.
    assert!(rel_err(&embed::timestep_frequencies(t, 256, 10000.0), &r["output.t_freq"].1) < 1e-6);
    assert!(rel_err(&embed::sincos_2d(32, 4, 4), &r["output.pos_embed"].1) < 1e-6);

    let p = store.view::<OwnedTape<f32, Dev>>();
    let out = dit.forward(&p, x, t, &y).unwrap(); // (B·T, p·p·C)
    let img = embed::unpatchify(&out.as_vec(), 3, 1, 8, 8, 2);
    let e = rel_err(&img, &r["output.out"].1);
    assert!(e < 1e-5, "forward differs: {e}");
    let rp = embed::patchify_channels_last(&r["input.r"].1, 3, 1, 8, 8, 2);
    let rp = store.dev.tensor_from_vec(rp, *out.shape());
    let grads = (out * rp).sum::<Rank0, _>().backward();
    for (name, leaf) in store.leaves() {
        let e = rel_err(&grads.get(&leaf.value).as_vec(), &r[&format!("grad.{name}")].1);
        assert!(e < 1e-4, "grad {name}: {e}");
    }
}

#[test]
fn patchify_matches_stride_p_conv_layout() {
    // 1 image, 2 channels, 4×4, patch 2: patch (0,1) channel 1 row 0 = x[1][0][2..4].
    let x: Vec<f32> = (0..32).map(|v| v as f32).collect();
    let p = embed::patchify(&x, 1, 2, 4, 4, 2);
    assert_eq!(&p[8..16], &[2.0, 3.0, 6.0, 7.0, 18.0, 19.0, 22.0, 23.0]);
    let cl = embed::patchify_channels_last(&x, 1, 2, 4, 4, 2);
    assert_eq!(embed::unpatchify(&cl, 1, 2, 4, 4, 2), x);
}

// ---------------------------------------------------------------------------
// Finite differences
// ---------------------------------------------------------------------------

/// Checks ∂loss/∂leaf of every leaf against central differences (f64 loss
/// evaluated in f32 with step h) on up to `k` coordinates per leaf.
/// Absolute floor of the finite-difference comparison: below it a gradient is
/// compared absolutely. The losses are f32 sums of O(1): their rounding moves a
/// central difference by ≈ 5e-5 (measured: fine.ada.U[0], analytic 7.1e-5 vs
/// difference 1.19e-4, i.e. 20 ulps of the loss over 2h = 0.02), so 1e-2 with
/// the tests' tolerances allows 2–5e-4 absolute where 0.1 allowed 2–5e-3.
const FD_FLOOR: f32 = 1e-2;

fn check_fd(
    store: &ParamStore<Dev>,
    loss: impl Fn(&ParamStore<Dev>) -> (f32, Option<Gradients<f32, Dev>>),
    k: usize,
    h: f32,
    tol: f32,
) {
    check_fd_filtered(store, loss, |_| true, k, h, tol)
}

/// [`check_fd`] on the leaves whose names pass `keep`.
fn check_fd_filtered(
    store: &ParamStore<Dev>,
    loss: impl Fn(&ParamStore<Dev>) -> (f32, Option<Gradients<f32, Dev>>),
    keep: impl Fn(&str) -> bool,
    k: usize,
    h: f32,
    tol: f32,
) {
    let (_, grads) = loss(store);
    let mut grads = grads.unwrap();
    for (name, leaf) in store.leaves().filter(|(n, _)| keep(n)) {
        grads.try_alloc_for(&leaf.value).unwrap();
        let g = grads.get(&leaf.value).as_vec();
        let base = leaf.value.as_vec();
        let n = base.len();
        for j in (0..n).step_by((n / k).max(1)).take(k) {
            let eval = |d: f32| {
                let mut s = store.clone();
                let mut v = base.clone();
                v[j] += d;
                s.set(name, v).unwrap();
                loss(&s).0 as f64
            };
            let fd = ((eval(h) - eval(-h)) / (2.0 * h as f64)) as f32;
            if std::env::var("FD_DEBUG").is_ok() {
                let fd2 = ((eval(h / 4.0) - eval(-h / 4.0)) / (h as f64 / 2.0)) as f32;
                eprintln!("{name}[{j}] analytic {} fd(h) {fd} fd(h/4) {fd2}", g[j]);
            }
            let err = (fd - g[j]).abs() / (fd.abs().max(g[j].abs()).max(FD_FLOOR));
            assert!(err < tol, "{name}[{j}]: analytic {} vs finite difference {fd} (rel {err})", g[j]);
        }
    }
}

fn leaf(name: &str, shape: &[usize]) -> LeafSpec {
    LeafSpec::new(name, shape.to_vec(), Init::Normal { std: 0.5 }, true)
}

#[test]
fn factor_row_add_scale_expressions_gradients_match_finite_differences() {
    use rand::SeedableRng;
    // W = U·diag(Σ[1])·Vᵀ + 0.5·B, and a bias that is a row of a table.
    let spec = Parameterization {
        leaves: vec![leaf("U", &[6, 3]), leaf("V", &[5, 3]), leaf("S", &[2, 3]), leaf("B", &[6, 5])],
        bindings: [(
            "w".to_string(),
            Expr::Add(
                Box::new(Expr::Factor {
                    u: Box::new(Expr::leaf("U")),
                    s: Box::new(Expr::Row { leaf: "S".into(), index: 1 }),
                    v: Box::new(Expr::leaf("V")),
                }),
                Box::new(Expr::Scale(Box::new(Expr::leaf("B")), 0.5)),
            ),
        )]
        .into(),
    };
    spec.validate(&[("w".into(), vec![6, 5])]).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let store = ParamStore::init(Dev::default(), spec, &mut rng).unwrap();
    // Forward equals the dense formula.
    let h = store.host_values();
    let w = store.view::<NoneTape>().matrix("w", 6, 5).unwrap().as_vec();
    for i in 0..6 {
        for j in 0..5 {
            let dense: f32 = (0..3).map(|k| h["U"][i * 3 + k] * h["S"][3 + k] * h["V"][j * 3 + k]).sum::<f32>()
                + 0.5 * h["B"][i * 5 + j];
            assert!((w[i * 5 + j] - dense).abs() < 1e-5);
        }
    }
    let r: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    check_fd(
        &store,
        |s| {
            let w = s.view::<OwnedTape<f32, Dev>>().matrix("w", 6, 5).unwrap();
            let rr = s.dev.tensor_from_vec(r.clone(), (6usize, 5usize));
            let l = (w.square() * rr).sum::<Rank0, _>();
            let v = l.retaped::<NoneTape>().as_vec()[0];
            (v, Some(l.backward()))
        },
        12,
        1e-2,
        2e-2,
    );
}

#[test]
fn project_expressions_match_dense_formula_and_finite_differences() {
    use rand::SeedableRng;
    // w = P · X_b for each of 3 row blocks of X (3·4 × 2) with P (5 × 4): (15, 2);
    // q = X'ᵀ-side: each of 2 column blocks of Y (3 × 2·4) times Pᵀ: (3, 10).
    let spec = Parameterization {
        leaves: vec![leaf("X", &[12, 2]), leaf("Y", &[3, 8]), leaf("P", &[5, 4])],
        bindings: [
            (
                "w".to_string(),
                Expr::Project { x: Box::new(Expr::leaf("X")), p: Box::new(Expr::leaf("P")), axis: 0, chunks: 3 },
            ),
            (
                "q".to_string(),
                Expr::Project { x: Box::new(Expr::leaf("Y")), p: Box::new(Expr::leaf("P")), axis: 1, chunks: 2 },
            ),
        ]
        .into(),
    };
    spec.validate(&[("w".into(), vec![15, 2]), ("q".into(), vec![3, 10])]).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let store = ParamStore::init(Dev::default(), spec.clone(), &mut rng).unwrap();
    let h = store.host_values();
    let (x, y, p) = (&h["X"], &h["Y"], &h["P"]);
    let w = store.view::<NoneTape>().matrix("w", 15, 2).unwrap().as_vec();
    let q = store.view::<NoneTape>().matrix("q", 3, 10).unwrap().as_vec();
    for b in 0..3 {
        for i in 0..5 {
            for j in 0..2 {
                let dense: f32 = (0..4).map(|k| p[i * 4 + k] * x[(b * 4 + k) * 2 + j]).sum();
                assert!((w[(b * 5 + i) * 2 + j] - dense).abs() < 1e-5, "w block {b} ({i}, {j})");
            }
        }
    }
    for r in 0..3 {
        for b in 0..2 {
            for i in 0..5 {
                let dense: f32 = (0..4).map(|k| y[r * 8 + b * 4 + k] * p[i * 4 + k]).sum();
                assert!((q[r * 10 + b * 5 + i] - dense).abs() < 1e-5, "q row {r} block {b} col {i}");
            }
        }
    }
    // Sizes that do not fit are refused.
    let mut bad = spec.clone();
    bad.bindings.insert(
        "w".into(),
        Expr::Project { x: Box::new(Expr::leaf("X")), p: Box::new(Expr::leaf("P")), axis: 0, chunks: 2 },
    );
    assert!(bad.validate(&[("w".into(), vec![15, 2]), ("q".into(), vec![3, 10])]).is_err());
    let rw: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let rq: Vec<f32> = (0..30).map(|i| ((i * 5 % 13) as f32 - 6.0) / 6.0).collect();
    check_fd(
        &store,
        |s| {
            let v = s.view::<OwnedTape<f32, Dev>>();
            let (w, q) = (v.matrix("w", 15, 2).unwrap(), v.matrix("q", 3, 10).unwrap());
            let (a, b) = (
                s.dev.tensor_from_vec(rw.clone(), (15usize, 2usize)),
                s.dev.tensor_from_vec(rq.clone(), (3usize, 10usize)),
            );
            let l = (w.square() * a).sum::<Rank0, _>() + (q.square() * b).sum::<Rank0, _>();
            let val = l.retaped::<NoneTape>().as_vec()[0];
            (val, Some(l.backward()))
        },
        12,
        1e-2,
        2e-2,
    );
}

#[test]
fn whole_dit_gradients_match_finite_differences() {
    use rand::SeedableRng;
    let g = tiny_ref_graph();
    let dit = Dit::new(&g);
    // Random (not DiT-zero) init so every path carries gradient.
    let mut spec = dit.plain_parameterization();
    spec.leaves.iter_mut().for_each(|l| l.init = Init::Normal { std: 0.15 });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let store = ParamStore::init(Dev::default(), spec, &mut rng).unwrap();
    let x: Vec<f32> = (0..3 * 64).map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0).collect();
    let eps: Vec<f32> = (0..3 * 64).map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0).collect();
    let (t, y) = (vec![3.0, 400.0, 990.0], vec![0usize, 1, 3]);
    check_fd(
        &store,
        |s| {
            let (l, _) = fine_core::train::loss::eps_mse_and_grads(&dit, s, &x, &t, &y, &eps).unwrap();
            let p = s.view::<OwnedTape<f32, Dev>>();
            let out = dit.forward(&p, &x, &t, &y).unwrap();
            let target = s.dev.tensor_from_vec(embed::patchify_channels_last(&eps, 3, 1, 8, 8, 2), *out.shape());
            (l, Some((out - target).square().mean::<Rank0, _>().backward()))
        },
        3,
        1e-2,
        3e-2,
    );
}

// ---------------------------------------------------------------------------
// FINE's factorized parameterization
// ---------------------------------------------------------------------------

fn fine_store(g: &Graph, seed: u64, std: f32) -> (Dit, ParamStore<Dev>) {
    use fine_plugin_api::Strategy;
    use rand::SeedableRng;
    let dit = Dit::new(g);
    let fine = fine_strategy_fine::Fine;
    let opts = fine_plugin_api::Options::parse(&fine.info(), "rank_qkv=8,rank_fc1=16").unwrap();
    let mut spec = fine.ancestry(g, &fine_core::strategy::weights_of(&dit), &opts).unwrap();
    // Non-zero everything (adaLN-Zero would hide most paths) so every factor carries gradient.
    spec.leaves.iter_mut().for_each(|l| l.init = Init::Normal { std });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (dit, ParamStore::init(Dev::default(), spec, &mut rng).unwrap())
}

#[test]
fn fine_factorized_dit_equals_its_materialized_dense_dit() {
    let g = tiny_ref_graph();
    let (dit, store) = fine_store(&g, 7, 0.3);
    assert_eq!(store.leaf("fine.qkv.U").unwrap().shape, vec![96, 8]);
    assert_eq!(store.leaf("fine.ada.S").unwrap().shape, vec![2, 32]);
    let plain = fine_core::strategy::materialize(&dit, &store).unwrap();
    let x: Vec<f32> = (0..2 * 64).map(|i| ((i * 5 % 19) as f32 - 9.0) / 9.0).collect();
    let (t, y) = (vec![10.0, 700.0], vec![2usize, 3]);
    let a = dit.predict(&store.view::<NoneTape>(), &x, &t, &y).unwrap();
    let b = dit.predict(&plain.view::<NoneTape>(), &x, &t, &y).unwrap();
    assert!(rel_err(&a, &b) < 1e-5, "{}", rel_err(&a, &b));
    // The dense weight of block 1's fc1 is U·diag(σ_1)·Vᵀ.
    let h = store.host_values();
    let w = &plain.host_values()["blocks.1.mlp.fc1.weight"];
    let (m1, m2, r) = (128, 32, 16);
    for i in (0..m1).step_by(13) {
        for j in (0..m2).step_by(7) {
            let dense: f32 =
                (0..r).map(|k| h["fine.fc1.U"][i * r + k] * h["fine.fc1.S"][r + k] * h["fine.fc1.V"][j * r + k]).sum();
            assert!((w[i * m2 + j] - dense).abs() < 1e-5);
        }
    }
}

#[test]
fn fine_factor_gradients_match_finite_differences() {
    let g = tiny_ref_graph();
    let (dit, mut store) = fine_store(&g, 9, 0.2);
    // Only check the factor leaves (the rest is covered by the plain-DiT test).
    let names: Vec<String> = store.leaves().map(|(n, _)| n.clone()).collect();
    let mut spec = store.spec.clone();
    spec.set_trainable(|n| n.starts_with("fine."));
    store = ParamStore::from_values(Dev::default(), spec, store.host_values()).unwrap();
    assert!(names.iter().any(|n| n == "fine.proj.V"));
    let x: Vec<f32> = (0..3 * 64).map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0).collect();
    let eps: Vec<f32> = (0..3 * 64).map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0).collect();
    let (t, y) = (vec![3.0, 400.0, 990.0], vec![0usize, 1, 3]);
    check_fd_filtered(
        &store,
        |s| {
            let p = s.view::<OwnedTape<f32, Dev>>();
            let out = dit.forward(&p, &x, &t, &y).unwrap();
            let target = s.dev.tensor_from_vec(embed::patchify_channels_last(&eps, 3, 1, 8, 8, 2), *out.shape());
            let l = (out - target).square().mean::<Rank0, _>();
            (l.retaped::<NoneTape>().as_vec()[0], Some(l.backward()))
        },
        |n| n.starts_with("fine."),
        3,
        1e-2,
        3e-2,
    );
}
