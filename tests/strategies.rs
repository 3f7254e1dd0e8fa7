//! The peer learngene strategies (`sws`, `tleg`, `heur`, `svd-independent`, `stitch`) end
//! to end through the CLI on the bundled data with tiny graphs: ancestry →
//! learngene (with its metadata and storage model) → descendant of another
//! depth → ordinary training; what each descendant inherits; and the bad
//! inputs each refuses before any training.

use fine_core::checkpoint::Checkpoint;
use fine_core::strategy::load_learngene;
use fine_plugin_api::Learngene;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `fine`: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fine"))
        .args(args)
        .current_dir(root())
        .env_remove("FINE_PLUGIN_PATH")
        .env("HOME", "/nonexistent-fine-home")
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = run(args);
    assert!(good, "fine {args:?} failed:\n{err}");
    out
}

fn fails(args: &[&str]) -> String {
    let (good, _, err) = run(args);
    assert!(!good, "fine {args:?} should have failed");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `fine ARGS --out D/bad --strategy-opts OPTS`, which must fail before writing
/// anything (the bad input is refused before any training); returns its stderr.
fn refused(d: &Path, args: &[&str], opts: &str) -> String {
    let bad = d.join("bad");
    let e = fails(&[args, &["--out", s(&bad), "--strategy-opts", opts]].concat());
    assert!(!bad.exists(), "fine {args:?} wrote {}", bad.display());
    e
}

/// `graphs/fmnist-tiny.ron` at another depth and width.
fn graph_with(d: &Path, name: &str, depth: usize, hidden: usize) -> PathBuf {
    let tiny = std::fs::read_to_string(root().join("graphs/fmnist-tiny.ron")).unwrap();
    let text = tiny
        .replace("depth: 2", &format!("depth: {depth}"))
        .replace("hidden: 32", &format!("hidden: {hidden}"))
        .replace("\"fmnist-tiny\"", &format!("\"{name}\""));
    let p = d.join(format!("{name}.ron"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Pretrains a `strategy` ancestry of depth `depth` for 4 steps and extracts its
/// learngene; checks the metadata every learngene carries. Returns the file and the learngene.
fn ancestry(d: &Path, strategy: &str, depth: usize, opts: &str) -> (PathBuf, Learngene) {
    let g = graph_with(d, &format!("anc{depth}"), depth, 32);
    let (anc, lg) = (d.join(format!("anc-{strategy}")), d.join(format!("{strategy}.safetensors")));
    let args = ["pretrain", "--strategy", strategy, "--graph", s(&g), "--out", s(&anc)];
    ok(&[&args[..], &["--strategy-opts", opts, "--steps", "4", "--batch", "8", "--lr", "2e-3"]].concat());
    ok(&["learngene", "extract", "--run", s(&anc), "--out", s(&lg)]);
    let l = load_learngene(&lg).unwrap();
    assert_eq!(l.strategy, strategy);
    for k in ["source_graph", "steps", "hidden", "ancestry_depth", "storage.learngene", "storage.per_layer"] {
        assert!(l.meta.contains_key(k), "{strategy} learngene lacks `{k}`: {:?}", l.meta.keys());
    }
    assert_eq!((l.meta["steps"].as_str(), l.meta["ancestry_depth"].as_str()), ("4", depth.to_string().as_str()));
    let info = ok(&["learngene", "info", s(&lg)]);
    assert!(info.contains(&format!("learngene by `{strategy}`")) && info.contains("smaller"), "{info}");
    (lg, l)
}

/// `fine init` of a descendant of `depth` from `lg`, then 3 ordinary steps. Returns the
/// initialized (plain) checkpoint.
fn descendant(d: &Path, lg: &Path, depth: usize, extra: &[&str]) -> Checkpoint {
    let g = graph_with(d, &format!("d{depth}"), depth, 32);
    let out = d.join(format!("desc-{}-{depth}", lg.file_stem().unwrap().to_str().unwrap()));
    ok(&[&["init", "--learngene", s(lg), "--graph", s(&g), "--out", s(&out), "--batch", "8"][..], extra].concat());
    let ck = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.graph.depth, depth);
    assert!(ck
        .spec
        .leaves
        .iter()
        .all(|l| l.trainable && ck.spec.bindings[&l.name] == fine_core::model::Expr::leaf(&l.name)));
    ok(&["train", "--from", s(&out), "--steps", "3", "--batch", "8"]);
    ck
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max)
}

#[test]
fn peer_strategies_are_listed() {
    let list = ok(&["plugins", "list"]);
    for n in ["sws", "tleg", "heur", "svd-independent", "stitch"] {
        assert!(
            list.lines().any(|l| l.starts_with(n) && l.contains("strategy") && l.ends_with("built-in")),
            "{n}:\n{list}"
        );
    }
    assert!(ok(&["plugins", "info", "sws"]).contains("layers_source"));
    assert!(ok(&["plugins", "info", "svd-independent"]).contains("sigma_steps"));
}

#[test]
fn sws_pipeline_and_bad_mappings() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (lg, l) = ancestry(d, "sws", 4, "stages=1:3");
    assert_eq!(l.meta["stages"], "1,3");
    assert_eq!(l.tensors.keys().filter(|n| n.starts_with("sws.stage")).count(), 20);
    let ck = descendant(d, &lg, 3, &["--strategy-opts", "layers_source=1:0:1"]);
    for (i, st) in [(0, 1), (1, 0), (2, 1)] {
        for p in ["attn.qkv.weight", "adaLN_modulation.1.bias"] {
            assert!(ck.params[&format!("blocks.{i}.{p}")] == l.tensors[&format!("sws.stage{st}.{p}")].data);
        }
    }
    assert!(ck.params["x_embedder.proj.weight"] == l.tensors["x_embedder.proj.weight"].data);
    descendant(d, &lg, 6, &[]);
    // Bad input, refused before any training.
    let g3 = graph_with(d, "bad3", 3, 32);
    let init = ["init", "--learngene", s(&lg), "--graph", s(&g3)];
    let e = refused(d, &init, "layers_source=0:0:1:1");
    assert!(e.contains("lists 4 blocks") && e.contains("depth 3"), "{e}");
    let e = refused(d, &init, "layers_source=0:1:2");
    assert!(e.contains("stage 2") && e.contains("2 stages"), "{e}");
    let e = refused(d, &["pretrain", "--strategy", "sws", "--graph", s(&g3)], "stages=2:2");
    assert!(e.contains("depth 3"), "{e}");
}

#[test]
fn tleg_pipeline_and_misfits() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (lg, l) = ancestry(d, "tleg", 2, "");
    // TLEG has no initialization phase: a requested one is not run (the same rule as
    // `fine bench learngene`'s `init.steps`), so the weights are TLEG's formula exactly.
    let ck = descendant(d, &lg, 3, &["--init-steps", "5"]);
    assert_eq!(ck.provenance.init_steps, Some(0));
    for i in 0..3 {
        for p in ["mlp.fc1.weight", "attn.proj.bias"] {
            let (b, dl) = (&l.tensors[&format!("tleg.{p}.base")].data, &l.tensors[&format!("tleg.{p}.delta")].data);
            let want: Vec<f32> = b.iter().zip(dl).map(|(b, d)| b + i as f32 / 3.0 * d).collect();
            assert!(max_diff(&ck.params[&format!("blocks.{i}.{p}")], &want) < 1e-6, "block {i} {p}");
        }
    }
    // The ancestry's deltas trained (not only the bases).
    let delta = &l.tensors["tleg.adaLN_modulation.1.weight.delta"].data;
    assert!(delta.iter().any(|x| *x != 0.0), "the adaLN delta never left zero");
    let wide = graph_with(d, "wide", 3, 64);
    let e = fails(&["init", "--learngene", s(&lg), "--graph", s(&wide), "--out", s(&d.join("w"))]);
    assert!(e.contains("width 32") && e.contains("`wide` has width 64"), "{e}");
    let e =
        fails(&["init", "--strategy", "heur", "--learngene", s(&lg), "--graph", s(&wide), "--out", s(&d.join("w"))]);
    assert!(e.contains("made by strategy `tleg`, not `heur`"), "{e}");
}

#[test]
fn heur_pipeline_and_k_too_large() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (lg, l) = ancestry(d, "heur", 3, "k=2");
    assert_eq!((l.meta["k"].as_str(), l.meta["inherited_blocks"].as_str()), ("2", "1..2"));
    let ck = descendant(d, &lg, 4, &[]);
    for (i, j) in [(2, 0), (3, 1)] {
        let p = "mlp.fc2.weight";
        assert!(ck.params[&format!("blocks.{i}.{p}")] == l.tensors[&format!("heur.block{j}.{p}")].data);
    }
    // Blocks 0 and 1 are fresh: DiT's init (adaLN-Zero), not copies.
    assert!(ck.params["blocks.0.adaLN_modulation.1.weight"].iter().all(|x| *x == 0.0));
    let fresh = &ck.params["blocks.1.attn.qkv.weight"];
    assert!(fresh.iter().any(|x| *x != 0.0) && l.tensors.values().all(|t| &t.data != fresh));
    let g1 = graph_with(d, "one", 1, 32);
    let e = fails(&["init", "--learngene", s(&lg), "--graph", s(&g1), "--out", s(&d.join("bad"))]);
    assert!(e.contains("k = 2") && e.contains("`one` has depth 1"), "{e}");
    let g2 = graph_with(d, "two", 2, 32);
    let e = refused(d, &["pretrain", "--strategy", "heur", "--graph", s(&g2)], "k=3");
    assert!(e.contains("k` = 3 exceeds the ancestry depth 2"), "{e}");
}

#[test]
fn svd_independent_pipeline_trains_sigma_only() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (lg, l) = ancestry(d, "svd-independent", 3, "rank_fc1=8");
    assert_eq!((l.meta["rank_fc1"].as_str(), l.meta["rank_qkv"].as_str()), ("8", "32"));
    let ck = descendant(d, &lg, 2, &["--sigma-steps", "3", "--subset", "64", "--lr", "1e-2"]);
    assert!(ck.params.keys().all(|n| !n.starts_with("svd.")));
    // Phase 2 trained σ and biases only: the frozen U, V and embeddings are the learngene's.
    let p2 = Checkpoint::load(&d.join("desc-svd-independent-2/init/checkpoint.safetensors")).unwrap();
    assert_eq!(p2.step, 3);
    let trainable: Vec<&str> = p2.spec.leaves.iter().filter(|l| l.trainable).map(|l| l.name.as_str()).collect();
    assert!(trainable.iter().all(|n| n.ends_with(".S") || n.ends_with(".bias")), "{trainable:?}");
    for (n, v) in p2.params.iter().filter(|(n, _)| !n.ends_with(".S") && !n.ends_with(".bias")) {
        assert!(v == &l.tensors[n].data, "{n} changed in phase 2");
    }
    // Layers 0 and 1 take ancestry layers 0 and 2; σ started there and trained.
    assert!(p2.params.contains_key("svd.qkv.2.U") && !p2.params.contains_key("svd.qkv.1.U"));
    let anc = &l.tensors["svd.proj.S"].data;
    let start: Vec<f32> = anc[..32].iter().chain(&anc[64..]).copied().collect();
    assert!(max_diff(&p2.params["svd.proj.S"], &start) > 0.0, "σ did not train");
    let wide = graph_with(d, "wide", 2, 64);
    let e = fails(&["init", "--learngene", s(&lg), "--graph", s(&wide), "--out", s(&d.join("w"))]);
    assert!(e.contains("width 32") && e.contains("width 64"), "{e}");
}

#[test]
fn stitch_pipeline_distils_a_pool_and_fits_the_stitch() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (lg, l) = ancestry(d, "stitch", 3, "pool=1:2,distill_steps=4");
    assert_eq!((l.meta["pool"].as_str(), l.meta["alpha"].as_str()), ("1:2", "0.5"));
    // Each member was distilled in the ancestry's folder, its embeddings frozen at the ancestry's.
    let anc = Checkpoint::load(&d.join("anc-stitch/checkpoint.safetensors")).unwrap();
    for m in ["d1", "d2"] {
        let ck = Checkpoint::load(&d.join(format!("anc-stitch/pool-{m}/checkpoint.safetensors"))).unwrap();
        assert_eq!(ck.step, 4);
        let x = &l.tensors[&format!("pool.{m}.x_embedder.proj.weight")].data;
        assert!(x == &anc.ema["x_embedder.proj.weight"], "{m}: embedding not the ancestry's");
        let f = &l.tensors[&format!("pool.{m}.final_layer.linear.weight")].data;
        assert!(max_diff(f, &anc.ema["final_layer.linear.weight"]) > 0.0, "{m}: final layer did not train");
    }
    // Depth 3 = the 1-block member's block, a stitching layer, the 2-block member's two blocks.
    let ck = descendant(d, &lg, 3, &[]);
    assert_eq!(ck.graph.stitch_after, Some(0));
    let p = "mlp.fc2.weight";
    assert!(ck.params[&format!("blocks.0.{p}")] == l.tensors[&format!("pool.d1.blocks.0.{p}")].data);
    assert!(ck.params[&format!("blocks.2.{p}")] == l.tensors[&format!("pool.d2.blocks.1.{p}")].data);
    assert!(ck.params["final_layer.linear.weight"] == l.tensors["pool.d2.final_layer.linear.weight"].data);
    // The stitch was fitted on real features: finite, and not the identity a fresh stitch starts at.
    let w = &ck.params["stitch.weight"];
    let eye: Vec<f32> = (0..32 * 32).map(|i| if i % 33 == 0 { 1.0 } else { 0.0 }).collect();
    assert!(w.iter().all(|v| v.is_finite()) && max_diff(w, &eye) > 1e-3);
    // A member's depth is that member, whole, without a stitch.
    assert_eq!(descendant(d, &lg, 2, &[]).graph.stitch_after, None);
    // Depth 4 > 1 + 2 cannot be stitched from this pool; members cannot be deeper than the ancestry.
    let g4 = graph_with(d, "four", 4, 32);
    let e = fails(&["init", "--learngene", s(&lg), "--graph", s(&g4), "--out", s(&d.join("bad"))]);
    assert!(e.contains("depth 4 cannot be built from the pool [1, 2]") && !d.join("bad").exists(), "{e}");
    let e = refused(d, &["pretrain", "--strategy", "stitch", "--graph", s(&graph_with(d, "two", 2, 32))], "pool=1:3");
    assert!(e.contains("member depth 3 exceeds the ancestry depth 2"), "{e}");
}
