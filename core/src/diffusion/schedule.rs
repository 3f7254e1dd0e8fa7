//! β schedules and the quantities derived from them (computed in f64).

use serde::{Deserialize, Serialize};

/// How β_t grows over the diffusion steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum BetaSchedule {
    /// DDPM / DiT: β linear from 1e-4·(1000/T) to 0.02·(1000/T).
    #[default]
    Linear,
    /// Nichol & Dhariwal 2021: ᾱ(t) = cos²(((t/T) + 0.008)/1.008 · π/2), β clipped at 0.999.
    Cosine,
}

impl std::str::FromStr for BetaSchedule {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => anyhow::bail!("unknown β schedule `{s}` (expected `linear` or `cosine`)"),
        }
    }
}

/// A discrete DDPM noise schedule of `T` steps.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    /// β_t, t = 0..T.
    pub betas: Vec<f64>,
    /// ᾱ_t = Π_{s ≤ t} (1 − β_s).
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Builds a schedule of `steps` steps.
    pub fn new(kind: BetaSchedule, steps: usize) -> Self {
        let betas: Vec<f64> = match kind {
            BetaSchedule::Linear => {
                let scale = 1000.0 / steps as f64;
                let (b0, b1) = (scale * 1e-4, scale * 0.02);
                (0..steps).map(|i| b0 + (b1 - b0) * i as f64 / (steps - 1).max(1) as f64).collect()
            }
            BetaSchedule::Cosine => {
                let ab = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..steps)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
                        (1.0 - ab(t2) / ab(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        Self::from_betas(betas)
    }

    /// A schedule from explicit β values.
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Self { betas, alphas_cumprod }
    }

    /// Number of steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// True if the schedule has no steps.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// q(x_t | x_0): writes `x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε` for a batch of images,
    /// each with its own timestep.
    pub fn add_noise(&self, x0: &[f32], eps: &[f32], t: &[usize], out: &mut Vec<f32>) {
        let per = x0.len() / t.len().max(1);
        out.clear();
        for (b, &tb) in t.iter().enumerate() {
            let ab = self.alphas_cumprod[tb];
            let (sa, sn) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
            let r = b * per..(b + 1) * per;
            out.extend(x0[r.clone()].iter().zip(&eps[r]).map(|(x, e)| sa * x + sn * e));
        }
    }

    /// A noisy batch for `b` images `x0`: a uniform timestep per image, then
    /// Gaussian noise, drawn from `rng` in that order (as training does).
    /// Returns `(x_t, t, ε)`.
    pub fn noisy_batch(&self, x0: &[f32], b: usize, rng: &mut impl rand::Rng) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
        let t: Vec<usize> = (0..b).map(|_| rng.gen_range(0..self.len())).collect();
        let eps: Vec<f32> = (0..x0.len()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
        let mut x_t = Vec::new();
        self.add_noise(x0, &eps, &t, &mut x_t);
        (x_t, t, eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the published formulas, computed with numpy:
    /// ```python
    /// import numpy as np
    /// b = np.linspace(1e-4, 0.02, 1000, dtype=np.float64); ab = np.cumprod(1 - b)
    /// print(ab[0], ab[499], ab[999])
    /// f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    /// bc = np.minimum(1 - f(np.arange(1, 1001) / 1000) / f(np.arange(1000) / 1000), 0.999)
    /// print(bc[0], np.cumprod(1 - bc)[499], bc[999])
    /// ```
    #[test]
    fn schedules_match_formulas() {
        let l = NoiseSchedule::new(BetaSchedule::Linear, 1000);
        assert!((l.alphas_cumprod[0] - 0.9999).abs() < 1e-12);
        assert!((l.alphas_cumprod[499] - 0.07858724288177824).abs() < 1e-12, "{}", l.alphas_cumprod[499]);
        assert!((l.alphas_cumprod[999] - 4.035829765375676e-05).abs() < 1e-15, "{}", l.alphas_cumprod[999]);
        let c = NoiseSchedule::new(BetaSchedule::Cosine, 1000);
        assert!((c.betas[0] - 4.128422482196914e-05).abs() < 1e-15, "{}", c.betas[0]);
        assert!((c.betas[999] - 0.999).abs() < 1e-12);
        assert!((c.alphas_cumprod[499] - 0.4938435904406382).abs() < 1e-12, "{}", c.alphas_cumprod[499]);
    }

    /// q(x_t | x_0) per image, each at its own timestep, against the formula with
    /// ᾱ from the numbers above (linear β): image 0 at t = 499, image 1 at t = 999.
    #[test]
    fn add_noise_is_the_forward_process_per_image() {
        let l = NoiseSchedule::new(BetaSchedule::Linear, 1000);
        let (x0, eps) = ([0.5f32, -1.0, 0.25, 1.0], [1.0f32, 2.0, -0.5, -1.5]);
        let mut out = Vec::new();
        l.add_noise(&x0, &eps, &[499, 999], &mut out);
        let ab = [0.07858724288177824f64, 4.035829765375676e-05];
        for (i, got) in out.iter().enumerate() {
            let a = ab[i / 2];
            let want = a.sqrt() * x0[i] as f64 + (1.0 - a).sqrt() * eps[i] as f64;
            assert!((*got as f64 - want).abs() < 1e-6, "value {i}: {got} vs {want}");
        }
        assert_eq!(out.len(), 4);
    }
}
