//! End-to-end tests that drive the real `fine` binary on the bundled
//! Fashion-MNIST data, including every bad-input case of the runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fine")).args(args).current_dir(root()).output().expect("running fine")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok(args: &[&str]) -> String {
    let o = fine(args);
    assert!(o.status.success(), "fine {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Runs `fine` expecting failure (exit 1, no panic); returns stderr.
fn fails(args: &[&str]) -> String {
    let o = fine(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "fine {args:?} should fail cleanly; stderr:\n{err}");
    assert!(!err.contains("panicked"), "fine {args:?} panicked:\n{err}");
    err
}

fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{}:{}", v["step"], v["loss"])
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TINY: &str = "graphs/fmnist-tiny.ron";

// ---------------------------------------------------------------------------
// graph check
// ---------------------------------------------------------------------------

#[test]
fn graph_check_prints_params_and_flops() {
    let out = ok(&["graph", "check", "graphs/dit-s-2.ron"]);
    assert!(out.contains("32,858,896"), "{out}");
    assert!(out.contains("GFLOPs/image"), "{out}");
    for f in std::fs::read_dir(root().join("graphs")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "ron") {
            ok(&["graph", "check", s(&p)]);
        }
    }
}

#[test]
fn graph_check_rejects_bad_graphs_naming_the_problem() {
    assert!(fails(&["graph", "check", "graphs/bad/syntax.ron"]).contains("graphs/bad/syntax.ron:13:5"));
    let e = fails(&["graph", "check", "graphs/bad/unknown-field.ron"]);
    assert!(e.contains("unknown-field.ron:11:15") && e.contains("mlp_ration"), "{e}");
    assert!(fails(&["graph", "check", "graphs/bad/heads-not-dividing.ron"]).contains("not divisible by heads"));
    assert!(fails(&["graph", "check", "graphs/bad/patch-not-dividing.ron"]).contains("patch_size"));
    assert!(fails(&["graph", "check", "graphs/bad/zero-depth.ron"]).contains("depth"));
    assert!(fails(&["graph", "check", "graphs/nope.ron"]).contains("graphs/nope.ron"));
}

// ---------------------------------------------------------------------------
// train / resume / sample
// ---------------------------------------------------------------------------

#[test]
fn training_loss_decreases_on_real_data_and_sampling_writes_a_grid() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    ok(&[
        "train",
        "--graph",
        TINY,
        "--out",
        s(&run),
        "--steps",
        "80",
        "--batch",
        "32",
        "--lr",
        "2e-3",
        "--ckpt-every",
        "40",
        "--heldout",
        "200",
    ]);
    // Held-out ε-MSE on test images: an untrained DiT predicts ε = 0 (MSE ≈ 1).
    let h: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("heldout.json")).unwrap()).unwrap();
    let live = h["live"].as_f64().unwrap();
    assert!(live > 0.0 && live < 0.9 && h["ema"].as_f64().unwrap().is_finite() && h["n"] == 200, "{h}");
    let l: Vec<f64> = losses(&run).iter().map(|x| x.split(':').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(l.len(), 80);
    let first: f64 = l[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = l[70..].iter().sum::<f64>() / 10.0;
    assert!(last < 0.7 * first, "loss did not decrease: first 10 mean {first}, last 10 mean {last}");
    assert!(run.join("loss.svg").exists() && run.join("run.ron").exists());

    let png = d.path().join("grid.png");
    ok(&["sample", "--run", s(&run), "--n", "6", "--steps", "8", "--out", s(&png), "--cfg", "2.0"]);
    let img = image::open(&png).unwrap();
    // 28-px tiles shown at 3× (84 px) with 2-px padding.
    assert_eq!((img.width(), img.height()), (6 * 86 + 2, 86 + 2));
    assert!(fails(&["sample", "--run", s(&run), "--n", "2", "--class", "10", "--out", s(&png)]).contains("--class 10"));
    assert!(fails(&["sample", "--run", s(&run), "--n", "2", "--sampler", "nope", "--out", s(&png)])
        .contains("unknown sampler"));
}

#[test]
fn resume_reproduces_the_uninterrupted_run_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let common = [
        "--graph",
        TINY,
        "--steps",
        "8",
        "--batch",
        "8",
        "--ckpt-every",
        "3",
        "--lr",
        "1e-3",
        "--cosine-min-lr",
        "1e-4",
        "--warmup",
        "2",
    ];
    ok(&[&["train", "--out", s(&a)][..], &common].concat());
    ok(&[&["train", "--out", s(&b), "--until", "5"][..], &common].concat());
    assert_eq!(losses(&b).len(), 5);
    // The interrupted run checkpointed at step 5 (the --until stop).
    ok(&["train", "--resume", s(&b)]);
    assert_eq!(losses(&a), losses(&b));
    // Weights, EMA and moments are identical too.
    let load = |d: &Path| fine_core::checkpoint::Checkpoint::load(&d.join("checkpoint.safetensors")).unwrap();
    let (ca, cb) = (load(&a), load(&b));
    assert!(ca.step == 8 && cb.step == 8);
    assert!(
        ca.params == cb.params && ca.ema == cb.ema && ca.adam_m == cb.adam_m && ca.adam_v == cb.adam_v,
        "final states differ"
    );
}

#[test]
fn demo_pipeline_runs_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    let text = ok(&["demo", "--out", s(&out), "--steps", "4", "--batch", "4", "--sample-steps", "3", "--score", "40"]);
    assert!(text.contains("samples.png"), "{text}");
    // An untrained model is far from the real images' floor.
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quality.json")).unwrap()).unwrap();
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quality-floor.json")).unwrap()).unwrap();
    let (model, floor) = (q["scores"]["cfid"].as_f64().unwrap(), f["scores"]["cfid"].as_f64().unwrap());
    assert!(model > 3.0 * floor && text.contains(&format!("{model:.1} for 40 samples")), "{model} {floor}\n{text}");
    assert!(out.join("samples.png").exists() && out.join("checkpoint.safetensors").exists());
    assert!(fails(&["demo", "--out", s(&out), "--steps", "4"]).contains("already holds a run"));
}

#[test]
fn bench_gemm_times_every_backend() {
    let out = ok(&["bench", "gemm", "--tokens", "96", "--hidden", "40", "--reps", "1"]);
    // A table row per product (4 linears × 3 forms) and one JSON line.
    assert_eq!(out.lines().filter(|l| l.starts_with("| qkv") || l.starts_with("| fc")).count(), 9, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let ms = v["block_linears_ms"].as_object().unwrap();
    assert!(ms.contains_key("gemm-crate") && ms.values().all(|t| t.as_f64().unwrap() > 0.0), "{v}");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(ms.contains_key("packed-avx2"), "{v}");
    }
    assert!(fails(&["bench", "gemm", "--reps", "0"]).contains("must be positive"));
}

#[test]
fn bench_step_prints_one_json_line() {
    let out = ok(&["bench", "step", "--graph", TINY, "--batch", "4", "--steps", "2", "--warmup", "1"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["step_ms"].as_f64().unwrap() > 0.0 && v["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(["packed-avx2", "gemm-crate", "openblas"].contains(&v["gemm"].as_str().unwrap()), "{v}");
    assert_eq!(v["device"], "cpu");
    let out =
        ok(&["--device", "cpu", "bench", "step", "--graph", TINY, "--batch", "2", "--steps", "1", "--warmup", "0"]);
    assert!(out.contains("\"device\":\"cpu\""), "{out}");
    // Parity of the device against the CPU. Here CPU against CPU: the same
    // kernels (forward and gradients exact from the same weights), the host
    // optimizer against the device one (tensor ops, as on a GPU): equal to rounding.
    let out = ok(&["bench", "parity", "--graph", TINY, "--steps", "2"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["grad_rel"].as_f64(),
            v["step_loss_rel"].as_array().map(Vec::len),
            v["same_kernels"].as_bool()
        ),
        (Some(true), Some(0.0), Some(2), Some(true)),
        "{v}"
    );
    assert!(v["forward_rel"].as_f64() == Some(0.0) && v["params_rel_after_steps"].as_f64().unwrap() < 1e-4, "{v}");
}

/// `--device` on a command that computes: a bad name is a parse error; CUDA
/// in a CPU-only build says how to get a CUDA build, before anything is written.
#[test]
fn device_flag_is_checked() {
    let o = fine(&["--device", "gpu", "bench", "step", "--graph", TINY]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && e.contains("`gpu` is not `cpu`, `cuda` or `cuda:N`"), "{e}");
    if cfg!(feature = "cuda") {
        eprintln!("skipped: this test build has the `cuda` feature; GPU checks are scripts/gpu-check.sh");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let e = fails(&["train", "--device", "cuda:1", "--graph", TINY, "--out", s(&out), "--steps", "1"]);
    assert!(e.contains("device `cuda:1`") && e.contains("scripts/build-cuda.sh"), "{e}");
    assert!(!out.exists());
}

/// Needs the FID Inception weights (`scripts/fetch-inception.sh`, run by CI first).
#[test]
fn bench_inception_prints_one_json_line() {
    let out = ok(&["bench", "inception", "--n", "2", "--batch", "1", "--threads", "1"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["images"], 2);
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(fails(&["bench", "inception", "--n", "0"]).contains("--n must be"));
}

// ---------------------------------------------------------------------------
// Bad input: clear error, exit 1, nothing lost
// ---------------------------------------------------------------------------

#[test]
fn bad_checkpoints_and_runs_are_refused_without_damage() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    ok(&["train", "--graph", TINY, "--out", s(&run), "--steps", "2", "--batch", "2"]);
    let ck = run.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();

    // Training into an existing run neither starts nor touches it.
    assert!(fails(&["train", "--graph", TINY, "--out", s(&run), "--steps", "2"]).contains("already holds a run"));
    assert_eq!(std::fs::read(&ck).unwrap(), good);
    // Resume cannot silently change the configuration.
    assert!(fails(&["train", "--resume", s(&run), "--batch", "4"]).contains("--batch"));

    // Truncated.
    std::fs::write(&ck, &good[..good.len() / 2]).unwrap();
    let e = fails(&["train", "--resume", s(&run), "--steps", "3"]);
    assert!(e.contains("checkpoint.safetensors") && e.contains("truncated"), "{e}");
    assert!(fails(&["sample", "--run", s(&run), "--n", "1", "--out", s(&d.path().join("x.png"))]).contains("truncated"));
    // One flipped bit in the data.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 10] ^= 0x10;
    std::fs::write(&ck, &bad).unwrap();
    assert!(fails(&["train", "--resume", s(&run), "--steps", "3"]).contains("checksum"));
    // Not a checkpoint at all / missing.
    std::fs::write(&ck, b"hello").unwrap();
    assert!(fails(&["train", "--resume", s(&run)]).contains("checkpoint.safetensors"));
    assert!(fails(&["train", "--resume", s(&d.path().join("none"))]).contains("none"));
}

/// A run whose weights become non-finite stops with the step named and keeps the last good
/// checkpoint; non-finite settings are refused before training; sampling never writes over
/// the run's own files; non-finite samples are an error, not a blank grid.
#[test]
fn non_finite_runs_stop_and_keep_the_last_good_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("r");
    ok(&["train", "--graph", TINY, "--out", s(&run), "--steps", "2", "--batch", "8", "--ckpt-every", "1"]);
    let good = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    // Training on from it at a learning rate beyond f32: the first update overflows while the
    // loss before it was finite; nothing is written.
    let cfg = d.path().join("huge.ron");
    std::fs::write(&cfg, "(lr: 1e39, steps: 4, batch: 8, ckpt_every: 1, grad_clip: None)").unwrap();
    let big = d.path().join("big");
    let e = fails(&["train", "--from", s(&run), "--out", s(&big), "--config", s(&cfg)]);
    assert!(e.contains("became non-finite by step 1") && e.contains("no checkpoint was written"), "{e}");
    assert!(!big.join("checkpoint.safetensors").exists());
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), good, "the good run was touched");
    for (flag, value) in [("--cosine-min-lr", "nan"), ("--grad-clip", "nan"), ("--lr", "inf"), ("--lr", "nan")] {
        let e = fails(&["train", "--graph", TINY, "--out", s(&d.path().join("x")), "--steps", "2", flag, value]);
        let named =
            if flag == "--cosine-min-lr" { "min_lr" } else { flag.trim_start_matches("--").split('-').next().unwrap() };
        assert!(e.contains(named), "{flag} {value}: {e}");
        assert!(!d.path().join("x").join("checkpoint.safetensors").exists());
    }
    let e = fails(&["sample", "--run", s(&run), "--n", "2", "--out", s(&run.join("checkpoint.safetensors"))]);
    assert!(e.contains("--out") && e.contains("overwrite the run's own checkpoint.safetensors"), "{e}");
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), good);
    let e = fails(&["sample", "--run", s(&run), "--n", "2", "--out", s(&d.path().join("g.png")), "--cfg", "nan"]);
    assert!(e.contains("--cfg must be finite"), "{e}");
    // Requests larger than the machine are refused before anything is allocated.
    let e = fails(&["sample", "--run", s(&run), "--n", "100000000", "--out", s(&d.path().join("g.png"))]);
    assert!(e.contains("--n 100000000 needs about") && e.contains("GiB"), "{e}");
    let e = fails(&["bench", "step", "--graph", TINY, "--batch", "100000000", "--steps", "1"]);
    assert!(e.contains("at batch 100000000 needs about"), "{e}");
    assert!(fails(&["bench", "step", "--graph", TINY, "--batch", "2", "--steps", "0"]).contains("--steps"));
    assert!(fails(&["bench", "parity", "--graph", TINY, "--tol", "nan"]).contains("--tol must be"));
    let e = fails(&["eval", "--run", s(&run), "--n", "100000000", "--metric", "cfid"]);
    assert!(e.contains("--n 100000000 needs about"), "{e}");
    // A device as data is refused at once, not read until memory runs out.
    let e = fails(&["train", "--graph", TINY, "--out", s(&d.path().join("z")), "--data", "idx:/dev/zero"]);
    assert!(e.contains("/dev/zero: not a regular file"), "{e}");
}

/// One process at a time trains in a run folder (a live holder's lock is refused, a dead
/// one's taken over), and a run restarted after dying before its first checkpoint does not
/// keep the dead process's metric lines.
#[test]
fn run_folders_are_locked_and_restarts_keep_their_own_metrics() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("r");
    std::fs::create_dir(&run).unwrap();
    let dead = "{\"step\":1,\"loss\":9.0}\n{\"step\":2,\"loss\":9.0}\n";
    std::fs::write(run.join("metrics.jsonl"), dead).unwrap();
    ok(&["train", "--graph", TINY, "--out", s(&run), "--steps", "2", "--batch", "4"]);
    let steps: Vec<String> = losses(&run).iter().map(|l| l.split(':').next().unwrap().to_string()).collect();
    assert_eq!(steps, ["1", "2"], "{:?}", losses(&run));
    assert!(!losses(&run).iter().any(|l| l.ends_with(":9.0")), "the dead run's lines are still there");
    assert!(!run.join(".lock").exists(), "the lock outlived the run");
    std::fs::write(run.join(".lock"), std::process::id().to_string()).unwrap(); // a live process
    let e = fails(&["train", "--resume", s(&run), "--steps", "3"]);
    assert!(e.contains("being trained by another fine process") && e.contains(&std::process::id().to_string()), "{e}");
    std::fs::write(run.join(".lock"), "4294967294").unwrap(); // no such process
    ok(&["train", "--resume", s(&run), "--steps", "3"]);
    assert_eq!(losses(&run).len(), 3);
}

/// Ctrl-C (SIGINT) during training writes the checkpoint of the step it reached, the loss
/// plot and a resume hint, exits 130, and the run resumes from there.
#[test]
fn ctrl_c_writes_a_final_checkpoint_and_says_how_to_resume() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("r");
    let child = Command::new(env!("CARGO_BIN_EXE_fine"))
        .args(["train", "--graph", TINY, "--out", s(&run), "--steps", "1000000", "--batch", "4"])
        .args(["--ckpt-every", "1000000"])
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it trains (metrics appear), then interrupt it.
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(true, |m| m.lines().count() < 20) {
        assert!(t0.elapsed().as_secs() < 60, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at step") && err.contains(&format!("fine train --resume {}", s(&run))), "{err}");
    let ck = fine_core::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    assert!(ck.step >= 20 && err.contains(&format!("interrupted at step {}", ck.step)), "step {}: {err}", ck.step);
    assert!(run.join("loss.svg").exists() && !run.join(".lock").exists());
    let next = (ck.step + 3).to_string();
    ok(&["train", "--resume", s(&run), "--steps", &next]);
    assert_eq!(losses(&run).len(), ck.step + 3);
}

/// `fine export`: the state dict of facebookresearch DiT — the key set of the PyTorch
/// reference DiT in tests/data (made by scripts/make_torch_reference.py from
/// scripts/torch_dit.py, the same module layout), with `pos_embed`, at this graph's
/// shapes; EMA or live weights; a factorized run materialized.
#[test]
fn export_writes_a_plain_dit_state_dict() {
    use safetensors::SafeTensors;
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("r");
    ok(&["train", "--graph", TINY, "--out", s(&run), "--steps", "2", "--batch", "2"]);
    let pattern = |k: &str| {
        let mut parts: Vec<String> = k.split('.').map(String::from).collect();
        if parts[0] == "blocks" {
            parts[1] = "N".into();
        }
        parts.join(".")
    };
    let reference = std::fs::read(root().join("tests/data/torch_ref_dit.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&reference).unwrap();
    let mut want: std::collections::BTreeSet<String> = reference
        .names()
        .into_iter()
        .filter(|k| !k.starts_with("grad.") && !k.starts_with("input.") && !k.starts_with("output."))
        .map(|k| pattern(k))
        .collect();
    want.insert("pos_embed".into());
    for (flag, from) in [("", "ema"), ("--live", "live")] {
        let out = d.path().join(format!("dit-{from}.safetensors"));
        let mut args = vec!["export", "--run", s(&run), "--out", s(&out)];
        args.extend([flag].iter().filter(|f| !f.is_empty()));
        let said = ok(&args);
        assert!(said.contains("learn_sigma=False") && said.contains("depth=2"), "{said}");
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let got: std::collections::BTreeSet<String> = st.names().into_iter().map(|k| pattern(k)).collect();
        assert_eq!(got, want);
        let blocks: std::collections::BTreeSet<&str> =
            st.names().into_iter().filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()).collect();
        assert_eq!(blocks, ["0", "1"].into());
        for (k, shape) in [
            ("x_embedder.proj.weight", vec![32, 1, 4, 4]),
            ("pos_embed", vec![1, 49, 32]),
            ("y_embedder.embedding_table.weight", vec![11, 32]),
            ("blocks.1.adaLN_modulation.1.weight", vec![6 * 32, 32]),
            ("final_layer.linear.weight", vec![16, 32]),
        ] {
            assert_eq!(st.tensor(k).unwrap().shape(), shape, "{k}");
        }
        let ck = fine_core::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
        let kept = if from == "ema" { &ck.ema } else { &ck.params };
        let w = st.tensor("blocks.0.attn.qkv.weight").unwrap();
        let w: Vec<f32> = w.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&w, &kept["blocks.0.attn.qkv.weight"], "{from}");
    }
    // A factorized (FINE) ancestry exports its materialized weights under the same names.
    let anc = d.path().join("anc");
    ok(&["pretrain", "--strategy", "fine", "--graph", TINY, "--out", s(&anc), "--steps", "2", "--batch", "2"]);
    let out = d.path().join("fine.safetensors");
    ok(&["export", "--run", s(&anc), "--out", s(&out)]);
    let bytes = std::fs::read(&out).unwrap();
    let names: std::collections::BTreeSet<String> =
        SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(|k| pattern(k)).collect();
    assert_eq!(names, want);
    let e = fails(&["export", "--run", s(&run), "--out", s(&run.join("checkpoint.safetensors"))]);
    assert!(e.contains("--out"), "{e}");
}

/// `--eval-every` puts the held-out ε-MSE of the live and EMA weights into the metrics
/// lines of those steps, `--sample-every` a grid of samples into RUN/samples.
#[test]
fn a_watched_run_writes_heldout_scores_and_sample_grids() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("w");
    let args = ["train", "--graph", TINY, "--out", s(&run), "--steps", "4", "--batch", "4"];
    ok(&[&args[..], &["--eval-every", "2", "--heldout", "16", "--sample-every", "4"]].concat());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with: Vec<u64> =
        lines.iter().filter(|l| l.get("heldout_live").is_some()).map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(with, [2, 4]);
    for l in lines.iter().filter(|l| l.get("heldout_ema").is_some()) {
        let (live, ema) = (l["heldout_live"].as_f64().unwrap(), l["heldout_ema"].as_f64().unwrap());
        assert!(live.is_finite() && live > 0.0 && ema.is_finite() && ema > 0.0, "{l}");
    }
    assert_eq!(lines[3]["samples"].as_str(), Some(s(&run.join("samples/step-0000004.png"))));
    let grid = image::open(run.join("samples/step-0000004.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (2 + 10 * 86, 2 + 2 * 86), "2 samples of each of 10 classes at 3×");
}

#[test]
fn bad_data_and_configs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let e = fails(&["train", "--graph", TINY, "--out", s(&out), "--data", "idx:/no/such/images.idx"]);
    assert!(e.contains("/no/such/images.idx"), "{e}");
    let bad = d.path().join("bad.idx");
    std::fs::write(&bad, [1u8, 2, 8, 3, 0, 0, 0, 1]).unwrap();
    let e = fails(&["train", "--graph", TINY, "--out", s(&out), "--data", &format!("idx:{}", s(&bad))]);
    assert!(e.contains("bad.idx") && e.contains("magic"), "{e}");
    // Truncated IDX: header promises 2 images of 28×28, one byte follows.
    std::fs::write(&bad, [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 7]).unwrap();
    assert!(fails(&["train", "--graph", TINY, "--out", s(&out), "--data", &format!("idx:{}", s(&bad))])
        .contains("truncated"));
    assert!(fails(&["train", "--graph", TINY, "--out", s(&out), "--data", "cifar"]).contains("unknown dataset"));
    // A graph whose input does not match the data.
    assert!(fails(&["train", "--graph", "graphs/dit-s-2.ron", "--out", s(&out), "--steps", "1"])
        .contains("expects 4×32×32"));
    // A malformed run config gives file:line:col.
    let cfg = d.path().join("run.ron");
    std::fs::write(&cfg, "(\n  steps: 10,\n  bacth: 4,\n)\n").unwrap();
    let e = fails(&["train", "--graph", TINY, "--out", s(&out), "--config", s(&cfg)]);
    assert!(e.contains("run.ron:3:") && e.contains("bacth"), "{e}");
    assert!(fails(&["train", "--graph", TINY, "--out", s(&out), "--batch", "0"]).contains("batch"));
    assert!(!out.join("checkpoint.safetensors").exists());
}

/// CUDA against the CPU on a small DiT. Ignored (with the reason shown by
/// `cargo test`) in the default CPU-only build; in a `cuda` build on a machine
/// without a usable GPU it says so and passes.
#[test]
#[ignore = "needs a `cuda` build and a GPU: cargo test --release --features cuda -- --ignored cuda_matches_cpu"]
fn cuda_matches_cpu() {
    // Run only when asked for: without a GPU it fails (it never passes by skipping).
    let o = fine(&["--device", "cuda", "bench", "parity", "--graph", "graphs/fmnist-w64-d2-p4.ron", "--steps", "3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}
