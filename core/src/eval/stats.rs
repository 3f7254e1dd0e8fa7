//! Feature statistics of an image set, and the cache of reference statistics.
//!
//! Statistics of a dataset split are computed once per (extractor — including
//! the identity of its weights —, dataset, split, N) and cached as one
//! safetensors file:
//!
//! ```text
//! ${FINE_CACHE_DIR:-~/.cache/fine}/stats/<extractor id>/<dataset>-<split>-n<N>.safetensors
//! ```
//!
//! holding Gaussians (`<name>.mu` F64 (d), `<name>.sigma` F64 (d, d)) and raw
//! feature matrices (`<name>` F32 (N, d)), with the format, N, extractor,
//! dataset, split and a CRC-32 of all tensor bytes in the metadata. Writes are
//! atomic; a corrupt or mismatching file is reported (naming it) and recomputed.

use super::frechet::Gaussian;
use crate::util::fsx::write_atomic;
use anyhow::{anyhow, bail, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Format tag of a statistics file.
pub const FORMAT: &str = "fine-stats/1";

/// `$FINE_CACHE_DIR`, else `$HOME/.cache/fine`.
pub fn cache_dir() -> PathBuf {
    crate::data::cache::root()
}

/// Where the statistics of `n` images of `dataset`/`split` under `extractor` are cached.
pub fn stats_path(cache_dir: &Path, extractor: &str, dataset: &str, split: &str, n: usize) -> PathBuf {
    let file = format!("{}-{split}-n{n}.safetensors", super::classifier::sanitize(dataset));
    cache_dir.join("stats").join(super::classifier::sanitize(extractor)).join(file)
}

/// An identity for a weights file: `<prefix>-<CRC-32 of its bytes>`.
pub fn file_id(prefix: &str, path: &Path) -> Result<String> {
    let bytes = crate::util::fsx::read_input(path, "weights file")?;
    Ok(format!("{prefix}-{:08x}", crc32fast::hash(&bytes)))
}

/// Named Gaussians and feature matrices of one image set under one extractor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureStats {
    /// Number of images.
    pub n: usize,
    /// Gaussian statistics by name (e.g. `pool`, `spatial`, `classifier`).
    pub gaussians: BTreeMap<String, Gaussian>,
    /// Raw features by name: (dimension d, (n, d) row-major values).
    pub features: BTreeMap<String, (usize, Vec<f32>)>,
}

/// What a statistics file describes (stored in its metadata and checked on load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsKey {
    /// Extractor id, including the identity of its weights.
    pub extractor: String,
    /// Dataset spec.
    pub dataset: String,
    /// Split.
    pub split: String,
    /// Number of images.
    pub n: usize,
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl FeatureStats {
    /// Serializes to safetensors bytes with `key` in the metadata.
    pub fn to_bytes(&self, key: &StatsKey) -> Result<Vec<u8>> {
        let mut named: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, g) in &self.gaussians {
            let d = g.dim();
            named.push((format!("{name}.mu"), Dtype::F64, vec![d], f64_bytes(&g.mu)));
            named.push((format!("{name}.sigma"), Dtype::F64, vec![d, d], f64_bytes(&g.sigma)));
        }
        for (name, (d, x)) in &self.features {
            named.push((name.clone(), Dtype::F32, vec![x.len() / d, *d], f32_bytes(x)));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut crc = crc32fast::Hasher::new();
        named.iter().for_each(|t| crc.update(&t.3));
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("n", self.n.to_string()),
            ("extractor", key.extractor.clone()),
            ("dataset", key.dataset.clone()),
            ("split", key.split.clone()),
            ("gaussians", self.gaussians.keys().cloned().collect::<Vec<_>>().join(",")),
            ("crc32", format!("{:08x}", crc.finalize())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let views = named
            .iter()
            .map(|(n, t, s, b)| Ok((n.clone(), TensorView::new(*t, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        Ok(safetensors::serialize(views, &Some(meta))?)
    }

    /// Writes the statistics atomically.
    pub fn save(&self, path: &Path, key: &StatsKey) -> Result<()> {
        write_atomic(path, &self.to_bytes(key)?)
    }

    /// Reads statistics written by [`FeatureStats::save`], checking the format,
    /// the checksum and that the file describes `key`; errors name the file.
    pub fn load(path: &Path, key: &StatsKey) -> Result<FeatureStats> {
        let p = path.display();
        let bytes = crate::util::fsx::read_input(path, "statistics")?;
        let bad = |e: safetensors::SafeTensorError| {
            anyhow!("{p}: not a usable safetensors file: {}", fine_plugin_api::tensors::explain(&e))
        };
        let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| anyhow!("{p}: metadata field {k:?} is missing"));
        if get("format")? != FORMAT {
            bail!("{p}: not a statistics file (format {:?}, expected {FORMAT:?})", get("format")?);
        }
        let n: usize = get("n")?.parse().map_err(|_| anyhow!("{p}: bad metadata field \"n\""))?;
        let found = StatsKey { extractor: get("extractor")?, dataset: get("dataset")?, split: get("split")?, n };
        if &found != key {
            bail!("{p}: holds statistics of {found:?}, expected {key:?}");
        }
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        let mut crc = crc32fast::Hasher::new();
        names.iter().for_each(|name| crc.update(st.tensor(name).map(|t| t.data()).unwrap_or_default()));
        if format!("{:08x}", crc.finalize()) != get("crc32")? {
            bail!("{p}: checksum mismatch (the file is corrupt)");
        }
        let tensor = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, Vec<u8>)> {
            let t = st.tensor(name).map_err(|_| anyhow!("{p}: tensor {name:?} is missing"))?;
            if t.dtype() != dtype {
                bail!("{p}: tensor {name:?} is {:?}, expected {dtype:?}", t.dtype());
            }
            Ok((t.shape().to_vec(), t.data().to_vec()))
        };
        let f64s = |b: &[u8]| b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        let mut out = FeatureStats { n, ..Default::default() };
        let gnames: Vec<String> = get("gaussians")?.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
        for g in &gnames {
            let (ms, mu) = tensor(&format!("{g}.mu"), Dtype::F64)?;
            let (ss, sigma) = tensor(&format!("{g}.sigma"), Dtype::F64)?;
            if ms.len() != 1 || ss != [ms[0], ms[0]] {
                bail!("{p}: Gaussian {g:?} has mean {ms:?} and covariance {ss:?}");
            }
            let gauss = Gaussian { mu: f64s(&mu), sigma: f64s(&sigma), n };
            gauss.validate(&format!("{p}: Gaussian {g:?}"))?;
            out.gaussians.insert(g.clone(), gauss);
        }
        for name in
            names.iter().filter(|t| !gnames.iter().any(|g| *t == &format!("{g}.mu") || *t == &format!("{g}.sigma")))
        {
            let (shape, data) = tensor(name, Dtype::F32)?;
            if shape.len() != 2 || shape[0] != n {
                bail!("{p}: features {name:?} have shape {shape:?}, expected ({n}, d)");
            }
            let x = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            out.features.insert(name.clone(), (shape[1], x));
        }
        Ok(out)
    }
}

/// The cached statistics at `path` if they are readable and describe `key`;
/// otherwise `compute()`, cached (atomically) at `path`. A bad file is
/// reported through `warn` (naming it) before it is replaced.
pub fn cached(
    path: &Path,
    key: &StatsKey,
    warn: &dyn Fn(&str),
    compute: impl FnOnce() -> Result<FeatureStats>,
) -> Result<FeatureStats> {
    if path.exists() {
        match FeatureStats::load(path, key) {
            Ok(s) => return Ok(s),
            Err(e) => warn(&format!("{e:#}; recomputing")),
        }
    }
    let s = compute()?;
    s.save(path, key)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::frechet::tests::{features_a, features_b};

    fn sample() -> (FeatureStats, StatsKey) {
        let mut s = FeatureStats { n: 9, ..Default::default() };
        s.gaussians.insert("pool".into(), Gaussian::from_features(&features_a(), 9, 4).unwrap());
        s.gaussians
            .insert("classifier".into(), Gaussian { n: 9, ..Gaussian::from_features(&features_b(), 7, 4).unwrap() });
        s.features.insert("pool.features".into(), (4, features_a()));
        let key = StatsKey { extractor: "test-0001".into(), dataset: "bundled".into(), split: "train".into(), n: 9 };
        (s, key)
    }

    #[test]
    fn round_trip_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (s, key) = sample();
        let path = stats_path(dir.path(), &key.extractor, &key.dataset, &key.split, key.n);
        assert!(path.ends_with("stats/test-0001/bundled-train-n9.safetensors"), "{path:?}");
        let warned = std::cell::RefCell::new(Vec::<String>::new());
        let warn = |m: &str| warned.borrow_mut().push(m.to_string());
        let got = cached(&path, &key, &warn, || Ok(s.clone())).unwrap();
        assert_eq!(got, s);
        // Second time: read from the file (compute must not run).
        let got = cached(&path, &key, &warn, || panic!("recomputed")).unwrap();
        assert_eq!(got, s);
        assert!(warned.borrow().is_empty());
        // Another key at the same path is refused.
        let other = StatsKey { n: 10, ..key.clone() };
        assert!(format!("{:#}", FeatureStats::load(&path, &other).unwrap_err()).contains("expected"));
    }

    #[test]
    fn corrupt_files_are_named_and_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let (s, key) = sample();
        let path = dir.path().join("s.safetensors");
        s.save(&path, &key).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let k = flipped.len() - 3;
        flipped[k] ^= 4;
        for (bad, defect) in
            [(flipped, "checksum"), (good[..good.len() / 2].to_vec(), "not a usable"), (b"xx".to_vec(), "not a usable")]
        {
            std::fs::write(&path, &bad).unwrap();
            let msg = format!("{:#}", FeatureStats::load(&path, &key).unwrap_err());
            assert!(msg.contains(path.to_str().unwrap()) && msg.contains(defect), "{msg}");
            let warned = std::cell::RefCell::new(String::new());
            let got = cached(&path, &key, &|m| *warned.borrow_mut() = m.to_string(), || Ok(s.clone())).unwrap();
            assert_eq!(got, s);
            assert!(warned.borrow().contains(path.to_str().unwrap()), "{}", warned.borrow());
            assert_eq!(FeatureStats::load(&path, &key).unwrap().features, s.features);
        }
    }
}
