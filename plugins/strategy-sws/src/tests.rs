use super::*;
use fine_core::model::store::CpuDevice;
use fine_core::model::Dit;
use fine_core::strategy::{descendant_store, materialize, weights_of};
use fine_plugin_api::strategy::testing::{leaf_values, tiny_graph};
use host::materialized;

#[path = "../../testing/host.rs"]
mod host;

fn opts(text: &str) -> Options {
    Options::parse(&Sws.info(), text).unwrap()
}

#[test]
fn default_stages_follow_the_paper_example() {
    assert_eq!(default_stages(16), [3, 3, 4, 3, 3]);
    assert_eq!(default_stages(12), [3, 3, 3, 3]);
    assert_eq!(default_stages(6), [3, 3]);
    // Three stages with one block over: the middle one takes it; two over: the middle, then the first.
    assert_eq!(default_stages(10), [3, 4, 3]);
    assert_eq!(default_stages(8), [3, 3, 2]);
    assert_eq!(default_stages(5), [3, 2]);
    assert_eq!(default_stages(4), [4]);
    assert_eq!(default_stages(1), [1]);
    for l in 1..40 {
        let s = default_stages(l);
        assert_eq!(s.iter().sum::<usize>(), l);
        assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{l}: {s:?}");
    }
    assert_eq!(stage_sizes("3:3:4:3:3", 16).unwrap(), [3, 3, 4, 3, 3]);
    let e = stage_sizes("3,3,4", 16).unwrap_err().to_string();
    assert!(e.contains("10 blocks") && e.contains("depth 16"), "{e}");
    assert!(stage_sizes("3,0,13", 16).unwrap_err().to_string().contains("at least one block"));
    assert!(stage_sizes("3,x", 16).unwrap_err().to_string().contains("`x` is not"));
}

#[test]
fn layer_mapping() {
    let s = [3, 3, 4, 3, 3];
    // Same depth: every block copies its own stage.
    assert_eq!(layers_source("", &s, 16).unwrap(), stage_of_blocks(&s));
    assert_eq!(layers_source("", &s, 12).unwrap(), [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]);
    assert_eq!(layers_source("", &s, 5).unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(layers_source("", &s, 2).unwrap(), [1, 3]);
    // Proportional: every stage gets ⌊n_s·L_d/L⌋ or ⌈n_s·L_d/L⌉ blocks, in stage order.
    for d in 1..30 {
        let src = layers_source("", &s, d).unwrap();
        assert!(src.windows(2).all(|w| w[0] <= w[1]), "{d}: {src:?}");
        for (st, &n) in s.iter().enumerate() {
            let got = src.iter().filter(|&&x| x == st).count() as f64;
            let want = n as f64 * d as f64 / 16.0;
            assert!(got >= want.floor() && got <= want.ceil(), "depth {d}, stage {st}: {got} vs {want}");
        }
    }
    let paper = "0,0,0,1,1,1,2,2,3,3,4,4";
    assert_eq!(layers_source(paper, &s, 12).unwrap(), [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]);
    let e = layers_source(paper, &s, 10).unwrap_err().to_string();
    assert!(e.contains("lists 12 blocks") && e.contains("depth 10"), "{e}");
    let e = layers_source("0 1 5", &s, 3).unwrap_err().to_string();
    assert!(e.contains("stage 5") && e.contains("5 stages"), "{e}");
}

#[test]
fn ancestry_binds_every_block_parameter_of_a_stage_to_one_leaf() {
    let g = tiny_graph(5, 32);
    let dit = Dit::new(&g);
    let spec = Sws.ancestry(&g, &weights_of(&dit), &opts("stages=2:3")).unwrap();
    spec.validate(&dit.weight_shapes()).unwrap();
    let per_block = weights_of(&dit).iter().filter(|w| w.name.starts_with("blocks.0.")).count();
    assert_eq!(per_block, 10);
    for (l, s) in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1)] {
        for w in weights_of(&dit).iter().filter(|w| w.name.starts_with(&format!("blocks.{l}."))) {
            let param = block_of(&w.name).unwrap().1;
            assert_eq!(spec.bindings[&w.name], Expr::leaf(stage_leaf(s, param)));
        }
    }
    assert_eq!(spec.leaves.iter().filter(|l| l.name.starts_with("sws.")).count(), 2 * per_block);
    assert!(spec.bindings["x_embedder.proj.weight"] == Expr::leaf("x_embedder.proj.weight"));
    // adaLN-Zero is kept: the stage leaves take DiT's init.
    let ada = spec.leaves.iter().find(|l| l.name == "sws.stage1.adaLN_modulation.1.weight").unwrap();
    assert_eq!(ada.init, fine_plugin_api::Init::Zeros);
    assert!(Sws.ancestry(&g, &weights_of(&dit), &opts("stages=2:2")).is_err());
}

#[test]
fn descendant_copies_stage_blocks_and_refuses_misfits() {
    let g = tiny_graph(5, 32);
    let dit = Dit::new(&g);
    let o = opts("stages=2:3");
    let spec = Sws.ancestry(&g, &weights_of(&dit), &o).unwrap();
    let leaves = leaf_values(&spec);
    let lg = Sws.extract(&g, &weights_of(&Dit::new(&g)), &spec, &leaves, &o).unwrap();
    assert_eq!(lg.meta["stages"], "2,3");
    assert_eq!(lg.tensors.len(), spec.leaves.len());
    // A plain run (another strategy's) is refused by name, before its leaves are read.
    let plain = dit.plain_parameterization();
    let e = Sws.extract(&g, &weights_of(&dit), &plain, &leaf_values(&plain), &o).unwrap_err().to_string();
    assert!(e.contains("not an SWS ancestry") && e.contains("sws.stage0.attn.qkv.weight"), "{e}");
    let anc = materialized(&g, &spec, &leaves);
    // Same depth, default mapping: the descendant is the ancestry.
    let d = Sws.descendant(&lg, &g, &weights_of(&dit), &opts("")).unwrap();
    assert_eq!(d.init_steps, 0);
    let store = descendant_store(CpuDevice::default(), &dit, &d, 0).unwrap();
    assert_eq!(materialize(&dit, &store).unwrap().host_values(), anc);
    // Depth 3 with an explicit mapping: block i is stage src(i)'s block.
    let g3 = tiny_graph(3, 32);
    let dit3 = Dit::new(&g3);
    let d = Sws.descendant(&lg, &g3, &weights_of(&dit3), &opts("layers_source=1:0:1")).unwrap();
    descendant_store(CpuDevice::default(), &dit3, &d, 0).unwrap();
    for (i, src_block) in [(0, 2), (1, 0), (2, 4)] {
        let w = format!("blocks.{i}.mlp.fc1.weight");
        assert_eq!(d.values[&w].data, anc[&format!("blocks.{src_block}.mlp.fc1.weight")], "{w}");
    }
    assert_eq!(d.values["final_layer.linear.weight"].data, anc["final_layer.linear.weight"]);
    let e = Sws.descendant(&lg, &g3, &weights_of(&dit3), &opts("layers_source=0:1:1:1")).unwrap_err();
    assert!(e.to_string().contains("depth 3"), "{e}");
    let e = Sws.descendant(&lg, &g3, &weights_of(&dit3), &opts("layers_source=0:1:2")).unwrap_err();
    assert!(e.to_string().contains("stage 2"), "{e}");
    let wide = tiny_graph(3, 64);
    let e = Sws.descendant(&lg, &wide, &weights_of(&Dit::new(&wide)), &opts("")).unwrap_err();
    assert!(e.to_string().contains("width 32") && e.to_string().contains("width 64"), "{e}");
    let other = Learngene { strategy: "tleg".into(), ..lg };
    let e = Sws.descendant(&other, &g3, &weights_of(&dit3), &opts("")).unwrap_err();
    assert!(e.to_string().contains("made by `tleg`"), "{e}");
}
