//! Hostile input, generated: a few hundred crafted graphs, IDX files,
//! checkpoints, learngenes, plugin files and command-line values, each given to
//! the real `fine` binary in a fresh working folder. Every case must end with
//! exit 0 (accepted) or 1/2 (refused, with a message naming the file or flag),
//! never a panic, a signal or a hang; under an address-space limit (so an
//! unbounded allocation would abort the case); writing nothing outside the
//! output it names and changing none of its inputs. The counts per family are
//! printed (`cargo test --test hostile -- --nocapture`).

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// Address-space limit of every case, KiB (a tiny training step needs < 1 GiB).
const ULIMIT_KIB: u64 = 3 << 20;
/// A case still running after this many seconds is a hang.
const HANG_S: u64 = 120;

/// Debug names of library errors that must not reach a user as they are.
const DEBUG_WORDS: &[&str] = &[
    "HeaderTooSmall",
    "InvalidHeaderLength",
    "MetadataIncompleteBuffer",
    "InvalidHeaderDeserialization",
    "HeaderTooLarge",
    "TensorInvalidInfo",
    "InvalidOffset(",
    "InvalidTensorView(",
    "ValidationOverflow",
    "Os { code",
    "Custom { kind",
];

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p.clone());
            }
            m.insert(p, (meta.len(), meta.modified().ok()));
        }
    }
    m
}

/// Runs the cases of one family in `work` and keeps their counts.
struct Fuzz {
    work: tempfile::TempDir,
    /// family → (accepted, refused)
    counts: BTreeMap<&'static str, (usize, usize)>,
}

impl Fuzz {
    fn new() -> Fuzz {
        Fuzz { work: tempfile::tempdir().unwrap(), counts: BTreeMap::new() }
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// Runs `fine args` in the work folder. `out` is the only path it may write
    /// under (None: nowhere); a refusal must name one of `names`; `must_fail`
    /// cases may not be accepted.
    fn case<S: AsRef<str> + std::fmt::Debug>(
        &mut self,
        family: &'static str,
        args: &[String],
        out: Option<&Path>,
        names: &[S],
        must_fail: bool,
    ) {
        let before = snapshot(self.dir());
        let o = Command::new("timeout")
            .args([
                "-s",
                "KILL",
                &HANG_S.to_string(),
                "sh",
                "-c",
                &format!("ulimit -v {ULIMIT_KIB}; exec \"$0\" \"$@\""),
            ])
            .arg(env!("CARGO_BIN_EXE_fine"))
            .args(args)
            .current_dir(self.dir())
            .env("HOME", self.dir())
            .env_remove("FINE_PLUGIN_PATH")
            .env_remove("XDG_DATA_HOME")
            .output()
            .expect("running fine");
        let err = String::from_utf8_lossy(&o.stderr);
        let what = format!("[{family}] fine {}", args.join(" "));
        let code = o.status.code();
        assert!(
            matches!(code, Some(0..=2)),
            "{what}: ended by {:?} (137: killed, a hang or a signal)\n{err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{what}: panicked\n{err}");
        let refused = code != Some(0);
        assert!(!(must_fail && !refused), "{what}: accepted\n{err}");
        if refused {
            assert!(
                names.iter().any(|n| err.contains(n.as_ref())),
                "{what}: the message names none of {names:?}:\n{err}"
            );
            // Rust debug formatting is no explanation (`HeaderTooSmall`, `Os { code: 2, … }`).
            let debug = DEBUG_WORDS.iter().find(|w| err.contains(*w));
            assert!(debug.is_none(), "{what}: the message shows {debug:?} unexplained:\n{err}");
        }
        let after = snapshot(self.dir());
        let outside = |p: &&PathBuf| out.map_or(true, |o| !p.starts_with(o));
        for (p, m) in after.iter().filter(|(p, _)| outside(p)) {
            assert_eq!(before.get(p), Some(m), "{what}: wrote or changed {} outside its output", p.display());
        }
        for p in before.keys().filter(outside) {
            assert!(after.contains_key(p), "{what}: removed {}", p.display());
        }
        // An output the case made is cleared for the next one.
        if let Some(o) = out.filter(|o| !before.contains_key(*o)) {
            let _ = std::fs::remove_dir_all(o);
            let _ = std::fs::remove_file(o);
        }
        let c = self.counts.entry(family).or_default();
        if refused {
            c.1 += 1
        } else {
            c.0 += 1
        }
    }

    fn report(&self) {
        let mut total = (0, 0);
        for (f, (a, r)) in &self.counts {
            eprintln!("{f:>12}: {:>4} cases, {a:>3} accepted, {r:>4} refused", a + r);
            total = (total.0 + a, total.1 + r);
        }
        eprintln!("{:>12}: {:>4} cases, {:>3} accepted, {:>4} refused", "all", total.0 + total.1, total.0, total.1);
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().to_string()
}

// ---------------------------------------------------------------------------
// graphs
// ---------------------------------------------------------------------------

fn graphs(f: &mut Fuzz) {
    let base = std::fs::read_to_string(root().join("graphs/fmnist-tiny.ron")).unwrap();
    let fields = [
        "channels: 1",
        "height: 28",
        "width: 28",
        "patch_size: 4",
        "hidden: 32",
        "depth: 2",
        "heads: 2",
        "mlp_ratio: 2.0",
        "num_classes: 10",
        "label_dropout: 0.1",
        "norm_eps: 1e-6",
        "freq_dim: 256",
        "max_period: 10000.0",
        "kind: AdaLnZero",
        "mlp_act: GeluTanh",
        "qkv_bias: true",
    ];
    let values = [
        "0",
        "-1",
        "3",
        "1e30",
        "NaN",
        "inf",
        "-inf",
        "18446744073709551615",
        "18446744073709551616",
        "4294967297",
        "1e-300",
        "\"x\"",
        "()",
    ];
    let out = f.dir().join("run");
    let mut k = 0;
    for field in fields {
        let key = field.split(':').next().unwrap();
        for v in values {
            let text = base.replacen(field, &format!("{key}: {v}"), 1);
            assert_ne!(text, base);
            k += 1;
            let g = f.dir().join(format!("g{k}.ron"));
            std::fs::write(&g, &text).unwrap();
            let gs = g.to_str().unwrap().to_string();
            f.case("graph", &["graph".into(), "check".into(), gs.clone()], None, &[&name_of(&g)], false);
            // What `graph check` accepts must train or be refused cleanly too.
            let train = ["train", "--graph", &gs, "--out", out.to_str().unwrap(), "--steps", "1", "--batch", "2"];
            f.case("graph", &strs(&train), Some(&out), &[&name_of(&g), "expects"], false);
            std::fs::remove_file(&g).unwrap();
        }
    }
    // Cut anywhere: never a graph.
    for cut in (0..base.len()).step_by(base.len() / 25).skip(1) {
        let g = f.dir().join("cut.ron");
        std::fs::write(&g, &base.as_bytes()[..cut]).unwrap();
        f.case("graph", &strs(&["graph", "check", g.to_str().unwrap()]), None, &["cut.ron"], true);
    }
    std::fs::write(f.dir().join("bin.ron"), [0xffu8, 0xfe, 0, 1]).unwrap();
    f.case("graph", &strs(&["graph", "check", "bin.ron"]), None, &["bin.ron"], true);
    f.case("graph", &strs(&["graph", "check", "/dev/zero"]), None, &["/dev/zero"], true);
    f.case("graph", &strs(&["graph", "check", "."]), None, &["."], true);
}

// ---------------------------------------------------------------------------
// IDX data files
// ---------------------------------------------------------------------------

fn idx_bytes(magic0: u8, dtype: u8, dims: &[u32], payload: usize) -> Vec<u8> {
    let mut b = vec![magic0, 0, dtype, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(std::iter::repeat(7u8).take(payload));
    b
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn idx_files(f: &mut Fuzz) {
    let out = f.dir().join("run");
    let dims: [&[u32]; 9] = [
        &[2, 28, 28],
        &[0, 28, 28],
        &[2, 0, 28],
        &[2, 27, 28],
        &[1 << 31, 28, 28],
        &[u32::MAX, u32::MAX, u32::MAX],
        &[2, 28],
        &[2, 28, 28, 1, 1],
        &[],
    ];
    let mut cases = Vec::new();
    for d in dims {
        let full = d.iter().map(|&x| x as usize).product::<usize>().min(2 * 28 * 28);
        for (magic0, dtype) in [(0u8, 0x08u8), (1, 0x08), (0, 0x0D), (0, 0x00), (0, 0xFF)] {
            for payload in [full, full / 2, full + 3] {
                cases.push(idx_bytes(magic0, dtype, d, payload));
            }
        }
    }
    cases.push(vec![]);
    cases.push(vec![0, 0, 8]);
    for (i, c) in cases.iter().enumerate() {
        for gz in [false, true] {
            let p = f.dir().join(if gz { format!("d{i}.idx.gz") } else { format!("d{i}.idx") });
            std::fs::write(&p, if gz { gzip(c) } else { c.clone() }).unwrap();
            let data = format!("idx:{}", p.to_str().unwrap());
            let args = ["train", "--graph", "graphs/fmnist-tiny.ron", "--out", out.to_str().unwrap(), "--data", &data];
            let mut args = strs(&args);
            args[2] = root().join("graphs/fmnist-tiny.ron").to_str().unwrap().into();
            args.extend(strs(&["--steps", "1", "--batch", "2"]));
            f.case("idx", &args, Some(&out), &[&name_of(&p)], false);
            std::fs::remove_file(&p).unwrap();
        }
    }
    // A gzip bomb: 64 MiB of zeros behind a header that promises 10⁵ images of 1000×1000.
    let mut bomb = idx_bytes(0, 0x08, &[100_000, 1000, 1000], 0);
    bomb.extend(std::iter::repeat(0u8).take(64 << 20));
    let p = f.dir().join("bomb.idx.gz");
    std::fs::write(&p, gzip(&bomb)).unwrap();
    let tiny = root().join("graphs/fmnist-tiny.ron");
    let args = ["train", "--graph", tiny.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let mut a = strs(&args);
    a.extend(strs(&["--data", &format!("idx:{}", p.to_str().unwrap()), "--steps", "1"]));
    f.case("idx", &a, Some(&out), &["bomb.idx.gz"], true);
    // Good images, hostile labels.
    let good = f.dir().join("good.idx");
    std::fs::write(&good, idx_bytes(0, 0x08, &[2, 28, 28], 2 * 28 * 28)).unwrap();
    for (i, l) in [idx_bytes(0, 0x08, &[3], 3), idx_bytes(0, 0x08, &[2, 2], 4), idx_bytes(0, 0x08, &[2], 1), vec![1]]
        .iter()
        .enumerate()
    {
        let p = f.dir().join(format!("l{i}.idx"));
        std::fs::write(&p, l).unwrap();
        let mut a = strs(&args);
        a.extend(strs(&["--data", &format!("idx:{},{}", good.to_str().unwrap(), p.to_str().unwrap()), "--steps", "1"]));
        f.case("idx", &a, Some(&out), &[&name_of(&p)], true);
    }
}

// ---------------------------------------------------------------------------
// checkpoints and learngenes (safetensors files)
// ---------------------------------------------------------------------------

/// Damaged copies of a safetensors file: cut, bytes flipped, the header's
/// length and its tensors' shapes, offsets and metadata rewritten.
fn damaged(good: &[u8], rng: &mut rand_chacha::ChaCha8Rng) -> Vec<Vec<u8>> {
    let n = good.len();
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut v = Vec::new();
    for cut in [0, 1, 7, 8, 9, 8 + hlen / 2, 8 + hlen, 8 + hlen + 1, n / 2, n - 1] {
        v.push(good[..cut].to_vec());
    }
    for _ in 0..24 {
        let mut b = good.to_vec();
        // Mostly in the header, where a flip changes meaning rather than a value.
        let at = if rng.gen_bool(0.75) { rng.gen_range(8..8 + hlen) } else { rng.gen_range(8 + hlen..n) };
        b[at] ^= 1 << rng.gen_range(0..8);
        v.push(b);
    }
    for len in [u64::MAX, 1 << 40, 0, (n as u64) - 8, 2] {
        let mut b = good.to_vec();
        b[..8].copy_from_slice(&len.to_le_bytes());
        v.push(b);
    }
    let header: serde_json::Value = serde_json::from_slice(&good[8..8 + hlen]).unwrap();
    let first = header.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
    let edits: Vec<Box<dyn Fn(&mut serde_json::Value)>> = vec![
        Box::new(|t| t["dtype"] = "F64".into()),
        Box::new(|t| t["dtype"] = "Q9".into()),
        Box::new(|t| t["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40])),
        Box::new(|t| t["shape"] = serde_json::json!([])),
        Box::new(|t| t["shape"] = serde_json::json!([0])),
        Box::new(|t| t["data_offsets"] = serde_json::json!([0, u64::MAX])),
        Box::new(|t| t["data_offsets"] = serde_json::json!([8, 4])),
        Box::new(|t| *t = serde_json::json!(null)),
    ];
    for e in &edits {
        let mut h = header.clone();
        e(&mut h[&first]);
        v.push(with_header(&h, &good[8 + hlen..]));
    }
    for (k, val) in [("format", "nope"), ("strategy", "no-such-strategy"), ("config", "{"), ("graph", "(")] {
        let mut h = header.clone();
        if h.get("__metadata__").is_some() {
            h["__metadata__"][k] = val.into();
            v.push(with_header(&h, &good[8 + hlen..]));
        }
    }
    let mut h = header.clone();
    h.as_object_mut().unwrap().remove(&first);
    v.push(with_header(&h, &good[8 + hlen..]));
    v
}

fn with_header(h: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(h).unwrap();
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend(text);
    b.extend(data);
    b
}

fn checkpoints(f: &mut Fuzz, rng: &mut rand_chacha::ChaCha8Rng) {
    let tiny = root().join("graphs/fmnist-tiny.ron");
    let run = f.dir().join("r");
    let a =
        ["train", "--graph", tiny.to_str().unwrap(), "--out", run.to_str().unwrap(), "--steps", "2", "--batch", "2"];
    assert!(Command::new(env!("CARGO_BIN_EXE_fine")).args(a).output().unwrap().status.success());
    let ck = run.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();
    let out = f.dir().join("out");
    for (i, bad) in damaged(&good, rng).into_iter().enumerate() {
        std::fs::write(&ck, &bad).unwrap();
        let names = ["checkpoint.safetensors"];
        let grid = out.join("g.png");
        let sample =
            ["sample", "--run", run.to_str().unwrap(), "--n", "2", "--steps", "2", "--out", grid.to_str().unwrap()];
        f.case("checkpoint", &strs(&sample), Some(&out), &names, false);
        if i % 3 == 0 {
            // Resuming may write only into the run itself.
            f.case(
                "checkpoint",
                &strs(&["train", "--resume", run.to_str().unwrap(), "--steps", "3"]),
                Some(&run),
                &names,
                false,
            );
            std::fs::create_dir_all(&run).unwrap();
        }
    }
}

fn learngenes(f: &mut Fuzz, rng: &mut rand_chacha::ChaCha8Rng) {
    let tiny = root().join("graphs/fmnist-tiny.ron");
    let d1 = root().join("graphs/fmnist-tiny-d1.ron");
    let anc = f.dir().join("anc");
    let lg = f.dir().join("lg.safetensors");
    let fine =
        |a: &[&str]| assert!(Command::new(env!("CARGO_BIN_EXE_fine")).args(a).output().unwrap().status.success());
    let t = tiny.to_str().unwrap();
    fine(&[
        "pretrain",
        "--strategy",
        "fine",
        "--graph",
        t,
        "--out",
        anc.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "2",
    ]);
    fine(&["learngene", "extract", "--run", anc.to_str().unwrap(), "--out", lg.to_str().unwrap()]);
    let good = std::fs::read(&lg).unwrap();
    let out = f.dir().join("out");
    for (i, bad) in damaged(&good, rng).into_iter().enumerate() {
        std::fs::write(&lg, &bad).unwrap();
        f.case("learngene", &strs(&["learngene", "info", lg.to_str().unwrap()]), None, &["lg.safetensors"], false);
        if i % 2 == 0 {
            let a = [
                "init",
                "--learngene",
                lg.to_str().unwrap(),
                "--graph",
                d1.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ];
            let mut a = strs(&a);
            a.extend(strs(&["--init-steps", "1", "--batch", "2"]));
            f.case("learngene", &a, Some(&out), &["lg.safetensors"], false);
        }
    }
}

// ---------------------------------------------------------------------------
// plugin files
// ---------------------------------------------------------------------------

fn plugin_files(f: &mut Fuzz, rng: &mut rand_chacha::ChaCha8Rng) {
    let lib = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let real = lib.map(|p| std::fs::read(p).unwrap()).unwrap_or_default();
    let mut files: Vec<Vec<u8>> = vec![vec![], vec![0x7f], b"\x7fELF".to_vec(), b"not a library\n".to_vec()];
    for n in [64, 4096] {
        files.push((0..n).map(|_| rng.gen()).collect());
    }
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(64, 0);
    files.push(elf);
    if !real.is_empty() {
        for cut in [16, 64, 200, 1000, 4096, real.len() / 2, real.len() - 100] {
            files.push(real[..cut].to_vec());
        }
        // No section headers, then cut: only the segments show the truncation.
        let mut b = real.clone();
        b[40..48].copy_from_slice(&0u64.to_le_bytes());
        b[60..62].copy_from_slice(&0u16.to_le_bytes());
        b.truncate(real.len() / 2);
        files.push(b);
        files.push(real.clone()); // a whole library that is not a plugin
    }
    for (i, b) in files.iter().enumerate() {
        let p = f.dir().join(format!("libp{i}.so"));
        std::fs::write(&p, b).unwrap();
        f.case("plugin", &strs(&["--plugin", p.to_str().unwrap(), "plugins", "list"]), None, &[&name_of(&p)], true);
        // A bare file name means the file in the working folder, never a library search.
        f.case("plugin", &strs(&["--plugin", &name_of(&p), "plugins", "list"]), None, &[&name_of(&p)], true);
        let sub = f.dir().join("pdir");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::rename(&p, sub.join(name_of(&p))).unwrap();
        f.case("plugin", &strs(&["--plugin", sub.to_str().unwrap(), "plugins", "list"]), None, &[&name_of(&p)], true);
        std::fs::remove_dir_all(&sub).unwrap();
    }
    f.case("plugin", &strs(&["--plugin", "/dev/zero", "plugins", "list"]), None, &["/dev/zero"], true);
    f.case("plugin", &strs(&["--plugin", "no-such.so", "plugins", "list"]), None, &["no-such.so"], true);
}

// ---------------------------------------------------------------------------
// command-line values
// ---------------------------------------------------------------------------

/// `cmd` with `--flag value` pairs, `flag` set to `value` (added or replaced).
fn with_flag(cmd: &[&str], pairs: &[(&str, &str)], flag: &str, value: &str) -> Vec<String> {
    let mut a = strs(cmd);
    for (k, v) in pairs.iter().filter(|(k, _)| *k != flag) {
        a.extend([k.to_string(), v.to_string()]);
    }
    a.extend([flag.to_string(), value.to_string()]);
    a
}

fn cli_values(f: &mut Fuzz) {
    let tiny = root().join("graphs/fmnist-tiny.ron");
    let run = f.dir().join("cli-run");
    let t = tiny.to_str().unwrap();
    let a = ["train", "--graph", t, "--out", run.to_str().unwrap(), "--steps", "2", "--batch", "2"];
    assert!(Command::new(env!("CARGO_BIN_EXE_fine")).args(a).output().unwrap().status.success());
    let values = ["", "-1", "0", "nan", "inf", "-inf", "1e400", "18446744073709551616", "abc", "1e-45", "0x10"];
    let out = f.dir().join("out");
    let o = out.to_str().unwrap();
    let train_flags = [
        "--steps",
        "--batch",
        "--lr",
        "--warmup",
        "--cosine-min-lr",
        "--ema-decay",
        "--grad-clip",
        "--ckpt-every",
        "--seed",
        "--subset",
        "--beta-schedule",
        "--split",
        "--data",
    ];
    // usize::MAX too, except as --steps (that run would be asked to go on forever).
    let with_max: Vec<&str> = values.iter().copied().chain(["18446744073709551615"]).collect();
    for flag in train_flags {
        for &v in if flag == "--steps" { &values[..] } else { &with_max[..] } {
            let a = with_flag(&["train", "--graph", t, "--out", o], &[("--steps", "2"), ("--batch", "2")], flag, v);
            f.case("cli", &a, Some(&out), &flag_names(flag), false);
        }
    }
    let r = run.to_str().unwrap();
    let grid = out.join("g.png");
    let g = grid.to_str().unwrap();
    let base = [("--n", "2"), ("--steps", "2"), ("--sampler", "ddim"), ("--out", g)];
    for (flag, vals) in [
        ("--n", &with_max[..]),
        ("--steps", &values[..]),
        ("--cfg", &values[..]),
        ("--seed", &with_max[..]),
        ("--sampler", &["", "nope", "../x"][..]),
        ("--sampler-opts", &["eta=nan", "eta=inf", "eta=1e400", "eta=", "eta=()", "nope=1", "=", "(", "eta=-1"][..]),
    ] {
        for v in vals {
            let a = with_flag(&["sample", "--run", r], &base, flag, v);
            let mut names = flag_names(flag);
            names.extend(["eta", "nope", "sampler"].map(String::from));
            f.case("cli", &a, Some(&out), &names, false);
        }
    }
    for &v in &with_max {
        let a = with_flag(&["eval", "--run", r], &[("--metric", "cfid"), ("--steps", "2")], "--n", v);
        f.case("cli", &a, None, &flag_names("--n"), false);
    }
    let base = [("--strategy", "fine"), ("--steps", "1"), ("--batch", "2")];
    for (flag, v) in [
        ("--strategy-opts", "rank_qkv=-1"),
        ("--strategy-opts", "rank_qkv=100000"),
        ("--strategy-opts", "sigma_lr_scale=nan"),
        ("--strategy-opts", "sigma_init=nope"),
        ("--strategy", "nope"),
    ] {
        let a = with_flag(&["pretrain", "--graph", t, "--out", o], &base, flag, v);
        f.case("cli", &a, Some(&out), &["rank_qkv", "sigma_lr_scale", "nope"], true);
    }
}

/// The ways a message may name `--flag`: the flag, or the config field it sets.
fn flag_names(flag: &str) -> Vec<String> {
    let field = flag.trim_start_matches("--").replace('-', "_");
    let mut v = vec![flag.to_string(), field];
    match flag {
        "--cosine-min-lr" => v.push("min_lr".into()),
        "--data" => v.push("dataset".into()),
        _ => {}
    }
    v
}

// ---------------------------------------------------------------------------

#[test]
fn hostile_inputs_are_refused_cleanly_and_touch_nothing_else() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let mut f = Fuzz::new();
    graphs(&mut f);
    idx_files(&mut f);
    checkpoints(&mut f, &mut rng);
    learngenes(&mut f, &mut rng);
    plugin_files(&mut f, &mut rng);
    cli_values(&mut f);
    f.report();
    let total: usize = f.counts.values().map(|(a, r)| a + r).sum();
    assert!(total > 300, "{total} cases");
}

/// A run killed (SIGKILL) at random moments, each time resumed: every
/// checkpoint it left loads, no temporary file outlives the next write, and the
/// run finished in pieces ends bit-identical to the run done in one go.
#[test]
fn runs_killed_mid_write_resume_to_the_same_weights() {
    let d = tempfile::tempdir().unwrap();
    let tiny = root().join("graphs/fmnist-tiny.ron");
    let (whole, pieces) = (d.path().join("whole"), d.path().join("pieces"));
    let train = |out: &Path| {
        let a = ["train", "--graph", tiny.to_str().unwrap(), "--out", out.to_str().unwrap()];
        let mut c = Command::new(env!("CARGO_BIN_EXE_fine"));
        c.args(a).args(["--steps", "400", "--batch", "4", "--ckpt-every", "1"]);
        c
    };
    assert!(train(&whole).output().unwrap().status.success());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut killed = 0;
    for i in 0..6 {
        // Resume from the checkpoint left behind; killed before the first one, start again.
        let mut c = if pieces.join("checkpoint.safetensors").exists() {
            let mut c = Command::new(env!("CARGO_BIN_EXE_fine"));
            c.args(["train", "--resume", pieces.to_str().unwrap()]);
            c
        } else {
            train(&pieces)
        };
        let mut child = c.stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(30..400)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        if pieces.join("checkpoint.safetensors").exists() {
            let e = fine_core::checkpoint::Checkpoint::load(&pieces.join("checkpoint.safetensors"));
            assert!(e.is_ok(), "kill {i}: the checkpoint left behind does not load: {:#}", e.err().unwrap());
        }
    }
    assert!(killed >= 3, "only {killed} runs were still going when killed");
    assert!(pieces.join("checkpoint.safetensors").exists(), "no run got as far as its first checkpoint");
    let o = Command::new(env!("CARGO_BIN_EXE_fine"))
        .args(["train", "--resume", pieces.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let temps: Vec<_> = std::fs::read_dir(&pieces)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "left behind: {temps:?}");
    let (a, b) = (
        fine_core::checkpoint::Checkpoint::load(&whole.join("checkpoint.safetensors")).unwrap(),
        fine_core::checkpoint::Checkpoint::load(&pieces.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!((a.step, b.step), (400, 400));
    assert!(a.params == b.params && a.ema == b.ema && a.adam_m == b.adam_m, "the resumed run differs");
}
