//! File-system helpers: atomic writes.

use anyhow::{Context, Result};
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
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
