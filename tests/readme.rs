//! The README's commands run as written, in order, on a fresh checkout — with
//! small step and sample counts so that the tour takes seconds. Every `fine …`
//! line of every `sh` block is run (joined across `\` continuations); `runs/`
//! becomes a temporary folder; `cargo`, `scripts/` and `export` lines are the
//! set-up this test already stands on, and `fine bench learngene` lines are
//! run by tests/bench.rs (the quick config) or take hours (the paper's).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `fine` command lines of the `sh` blocks of `text`, continuations joined.
fn commands(text: &str) -> Vec<String> {
    let (mut out, mut in_sh, mut cur) = (Vec::new(), false, String::new());
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let l = line.split(" #").next().unwrap().trim_end(); // drop trailing comments
        let (body, more) = match l.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (l, false),
        };
        cur.push_str(body.trim_start());
        cur.push(' ');
        if !more {
            let c = cur.trim().to_string();
            cur.clear();
            if c.starts_with("fine ") {
                out.push(c);
            }
        }
    }
    out
}

/// `c` with its counts made small: steps, samples, held-out images, σ-phase steps.
fn shrink(c: &str) -> Vec<String> {
    let mut args: Vec<String> = c.split_whitespace().skip(1).map(String::from).collect();
    for i in 0..args.len().saturating_sub(1) {
        let small = match args[i].as_str() {
            "--steps" => Some(if args[0] == "train" || args[0] == "pretrain" { "6" } else { "4" }),
            "--n" => Some("20"),
            "--heldout" => Some("16"),
            "--subset" => Some("64"),
            "--warmup" => Some("2"),
            _ => None,
        };
        if let Some(v) = small {
            args[i + 1] = v.to_string();
        }
    }
    if args[0] == "init" {
        args.extend(["--init-steps".to_string(), "3".to_string()]);
    }
    args
}

#[test]
fn readme_commands_run_as_written() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let cmds: Vec<String> = commands(&text).into_iter().filter(|c| !c.starts_with("fine bench learngene")).collect();
    assert!(cmds.len() >= 9, "found only {} fine commands in the README: {cmds:?}", cmds.len());
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    for c in &cmds {
        let args: Vec<String> = shrink(c)
            .into_iter()
            .map(|a| match a.strip_prefix("runs/") {
                Some(rest) => runs.join(rest).to_string_lossy().to_string(),
                None => a,
            })
            .collect();
        let o = Command::new(env!("CARGO_BIN_EXE_fine"))
            .args(&args)
            .current_dir(root())
            .env("FINE_CACHE_DIR", d.path().join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "README: `{c}` (run as {args:?}) failed:\n{}", String::from_utf8_lossy(&o.stderr));
    }
}
