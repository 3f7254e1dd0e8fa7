use super::*;
use fine_core::model::store::CpuDevice;
use fine_core::model::Dit;
use fine_core::strategy::{descendant_store, materialize, pool::untrained_member_leaves, weights_of};
use fine_plugin_api::strategy::testing::{leaf_values, tiny_graph};

fn opts(text: &str) -> Options {
    Options::parse(&Stitch.info(), text).unwrap()
}

/// A learngene of a depth-6 tiny ancestry with pool 3:5 and distinct values everywhere.
fn learngene() -> (Graph, Learngene) {
    let g = tiny_graph(6, 32);
    let dit = Dit::new(&g);
    let o = opts("pool=3:5");
    let spec = Stitch.ancestry(&g, &weights_of(&dit), &o).unwrap();
    let mut leaves = leaf_values(&spec);
    let members = Stitch.pool(&g, &spec, &leaves, &o).unwrap();
    assert_eq!(members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["d3", "d5"]);
    for (k, m) in members.iter().enumerate() {
        fine_core::strategy::pool::check_member(&g, m).unwrap();
        assert!(m.frozen.iter().all(|n| is_embedding(n)) && m.frozen.len() == 7, "{:?}", m.frozen);
        assert_eq!(m.values["final_layer.linear.weight"], leaves["final_layer.linear.weight"]);
        // Distinct values per member and per leaf, as distillation would leave them.
        for (n, mut t) in untrained_member_leaves(m).unwrap() {
            let tag = n.bytes().enumerate().map(|(j, b)| (j + 1) * b as usize).sum::<usize>() as f32 * 1e-4;
            t.data.iter_mut().enumerate().for_each(|(i, v)| *v = (k * 1000 + i) as f32 + tag);
            leaves.insert(n, t);
        }
    }
    let lg = Stitch.extract(&g, &weights_of(&Dit::new(&g)), &spec, &leaves, &o).unwrap();
    (g, lg)
}

#[test]
fn pool_depths_and_plans() {
    assert_eq!(pool_depths(&opts(""), 6).unwrap(), [3, 5]);
    assert_eq!(pool_depths(&opts("pool=4:2"), 6).unwrap(), [2, 4]);
    assert!(pool_depths(&opts("pool=3:7"), 6).unwrap_err().to_string().contains("exceeds the ancestry depth 6"));
    assert!(pool_depths(&opts("pool=3:3"), 6).unwrap_err().to_string().contains("distinct"));
    assert!(pool_depths(&opts("pool=0:3"), 6).unwrap_err().to_string().contains("≥ 1"));
    assert!(pool_depths(&opts("pool=x"), 6).is_err());
    // A member as deep as the ancestry is allowed (it is the ancestry's size, not beyond it).
    assert_eq!(pool_depths(&opts("pool=3:6"), 6).unwrap(), [3, 6]);
    // auto: ⌈L/2⌉ and L − 1, distinct from depth 4 on.
    assert_eq!(pool_depths(&opts("pool=auto"), 4).unwrap(), [2, 3]);
    assert_eq!(pool_depths(&opts("pool=auto"), 9).unwrap(), [5, 8]);
    for d in [1, 2, 3] {
        let e = pool_depths(&opts("pool=auto"), d).unwrap_err().to_string();
        assert!(e.contains("depth ≥ 4") && e.contains(&format!("it has {d}")), "{e}");
    }
    let p = [3, 5];
    assert_eq!(plan(&p, 3).unwrap(), Plan::Whole(3));
    assert_eq!(plan(&p, 2).unwrap(), Plan::Stitched { a: 3, front: 1, b: 5, end: 1 });
    assert_eq!(plan(&p, 4).unwrap(), Plan::Stitched { a: 3, front: 2, b: 5, end: 2 });
    assert_eq!(plan(&p, 8).unwrap(), Plan::Stitched { a: 3, front: 3, b: 5, end: 5 });
    assert!(plan(&p, 9).unwrap_err().to_string().contains("depths 2..=8"));
    assert!(plan(&p, 1).is_err());
    assert!(plan(&[4], 3).is_err());
}

#[test]
fn least_squares_recovers_an_affine_map() {
    let (n, din, dout) = (200, 5, 3);
    let mut s = 1u64;
    let mut rnd = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..n * din).map(|_| rnd()).collect();
    let w: Vec<f32> = (0..dout * din).map(|_| rnd()).collect();
    let b = [0.3f32, -1.0, 2.0];
    let y: Vec<f32> = (0..n)
        .flat_map(|r| {
            let (x, w) = (&x, &w);
            (0..dout).map(move |o| b[o] + (0..din).map(|i| x[r * din + i] * w[o * din + i]).sum::<f32>())
        })
        .collect();
    let (fw, fb) =
        least_squares(&Tensor::new(vec![n, din], x).unwrap(), &Tensor::new(vec![n, dout], y).unwrap()).unwrap();
    assert_eq!((fw.shape.clone(), fb.shape.clone()), (vec![dout, din], vec![dout]));
    for (a, e) in fw.data.iter().zip(&w).chain(fb.data.iter().zip(&b)) {
        assert!((a - e).abs() < 1e-4, "{a} vs {e}");
    }
    // A feature that is always zero makes the normal equations singular: the
    // ridge (positive) keeps them solvable and that feature's weight is 0.
    let x0: Vec<f32> = (0..n).flat_map(|r| [(r as f32 * 0.37).sin(), 0.0]).collect();
    let y0: Vec<f32> = x0.chunks(2).map(|r| 3.0 * r[0] - 0.5).collect();
    let (fw, fb) = least_squares(&Tensor::new(vec![n, 2], x0).unwrap(), &Tensor::new(vec![n, 1], y0).unwrap()).unwrap();
    assert!((fw.data[0] - 3.0).abs() < 1e-4 && fw.data[1] == 0.0 && (fb.data[0] + 0.5).abs() < 1e-4, "{fw:?} {fb:?}");
    assert!(least_squares(
        &Tensor::new(vec![2, 5], vec![0.0; 10]).unwrap(),
        &Tensor::new(vec![3, 1], vec![0.0; 3]).unwrap()
    )
    .is_err());
}

#[test]
fn stitched_descendant_takes_front_blocks_stitch_and_end_blocks() {
    let (_, lg) = learngene();
    assert_eq!(lg.meta["pool"], "3:5");
    assert!(lg.tensors.keys().all(|n| n.starts_with("pool.d3.") || n.starts_with("pool.d5.")));
    let target = tiny_graph(4, 32);
    let o = opts("");
    let g = Stitch.descendant_graph(&lg, &target, &o).unwrap();
    assert_eq!(g.stitch_after, Some(1));
    let req = Stitch.probes(&lg, &g, &o).unwrap();
    assert_eq!(req.images, 256);
    let blocks: Vec<(String, usize, usize)> =
        req.probes.iter().map(|p| (p.prefix.clone(), p.graph.depth, p.blocks)).collect();
    assert_eq!(blocks, [("pool.d3.".to_string(), 3, 2), ("pool.d5.".to_string(), 5, 3)]);
    // Features related by Y = 2·X + 1: the fit must find it.
    let mut s = 7u64;
    let x: Vec<f32> = (0..64 * 32)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let y: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
    let feats = Tensors::from([
        ("front".to_string(), Tensor::new(vec![64, 32], x).unwrap()),
        ("end".to_string(), Tensor::new(vec![64, 32], y).unwrap()),
    ]);
    let dit = Dit::new(&g);
    let d = Stitch.descendant_probed(&lg, &g, &weights_of(&dit), &o, &feats).unwrap();
    assert_eq!(d.init_steps, 0);
    let w = materialize(&dit, &descendant_store(CpuDevice::default(), &dit, &d, 3).unwrap()).unwrap().host_values();
    let lgv = |n: &str| &lg.tensors[n].data;
    assert_eq!(&w["blocks.0.attn.qkv.weight"], lgv("pool.d3.blocks.0.attn.qkv.weight"));
    assert_eq!(&w["blocks.1.mlp.fc1.bias"], lgv("pool.d3.blocks.1.mlp.fc1.bias"));
    assert_eq!(&w["blocks.2.attn.qkv.weight"], lgv("pool.d5.blocks.3.attn.qkv.weight"));
    assert_eq!(&w["blocks.3.adaLN_modulation.1.weight"], lgv("pool.d5.blocks.4.adaLN_modulation.1.weight"));
    assert_eq!(&w["x_embedder.proj.weight"], lgv("pool.d3.x_embedder.proj.weight"));
    assert_eq!(&w["final_layer.linear.weight"], lgv("pool.d5.final_layer.linear.weight"));
    for (i, v) in w["stitch.weight"].iter().enumerate() {
        let e = if i % 33 == 0 { 2.0 } else { 0.0 };
        assert!((v - e).abs() < 1e-3, "stitch.weight[{i}] = {v}");
    }
    assert!(w["stitch.bias"].iter().all(|v| (v - 1.0).abs() < 1e-3));
    // A target whose stitch sits elsewhere is refused, naming where it must be.
    let misplaced = Graph { stitch_after: Some(2), ..g.clone() };
    let e = Stitch.descendant_probed(&lg, &misplaced, &weights_of(&Dit::new(&misplaced)), &o, &feats).unwrap_err();
    assert!(e.to_string().contains("stitch_after: Some(1)"), "{e}");
    // Without features the plugin refuses rather than guess the stitch.
    let e = Stitch.descendant(&lg, &g, &weights_of(&dit), &o).unwrap_err().to_string();
    assert!(e.contains("features of real data"), "{e}");
}

#[test]
fn member_depth_is_taken_whole_and_bad_targets_are_refused() {
    let (_, lg) = learngene();
    let o = opts("");
    let t5 = tiny_graph(5, 32);
    let g = Stitch.descendant_graph(&lg, &t5, &o).unwrap();
    assert_eq!(g.stitch_after, None);
    // A member-depth target is plain even when handed with a stitch.
    let stitched5 = Graph { stitch_after: Some(1), ..t5.clone() };
    assert_eq!(Stitch.descendant_graph(&lg, &stitched5, &o).unwrap().stitch_after, None);
    assert!(Stitch.probes(&lg, &g, &o).unwrap().probes.is_empty());
    let dit = Dit::new(&g);
    let d = Stitch.descendant(&lg, &g, &weights_of(&dit), &o).unwrap();
    assert_eq!(d.values["blocks.4.mlp.fc2.weight"], lg.tensors["pool.d5.blocks.4.mlp.fc2.weight"]);
    assert_eq!(d.values["final_layer.linear.bias"], lg.tensors["pool.d5.final_layer.linear.bias"]);
    let e = Stitch.descendant_graph(&lg, &tiny_graph(9, 32), &o).unwrap_err();
    assert!(format!("{e:#}").contains("depth 9 cannot be built"), "{e:#}");
    let e = Stitch.descendant_graph(&lg, &tiny_graph(4, 64), &o).unwrap_err().to_string();
    assert!(e.contains("width 32"), "{e}");
    let mut unsorted = lg.clone();
    unsorted.meta.insert("pool".into(), "5:3".into());
    let e = Stitch.descendant_graph(&unsorted, &tiny_graph(4, 32), &o).unwrap_err().to_string();
    assert!(e.contains("increasing depths"), "{e}");
    let other = Learngene { strategy: "heur".into(), ..lg.clone() };
    assert!(Stitch.descendant_graph(&other, &t5, &o).unwrap_err().to_string().contains("made by `heur`"));
    // An ancestry run without distilled members cannot be extracted.
    let anc = tiny_graph(6, 32);
    let spec = Stitch.ancestry(&anc, &weights_of(&Dit::new(&anc)), &o).unwrap();
    let e = Stitch.extract(&anc, &weights_of(&Dit::new(&anc)), &spec, &leaf_values(&spec), &o).unwrap_err().to_string();
    assert!(e.contains("was not distilled"), "{e}");
    // A member with blocks but without its final layer is not a distilled member either.
    let (_, full) = learngene();
    let mut leaves = leaf_values(&spec);
    leaves.extend(
        full.tensors
            .iter()
            .filter(|(n, _)| !n.ends_with("final_layer.linear.weight"))
            .map(|(n, t)| (n.clone(), t.clone())),
    );
    let e = Stitch.extract(&anc, &weights_of(&Dit::new(&anc)), &spec, &leaves, &o).unwrap_err().to_string();
    assert!(e.contains("was not distilled"), "{e}");
    // The pool is refused for a run that lacks either inherited layer, naming it.
    for missing in ["final_layer.linear.weight", "x_embedder.proj.weight"] {
        let mut leaves = leaf_values(&spec);
        leaves.remove(missing);
        let e = Stitch.pool(&anc, &spec, &leaves, &o).unwrap_err().to_string();
        assert!(e.contains(missing), "{e}");
    }
}

#[test]
fn member_graphs_are_plain_and_named_by_depth() {
    let anc = Graph { stitch_after: Some(2), ..tiny_graph(6, 32) };
    let m = member_graph(&anc, 3);
    assert_eq!((m.name.as_str(), m.depth, m.stitch_after), ("fmnist-tiny-pool-d3", 3, None));
}
