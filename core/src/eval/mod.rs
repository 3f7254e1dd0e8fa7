//! # Evaluation
//!
//! Standard sample-quality metrics, comparable with the literature:
//!
//! * [`inception`] — a port of the FID InceptionV3 (pool3 2048-d features and
//!   the sFID spatial features `mixed_6.conv[:7]`) with pytorch-fid's
//!   grayscale preprocessing; NHWC, im2col + [`crate::util::gemm`] in
//!   [`conv`], pools and resize in [`ops`].
//! * [`frechet`] — Gaussian statistics in f64 and the Fréchet distance.
//! * [`prdc`] — precision / recall with k-NN manifolds (k = 3, ADM evaluator).
//! * [`classifier`] — a classifier trained by this project on the dataset; the
//!   Fréchet distance on its features is "FID (classifier features)".
//! * [`stats`] — reference statistics computed once per dataset/split and cached.
//! * [`evaluate`](mod@evaluate) — all of it as one call: [`evaluate()`] / [`Evaluator`].

pub mod classifier;
pub mod conv;
pub mod evaluate;
pub mod frechet;
pub mod inception;
pub mod ops;
pub mod prdc;
pub mod stats;

pub use evaluate::{evaluate, EvalConfig, Evaluator, ImageSource, Metric, Scores};
