//! Improved precision and recall (Kynkäänniemi et al. 2019) exactly as the ADM
//! evaluator computes them (guided-diffusion `evaluations/evaluator.py`,
//! `ManifoldEstimator` with `nhood_sizes = (3,)`):
//!
//! * the manifold of a set is the union of hyperspheres around its points whose
//!   *squared* radius is the squared distance to the k-th nearest neighbour in
//!   the set — index k of the sorted row of distances, the point itself being
//!   index 0;
//! * precision = fraction of generated points inside at least one real
//!   hypersphere (`d² ≤ r²`), recall = fraction of real points inside at least
//!   one generated hypersphere.
//!
//! Squared distances come from `‖a‖² + ‖b‖² − 2 a·b` (clamped at 0) with a
//! matrix product per block of rows, in f32 (ADM first tries f16 and falls back
//! to f32; the comparisons are in f32 either way).

use anyhow::{bail, Result};
use nalgebra::{DMatrix, DMatrixView};

/// Neighbourhood size of the ADM evaluator.
pub const K: usize = 3;

/// Rows per distance block (a block holds `BLOCK × n` f32 distances).
const BLOCK: usize = 256;

/// Precision and recall of a generated set against a real one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Fraction of generated samples on the real manifold.
    pub precision: f64,
    /// Fraction of real samples on the generated manifold.
    pub recall: f64,
}

/// A feature set: `n` vectors of dimension `d`, (n, d) row-major.
#[derive(Debug, Clone, Copy)]
pub struct FeatureSet<'a> {
    /// The features, (n, d) row-major.
    pub x: &'a [f32],
    /// Number of vectors.
    pub n: usize,
    /// Dimension.
    pub d: usize,
}

impl<'a> FeatureSet<'a> {
    /// Wraps `x` as `n` vectors of dimension `d`, checking the size and finiteness.
    pub fn new(x: &'a [f32], n: usize, d: usize, what: &str) -> Result<Self> {
        if x.len() != n * d || d == 0 {
            bail!("{what}: feature buffer has {} values, expected n·d = {n}·{d}", x.len());
        }
        if x.iter().any(|v| !v.is_finite()) {
            bail!("{what}: features contain non-finite values");
        }
        Ok(FeatureSet { x, n, d })
    }

    /// Squared norm of every vector.
    fn sq_norms(&self) -> Vec<f32> {
        self.x.chunks_exact(self.d).map(|r| r.iter().map(|v| v * v).sum()).collect()
    }
}

/// Calls `f(first_row, dist)` for consecutive blocks of rows of `a`, `dist`
/// being the squared distances of those rows to all of `b`: (rows, b.n),
/// row-major (each row contiguous).
fn distance_blocks(a: &FeatureSet, b: &FeatureSet, mut f: impl FnMut(usize, &[f32])) {
    let d = a.d;
    let (na2, nb2) = (a.sq_norms(), b.sq_norms());
    let b_rows = DMatrix::from_row_slice(b.n, d, b.x); // (nb, d)
    let mut dist = Vec::with_capacity(BLOCK * b.n);
    for start in (0..a.n).step_by(BLOCK) {
        let end = (start + BLOCK).min(a.n);
        // (d, rows) column-major view of the row-major block.
        let a_cols = DMatrixView::from_slice(&a.x[start * d..end * d], d, end - start);
        let gram = &b_rows * a_cols; // (nb, rows) column-major: column i = row i's dot products
        dist.clear();
        for (i, col) in gram.column_iter().enumerate() {
            let ni = na2[start + i];
            dist.extend(col.iter().zip(&nb2).map(|(g, nj)| (ni + nj - 2.0 * g).max(0.0)));
        }
        f(start, &dist);
    }
}

/// Squared radius of every point's hypersphere: the squared distance to its
/// k-th nearest neighbour (index k of the sorted distance row, self at 0).
/// Errors unless the set has more than `k` points.
pub fn manifold_radii(x: &FeatureSet, k: usize) -> Result<Vec<f32>> {
    if x.n <= k {
        bail!("precision/recall need more than k = {k} samples per set, got {}", x.n);
    }
    let mut radii = vec![0.0f32; x.n];
    distance_blocks(x, x, |start, dist| {
        for (i, row) in dist.chunks_exact(x.n).enumerate() {
            let mut row = row.to_vec();
            let (_, kth, _) = row.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
            radii[start + i] = *kth;
        }
    });
    Ok(radii)
}

/// Precision and recall of `fake` against `real` with neighbourhood size `k`
/// (the ADM evaluator uses [`K`] = 3).
pub fn precision_recall(real: &FeatureSet, fake: &FeatureSet, k: usize) -> Result<PrecisionRecall> {
    if real.d != fake.d {
        bail!("precision/recall: real features have dimension {}, generated {}", real.d, fake.d);
    }
    let r_real = manifold_radii(real, k)?;
    let r_fake = manifold_radii(fake, k)?;
    let mut fake_in = vec![false; fake.n]; // on the real manifold
    let mut real_in = vec![false; real.n]; // on the generated manifold
    distance_blocks(fake, real, |start, dist| {
        for (j, row) in dist.chunks_exact(real.n).enumerate() {
            let rj = r_fake[start + j];
            for (i, &dij) in row.iter().enumerate() {
                fake_in[start + j] |= dij <= r_real[i];
                real_in[i] |= dij <= rj;
            }
        }
    });
    let frac = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    Ok(PrecisionRecall { precision: frac(&fake_in), recall: frac(&real_in) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(x: &[f32], d: usize) -> FeatureSet<'_> {
        FeatureSet::new(x, x.len() / d, d, "test").unwrap()
    }

    #[test]
    fn points_on_a_line_by_hand() {
        // Real 0..4: squared 3-NN radii 9, 4, 4, 4, 9. Generated 0, 1, 2, 3, 100:
        // 100 is off the real manifold (precision 4/5); the generated radii are
        // 9, 4, 4, 9, 9801 and cover every real point (recall 1).
        let real = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        let fake = [0.0f32, 1.0, 2.0, 3.0, 100.0];
        assert_eq!(manifold_radii(&set(&real, 1), 3).unwrap(), vec![9.0, 4.0, 4.0, 4.0, 9.0]);
        assert_eq!(manifold_radii(&set(&fake, 1), 3).unwrap(), vec![9.0, 4.0, 4.0, 9.0, 9801.0]);
        let pr = precision_recall(&set(&real, 1), &set(&fake, 1), 3).unwrap();
        assert_eq!(pr, PrecisionRecall { precision: 0.8, recall: 1.0 });
        let pr = precision_recall(&set(&fake, 1), &set(&real, 1), 3).unwrap();
        assert_eq!(pr, PrecisionRecall { precision: 1.0, recall: 0.8 });
        // Identical sets: everything is covered.
        let pr = precision_recall(&set(&real, 1), &set(&real, 1), 3).unwrap();
        assert_eq!(pr, PrecisionRecall { precision: 1.0, recall: 1.0 });
        // Two far-apart clusters: nothing is covered.
        let far: Vec<f32> = real.iter().map(|v| v + 1000.0).collect();
        let pr = precision_recall(&set(&real, 1), &set(&far, 1), 3).unwrap();
        assert_eq!(pr, PrecisionRecall { precision: 0.0, recall: 0.0 });
    }

    /// Pseudo-random features in [0, 1) plus `shift`, as in the numpy script below.
    fn feats(n: usize, d: usize, seed: f64, shift: f64) -> Vec<f32> {
        (0..n * d)
            .map(|k| {
                let (i, j) = ((k / d) as f64, (k % d) as f64);
                (((12.9898 * i + 78.233 * j + seed).sin() * 43758.5453).rem_euclid(1.0) + shift) as f32
            })
            .collect()
    }

    /// Against a numpy transcription of the ADM evaluator (numpy 2.4.6):
    /// ```python
    /// import numpy as np
    /// def feats(n, d, seed, shift):
    ///     v = [[(np.sin(12.9898 * i + 78.233 * j + seed) * 43758.5453) % 1.0 + shift for j in range(d)]
    ///          for i in range(n)]
    ///     return np.array(v, dtype=np.float32)
    /// def pairwise(U, V):  # ADM _batch_pairwise_distances: squared, clamped at 0
    ///     nu = (U * U).sum(1)[:, None]; nv = (V * V).sum(1)[None, :]
    ///     return np.maximum(nu - 2 * U @ V.T + nv, 0.0)
    /// def radii(X, k=3):  # ADM manifold_radii: index k of the partitioned row (self is index 0)
    ///     return np.partition(pairwise(X, X), k, axis=1)[:, k]
    /// def pr(real, fake, k=3):  # ADM evaluate_pr
    ///     r1, r2 = radii(real, k), radii(fake, k)
    ///     D = pairwise(real, fake)  # (n_real, n_fake)
    ///     return (D <= r1[:, None]).any(0).mean(), (D <= r2[None, :]).any(1).mean()
    /// real = feats(40, 5, 0.0, 0.0); fake = feats(30, 5, 1.0, 0.25)
    /// print(pr(real, fake), radii(real)[:4].tolist())
    /// # (0.7666666666666667, 0.8) [0.41602039337158203, 0.4737863540649414, 0.22266793251037598, 0.26594841480255127]
    /// ```
    #[test]
    fn matches_the_adm_evaluator_on_random_features() {
        let (real, fake) = (feats(40, 5, 0.0, 0.0), feats(30, 5, 1.0, 0.25));
        let r = manifold_radii(&set(&real, 5), 3).unwrap();
        for (a, b) in
            r.iter().zip([0.41602039337158203f32, 0.4737863540649414, 0.22266793251037598, 0.26594841480255127])
        {
            assert!((a - b).abs() < 1e-5, "{r:?}");
        }
        let pr = precision_recall(&set(&real, 5), &set(&fake, 5), 3).unwrap();
        assert_eq!((pr.precision * 30.0, pr.recall * 40.0), (23.0, 32.0), "{pr:?}");
    }

    #[test]
    fn blocks_do_not_change_the_answer() {
        // More rows than one block: the blocked result equals a direct computation.
        let (real, fake) = (feats(300, 3, 0.0, 0.0), feats(270, 3, 2.0, 0.1));
        let (rs, fs) = (set(&real, 3), set(&fake, 3));
        let pr = precision_recall(&rs, &fs, 3).unwrap();
        let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
        let radii = |s: &[f32]| -> Vec<f32> {
            let rows: Vec<&[f32]> = s.chunks(3).collect();
            rows.iter()
                .map(|a| {
                    let mut v: Vec<f32> = rows.iter().map(|b| dist(a, b)).collect();
                    v.sort_by(f32::total_cmp);
                    v[3]
                })
                .collect()
        };
        let (rr, rf) = (radii(&real), radii(&fake));
        let covered = |x: &[f32], y: &[f32], ry: &[f32]| {
            x.chunks(3).filter(|a| y.chunks(3).zip(ry).any(|(b, r)| dist(a, b) <= r + 1e-5)).count() as f64
        };
        assert!((pr.precision - covered(&fake, &real, &rr) / 270.0).abs() <= 2.0 / 270.0, "{pr:?}");
        assert!((pr.recall - covered(&real, &fake, &rf) / 300.0).abs() <= 2.0 / 300.0, "{pr:?}");
        assert!(pr.precision > 0.2 && pr.precision < 0.99 && pr.recall > 0.2 && pr.recall < 0.99, "{pr:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = [0.0f32; 6];
        assert!(FeatureSet::new(&x, 4, 2, "t").is_err());
        assert!(FeatureSet::new(&[f32::NAN, 0.0], 2, 1, "t").is_err());
        let small = set(&x[..3], 1);
        assert!(manifold_radii(&small, 3).unwrap_err().to_string().contains("more than k = 3"));
        let msg = precision_recall(&set(&x, 2), &set(&x, 3), 3).unwrap_err().to_string();
        assert!(msg.contains("dimension 2") && msg.contains("generated 3"), "{msg}");
    }

    /// Time at the Inception dimension: `cargo test --release -p fine-core prdc_timing -- --ignored --nocapture`
    /// (three N×N distance passes: scale by (10000/N)² for N = 10,000).
    #[test]
    #[ignore]
    fn prdc_timing() {
        let n = 3000;
        let (real, fake) = (feats(n, 2048, 0.0, 0.0), feats(n, 2048, 1.0, 0.01));
        let t = std::time::Instant::now();
        let pr = precision_recall(&set(&real, 2048), &set(&fake, 2048), K).unwrap();
        eprintln!("N = {n}, d = 2048: {pr:?} in {:?}", t.elapsed());
    }
}
