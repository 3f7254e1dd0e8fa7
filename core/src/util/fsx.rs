//! File-system helpers: atomic writes, and bounded reads of the files a user
//! names.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: the data goes to a temporary file in
/// the same directory, is flushed to disk, then renamed over `path`. A crash at
/// any point leaves either the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Like [`write_atomic`], but the content is produced by `fill` writing into the
/// temporary file. If `fill` fails, the temporary file is removed and `path` is
/// untouched.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    remove_stale_temps(&dir, &name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating temporary file {}", tmp.display()))?;
        fill(&mut f)?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", path.display())));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the whole of a file the user named (`what` says which: "checkpoint",
/// "graph file", …). Refused before anything is read: a path that is not a
/// regular file (a FIFO would block forever, a device never ends) and a file
/// larger than the memory the process may still take.
pub fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {}: not a regular file", path.display());
    }
    crate::util::mem::check_fits(meta.len() as f64, &format!("reading {what} {}", path.display()))?;
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// [`read_input`] of a UTF-8 text file.
pub fn read_input_string(path: &Path, what: &str) -> Result<String> {
    String::from_utf8(read_input(path, what)?).map_err(|_| anyhow::anyhow!("{what} {}: not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_that_cannot_be_read_whole_are_refused_first() {
        let e = read_input(Path::new("/dev/zero"), "checkpoint").unwrap_err().to_string();
        assert!(e.contains("checkpoint /dev/zero: not a regular file"), "{e}");
        let e = read_input(Path::new("/"), "graph file").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.ron");
        std::fs::write(&p, [0xffu8, 0xfe]).unwrap();
        assert!(read_input_string(&p, "graph file").unwrap_err().to_string().contains("not UTF-8"));
        std::fs::write(&p, "ok").unwrap();
        assert_eq!(read_input_string(&p, "graph file").unwrap(), "ok");
    }

    #[test]
    fn a_crash_mid_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("checkpoint.safetensors");
        write_atomic(&p, b"old good checkpoint").unwrap();
        // The writer dies half-way (an error after writing some bytes).
        let r = write_atomic_with(&p, |f| {
            f.write_all(b"new but only half")?;
            anyhow::bail!("simulated crash")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old good checkpoint");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // A temp file left by a killed process does not affect the real one.
        std::fs::write(d.path().join(".checkpoint.safetensors.999.tmp"), b"garbage").unwrap();
        write_atomic(&p, b"newer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"newer");
    }

    /// A temp file of a dead process is removed by the next write; the run's own files are refused as outputs.
    #[test]
    fn stale_temps_and_run_files() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join(".checkpoint.safetensors.4294967294.tmp");
        std::fs::write(&stale, b"half").unwrap();
        write_atomic(&d.path().join("checkpoint.safetensors"), b"new").unwrap();
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists(), "the dead process's temp file is still there");
        }
        let e = refuse_run_file(&d.path().join("checkpoint.safetensors"), d.path(), "--out").unwrap_err();
        assert!(e.to_string().contains("--out") && e.to_string().contains("checkpoint.safetensors"), "{e}");
        refuse_run_file(&d.path().join("grid.png"), d.path(), "--out").unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        refuse_run_file(&sub.join("checkpoint.safetensors"), d.path(), "--out").unwrap();
    }
}

/// Removes `.{name}.{pid}.tmp` files in `dir` left by processes that no longer
/// run (killed during a write). Only where a process's liveness can be read
/// (`/proc`); elsewhere nothing is removed.
fn remove_stale_temps(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let pid = file.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The files a run folder keeps (checkpoint, configuration, metrics, loss plot).
pub const RUN_FILES: [&str; 4] = ["checkpoint.safetensors", "run.ron", "metrics.jsonl", "loss.svg"];

/// Refuses an output path `out` (flag `flag`) that is one of the run folder
/// `run`'s own files: a command never overwrites the run it reads.
pub fn refuse_run_file(out: &Path, run: &Path, flag: &str) -> Result<()> {
    let Some(file) = out.file_name().map(|f| f.to_string_lossy().to_string()) else {
        anyhow::bail!("{flag} {}: not a file path", out.display());
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (Ok(a), Ok(b)) = (std::fs::canonicalize(&parent), std::fs::canonicalize(run)) else { return Ok(()) };
    if a == b && RUN_FILES.contains(&file.as_str()) {
        anyhow::bail!("{flag} {} would overwrite the run's own {file}; write it elsewhere", out.display());
    }
    Ok(())
}
