//! Decoded picture sets kept on disk, so a folder of SVGs or photos is drawn
//! once: an IDX file of images `(N, C, H, W)` and one of labels `(N)` in `images/`
//! under `$FINE_CACHE_DIR`, else under `$HOME/.cache/fine` ([`root`]).
//!
//! The key is a CRC-32 of everything that changes the result: [`VERSION`] (bump
//! it when a decoder changes), the target shape, the split, and every source
//! file's relative path, label and bytes. A changed, added or removed file
//! gives another key, so a stale cache is never read. An unreadable cache file
//! is decoded again and rewritten.

use super::idx::{encode_idx, read_idx, IdxArray};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Version of the decoders whose output is cached (part of every key).
pub const VERSION: u32 = 1;

/// The folder cached picture sets go in: `images/` in [`root`].
pub fn dir() -> PathBuf {
    root().join("images")
}

/// The root of everything `fine` caches (picture sets here, feature statistics
/// in `eval`): `$FINE_CACHE_DIR`, else `$HOME/.cache/fine`.
pub fn root() -> PathBuf {
    env_dir("FINE_CACHE_DIR").unwrap_or_else(|| fine_home(""))
}

/// A non-empty directory from environment variable `var`.
pub fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `$HOME/.cache/fine/{sub}`, where the fetch scripts put what they download.
pub fn fine_home(sub: &str) -> PathBuf {
    env_dir("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache/fine").join(sub)
}

/// Accumulates the key of one cached set.
pub struct Key {
    hasher: crc32fast::Hasher,
    /// `{kind}-{split}-{C}x{H}x{W}`, the readable start of the file names.
    prefix: String,
}

impl Key {
    /// A key for data set `kind` (e.g. `pokemon`) with the given `shape` and `split`.
    pub fn new(kind: &str, shape: [usize; 3], split: &str) -> Key {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&VERSION.to_le_bytes());
        hasher.update(format!("{kind}\0{shape:?}\0{split}\0").as_bytes());
        Key { hasher, prefix: format!("{kind}-{split}-{}x{}x{}", shape[0], shape[1], shape[2]) }
    }

    /// Adds one source file: its path relative to the set's root, its label and its bytes.
    pub fn add(&mut self, rel: &str, label: u8, bytes: &[u8]) {
        self.hasher.update(format!("{rel}\0{label}\0{}\0", bytes.len()).as_bytes());
        self.hasher.update(bytes);
    }

    /// The stem of the set's cache files: `{kind}-{split}-{C}x{H}x{W}-{crc:08x}`.
    pub fn stem(self) -> String {
        format!("{}-{:08x}", self.prefix, self.hasher.finalize())
    }
}

/// The cached images and labels of `stem` in `dir`, if both files read back whole and agree.
pub fn read(dir: &Path, stem: &str) -> Option<(IdxArray, IdxArray)> {
    let (images, labels) = paths(dir, stem);
    let (i, l) = (read_idx(&images).ok()?, read_idx(&labels).ok()?);
    (i.dims.len() == 4 && l.dims.len() == 1 && i.dims[0] == l.dims[0]).then_some((i, l))
}

/// Writes the set of `stem` into `dir` (each file through a temporary name, then renamed).
pub fn write(dir: &Path, stem: &str, images: &IdxArray, labels: &IdxArray) -> Result<()> {
    let (ip, lp) = paths(dir, stem);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the image cache {}", dir.display()))?;
    for (path, a) in [(&lp, labels), (&ip, images)] {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, encode_idx(a)?).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{stem}-images.idx")), dir.join(format!("{stem}-labels.idx")))
}
