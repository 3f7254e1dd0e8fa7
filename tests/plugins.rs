//! Plugins end to end: built-ins listed and described; third-party sampler and
//! strategy crates (`examples/`) built as cdylibs, loaded by path or from
//! `$FINE_PLUGIN_PATH`, listed and run; broken, mismatched and clashing
//! libraries refused or reported without taking the host down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fine"));
    c.args(args).current_dir(root()).env_remove("FINE_PLUGIN_PATH").env("HOME", "/nonexistent-fine-home");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running fine")
}

fn ok(args: &[&str]) -> String {
    let o = fine(args, &[]);
    assert!(o.status.success(), "fine {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fails(args: &[&str]) -> String {
    let o = fine(args, &[]);
    assert_eq!(o.status.code(), Some(1), "fine {args:?} should fail: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Builds the example plugins and the `ddpm` built-in as cdylibs (once), in a
/// target folder of their own so the outer `cargo test` is not blocked.
fn libs() -> &'static (PathBuf, PathBuf, PathBuf, PathBuf) {
    static L: OnceLock<(PathBuf, PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    L.get_or_init(|| {
        let target = root().join("target/plugin-tests");
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "fine-example-heun", "-p", "fine-example-depth-interp"])
            .args(["-p", "fine-sampler-ddpm", "--features", "fine-sampler-ddpm/dylib"])
            .args(["-p", "fine-strategy-stitch", "--features", "fine-strategy-stitch/dylib"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root())
            .status()
            .expect("running cargo");
        assert!(st.success(), "building the plugin libraries failed");
        let lib = |n: &str| {
            target.join("release").join(format!("{}{n}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
        };
        (
            lib("fine_example_heun"),
            lib("fine_example_depth_interp"),
            lib("fine_sampler_ddpm"),
            lib("fine_strategy_stitch"),
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn builtins_are_listed_and_described() {
    let out = ok(&["plugins", "list"]);
    for n in ["ddpm", "ddim", "dpm-solver", "euler", "scratch"] {
        assert!(out.lines().any(|l| l.starts_with(n) && l.ends_with("built-in")), "{n} missing:\n{out}");
    }
    let info = ok(&["plugins", "info", "ddim"]);
    assert!(info.contains("eta") && info.contains("spacing"), "{info}");
    assert!(fails(&["plugins", "info", "nope"]).contains("no plugin named `nope`"));
}

#[test]
fn third_party_sampler_and_strategy_load_list_and_run() {
    let (heun, interp, _, _) = libs();
    let d = tempfile::tempdir().unwrap();
    let list = ok(&["--plugin", s(heun), "--plugin", s(interp), "plugins", "list"]);
    assert!(list.contains("heun") && list.contains("libfine_example_heun"), "{list}");
    assert!(list.contains("depth-interp"), "{list}");
    // The strategy: ancestry → learngene → deeper descendant → ordinary training.
    let (anc, lg, desc) = (d.path().join("anc"), d.path().join("lg.safetensors"), d.path().join("desc"));
    let g3 = d.path().join("d3.ron");
    let tiny = std::fs::read_to_string(root().join("graphs/fmnist-tiny.ron")).unwrap();
    std::fs::write(&g3, tiny.replace("depth: 2", "depth: 3").replace("\"fmnist-tiny\"", "\"tiny-d3\"")).unwrap();
    let p = ["--plugin", s(interp)];
    ok(&[
        &p[..],
        &["pretrain", "--strategy", "depth-interp", "--graph", "graphs/fmnist-tiny.ron"],
        &["--out", s(&anc), "--steps", "3", "--batch", "4"],
    ]
    .concat());
    ok(&[&p[..], &["learngene", "extract", "--run", s(&anc), "--out", s(&lg)]].concat());
    assert!(ok(&[&p[..], &["learngene", "info", s(&lg)]].concat()).contains("depth-interp"));
    ok(&[&p[..], &["init", "--learngene", s(&lg), "--graph", s(&g3), "--out", s(&desc)]].concat());
    ok(&["train", "--from", s(&desc), "--steps", "2", "--batch", "4"]);
    assert!(desc.join("train/checkpoint.safetensors").exists());
    // Without the plugin the learngene cannot be used, and says why.
    assert!(fails(&["init", "--learngene", s(&lg), "--graph", s(&g3), "--out", s(&d.path().join("x"))])
        .contains("depth-interp"));
    // The sampler, from $FINE_PLUGIN_PATH (a folder).
    let dir = d.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(heun, dir.join(heun.file_name().unwrap())).unwrap();
    let png = d.path().join("h.png");
    let o = fine(
        &["sample", "--run", s(&desc.join("train")), "--n", "2", "--steps", "4", "--sampler", "heun", "--out", s(&png)],
        &[("FINE_PLUGIN_PATH", s(&dir))],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(png.exists());
    // A panic inside the plugin is an error; the host exits cleanly.
    let e = fails(&[
        "--plugin",
        s(heun),
        "sample",
        "--run",
        s(&desc.join("train")),
        "--n",
        "1",
        "--steps",
        "2",
        "--sampler",
        "heun",
        "--sampler-opts",
        "fail=panic",
        "--out",
        s(&png),
    ]);
    assert!(e.contains("error: sampler `heun`: plugin panicked: heun was asked to panic"), "{e}");
    let e = fails(&[
        "--plugin",
        s(heun),
        "sample",
        "--run",
        s(&desc.join("train")),
        "--n",
        "1",
        "--sampler",
        "heun",
        "--sampler-opts",
        "fial=1",
        "--out",
        s(&png),
    ]);
    assert!(e.contains("no option `fial`"), "{e}");
}

#[test]
fn builtin_as_dylib_clash_is_reported_not_preferred() {
    let (_, _, ddpm, _) = libs();
    let o = fine(&["--plugin", s(ddpm), "plugins", "list"], &[]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success());
    assert!(err.contains("plugin `ddpm` from") && err.contains("same name"), "{err}");
    assert!(out.lines().any(|l| l.starts_with("ddpm") && l.ends_with("built-in")), "{out}");
}

#[test]
fn broken_and_mismatched_libraries_are_refused() {
    let d = tempfile::tempdir().unwrap();
    // A shared library with the right symbol name but another ABI version, and one with no symbols.
    let c = d.path().join("bad.c");
    std::fs::write(&c, "unsigned fine_plugin_abi_version(void) { return 999; }\nint unrelated(void) { return 0; }\n")
        .unwrap();
    let bad = d.path().join("libbad.so");
    let st = Command::new("cc").args(["-shared", "-fPIC", "-o", s(&bad), s(&c)]).status().expect("cc");
    assert!(st.success());
    let e = fails(&["--plugin", s(&bad), "plugins", "list"]);
    assert!(e.contains("libbad.so") && e.contains("999") && e.contains("ABI version 3"), "{e}");
    // A plugin of ABI 1 (before the optional strategy hooks crossed the boundary).
    std::fs::write(&c, "unsigned fine_plugin_abi_version(void) { return 1; }\n").unwrap();
    let v1 = d.path().join("libv1.so");
    assert!(Command::new("cc").args(["-shared", "-fPIC", "-o", s(&v1), s(&c)]).status().unwrap().success());
    let e = fails(&["--plugin", s(&v1), "plugins", "list"]);
    assert!(e.contains("libv1.so") && e.contains("version 1 ") && e.contains("ABI version 3"), "{e}");
    std::fs::write(&c, "int unrelated(void) { return 0; }\n").unwrap();
    let none = d.path().join("libnone.so");
    assert!(Command::new("cc").args(["-shared", "-fPIC", "-o", s(&none), s(&c)]).status().unwrap().success());
    assert!(fails(&["--plugin", s(&none), "plugins", "list"]).contains("is not a fine plugin"));
    let junk = d.path().join("libjunk.so");
    std::fs::write(&junk, b"not an ELF file").unwrap();
    assert!(fails(&["--plugin", s(&junk), "plugins", "list"]).contains("libjunk.so"));
    assert!(fails(&["--plugin", "/no/such/plugin.so", "plugins", "list"]).contains("/no/such/plugin.so"));
    let o = fine(&["plugins", "list"], &[("FINE_PLUGIN_PATH", "/no/such/dir")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("FINE_PLUGIN_PATH"));
    // A truncated library is refused before the loader maps it (no SIGBUS).
    let bytes = std::fs::read(&none).unwrap();
    let cut = d.path().join("libcut.so");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["--plugin", s(&cut), "plugins", "list"]);
    assert!(e.contains("libcut.so") && e.contains("truncated"), "{e}");
    // From the working directory `d`, in a process whose commands run there.
    let in_d = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fine"));
        c.args(args).current_dir(d.path()).env_remove("FINE_PLUGIN_PATH").env_remove("XDG_DATA_HOME");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // A bare file name is the file in the working directory, never the system library search:
    // LD_LIBRARY_PATH holds a `libnone.so` of ABI 999, the working directory the symbol-less one.
    let other = d.path().join("ld");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(&bad, other.join("libnone.so")).unwrap();
    let o = in_d(&["--plugin", "libnone.so", "plugins", "list"], &[("LD_LIBRARY_PATH", s(&other))]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("is not a fine plugin") && !e.contains("999"), "{e}");
    // An empty HOME or a relative XDG_DATA_HOME never makes the working directory the per-user folder.
    for user in ["fine/plugins", ".local/share/fine/plugins"] {
        std::fs::create_dir_all(d.path().join(user)).unwrap();
        std::fs::copy(&junk, d.path().join(user).join("libjunk.so")).unwrap();
    }
    for env in [[("HOME", ""), ("XDG_DATA_HOME", ".")], [("HOME", "."), ("XDG_DATA_HOME", "")]] {
        let o = in_d(&["plugins", "list"], &env);
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && !out.contains("libjunk"), "{env:?}: {out}");
    }
}

/// ABI 2: the optional strategy hooks cross the C boundary. `stitch` built as a
/// drop-in library (its `dylib` feature) answers `pool`, `descendant_graph`, `probes`
/// and `descendant_probed` exactly as the built-in does, on a real stitch learngene.
#[test]
fn stitch_as_a_drop_in_answers_every_hook_as_the_built_in() {
    use fine_plugin_api::{Options, Plugin, Strategy};
    let Plugin::Strategy(drop_in) = fine_core::plugin::dynlib::load(&libs().3).unwrap() else {
        panic!("the stitch library is not a strategy")
    };
    let built_in = fine_strategy_stitch::Stitch;
    assert_eq!(drop_in.info(), built_in.info());
    let d = tempfile::tempdir().unwrap();
    let (anc, lg) = (d.path().join("anc"), d.path().join("lg.safetensors"));
    let tiny = root().join("graphs/fmnist-tiny.ron");
    let o = "pool=1:2,distill_steps=2";
    ok(&[
        "pretrain",
        "--strategy",
        "stitch",
        "--graph",
        s(&tiny),
        "--out",
        s(&anc),
        "--strategy-opts",
        o,
        "--steps",
        "2",
        "--batch",
        "4",
    ]);
    ok(&["learngene", "extract", "--run", s(&anc), "--out", s(&lg)]);
    let opts = Options::parse(&built_in.info(), o).unwrap();
    // pool: from the trained ancestry.
    let ck = fine_core::checkpoint::Checkpoint::load(&anc.join("checkpoint.safetensors")).unwrap();
    let leaves = fine_core::strategy::values_as_tensors(&ck.spec, &ck.ema).unwrap();
    let (a, b) = (
        drop_in.pool(&ck.graph, &ck.spec, &leaves, &opts).unwrap(),
        built_in.pool(&ck.graph, &ck.spec, &leaves, &opts).unwrap(),
    );
    assert!(a == b && a.len() == 2, "pool: {} vs {} members", a.len(), b.len());
    // descendant_graph, probes, descendant_probed: a depth-3 descendant (a stitched one).
    let l = fine_core::strategy::load_learngene(&lg).unwrap();
    let target = fine_core::graph::load::from_file(&root().join("graphs/fmnist-tiny-d3.ron")).unwrap();
    let g = drop_in.descendant_graph(&l, &target, &opts).unwrap();
    assert_eq!(g, built_in.descendant_graph(&l, &target, &opts).unwrap());
    assert!(g.stitch_after.is_some(), "depth 3 from members of 1 and 2 blocks is stitched");
    let probes = drop_in.probes(&l, &g, &opts).unwrap();
    assert_eq!(probes, built_in.probes(&l, &g, &opts).unwrap());
    assert!(!probes.probes.is_empty());
    // Features as the host would compute them: (images·T, D) per probe.
    let mut features = fine_plugin_api::Tensors::new();
    for (k, p) in probes.probes.iter().enumerate() {
        let n = probes.images * p.graph.tokens() * p.graph.hidden;
        let data: Vec<f32> = (0..n).map(|i| ((i * 7 + k * 13) % 17) as f32 / 17.0 - 0.5).collect();
        let t = fine_plugin_api::tensors::Tensor::new(vec![probes.images * p.graph.tokens(), p.graph.hidden], data)
            .unwrap();
        features.insert(p.name.clone(), t);
    }
    let weights = fine_core::strategy::weights_of(&fine_core::model::Dit::new(&g));
    let x = drop_in.descendant_probed(&l, &g, &weights, &opts, &features).unwrap();
    let y = built_in.descendant_probed(&l, &g, &weights, &opts, &features).unwrap();
    assert!(x.spec == y.spec && x.values == y.values && x.init_steps == y.init_steps, "descendant_probed differs");
}
