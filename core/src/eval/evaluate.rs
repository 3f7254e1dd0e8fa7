//! The metrics as one library call: statistics of two image sets under the
//! extractors the requested metrics need, then the numbers.
//!
//! | metric | features | number |
//! |---|---|---|
//! | `fid` | Inception pool3 (2048) | Fréchet distance |
//! | `sfid` | Inception `mixed_6.conv[:7]` (7·17·17) | Fréchet distance |
//! | `pr` | Inception pool3 | precision, recall (k = 3, ADM) |
//! | `cfid` | this project's classifier, penultimate (256) | "FID (classifier features)" |
//!
//! A dataset split's statistics are cached ([`super::stats`]); images in
//! memory (generated samples) are not. [`Evaluator::new`] loads the extractors
//! first, so a missing weights file fails before anything is sampled.

use super::classifier::{Classifier, ClassifierInfo, FEATURE_DIM};
use super::frechet::{frechet_distance, Gaussian};
use super::inception::{Inception, POOL_DIM, SPATIAL_DIM};
use super::prdc::{precision_recall, FeatureSet, K};
use super::stats::{self, FeatureStats, StatsKey};
use crate::data::{self, Split};
use anyhow::{bail, Result};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Prefix of the Inception extractor id in cached statistics (the weights' CRC-32
/// follows). Bump it when the port's feature code changes, so that statistics
/// cached by an older port are not reused.
pub const INCEPTION_ID: &str = "inception-port1";

// ----- metrics -----

/// A sample-quality metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// FID: Fréchet distance of Inception pool3 features.
    Fid,
    /// sFID: Fréchet distance of Inception spatial features.
    Sfid,
    /// Precision and recall on Inception pool3 features.
    Pr,
    /// FID (classifier features): Fréchet distance of this project's classifier's features.
    Cfid,
}

impl Metric {
    /// All metrics, in table order.
    pub const ALL: [Metric; 4] = [Metric::Fid, Metric::Sfid, Metric::Pr, Metric::Cfid];

    /// Parses a comma-separated list (`fid,sfid,pr,cfid`), sorted and deduplicated.
    pub fn parse_list(s: &str) -> Result<Vec<Metric>> {
        let mut v = s.split(',').map(|m| m.trim().parse()).collect::<Result<Vec<Metric>>>()?;
        v.sort();
        v.dedup();
        Ok(v)
    }

    fn needs_inception(self) -> bool {
        self != Metric::Cfid
    }
}

impl FromStr for Metric {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "fid" => Metric::Fid,
            "sfid" => Metric::Sfid,
            "pr" => Metric::Pr,
            "cfid" => Metric::Cfid,
            _ => bail!("unknown metric {s:?}: expected fid, sfid, pr or cfid (comma-separated)"),
        })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Fid => "fid",
            Metric::Sfid => "sfid",
            Metric::Pr => "pr",
            Metric::Cfid => "cfid",
        })
    }
}

// ----- image sets -----

/// A set of images to evaluate.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// The first N images of a dataset split (statistics cached).
    Dataset {
        /// Dataset spec (`bundled`, `fashion-mnist`, `mnist`, `idx:…`).
        spec: String,
        /// Split.
        split: Split,
    },
    /// Images in memory, e.g. generated samples (statistics not cached).
    Images {
        /// Shown in messages.
        name: String,
        /// u8 pixels, NCHW row-major.
        images: Vec<u8>,
        /// Number of images.
        n: usize,
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
}

impl ImageSource {
    /// Parses `DATASET[:SPLIT]` (split `train` or `test`, default `train`).
    pub fn parse_dataset(s: &str) -> Result<ImageSource> {
        let (spec, split) = match s.rsplit_once(':') {
            Some((d, sp)) if sp == "train" || sp == "test" => (d, sp.parse()?),
            _ => (s, Split::Train),
        };
        if spec.is_empty() {
            bail!("empty dataset in {s:?}: expected DATASET[:SPLIT], e.g. fashion-mnist:train");
        }
        Ok(ImageSource::Dataset { spec: spec.to_string(), split })
    }

    /// `spec:split` or the name of the images.
    pub fn name(&self) -> String {
        match self {
            ImageSource::Dataset { spec, split } => format!("{spec}:{split}"),
            ImageSource::Images { name, .. } => name.clone(),
        }
    }
}

// ----- configuration and results -----

/// What to compute and with which extractors.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Metrics to compute.
    pub metrics: Vec<Metric>,
    /// Images per set (the first N of a dataset).
    pub n: usize,
    /// Cache root (`classifier/`, `stats/`), usually [`stats::cache_dir`].
    pub cache_dir: PathBuf,
    /// Inception weights, usually [`Inception::default_path`].
    pub inception_path: PathBuf,
    /// Dataset whose classifier gives the `cfid` features (usually the reference's).
    pub classifier_dataset: String,
    /// Seed of the classifier's training.
    pub classifier_seed: u64,
}

/// Reports progress of the long phases (the CLI draws progress bars).
pub trait Progress {
    /// A phase of `len` units starts (images, or training steps).
    fn start(&self, what: &str, len: usize);
    /// `k` more units are done.
    fn advance(&self, k: usize);
    /// The phase is over.
    fn finish(&self);
    /// A non-fatal problem (e.g. a corrupt cache file that is being replaced).
    fn warn(&self, msg: &str);
    /// An informative line (e.g. the classifier's accuracy).
    fn note(&self, msg: &str);
}

/// Progress that prints nothing but warnings (on stderr).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: usize) {}
    fn advance(&self, _: usize) {}
    fn finish(&self) {}
    fn warn(&self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn note(&self, _: &str) {}
}

/// The classifier behind `cfid`, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierReport {
    /// Extractor id (dataset, shape, seed, CRC-32 of the weights).
    pub id: String,
    /// Where it is cached.
    pub path: PathBuf,
    /// Dataset, size, seed, accuracy.
    #[serde(flatten)]
    pub info: ClassifierInfo,
}

/// The numbers; a metric that was not asked for is `None`.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Images of the reference set.
    pub n_reference: usize,
    /// Images of the compared set.
    pub n_compared: usize,
    /// FID (Inception pool3).
    pub fid: Option<f64>,
    /// sFID (Inception spatial).
    pub sfid: Option<f64>,
    /// Precision (k = 3).
    pub precision: Option<f64>,
    /// Recall (k = 3).
    pub recall: Option<f64>,
    /// FID (classifier features).
    pub cfid: Option<f64>,
    /// Inception extractor id (`inception-port1-<crc32 of the weights>`), when used.
    pub inception: Option<String>,
    /// The classifier, when used.
    pub classifier: Option<ClassifierReport>,
}

/// Statistics of one image set.
#[derive(Debug, Clone)]
pub struct SetStats {
    /// Name (for messages).
    pub name: String,
    /// Number of images.
    pub n: usize,
    /// Inception statistics: Gaussians `pool`, `spatial` (if needed), features `pool`.
    pub inception: Option<FeatureStats>,
    /// Classifier statistics: Gaussian `classifier`.
    pub classifier: Option<FeatureStats>,
}

// ----- the evaluator -----

/// Loaded extractors for a configuration.
pub struct Evaluator {
    /// The configuration.
    pub cfg: EvalConfig,
    inception: Option<(Inception, String)>,
    classifier: Option<(Classifier, PathBuf)>,
}

impl Evaluator {
    /// Loads the Inception weights (if a metric needs them) and the classifier
    /// (training and caching it if needed, if `cfid` is asked for).
    pub fn new(cfg: EvalConfig, progress: &dyn Progress) -> Result<Evaluator> {
        if cfg.metrics.is_empty() {
            bail!("no metric given: expected some of fid, sfid, pr, cfid");
        }
        let (min, what) =
            if cfg.metrics.contains(&Metric::Pr) { (K + 1, "precision/recall") } else { (2, "a Fréchet distance") };
        if cfg.n < min {
            bail!("--n {} is too small: {what} needs at least {min} images per set", cfg.n);
        }
        let inception = if cfg.metrics.iter().any(|m| m.needs_inception()) {
            let p = &cfg.inception_path;
            if !p.is_file() {
                bail!(
                    "{}: Inception weights not found; run scripts/fetch-inception.sh, or set FINE_INCEPTION \
                     to the converted file",
                    p.display()
                );
            }
            let net = Inception::load(p)?;
            Some((net, stats::file_id(INCEPTION_ID, p)?))
        } else {
            None
        };
        let classifier = if cfg.metrics.contains(&Metric::Cfid) {
            let ds = &cfg.classifier_dataset;
            let started = std::cell::Cell::new(false);
            let c = Classifier::load_or_train(
                ds,
                cfg.classifier_seed,
                &cfg.cache_dir,
                &|m| progress.warn(m),
                &|_, total| {
                    if !started.replace(true) {
                        progress.start(&format!("training the classifier on {ds}:train"), total);
                    }
                    progress.advance(1);
                },
            )?;
            if started.get() {
                progress.finish();
            }
            let i = &c.info;
            progress.note(&format!(
                "classifier features: MLP trained on {}:train ({} images, seed {}), accuracy {:.2}% on {} {} images",
                i.dataset,
                i.train_images,
                i.seed,
                100.0 * i.accuracy,
                i.test_images,
                i.accuracy_split
            ));
            let path = Classifier::cache_path(&cfg.cache_dir, ds, (i.channels, i.height, i.width), i.seed);
            Some((c, path))
        } else {
            None
        };
        Ok(Evaluator { cfg, inception, classifier })
    }

    fn wants(&self, m: Metric) -> bool {
        self.cfg.metrics.contains(&m)
    }

    /// Statistics of `src` under the extractors in use (the first N images of a
    /// dataset, cached; or all of the images in memory, which must number N).
    pub fn stats(&self, src: &ImageSource, progress: &dyn Progress) -> Result<SetStats> {
        let n = self.cfg.n;
        match src {
            ImageSource::Images { name, images, n: count, channels, height, width } => {
                if *count != n {
                    bail!("{name}: {count} images, expected N = {n}");
                }
                let (c, h, w) = (*channels, *height, *width);
                if images.len() != n * c * h * w {
                    bail!("{name}: {} bytes, expected {n}·{c}·{h}·{w}", images.len());
                }
                let px = Pixels { name, images, c, h, w };
                let inception = match &self.inception {
                    Some((net, _)) => Some(inception_stats(net, &px, &self.cfg.metrics, progress)?),
                    None => None,
                };
                let classifier = match &self.classifier {
                    Some((cl, _)) => Some(classifier_stats(cl, &px, progress)?),
                    None => None,
                };
                Ok(SetStats { name: name.clone(), n, inception, classifier })
            }
            ImageSource::Dataset { spec, split } => {
                let name = src.name();
                let ds = data::load(spec, *split)?;
                if ds.len < n {
                    bail!("{name} has {} images, fewer than --n {n}", ds.len);
                }
                let ds = ds.subset(n);
                let px = Pixels { name: &name, images: &ds.images, c: ds.channels, h: ds.height, w: ds.width };
                let key = |extractor: &str| StatsKey {
                    extractor: extractor.to_string(),
                    dataset: spec.clone(),
                    split: split.to_string(),
                    n,
                };
                let warn = |m: &str| progress.warn(m);
                let inception = match &self.inception {
                    Some((net, id)) => {
                        let path = stats::stats_path(&self.cfg.cache_dir, id, spec, &split.to_string(), n);
                        // Everything, so that the cache serves every metric.
                        Some(stats::cached(&path, &key(id), &warn, || {
                            inception_stats(net, &px, &Metric::ALL, progress)
                        })?)
                    }
                    None => None,
                };
                let classifier = match &self.classifier {
                    Some((cl, _)) => {
                        let id = cl.id();
                        let path = stats::stats_path(&self.cfg.cache_dir, &id, spec, &split.to_string(), n);
                        Some(stats::cached(&path, &key(&id), &warn, || classifier_stats(cl, &px, progress))?)
                    }
                    None => None,
                };
                Ok(SetStats { name, n, inception, classifier })
            }
        }
    }

    /// The requested metrics of `other` against `reference`.
    pub fn compare(&self, reference: &SetStats, other: &SetStats) -> Result<Scores> {
        let gauss = |s: &SetStats, part: &Option<FeatureStats>, g: &str| -> Result<Gaussian> {
            part.as_ref()
                .and_then(|p| p.gaussians.get(g).cloned())
                .ok_or_else(|| anyhow::anyhow!("{}: statistics lack the {g:?} Gaussian", s.name))
        };
        let fd = |g: &str, cls: bool| -> Result<f64> {
            let (pa, pb) =
                if cls { (&reference.classifier, &other.classifier) } else { (&reference.inception, &other.inception) };
            frechet_distance(&gauss(reference, pa, g)?, &gauss(other, pb, g)?)
        };
        let mut s = Scores {
            n_reference: reference.n,
            n_compared: other.n,
            fid: None,
            sfid: None,
            precision: None,
            recall: None,
            cfid: None,
            inception: self.inception.as_ref().map(|(_, id)| id.clone()),
            classifier: self.classifier.as_ref().map(|(c, path)| ClassifierReport {
                id: c.id(),
                path: path.clone(),
                info: c.info.clone(),
            }),
        };
        if self.wants(Metric::Fid) {
            s.fid = Some(fd("pool", false)?);
        }
        if self.wants(Metric::Sfid) {
            s.sfid = Some(fd("spatial", false)?);
        }
        if self.wants(Metric::Cfid) {
            s.cfid = Some(fd("classifier", true)?);
        }
        if self.wants(Metric::Pr) {
            let feats = |st: &SetStats| -> Result<(usize, Vec<f32>)> {
                st.inception
                    .as_ref()
                    .and_then(|p| p.features.get("pool").cloned())
                    .ok_or_else(|| anyhow::anyhow!("{}: statistics lack the pool features", st.name))
            };
            let ((dr, xr), (dg, xg)) = (feats(reference)?, feats(other)?);
            let pr = precision_recall(
                &FeatureSet::new(&xr, reference.n, dr, &reference.name)?,
                &FeatureSet::new(&xg, other.n, dg, &other.name)?,
                K,
            )?;
            s.precision = Some(pr.precision);
            s.recall = Some(pr.recall);
        }
        Ok(s)
    }
}

// ----- features → statistics -----

/// u8 images (NCHW) and their name.
struct Pixels<'a> {
    name: &'a str,
    images: &'a [u8],
    c: usize,
    h: usize,
    w: usize,
}

/// Inception statistics of `px` for `metrics`: Gaussians `pool` (fid) and
/// `spatial` (sfid), features `pool` (pr).
fn inception_stats(net: &Inception, px: &Pixels, metrics: &[Metric], progress: &dyn Progress) -> Result<FeatureStats> {
    let Pixels { name, images, c, h, w } = *px;
    if c != 1 && c != 3 {
        bail!("{name}: the Inception features take grey or RGB images, these have {c} channels");
    }
    let n = images.len() / (c * h * w);
    let spatial = metrics.contains(&Metric::Sfid);
    progress.start(&format!("Inception features of {name}"), n);
    let f = net.features_u8_chw(images, n, c, h, w, spatial, &|k| progress.advance(k))?;
    progress.finish();
    let mut s = FeatureStats { n, ..Default::default() };
    if metrics.contains(&Metric::Fid) {
        s.gaussians.insert("pool".into(), Gaussian::from_features(&f.pool, n, POOL_DIM)?);
    }
    if let Some(sp) = f.spatial.filter(|_| spatial) {
        s.gaussians.insert("spatial".into(), Gaussian::from_features(&sp, n, SPATIAL_DIM)?);
    }
    if metrics.contains(&Metric::Pr) {
        s.features.insert("pool".into(), (POOL_DIM, f.pool));
    }
    Ok(s)
}

/// Classifier statistics of `px`: Gaussian `classifier`.
fn classifier_stats(cl: &Classifier, px: &Pixels, progress: &dyn Progress) -> Result<FeatureStats> {
    let Pixels { name, images, c, h, w } = *px;
    cl.check_shape(c, h, w).map_err(|e| e.context(name.to_string()))?;
    let n = images.len() / (c * h * w);
    progress.start(&format!("classifier features of {name}"), n);
    let f = cl.features_u8(images, n, &|k| progress.advance(k))?;
    progress.finish();
    let mut s = FeatureStats { n, ..Default::default() };
    s.gaussians.insert("classifier".into(), Gaussian::from_features(&f, n, FEATURE_DIM)?);
    Ok(s)
}

/// Evaluates `other` against `reference` (see the module docs).
pub fn evaluate(
    reference: &ImageSource,
    other: &ImageSource,
    cfg: EvalConfig,
    progress: &dyn Progress,
) -> Result<Scores> {
    let e = Evaluator::new(cfg, progress)?;
    let r = e.stats(reference, progress)?;
    let o = e.stats(other, progress)?;
    e.compare(&r, &o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lists_and_dataset_specs_parse() {
        assert_eq!(Metric::parse_list("cfid,fid,cfid").unwrap(), vec![Metric::Fid, Metric::Cfid]);
        assert!(Metric::parse_list("fid,kid").unwrap_err().to_string().contains("unknown metric \"kid\""));
        let name = |s: &str| ImageSource::parse_dataset(s).unwrap().name();
        assert_eq!(name("fashion-mnist:test"), "fashion-mnist:test");
        assert_eq!(name("bundled"), "bundled:train");
        assert_eq!(name("idx:/a/b,/a/c"), "idx:/a/b,/a/c:train");
        assert_eq!(name("idx:/a/b:test"), "idx:/a/b:test");
        assert!(ImageSource::parse_dataset(":test").is_err());
    }
}
