use super::*;
use fine_core::model::store::CpuDevice;
use fine_core::model::Dit;
use fine_core::strategy::{descendant_store, materialize, weights_of};
use fine_plugin_api::strategy::testing::{leaf_values, tiny_graph};

fn opts(text: &str) -> Options {
    Options::parse(&Heur.info(), text).unwrap()
}

#[test]
fn ancestry_is_plain_and_k_is_checked_before_training() {
    let g = tiny_graph(4, 32);
    let dit = Dit::new(&g);
    let spec = Heur.ancestry(&g, &weights_of(&dit), &opts("")).unwrap();
    spec.validate(&dit.weight_shapes()).unwrap();
    assert_eq!(spec, dit.plain_parameterization());
    let e = Heur.ancestry(&g, &weights_of(&dit), &opts("k=5")).unwrap_err().to_string();
    assert!(e.contains("k` = 5") && e.contains("depth 4"), "{e}");
    assert!(Heur.ancestry(&g, &weights_of(&dit), &opts("k=0")).is_err());
    assert!(Heur.ancestry(&g, &weights_of(&dit), &opts("k=4")).is_ok());
}

#[test]
fn extract_keeps_the_last_k_blocks_at_a_depth_where_depth_minus_k_is_not_depth_over_k() {
    // Depth 6, k = 2: blocks 4 and 5 (6 − 2 = 4, while 6 / 2 = 3).
    let g = tiny_graph(6, 32);
    let dit = Dit::new(&g);
    let o = opts("k=2");
    let spec = Heur.ancestry(&g, &weights_of(&dit), &o).unwrap();
    let leaves = leaf_values(&spec);
    let lg = Heur.extract(&g, &weights_of(&dit), &spec, &leaves, &o).unwrap();
    assert_eq!(lg.meta["inherited_blocks"], "4..5");
    assert_eq!(lg.tensors["heur.block0.mlp.fc1.weight"], leaves["blocks.4.mlp.fc1.weight"]);
    assert_eq!(lg.tensors["heur.block1.mlp.fc1.weight"], leaves["blocks.5.mlp.fc1.weight"]);
    let per_block = leaves.keys().filter(|n| n.starts_with("blocks.0.")).count();
    assert_eq!(lg.tensors.len(), leaves.len() - 4 * per_block);
}

#[test]
fn descendant_puts_the_last_k_blocks_on_top_of_fresh_ones() {
    let g = tiny_graph(4, 32);
    let dit = Dit::new(&g);
    let o = opts("k=2");
    let spec = Heur.ancestry(&g, &weights_of(&dit), &o).unwrap();
    let leaves = leaf_values(&spec);
    let lg = Heur.extract(&g, &weights_of(&Dit::new(&g)), &spec, &leaves, &o).unwrap();
    assert_eq!((lg.meta["k"].as_str(), lg.meta["inherited_blocks"].as_str()), ("2", "2..3"));
    assert_eq!(lg.tensors["heur.block0.attn.qkv.weight"], leaves["blocks.2.attn.qkv.weight"]);
    assert_eq!(lg.tensors["heur.block1.adaLN_modulation.1.bias"], leaves["blocks.3.adaLN_modulation.1.bias"]);
    assert!(!lg.tensors.keys().any(|n| n.starts_with("blocks.")));
    assert_eq!(lg.tensors.len(), spec.leaves.len() - 20);
    // Depth 5: blocks 3 and 4 are ancestry blocks 2 and 3, blocks 0..2 fresh (DiT's init).
    let g5 = tiny_graph(5, 32);
    let dit5 = Dit::new(&g5);
    let d = Heur.descendant(&lg, &g5, &weights_of(&dit5), &opts("")).unwrap();
    assert_eq!(d.init_steps, 0);
    let w = materialize(&dit5, &descendant_store(CpuDevice::default(), &dit5, &d, 7).unwrap()).unwrap().host_values();
    for (name, v) in &w {
        match block_of(name) {
            Some((i, param)) if i >= 3 => assert_eq!(v, &leaves[&format!("blocks.{}.{param}", i - 1)].data, "{name}"),
            Some((_, param)) if param.starts_with("adaLN") || param.ends_with(".bias") => {
                assert!(v.iter().all(|x| *x == 0.0), "{name} is not DiT's zero init")
            }
            Some(_) => {
                let ancestry = (0..4).map(|l| &leaves[&format!("blocks.{l}.{}", block_of(name).unwrap().1)].data);
                assert!(v.iter().any(|x| *x != 0.0), "{name}");
                ancestry.for_each(|a| assert!(a != v, "{name} was copied"));
            }
            None => assert_eq!(v, &leaves[name].data, "{name}"),
        }
    }
    // Depth k: everything inherited; depth < k refused.
    let g2 = tiny_graph(2, 32);
    let d = Heur.descendant(&lg, &g2, &weights_of(&Dit::new(&g2)), &opts("")).unwrap();
    assert_eq!(d.values["blocks.0.mlp.fc1.weight"], leaves["blocks.2.mlp.fc1.weight"]);
    let g1 = tiny_graph(1, 32);
    let e = Heur.descendant(&lg, &g1, &weights_of(&Dit::new(&g1)), &opts("")).unwrap_err().to_string();
    assert!(e.contains("k = 2") && e.contains("depth 1"), "{e}");
    let wide = tiny_graph(3, 64);
    let e = Heur.descendant(&lg, &wide, &weights_of(&Dit::new(&wide)), &opts("")).unwrap_err();
    assert!(e.to_string().contains("width 32") && e.to_string().contains("width 64"), "{e}");
    let other = Learngene { strategy: "fine".into(), ..lg };
    let e = Heur.descendant(&other, &g5, &weights_of(&dit5), &opts("")).unwrap_err();
    assert!(e.to_string().contains("made by `fine`"), "{e}");
}
