//! `fine eval` end to end, and the Fréchet distance against scipy.
//!
//! The classifier behind `cfid` is trained once (about 12 s) into a cache shared
//! by these tests (`$CARGO_TARGET_TMPDIR/eval-cache-<build>`). The Inception test needs
//! the converted weights (`scripts/fetch-inception.sh`, which CI runs first);
//! without them it FAILS with "run scripts/fetch-inception.sh".

use fine_core::eval::frechet::{frechet_distance, Gaussian};
use fine_core::eval::inception::Inception;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `$CARGO_TARGET_TMPDIR/<name>-<id of the fine binary>`: what a cache holds
/// was made by this build (its size and time), never an older one.
fn test_cache(name: &str) -> PathBuf {
    let m = std::fs::metadata(env!("CARGO_BIN_EXE_fine")).unwrap();
    let id = format!("{}-{:?}", m.len(), m.modified().unwrap());
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{:08x}", crc32fast::hash(id.as_bytes())))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cache shared by the tests, with the bundled classifier trained.
fn cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = test_cache("eval-cache");
        let o = run_in(
            &dir,
            &[],
            &["eval", "--real", "bundled:test", "--real", "bundled:test", "--metric", "cfid", "--n", "10"],
        );
        assert!(o.status.success(), "training the classifier failed:\n{}", String::from_utf8_lossy(&o.stderr));
        dir
    })
}

fn run_in(cache: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fine"));
    c.args(args).current_dir(root()).env("FINE_CACHE_DIR", cache);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running fine")
}

fn ok_in(cache: &Path, args: &[&str]) -> (String, String) {
    let o = run_in(cache, &[], args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "fine {args:?} failed:\n{err}");
    (String::from_utf8_lossy(&o.stdout).to_string(), err)
}

/// Runs `fine` expecting failure (exit 1, no panic); returns stderr.
fn fails_with(env: &[(&str, &str)], args: &[&str]) -> String {
    let o = run_in(cache(), env, args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "fine {args:?} should fail cleanly; stderr:\n{err}");
    assert!(!err.contains("panicked"), "fine {args:?} panicked:\n{err}");
    err
}

/// `fine eval ARGS --json FILE` in `cache`; returns the JSON document and stderr.
fn eval_json(cache: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("eval.json");
    let (_, err) = ok_in(cache, &[&["eval"], args, &["--json", s(&json)]].concat());
    (serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(), err)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ----- the Fréchet distance -----

/// Pseudo-random features, as in the numpy script of
/// [`frechet_distance_of_features_matches_scipy`].
fn feats(n: usize, d: usize, seed: f64, scale: f64, shift: f64) -> Vec<f32> {
    (0..n * d)
        .map(|k| {
            let (i, j) = ((k / d) as f64, k % d);
            let u = ((12.9898 * i + 78.233 * j as f64 + seed).sin() * 43758.5453).rem_euclid(1.0);
            (u * scale + shift * (j % 3) as f64) as f32
        })
        .collect()
}

/// Against pytorch-fid's formula in scipy 1.17.1 / numpy 2.4.6:
/// ```python
/// import numpy as np
/// from scipy import linalg
/// def feats(n, d, seed, scale, shift):
///     v = [[((np.sin(12.9898 * i + 78.233 * j + seed) * 43758.5453) % 1.0) * scale + shift * (j % 3)
///           for j in range(d)] for i in range(n)]
///     return np.array(v, dtype=np.float32)
/// def fd(x, y):
///     x, y = x.astype(np.float64), y.astype(np.float64)
///     mu1, mu2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
///     covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
///     covmean = covmean.real
///     return (mu1 - mu2).dot(mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
/// a = feats(60, 16, 0.0, 1.0, 0.0); b = feats(45, 16, 3.0, 1.5, 0.2)
/// print(fd(a, b), fd(a, a), fd(a, feats(60, 16, 5.0, 1.0, 0.0)))
/// # 4.233783052945357 -1.7763568394002505e-15 0.2164626456232277
/// ```
#[test]
fn frechet_distance_of_features_matches_scipy() {
    let g = |x: &[f32], n| Gaussian::from_features(x, n, 16).unwrap();
    let a = g(&feats(60, 16, 0.0, 1.0, 0.0), 60);
    let b = g(&feats(45, 16, 3.0, 1.5, 0.2), 45);
    let c = g(&feats(60, 16, 5.0, 1.0, 0.0), 60);
    let ab = frechet_distance(&a, &b).unwrap();
    assert!((ab - 4.233783052945357).abs() < 1e-9, "{ab}");
    let ac = frechet_distance(&a, &c).unwrap();
    assert!((ac - 0.2164626456232277).abs() < 1e-9, "{ac}");
    assert!(frechet_distance(&a, &a).unwrap().abs() < 1e-9);
}

// ----- cfid on real sets -----

#[test]
fn cfid_is_zero_for_identical_sets_small_for_two_splits_and_large_for_shifted_images() {
    let c = cache();
    let cfid = |args: &[&str]| eval_json(c, args).0["scores"]["cfid"].as_f64().unwrap();
    let same = cfid(&["--real", "bundled:test", "--real", "bundled:test", "--metric", "cfid", "--n", "500"]);
    assert!(same.abs() < 1e-6, "{same}");
    let (doc, _) =
        eval_json(c, &["--real", "bundled:train", "--real", "bundled:test", "--metric", "cfid", "--n", "500"]);
    let splits = doc["scores"]["cfid"].as_f64().unwrap();
    assert_eq!((doc["scores"]["n_reference"].as_u64(), doc["scores"]["n_compared"].as_u64()), (Some(500), Some(500)));
    assert_eq!(doc["settings"]["reference"], "bundled:train");
    assert_eq!(doc["settings"]["compared"], "bundled:test");
    let acc = doc["scores"]["classifier"]["accuracy"].as_f64().unwrap();
    // The same 1000 test images flipped upside down, as an IDX data set.
    let d = tempfile::tempdir().unwrap();
    let ds = fine_core::data::load("bundled", fine_core::data::Split::Test).unwrap();
    let mut flipped = Vec::with_capacity(ds.images.len());
    for img in ds.images.chunks(784) {
        img.chunks(28).rev().for_each(|row| flipped.extend_from_slice(row));
    }
    let idx = |dims: &[u32], data: &[u8]| {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v.extend_from_slice(data);
        v
    };
    let (img, lbl) = (d.path().join("images"), d.path().join("labels"));
    std::fs::write(&img, idx(&[1000, 28, 28], &flipped)).unwrap();
    std::fs::write(&lbl, idx(&[1000], &ds.labels)).unwrap();
    let other = format!("idx:{},{}", s(&img), s(&lbl));
    let shifted = cfid(&["--real", "bundled:train", "--real", &other, "--metric", "cfid", "--n", "500"]);
    // Measured (the classifier trained from seed 0 on 2 threads): 5.570, 142.35, accuracy
    // 0.857. The classifier is trained in the test, so float sums in another order on
    // another CPU may move it a little: 5 % (cFID) and 0.02 (accuracy).
    let near = |v: f64, want: f64, rel: f64| (v - want).abs() <= rel * want;
    assert!(near(splits, 5.570, 0.05), "bundled train vs test: {splits}, measured 5.570");
    assert!(near(shifted, 142.35, 0.05), "flipped images: {shifted}, measured 142.35");
    assert!((acc - 0.857).abs() <= 0.02, "classifier accuracy {acc}, measured 0.857");
}

#[test]
fn corrupt_cached_statistics_are_recomputed_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let mine = d.path().join("cache");
    std::fs::create_dir_all(mine.join("classifier")).unwrap();
    for f in std::fs::read_dir(cache().join("classifier")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, mine.join("classifier").join(f.file_name().unwrap())).unwrap();
    }
    let args = ["--real", "bundled:train", "--real", "bundled:test", "--metric", "cfid", "--n", "200"];
    let (first, err) = eval_json(&mine, &args);
    assert!(!err.contains("training the classifier"), "the copied classifier was not used:\n{err}");
    let stats: Vec<PathBuf> = std::fs::read_dir(mine.join("stats"))
        .unwrap()
        .flat_map(|e| std::fs::read_dir(e.unwrap().path()).unwrap().map(|f| f.unwrap().path()))
        .collect();
    assert_eq!(stats.len(), 2, "{stats:?}");
    let train = stats.iter().find(|p| s(p).ends_with("bundled-train-n200.safetensors")).unwrap();
    let mut bytes = std::fs::read(train).unwrap();
    let k = bytes.len() - 7;
    bytes[k] ^= 0x20;
    std::fs::write(train, &bytes).unwrap();
    let (second, err) = eval_json(&mine, &args);
    assert!(err.contains("warning") && err.contains(s(train)) && err.contains("checksum"), "{err}");
    assert_eq!(first["scores"]["cfid"], second["scores"]["cfid"]);
    // Rewritten: a third run reads it without a warning.
    let (_, err) = eval_json(&mine, &args);
    assert!(!err.contains("warning"), "{err}");
}

// ----- a trained run -----

#[test]
fn eval_of_a_run_samples_it_and_writes_json() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    ok_in(cache(), &["train", "--graph", "graphs/fmnist-tiny.ron", "--out", s(&run), "--steps", "2", "--batch", "2"]);
    let (doc, err) = eval_json(
        cache(),
        &["--run", s(&run), "--metric", "cfid", "--n", "30", "--steps", "4", "--sampler", "ddim", "--seed", "3"],
    );
    assert!(err.contains("sampling 30 images"), "{err}");
    let st = &doc["settings"];
    assert_eq!((st["mode"].as_str(), st["run"].as_str()), (Some("run"), Some(s(&run))));
    assert_eq!((st["sampler"].as_str(), st["steps"].as_u64(), st["seed"].as_u64()), (Some("ddim"), Some(4), Some(3)));
    assert_eq!(
        (st["reference"].as_str(), st["n"].as_u64(), st["checkpoint_step"].as_u64()),
        (Some("bundled:train"), Some(30), Some(2))
    );
    assert_eq!(st["weights"], "ema");
    let model = doc["scores"]["cfid"].as_f64().unwrap();
    // Two training steps make noise, far from real images at the same N.
    let (real, _) =
        eval_json(cache(), &["--real", "bundled:train", "--real", "bundled:test", "--metric", "cfid", "--n", "30"]);
    let real = real["scores"]["cfid"].as_f64().unwrap();
    assert!(model.is_finite() && model > 2.0 * real, "untrained model {model}, real test images {real}");
    // The table states N on every line.
    let (out, _) = ok_in(cache(), &["eval", "--run", s(&run), "--metric", "cfid", "--n", "12", "--steps", "2"]);
    let line = out.lines().find(|l| l.starts_with("FID (classifier features)")).expect(&out);
    assert!(line.trim_end().ends_with("12      12"), "{out}");
    // Inception weights are checked before anything is sampled.
    let missing = d.path().join("no-such-inception.safetensors");
    let e = fails_with(&[("FINE_INCEPTION", s(&missing))], &["eval", "--run", s(&run), "--metric", "fid", "--n", "8"]);
    assert!(e.contains(s(&missing)) && !e.contains("sampling"), "{e}");
    // A missing reference, or one of another image shape, is refused.
    let e = fails_with(&[], &["eval", "--run", s(&run), "--metric", "cfid", "--n", "8", "--ref", "idx:/no/such.idx"]);
    assert!(e.contains("/no/such.idx"), "{e}");
    let small = d.path().join("small.idx");
    std::fs::write(&small, [&[0u8, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 4][..], &[0; 16]].concat()).unwrap();
    let e = fails_with(
        &[],
        &["eval", "--run", s(&run), "--metric", "cfid", "--n", "1", "--ref", &format!("idx:{}", s(&small))],
    );
    assert!(e.contains("1×28×28") && e.contains("1×4×4"), "{e}");
}

// ----- bad input -----

#[test]
fn bad_input_is_a_clear_error() {
    let e = fails_with(&[], &["eval", "--real", "bundled:train", "--real", "bundled:test", "--metric", "fid,kid"]);
    assert!(e.contains("unknown metric \"kid\""), "{e}");
    let e = fails_with(
        &[],
        &["eval", "--real", "bundled:train", "--real", "bundled:test", "--metric", "cfid", "--n", "2000"],
    );
    assert!(e.contains("bundled:test has 1000 images, fewer than --n 2000"), "{e}");
    let e = fails_with(&[], &["eval", "--run", "/no/such/run", "--metric", "cfid", "--n", "5"]);
    assert!(e.contains("/no/such/run"), "{e}");
    assert!(fails_with(&[], &["eval", "--run", "/no/such/run"]).contains("--n is required"));
    assert!(fails_with(&[], &["eval", "--real", "bundled:test", "--n", "5"]).contains("--real twice"));
    let e =
        fails_with(&[], &["eval", "--real", "cifar:test", "--real", "bundled:test", "--metric", "cfid", "--n", "5"]);
    assert!(e.contains("unknown dataset \"cifar\""), "{e}");
    let e =
        fails_with(&[], &["eval", "--real", "bundled:test", "--real", "bundled:test", "--metric", "cfid", "--n", "1"]);
    assert!(e.contains("--n 1 is too small"), "{e}");
    let missing = "/no/such/dir/fid-inception.safetensors";
    let e = fails_with(
        &[("FINE_INCEPTION", missing)],
        &["eval", "--real", "bundled:train", "--real", "bundled:test", "--metric", "fid", "--n", "10"],
    );
    assert!(e.contains(missing) && e.contains("run scripts/fetch-inception.sh"), "{e}");
}

// ----- Inception metrics (need the weights) -----

#[test]
fn inception_metrics_on_real_sets() {
    let path = Inception::default_path();
    if !path.is_file() {
        panic!("{}: FID Inception weights not found; run scripts/fetch-inception.sh", path.display());
    }
    let c = cache();
    let all = ["--metric", "fid,sfid,pr", "--n", "30"];
    let (same, _) = eval_json(c, &[&["--real", "bundled:test", "--real", "bundled:test"][..], &all].concat());
    let sc = &same["scores"];
    assert!(sc["fid"].as_f64().unwrap().abs() < 1e-6 && sc["sfid"].as_f64().unwrap().abs() < 1e-6, "{sc}");
    assert_eq!((sc["precision"].as_f64(), sc["recall"].as_f64()), (Some(1.0), Some(1.0)));
    assert!(sc["inception"].as_str().unwrap().starts_with("inception-"), "{sc}");
    let (other, _) = eval_json(c, &[&["--real", "bundled:train", "--real", "bundled:test"][..], &all].concat());
    let sc = &other["scores"];
    let (fid, sfid) = (sc["fid"].as_f64().unwrap(), sc["sfid"].as_f64().unwrap());
    // Measured on bundled train vs test, N = 30: FID 150.7528, sFID 286.2930 (no training in
    // between: only the order of f32 sums can move them), precision 28/30, recall 22/30.
    assert!((fid - 150.7528).abs() < 0.05 && (sfid - 286.2930).abs() < 0.1, "{sc}");
    let count = |k: &str| sc[k].as_f64().unwrap() * 30.0;
    assert!((count("precision") - 28.0).abs() < 1e-9 && (count("recall") - 22.0).abs() < 1e-9, "{sc}");
}
