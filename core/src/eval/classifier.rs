//! A small classifier this project trains on a dataset; the Fréchet distance
//! on its penultimate features is **"FID (classifier features)"** (`cfid`) —
//! a domain-specific stand-in, never comparable with (Inception) FID.
//!
//! The network is an MLP `in → 512 → 256 → classes` with ReLU (plain Rust on
//! nalgebra matrices, hand-written backward pass checked against finite
//! differences), trained with AdamW ([`crate::train::optim`]) on the train
//! split of the dataset; its accuracy is measured on the test split (for
//! `idx:` datasets, which have no split, on the training images themselves).
//! Inputs are scaled like the training data of the diffusion model,
//! `x / 127.5 − 1`. Training is deterministic for a seed.
//!
//! Trained classifiers are cached as safetensors under
//! `${FINE_CACHE_DIR:-~/.cache/fine}/classifier/`, keyed by dataset, image
//! size, seed and the code (see [`Classifier::cache_path`]).

use crate::data::{self, Dataset, Split};
use crate::train::optim::{AdamW, AdamWHp};
use crate::util::fsx::write_atomic;
use anyhow::{anyhow, bail, Result};
use nalgebra::{DMatrix, DVector};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Format tag of a cached classifier file; bump it when the network or its
/// training changes, so that older cached classifiers are retrained.
pub const FORMAT: &str = "fine-classifier/1";
/// Hidden widths; the last one is the feature dimension.
pub const HIDDEN: [usize; 2] = [512, 256];
/// Dimension of the features used for "FID (classifier features)".
pub const FEATURE_DIM: usize = 256;
/// Images per training step.
pub const BATCH: usize = 128;
/// Training length: this many epochs, at most [`MAX_STEPS`] steps.
pub const EPOCHS: usize = 8;
/// Upper bound on training steps (≈ 3 epochs of a 60k-image set).
pub const MAX_STEPS: usize = 1500;
/// AdamW hyper-parameters; the learning rate decays from `HP.lr` to 0 on a cosine.
pub const HP: AdamWHp = AdamWHp { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-4 };

// ----- the network -----

/// A ReLU MLP; column `b` of an activation matrix is image `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    /// Weight of layer l, (out, in).
    pub w: Vec<DMatrix<f32>>,
    /// Bias of layer l, (out).
    pub b: Vec<DVector<f32>>,
}

/// Gradients of an [`Mlp`]'s parameters (same shapes).
#[derive(Debug, Clone)]
pub struct Grads {
    /// ∂loss/∂w per layer.
    pub w: Vec<DMatrix<f32>>,
    /// ∂loss/∂b per layer.
    pub b: Vec<DVector<f32>>,
}

impl Mlp {
    /// PyTorch `nn.Linear` initialization, U(±1/√fan_in) for weights and biases.
    pub fn new(sizes: &[usize], rng: &mut impl Rng) -> Mlp {
        let (mut w, mut b) = (Vec::new(), Vec::new());
        for l in 0..sizes.len() - 1 {
            let (i, o) = (sizes[l], sizes[l + 1]);
            let a = 1.0 / (i as f32).sqrt();
            w.push(DMatrix::from_fn(o, i, |_, _| rng.gen_range(-a..a)));
            b.push(DVector::from_fn(o, |_, _| rng.gen_range(-a..a)));
        }
        Mlp { w, b }
    }

    /// Pre-activations of layers `0..upto` for inputs `x` (in, B); ReLU between layers.
    fn forward(&self, x: &DMatrix<f32>, upto: usize) -> Vec<DMatrix<f32>> {
        let mut z: Vec<DMatrix<f32>> = Vec::with_capacity(upto);
        for l in 0..upto {
            let mut zl = if l == 0 { &self.w[0] * x } else { &self.w[l] * relu(&z[l - 1]) }; // (out, B)
            for mut col in zl.column_iter_mut() {
                col += &self.b[l];
            }
            z.push(zl);
        }
        z
    }

    /// Post-ReLU activations of the last hidden layer, (hidden, B).
    pub fn penultimate(&self, x: &DMatrix<f32>) -> DMatrix<f32> {
        relu(self.forward(x, self.w.len() - 1).last().unwrap())
    }

    /// Logits, (classes, B).
    pub fn logits(&self, x: &DMatrix<f32>) -> DMatrix<f32> {
        self.forward(x, self.w.len()).pop().unwrap()
    }

    /// Mean softmax cross-entropy of `x` (in, B) against `labels`, and its gradients.
    pub fn loss_and_grads(&self, x: &DMatrix<f32>, labels: &[usize]) -> (f32, Grads) {
        let z = self.forward(x, self.w.len());
        let bsz = labels.len();
        let last = z.len() - 1;
        // ----- loss and ∂/∂logits = (softmax − onehot) / B -----
        let mut dz = z[last].clone();
        let mut loss = 0.0f64;
        for (j, mut col) in dz.column_iter_mut().enumerate() {
            let m = col.max();
            col.iter_mut().for_each(|v| *v = (*v - m).exp());
            let s = col.sum();
            col.iter_mut().for_each(|v| *v /= s);
            loss -= (col[labels[j]].max(1e-30) as f64).ln();
            col[labels[j]] -= 1.0;
            col.iter_mut().for_each(|v| *v /= bsz as f32);
        }
        // ----- backward through the layers -----
        let (mut gw, mut gb) = (vec![DMatrix::zeros(0, 0); z.len()], vec![DVector::zeros(0); z.len()]);
        for l in (0..z.len()).rev() {
            let h = if l == 0 { x.clone() } else { relu(&z[l - 1]) };
            gw[l] = &dz * h.transpose(); // (out, in)
            gb[l] = DVector::from_iterator(dz.nrows(), dz.row_iter().map(|r| r.sum()));
            if l > 0 {
                let mut dh = self.w[l].transpose() * &dz; // (in, B)
                dh.zip_apply(&z[l - 1], |g, zv| {
                    if zv <= 0.0 {
                        *g = 0.0
                    }
                });
                dz = dh;
            }
        }
        ((loss / bsz as f64) as f32, Grads { w: gw, b: gb })
    }
}

fn relu(z: &DMatrix<f32>) -> DMatrix<f32> {
    z.map(|v| v.max(0.0))
}

/// The u8 images `idx` (each `image_len` bytes) as an (in, B) matrix scaled to `[-1, 1]`.
fn batch_matrix(images: &[u8], image_len: usize, idx: impl ExactSizeIterator<Item = usize>) -> DMatrix<f32> {
    let cols = idx.len();
    let mut v = Vec::with_capacity(cols * image_len);
    for i in idx {
        v.extend(images[i * image_len..(i + 1) * image_len].iter().map(|&p| p as f32 / 127.5 - 1.0));
    }
    DMatrix::from_vec(image_len, cols, v)
}

// ----- the trained classifier -----

/// What a trained classifier was trained on and how well it does.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassifierInfo {
    /// Dataset spec it was trained on (`bundled`, `fashion-mnist`, ...).
    pub dataset: String,
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Seed of initialization and batch order.
    pub seed: u64,
    /// Training steps taken.
    pub steps: usize,
    /// Training images.
    pub train_images: usize,
    /// Images the accuracy was measured on.
    pub test_images: usize,
    /// Which split the accuracy was measured on (`test`, or `train` for `idx:` data).
    pub accuracy_split: String,
    /// Top-1 accuracy on those images, in [0, 1].
    pub accuracy: f64,
}

/// A trained classifier with its provenance.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// The network.
    pub mlp: Mlp,
    /// Provenance and accuracy.
    pub info: ClassifierInfo,
    /// CRC-32 of the weights (identifies them in cached statistics).
    pub crc32: u32,
}

impl Classifier {
    /// Trains on `train`, measures accuracy on `test` (named `accuracy_split`);
    /// `progress(step, steps)` after every step.
    pub fn train(
        dataset: &str,
        train: &Dataset,
        test: &Dataset,
        accuracy_split: &str,
        seed: u64,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Classifier> {
        if train.len < 2 || train.num_classes < 2 {
            bail!(
                "{dataset}: a classifier needs a labelled dataset with at least 2 images and 2 classes \
                 (found {} images, {} classes)",
                train.len,
                train.num_classes
            );
        }
        if (test.channels, test.height, test.width) != (train.channels, train.height, train.width) {
            bail!("{dataset}: train and test images differ in shape");
        }
        let il = train.image_len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut mlp = Mlp::new(&[il, HIDDEN[0], HIDDEN[1], train.num_classes], &mut rng);
        let per_epoch = train.len.div_ceil(BATCH);
        let steps = (EPOCHS * per_epoch).min(MAX_STEPS);
        let mut opt = AdamW::default();
        let mut order: Vec<usize> = (0..train.len).collect();
        for step in 0..steps {
            if step % per_epoch == 0 {
                order.shuffle(&mut rng);
            }
            let k = step % per_epoch;
            let idx = &order[k * BATCH..((k + 1) * BATCH).min(train.len)];
            let x = batch_matrix(&train.images, il, idx.iter().copied());
            let labels: Vec<usize> = idx.iter().map(|&i| train.labels[i] as usize).collect();
            let (_, g) = mlp.loss_and_grads(&x, &labels);
            let t = step as u64 + 1;
            let lr = 0.5 * HP.lr * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
            let hp = AdamWHp { lr, ..HP };
            for l in 0..mlp.w.len() {
                opt.update(&format!("w{l}"), mlp.w[l].as_mut_slice(), g.w[l].as_slice(), hp, t);
                opt.update(&format!("b{l}"), mlp.b[l].as_mut_slice(), g.b[l].as_slice(), hp, t);
            }
            progress(step + 1, steps);
        }
        let mut c = Classifier {
            mlp,
            info: ClassifierInfo {
                dataset: dataset.to_string(),
                channels: train.channels,
                height: train.height,
                width: train.width,
                num_classes: train.num_classes,
                seed,
                steps,
                train_images: train.len,
                test_images: test.len,
                accuracy_split: accuracy_split.to_string(),
                accuracy: 0.0,
            },
            crc32: 0,
        };
        c.info.accuracy = c.accuracy(test)?;
        c.crc32 = crc_of(&c.tensors());
        Ok(c)
    }

    /// Top-1 accuracy on a dataset of the classifier's image shape.
    pub fn accuracy(&self, ds: &Dataset) -> Result<f64> {
        self.check_shape(ds.channels, ds.height, ds.width)?;
        let mut correct = 0usize;
        for start in (0..ds.len).step_by(1024) {
            let end = (start + 1024).min(ds.len);
            let logits = self.mlp.logits(&batch_matrix(&ds.images, ds.image_len(), start..end));
            for (j, col) in logits.column_iter().enumerate() {
                correct += (col.imax() == ds.labels[start + j] as usize) as usize;
            }
        }
        Ok(correct as f64 / ds.len.max(1) as f64)
    }

    /// Penultimate features of `n` u8 images (NCHW, the classifier's shape): (n, [`FEATURE_DIM`]) row-major.
    pub fn features_u8(&self, images: &[u8], n: usize, progress: &dyn Fn(usize)) -> Result<Vec<f32>> {
        let il = self.info.channels * self.info.height * self.info.width;
        if images.len() != n * il {
            bail!("classifier: {} bytes of images, expected {n}·{il}", images.len());
        }
        let mut out = Vec::with_capacity(n * FEATURE_DIM);
        for start in (0..n).step_by(1024) {
            let end = (start + 1024).min(n);
            let h = self.mlp.penultimate(&batch_matrix(images, il, start..end)); // (256, B) = (B, 256) row-major
            out.extend_from_slice(h.as_slice());
            progress(end - start);
        }
        Ok(out)
    }

    /// Errors unless images of `c × h × w` fit this classifier.
    pub fn check_shape(&self, c: usize, h: usize, w: usize) -> Result<()> {
        let i = &self.info;
        if (c, h, w) != (i.channels, i.height, i.width) {
            bail!(
                "images are {c}×{h}×{w} but the classifier of {} takes {}×{}×{}",
                i.dataset,
                i.channels,
                i.height,
                i.width
            );
        }
        Ok(())
    }

    /// Identifies the extractor in cached statistics: dataset, shape, seed, weights.
    pub fn id(&self) -> String {
        let i = &self.info;
        format!(
            "classifier-{}-{}x{}x{}-seed{}-{:08x}",
            sanitize(&i.dataset),
            i.channels,
            i.height,
            i.width,
            i.seed,
            self.crc32
        )
    }

    /// `DIR/classifier/<dataset>-<c>x<h>x<w>-seed<seed>-<code>.safetensors`,
    /// `<code>` the CRC-32 of this file's source (the network and its
    /// training): a classifier cached by other code is never reused.
    pub fn cache_path(cache_dir: &Path, dataset: &str, shape: (usize, usize, usize), seed: u64) -> PathBuf {
        let (c, h, w) = shape;
        let code = crc32fast::hash(include_bytes!("classifier.rs"));
        let name = format!("{}-{c}x{h}x{w}-seed{seed}-{code:08x}.safetensors", sanitize(dataset));
        cache_dir.join("classifier").join(name)
    }

    /// The cached classifier of `dataset` for `seed`, training (and caching)
    /// it first if there is none. A corrupt cache file is reported through
    /// `warn` and replaced; `progress(step, steps)` follows the training.
    pub fn load_or_train(
        dataset: &str,
        seed: u64,
        cache_dir: &Path,
        warn: &dyn Fn(&str),
        progress: &dyn Fn(usize, usize),
    ) -> Result<Classifier> {
        let train = data::load(dataset, Split::Train)?;
        let path = Self::cache_path(cache_dir, dataset, (train.channels, train.height, train.width), seed);
        if path.exists() {
            match Self::load(&path) {
                Ok(c) if c.info.dataset == dataset && c.info.seed == seed => return Ok(c),
                Ok(_) => {
                    warn(&format!("{}: cached classifier is for another dataset or seed; retraining", path.display()))
                }
                Err(e) => warn(&format!("{e:#}; retraining")),
            }
        }
        let (test, split) = if dataset.starts_with("idx:") {
            (train.clone(), "train")
        } else {
            (data::load(dataset, Split::Test)?, "test")
        };
        let c = Self::train(dataset, &train, &test, split, seed, progress)?;
        c.save(&path)?;
        Ok(c)
    }

    fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<u8>)> {
        let mut t = Vec::new();
        for l in 0..self.mlp.w.len() {
            let w = &self.mlp.w[l];
            // PyTorch layout: (out, in) row-major.
            t.push((format!("w{l}"), vec![w.nrows(), w.ncols()], f32_bytes(w.transpose().as_slice())));
            t.push((format!("b{l}"), vec![w.nrows()], f32_bytes(self.mlp.b[l].as_slice())));
        }
        t
    }

    /// Writes the classifier (atomically) as safetensors with its info in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self.tensors();
        let i = &self.info;
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("arch", format!("mlp {}", self.sizes().iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-"))),
            ("dataset", i.dataset.clone()),
            ("shape", format!("{}x{}x{}", i.channels, i.height, i.width)),
            ("num_classes", i.num_classes.to_string()),
            ("seed", i.seed.to_string()),
            ("steps", i.steps.to_string()),
            ("train_images", i.train_images.to_string()),
            ("test_images", i.test_images.to_string()),
            ("accuracy_split", i.accuracy_split.clone()),
            ("accuracy", format!("{}", i.accuracy)),
            ("crc32", format!("{:08x}", crc_of(&tensors))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let views = tensors
            .iter()
            .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let bytes = safetensors::serialize(views, &Some(meta))?;
        write_atomic(path, &bytes)
    }

    /// Reads a classifier written by [`Classifier::save`]; errors name the file and the defect.
    pub fn load(path: &Path) -> Result<Classifier> {
        let p = path.display();
        let bytes = crate::util::fsx::read_input(path, "classifier")?;
        let bad = |e: safetensors::SafeTensorError| {
            anyhow!("{p}: not a usable safetensors file: {}", fine_plugin_api::tensors::explain(&e))
        };
        let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| anyhow!("{p}: metadata field {k:?} is missing"));
        if get("format")? != FORMAT {
            bail!("{p}: not a classifier file (format {:?}, expected {FORMAT:?})", get("format")?);
        }
        let num = |k: &str| -> Result<usize> { get(k)?.parse().map_err(|_| anyhow!("{p}: bad metadata field {k:?}")) };
        let shape: Vec<usize> = get("shape")?.split('x').filter_map(|s| s.parse().ok()).collect();
        if shape.len() != 3 {
            bail!("{p}: bad metadata field \"shape\"");
        }
        let info = ClassifierInfo {
            dataset: get("dataset")?,
            channels: shape[0],
            height: shape[1],
            width: shape[2],
            num_classes: num("num_classes")?,
            seed: get("seed")?.parse().map_err(|_| anyhow!("{p}: bad metadata field \"seed\""))?,
            steps: num("steps")?,
            train_images: num("train_images")?,
            test_images: num("test_images")?,
            accuracy_split: get("accuracy_split")?,
            accuracy: get("accuracy")?.parse().map_err(|_| anyhow!("{p}: bad metadata field \"accuracy\""))?,
        };
        let sizes = [shape.iter().product(), HIDDEN[0], HIDDEN[1], info.num_classes];
        let (mut w, mut b) = (Vec::new(), Vec::new());
        for l in 0..3 {
            let (i, o) = (sizes[l], sizes[l + 1]);
            w.push(DMatrix::from_row_slice(o, i, &read_f32(&st, path, &format!("w{l}"), &[o, i])?));
            b.push(DVector::from_vec(read_f32(&st, path, &format!("b{l}"), &[o])?));
        }
        let c = Classifier { mlp: Mlp { w, b }, info, crc32: 0 };
        let crc = crc_of(&c.tensors());
        if format!("{crc:08x}") != get("crc32")? {
            bail!("{p}: checksum mismatch (the file is corrupt)");
        }
        Ok(Classifier { crc32: crc, ..c })
    }

    /// Layer sizes `in, hidden…, classes`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut s = vec![self.mlp.w[0].ncols()];
        s.extend(self.mlp.w.iter().map(|w| w.nrows()));
        s
    }
}

fn read_f32(st: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| anyhow!("{}: tensor {name:?} is missing", path.display()))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        bail!("{}: tensor {name:?} is {:?} {:?}, expected F32 {shape:?}", path.display(), t.dtype(), t.shape());
    }
    Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn crc_of(tensors: &[(String, Vec<usize>, Vec<u8>)]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    tensors.iter().for_each(|(_, _, b)| h.update(b));
    h.finalize()
}

/// A dataset spec as a file-name component: `[A-Za-z0-9._-]` kept, the rest `_`
/// (plus a CRC-32 of the spec when anything was replaced, so paths stay distinct).
pub fn sanitize(spec: &str) -> String {
    let s: String =
        spec.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if s == spec {
        s
    } else {
        let tail: String = s.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        format!("{tail}-{:08x}", crc32fast::hash(spec.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mlp = Mlp::new(&[6, 5, 4, 3], &mut rng);
        let x = DMatrix::from_fn(6, 4, |_, _| rng.gen_range(-1.0f32..1.0));
        let labels = [0usize, 2, 1, 2];
        let (_, g) = mlp.loss_and_grads(&x, &labels);
        let eps = 1e-3f32;
        let mut checked = 0;
        for l in 0..3 {
            for k in 0..mlp.w[l].len() + mlp.b[l].len() {
                let fd = {
                    let f = |delta: f32| {
                        let mut m = mlp.clone();
                        let nw = m.w[l].len();
                        if k < nw {
                            m.w[l].as_mut_slice()[k] += delta;
                        } else {
                            m.b[l].as_mut_slice()[k - nw] += delta;
                        }
                        m.loss_and_grads(&x, &labels).0 as f64
                    };
                    (f(eps) - f(-eps)) / (2.0 * eps as f64)
                };
                let nw = mlp.w[l].len();
                let an = if k < nw { g.w[l].as_slice()[k] } else { g.b[l].as_slice()[k - nw] } as f64;
                assert!((an - fd).abs() <= 2e-3 + 2e-2 * fd.abs(), "layer {l} param {k}: analytic {an}, numeric {fd}");
                checked += 1;
            }
        }
        assert_eq!(checked, 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3);
        // The loss is a real cross-entropy: uniform logits give ln(classes).
        let zero = Mlp { w: mlp.w.iter().map(|w| w * 0.0).collect(), b: mlp.b.iter().map(|b| b * 0.0).collect() };
        assert!((zero.loss_and_grads(&x, &labels).0 - 3f32.ln()).abs() < 1e-6);
    }

    /// Two Gaussian blobs as 2×2 "images": trains to high accuracy, is
    /// deterministic for a seed, and survives a save/load round trip.
    #[test]
    fn trains_saves_and_loads() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let n = 400;
        let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        let images: Vec<u8> = labels
            .iter()
            .flat_map(|&l| {
                let c = if l == 0 { 80.0 } else { 170.0 };
                (0..4).map(|_| (c + rng.gen_range(-40.0..40.0f32)) as u8).collect::<Vec<_>>()
            })
            .collect();
        let ds =
            Dataset { name: "blobs".into(), images, labels, len: n, channels: 1, height: 2, width: 2, num_classes: 2 };
        let c = Classifier::train("blobs", &ds, &ds, "train", 7, &|_, _| {}).unwrap();
        assert!(c.info.accuracy > 0.95, "{:?}", c.info);
        let again = Classifier::train("blobs", &ds, &ds, "train", 7, &|_, _| {}).unwrap();
        assert_eq!(c.mlp, again.mlp);
        assert_ne!(c.mlp, Classifier::train("blobs", &ds, &ds, "train", 8, &|_, _| {}).unwrap().mlp);
        let dir = tempfile::tempdir().unwrap();
        let path = Classifier::cache_path(dir.path(), "idx:/a b/c", (1, 2, 2), 7);
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with("idx__a_b_c-"), "{path:?}");
        c.save(&path).unwrap();
        let back = Classifier::load(&path).unwrap();
        assert_eq!((back.mlp.clone(), back.info.clone(), back.crc32), (c.mlp.clone(), c.info.clone(), c.crc32));
        let f = c.features_u8(&ds.images[..8], 2, &|_| {}).unwrap();
        assert_eq!(f.len(), 2 * FEATURE_DIM);
        assert!(c.check_shape(1, 28, 28).is_err());
        // A flipped bit in a weight is caught.
        let mut bytes = std::fs::read(&path).unwrap();
        let k = bytes.len() - 5;
        bytes[k] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let msg = format!("{:#}", Classifier::load(&path).unwrap_err());
        assert!(msg.contains("checksum") && msg.contains(path.to_str().unwrap()), "{msg}");
        std::fs::write(&path, b"junk").unwrap();
        assert!(format!("{:#}", Classifier::load(&path).unwrap_err()).contains(path.to_str().unwrap()));
    }

    /// Accuracy and time on the bundled data:
    /// `cargo test --release -p fine-core classifier_on_bundled -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn classifier_on_bundled() {
        for spec in ["bundled", "fashion-mnist"] {
            let t = std::time::Instant::now();
            let (train, test) = (data::load(spec, Split::Train).unwrap(), data::load(spec, Split::Test).unwrap());
            let c = Classifier::train(spec, &train, &test, "test", 0, &|_, _| {}).unwrap();
            eprintln!("{spec}: {:?} in {:?}", c.info, t.elapsed());
        }
    }
}
