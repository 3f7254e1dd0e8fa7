//! Knowledge distillation from a trained teacher: how Learngene Pool
//! (arXiv 2312.05743) makes its auxiliary models from the ancestry.
//!
//! The paper's soft distillation mixes the task loss and the teacher-matching
//! loss with weight α (its `conf_build`: α = 0.5). For ε-prediction both are
//! squared errors on the same output, and
//!
//! ```text
//! (1−α)·‖ε̂ − ε‖² + α·‖ε̂ − ε_T‖²  =  ‖ε̂ − ((1−α)·ε + α·ε_T)‖² + const
//! ```
//!
//! so distilling is ordinary training against the blended target
//! `(1−α)·ε + α·ε_T(x_t, t, y)`, with the teacher seeing exactly the student's
//! noisy batch (labels after dropout included). The dense block-level losses
//! of the paper are not used here.

use crate::model::{Backend, Dit, ParamStore};
use anyhow::{bail, Result};
use dfdx::prelude::NoneTape;

/// A frozen teacher and the weight of its term.
pub struct Teacher<D: Backend> {
    /// The teacher's structure (same input, patch size and classes as the student).
    pub dit: Dit,
    /// Its weights (a plain store: one leaf per weight).
    pub store: ParamStore<D>,
    /// Weight α of the teacher term, in [0, 1]; 1 = pure distillation.
    pub alpha: f32,
}

impl<D: Backend> Teacher<D> {
    /// The distillation target `(1−α)·ε + α·ε_T(x_t, t, y)` (NCHW, like `eps`).
    pub fn target(&self, x_t: &[f32], t: &[f32], y: &[usize], eps: &[f32]) -> Result<Vec<f32>> {
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!("distillation weight α = {} is not in [0, 1]", self.alpha);
        }
        let pred = self.dit.predict(&self.store.view::<NoneTape>(), x_t, t, y)?;
        if pred.len() != eps.len() {
            bail!(
                "the teacher `{}` predicts {} values for a batch of {}: its input differs from the student's",
                self.dit.graph.name,
                pred.len(),
                eps.len()
            );
        }
        let a = self.alpha;
        Ok(eps.iter().zip(&pred).map(|(e, p)| (1.0 - a) * e + a * p).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::CpuDevice;
    use rand::SeedableRng;

    #[test]
    fn target_blends_noise_and_teacher_prediction() {
        let g = crate::graph::test_graph(1, 8, 2, 16, 2, 2);
        let dit = Dit::new(&g);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut store = ParamStore::init(CpuDevice::default(), dit.plain_parameterization(), &mut rng).unwrap();
        store.set("final_layer.linear.bias", (0..4).map(|i| i as f32 * 0.1 + 0.1).collect()).unwrap(); // non-zero output
        let x: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0).collect();
        let eps: Vec<f32> = (0..64).map(|i| (i % 3) as f32).collect();
        let (t, y) = ([10.0f32], [2usize]);
        let pred = dit.predict(&store.view::<NoneTape>(), &x, &t, &y).unwrap();
        let teacher = |alpha| Teacher { dit: dit.clone(), store: store.clone(), alpha };
        assert_eq!(teacher(0.0).target(&x, &t, &y, &eps).unwrap(), eps);
        assert_eq!(teacher(1.0).target(&x, &t, &y, &eps).unwrap(), pred);
        let half = teacher(0.5).target(&x, &t, &y, &eps).unwrap();
        assert!(half.iter().zip(eps.iter().zip(&pred)).all(|(h, (e, p))| (h - 0.5 * (e + p)).abs() < 1e-6));
        assert!(teacher(1.5).target(&x, &t, &y, &eps).is_err());
        assert!(teacher(0.5).target(&x, &t, &y, &eps[..10]).is_err());
    }
}
