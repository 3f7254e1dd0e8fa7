use super::*;
use fine_core::model::store::CpuDevice;
use fine_core::model::Dit;
use fine_core::strategy::{descendant_store, materialize, weights_of};
use fine_plugin_api::strategy::testing::{leaf_values, tiny_graph};
use host::materialized;

#[path = "../../testing/host.rs"]
mod host;

fn opts(text: &str) -> Options {
    Options::parse(&Tleg.info(), text).unwrap()
}

#[test]
fn ancestry_weights_are_base_plus_relative_depth_times_delta() {
    let g = tiny_graph(4, 32);
    let dit = Dit::new(&g);
    let spec = Tleg.ancestry(&g, &weights_of(&dit), &opts("")).unwrap();
    spec.validate(&dit.weight_shapes()).unwrap();
    // Two leaves per block parameter (10 per block), whatever the depth.
    assert_eq!(spec.leaves.iter().filter(|l| l.name.starts_with("tleg.")).count(), 20);
    let init = |n: &str| spec.leaves.iter().find(|l| l.name == n).unwrap().init.clone();
    assert_eq!(init("tleg.mlp.fc1.weight.delta"), fine_plugin_api::Init::Normal { std: 0.02 });
    assert!(matches!(init("tleg.mlp.fc1.weight.base"), fine_plugin_api::Init::XavierUniform { .. }));
    for ada in ["weight", "bias"] {
        for part in ["base", "delta"] {
            assert_eq!(init(&format!("tleg.adaLN_modulation.1.{ada}.{part}")), fine_plugin_api::Init::Zeros);
        }
    }
    assert_eq!(init("tleg.attn.qkv.bias.delta"), fine_plugin_api::Init::Zeros);
    let leaves = leaf_values(&spec);
    let w = materialized(&g, &spec, &leaves);
    let mut checked = 0;
    for (name, v) in &w {
        let Some((l, param)) = block_of(name) else {
            assert_eq!(v, &leaves[name].data, "{name}");
            continue;
        };
        let (b, d) = (&leaves[&leaf(param, "base")].data, &leaves[&leaf(param, "delta")].data);
        let f = l as f32 / 4.0;
        let err = v.iter().zip(b.iter().zip(d)).map(|(v, (b, d))| (v - (b + f * d)).abs()).fold(0f32, f32::max);
        assert!(err < 1e-6, "{name}: {err}");
        checked += 1;
    }
    assert_eq!(checked, 40);
    // Block 0 is θ_base itself.
    assert_eq!(w["blocks.0.mlp.fc2.weight"], leaves["tleg.mlp.fc2.weight.base"].data);
}

#[test]
fn descendant_expands_to_any_depth_and_refuses_misfits() {
    let g = tiny_graph(4, 32);
    let dit = Dit::new(&g);
    let spec = Tleg.ancestry(&g, &weights_of(&dit), &opts("")).unwrap();
    let leaves = leaf_values(&spec);
    let lg = Tleg.extract(&g, &weights_of(&Dit::new(&g)), &spec, &leaves, &opts("")).unwrap();
    assert_eq!(lg.tensors.len(), spec.leaves.len());
    // A plain run (another strategy's) is refused by name.
    let plain = dit.plain_parameterization();
    let e = Tleg.extract(&g, &weights_of(&dit), &plain, &leaf_values(&plain), &opts("")).unwrap_err().to_string();
    assert!(e.contains("not a TLEG ancestry"), "{e}");
    assert_eq!(lg.meta["storage.learngene"], lg.tensors.values().map(|t| t.data.len()).sum::<usize>().to_string());
    // Same depth: the descendant is the ancestry.
    let d = Tleg.descendant(&lg, &g, &weights_of(&dit), &opts("")).unwrap();
    assert_eq!(d.init_steps, 0);
    let store = descendant_store(CpuDevice::default(), &dit, &d, 0).unwrap();
    let (a, b) = (materialized(&g, &spec, &leaves), materialize(&dit, &store).unwrap().host_values());
    for (name, v) in &a {
        let err = v.iter().zip(&b[name]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(err < 1e-6, "{name}: {err}");
    }
    // Depth 6: block i uses i/6.
    let g6 = tiny_graph(6, 32);
    let dit6 = Dit::new(&g6);
    let d = Tleg.descendant(&lg, &g6, &weights_of(&dit6), &opts("")).unwrap();
    descendant_store(CpuDevice::default(), &dit6, &d, 0).unwrap();
    for i in 0..6 {
        let name = format!("blocks.{i}.attn.proj.weight");
        let (b, dl) = (&leaves["tleg.attn.proj.weight.base"].data, &leaves["tleg.attn.proj.weight.delta"].data);
        let want: Vec<f32> = b.iter().zip(dl).map(|(b, d)| b + i as f32 / 6.0 * d).collect();
        assert_eq!(d.values[&name].data, want, "{name}");
    }
    assert_eq!(d.values["t_embedder.mlp.0.weight"].data, leaves["t_embedder.mlp.0.weight"].data);
    let wide = tiny_graph(3, 64);
    let e = Tleg.descendant(&lg, &wide, &weights_of(&Dit::new(&wide)), &opts("")).unwrap_err();
    assert!(e.to_string().contains("width 32") && e.to_string().contains("width 64"), "{e}");
    let other = Learngene { strategy: "sws".into(), ..lg };
    let e = Tleg.descendant(&other, &g6, &weights_of(&dit6), &opts("")).unwrap_err();
    assert!(e.to_string().contains("made by `sws`"), "{e}");
}
