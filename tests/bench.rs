//! `fine bench learngene`: the quick config end to end (machinery, not
//! science), caching, and configs refused before any training.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `fine` with its own cache (the classifier behind `cfid` is trained there once).
fn fine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fine"))
        .args(args)
        .current_dir(root())
        .env("FINE_CACHE_DIR", test_cache("bench-cache"))
        .output()
        .expect("running fine")
}

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

fn ok(args: &[&str]) -> (String, String) {
    let o = fine(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "fine {args:?} failed:\n{err}");
    (String::from_utf8_lossy(&o.stdout).to_string(), err)
}

fn fails(args: &[&str]) -> String {
    let o = fine(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "fine {args:?} should fail cleanly; stderr:\n{err}");
    assert!(!err.contains("panicked"), "fine {args:?} panicked:\n{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn quick_config_runs_every_strategy_and_reuses_finished_work() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("bench");
    let (table, _) = ok(&["bench", "learngene", "--config", "benches/learngene-quick.ron", "--out", s(&out)]);
    // Every row of the config has a line in the table, every cell a number.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows: Vec<String> = json["config"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["strategy"].as_str().unwrap().to_string())
        .collect();
    let (sizes, seeds) =
        (json["config"]["sizes"].as_array().unwrap().len(), json["config"]["seeds"].as_array().unwrap().len());
    assert!(rows.len() >= 2 && rows.contains(&"fine".to_string()) && rows.contains(&"scratch".to_string()));
    assert_eq!(json["runs"].as_array().unwrap().len(), rows.len() * sizes * seeds);
    for r in json["runs"].as_array().unwrap() {
        let last = r["last"].as_f64().unwrap();
        assert!(last.is_finite() && last > 0.0, "{r}");
        assert!(r["curve"].as_array().unwrap().len() >= 2, "{r}");
    }
    let all = &table[table.find("### All rows").unwrap_or_else(|| panic!("{table}"))..];
    let first_size = json["config"]["sizes"][0].as_str().unwrap();
    let first_size = Path::new(first_size).file_stem().unwrap().to_str().unwrap();
    for row in &rows {
        let line = all.lines().find(|l| l.starts_with(&format!("| {row} |"))).unwrap_or_else(|| panic!("{table}"));
        assert!(line.contains(" ± ") && !line.contains('—'), "{line}");
        // The first size's cell is the mean over the seeds' final values.
        let v: Vec<f64> = json["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["row"] == row.as_str() && r["size"] == first_size)
            .map(|r| r["last"].as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), seeds);
        let mean = format!("{:.4} ± ", v.iter().sum::<f64>() / v.len() as f64);
        assert!(line.split(" | ").nth(2).is_some_and(|c| c.starts_with(&mean)), "{line} does not start with {mean}");
    }
    // Every ancestry's own score, live and EMA.
    for (name, a) in json["ancestries"].as_object().unwrap() {
        assert!(a["live"].as_f64().unwrap() > 0.0 && a["ema"].as_f64().unwrap() > 0.0, "{name}: {a}");
    }
    assert!(table.contains("### Ancestries") && json["ancestries"].as_object().unwrap().contains_key("fine"));
    // FINE trains σ (and biases) only during its initialization phase; scratch has none.
    let fine_run = json["runs"].as_array().unwrap().iter().find(|r| r["row"] == "fine").unwrap();
    assert!(fine_run["init_trainable"].as_u64().unwrap() > 0 && fine_run["init_steps"].as_u64().unwrap() == 4);
    // `init.steps` sets the length of an initialization phase; strategies without one get none.
    for r in json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| ["tleg", "sws", "heur", "stitch"].contains(&r["row"].as_str().unwrap()))
    {
        assert_eq!((r["init_steps"].as_u64(), r["init_trainable"].as_u64()), (Some(0), Some(0)), "{r}");
    }
    for f in ["table.md", "curve-fmnist-tiny-d1.png", "curve-fmnist-tiny-d3.svg"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let png = image::open(out.join("curve-fmnist-tiny-d3.png")).unwrap();
    assert!(png.width() > 100);
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.starts_with("`quick` (complete)") && summary.lines().filter(|l| l.starts_with("| ")).count() == 8,
        "{summary}"
    );
    let bars = std::fs::read_to_string(out.join("bars-fmnist-tiny-d3.svg")).unwrap();
    assert!(bars.contains("scratch") && bars.contains("stitch"), "{bars}");
    let grid = image::open(out.join("runs/fine-fmnist-tiny-d3-s1/samples.png")).unwrap();
    assert_eq!(grid.width(), 2 + 10 * (84 + 2), "10 classes of 28-px samples at 3×");
    // A second invocation finds the ancestries and the finished runs.
    let (table2, err2) = ok(&["bench", "learngene", "--config", "benches/learngene-quick.ron", "--out", s(&out)]);
    assert!(err2.contains("cached") && err2.contains("done before"), "{err2}");
    assert_eq!(table, table2);
    // Its results.json, imported into another folder, stands for the runs
    // there: the report is the same without training anything.
    let out2 = d.path().join("b2");
    let results = out.join("results.json");
    let cache = out.join("cache");
    let args =
        ["bench", "learngene", "--config", "benches/learngene-quick.ron", "--out", s(&out2), "--cache", s(&cache)];
    let (table3, err3) = ok(&[&args[..], &["--import", s(&results), "--report-only"]].concat());
    assert!(err3.contains("runs taken from"), "{err3}");
    assert_eq!(table, table3.replace(s(&out2), s(&out)));
    // The report of another config is refused.
    let other = config_with(d.path(), r#"(strategy: "scratch")"#);
    let e = fails(&["bench", "learngene", "--config", s(&other), "--out", s(&out2), "--import", s(&results)]);
    assert!(e.contains("--import") && e.contains("another config"), "{e}");
}

fn config_with(d: &Path, rows: &str) -> PathBuf {
    let text = format!(
        r#"(
    name: "bad",
    data: "bundled",
    ancestry: (graph: "graphs/fmnist-tiny.ron", steps: 2, batch: 2, lr: 1e-3),
    rows: [{rows}],
    sizes: ["graphs/fmnist-tiny-d1.ron", "graphs/fmnist-tiny-d3.ron"],
    init: (batch: 2, lr: 1e-2),
    train: (steps: Some(1), batch: 2, lr: 1e-3),
    seeds: [0],
    eval: (metric: Heldout, n: 8),
)"#
    );
    let p = d.join("bad.ron");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_configs_are_refused_before_any_training() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let run =
        |rows: &str| fails(&["bench", "learngene", "--config", s(&config_with(d.path(), rows)), "--out", s(&out)]);
    let e = run(r#"(strategy: "fine"), (strategy: "no-such-strategy")"#);
    assert!(e.contains("no-such-strategy") && e.contains("bad.ron"), "{e}");
    let e = run(r#"(strategy: "fine", opts: "sigma_init=cubic")"#);
    assert!(e.contains("sigma_init"), "{e}");
    let e = run(r#"(strategy: "fine", ancestry_opts: "rank_qkv=1000")"#);
    assert!(e.contains("rank_qkv"), "{e}");
    // Sizes a strategy cannot build: heur's k exceeds a depth; an sws stage mapping longer than the depth.
    let e = run(r#"(strategy: "heur", ancestry_opts: "k=2")"#);
    assert!(e.contains("heur") && e.contains("fmnist-tiny-d1"), "{e}");
    let e = run(r#"(strategy: "stitch", ancestry_opts: "pool=1")"#);
    assert!(e.contains("stitch") && e.contains("fmnist-tiny-d3") && e.contains("cannot be built"), "{e}");
    let e = run(r#"(strategy: "sws", opts: "layers_source=0:0:0:0")"#);
    assert!(e.contains("sws") && e.contains("fmnist-tiny-d1") && e.contains("layers_source"), "{e}");
    // A learngene made by another strategy.
    let lg = d.path().join("lg.safetensors");
    let anc = d.path().join("anc");
    ok(&[
        "pretrain",
        "--strategy",
        "scratch",
        "--graph",
        "graphs/fmnist-tiny.ron",
        "--out",
        s(&anc),
        "--steps",
        "1",
        "--batch",
        "2",
    ]);
    ok(&["learngene", "extract", "--run", s(&anc), "--out", s(&lg)]);
    let e = run(&format!(r#"(strategy: "fine", learngene: Some("{}"))"#, s(&lg)));
    assert!(e.contains("made by `scratch`"), "{e}");
    // Malformed RON names the file and position.
    std::fs::write(d.path().join("bad.ron"), "(name: \"x\", data: 3)").unwrap();
    let e = fails(&["bench", "learngene", "--config", s(&d.path().join("bad.ron")), "--out", s(&out)]);
    assert!(e.contains("bad.ron:1:"), "{e}");
    // Nothing was trained.
    assert!(!out.join("runs").exists() && !out.join("cache").exists());
}

/// A graph name is never a path: a size named `/../../../victim` trains inside `--out` only
/// (before, its run folder `OUT/runs/scratch-/../../../victim-s0` was the folder beside `OUT`,
/// removed as an "unfinished run").
#[test]
fn graph_names_cannot_leave_the_output_folder() {
    let d = tempfile::tempdir().unwrap();
    let tiny =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/fmnist-tiny-d1.ron")).unwrap();
    let evil = d.path().join("evil.ron");
    let name = tiny.lines().find(|l| l.contains("name:")).unwrap().to_string();
    std::fs::write(&evil, tiny.replace(&name, "    name: \"/../../../victim\",")).unwrap();
    let victim = d.path().join("victim-s0");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"x").unwrap();
    let text = format!(
        r#"(
    name: "evil",
    data: "bundled",
    ancestry: (graph: "graphs/fmnist-tiny.ron", steps: 1, batch: 2, lr: 1e-3),
    rows: [(strategy: "scratch")],
    sizes: ["{}"],
    init: (batch: 2, lr: 1e-3),
    train: (steps: Some(1), batch: 2, lr: 1e-3),
    seeds: [0],
    eval: (metric: Heldout, n: 8),
)"#,
        s(&evil)
    );
    let cfg = d.path().join("evil-bench.ron");
    std::fs::write(&cfg, text).unwrap();
    let out = d.path().join("out");
    ok(&["bench", "learngene", "--config", s(&cfg), "--out", s(&out)]);
    assert!(victim.join("keep").exists(), "the folder beside --out was removed");
    let runs: Vec<String> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(runs, ["scratch-__________victim-s0"]);
    assert!(out.join("curve-__________victim.svg").exists());
    let mut names: Vec<String> =
        std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    assert_eq!(names, ["evil-bench.ron", "evil.ron", "out", "victim-s0"]);
}
