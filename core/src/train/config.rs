//! The run configuration (RON). It is stored inside every checkpoint, so a
//! resumed run cannot silently change it.

use crate::diffusion::BetaSchedule;
use serde::{Deserialize, Serialize};

/// Everything that defines a training run besides the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Data set: `bundled`, `fashion-mnist`, `mnist` or `idx:IMAGES[,LABELS]`.
    pub data: String,
    /// Split: `train` or `test`.
    pub split: String,
    /// Use only the first N images of the split.
    pub subset: Option<usize>,
    /// Total optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Seed for initialization, data order, timesteps, noise and label dropout.
    pub seed: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (AdamW); DiT uses 0.
    pub weight_decay: f64,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub adam_eps: f64,
    /// Linear warmup steps from 0 to `lr`.
    pub warmup: usize,
    /// Learning rate after warmup.
    pub lr_schedule: LrSchedule,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// EMA decay of the weights (DiT: 0.9999), the cap of the warmup below.
    pub ema_decay: f64,
    /// Warm the EMA up: the decay at (0-based) update s is min(`ema_decay`,
    /// (1 + s)/(10 + s)), as diffusers' `EMAModel`, so that the EMA of a short
    /// run is not mostly the initialization. `false`: `ema_decay` from the first
    /// step (DiT's original). A config stored before this option existed reads
    /// as `true`, like every absent field: such a run resumes with the warmup
    /// decay, which past ≈ 9/(1 − ema_decay) steps is the cap itself.
    pub ema_warmup: bool,
    /// β schedule of the forward process.
    pub beta_schedule: BetaSchedule,
    /// Number of diffusion steps T.
    pub diffusion_steps: usize,
    /// Write a checkpoint every N steps (and always at the end).
    pub ckpt_every: usize,
}

/// Learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum LrSchedule {
    /// Constant at `lr`.
    #[default]
    Constant,
    /// Cosine decay from `lr` to `min_lr` at the last step.
    Cosine { min_lr: f64 },
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: "bundled".into(),
            split: "train".into(),
            subset: None,
            steps: 1000,
            batch: 32,
            seed: 0,
            lr: 1e-4,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            warmup: 0,
            lr_schedule: LrSchedule::Constant,
            grad_clip: Some(1.0),
            ema_decay: 0.9999,
            ema_warmup: true,
            beta_schedule: BetaSchedule::Linear,
            diffusion_steps: 1000,
            ckpt_every: 500,
        }
    }
}

impl TrainConfig {
    /// Learning rate at (0-based) step `s`.
    pub fn lr_at(&self, s: usize) -> f64 {
        if s < self.warmup {
            return self.lr * (s + 1) as f64 / self.warmup as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine { min_lr } => {
                let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
                let p = ((s - self.warmup) as f64 / span).min(1.0);
                min_lr + 0.5 * (self.lr - min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }

    /// EMA decay of the (0-based) update `s` ([`TrainConfig::ema_warmup`]).
    pub fn ema_decay_at(&self, s: u64) -> f64 {
        if self.ema_warmup {
            self.ema_decay.min((1 + s) as f64 / (10 + s) as f64)
        } else {
            self.ema_decay
        }
    }

    /// The share of the initial weights left in the EMA after `steps` updates.
    pub fn ema_init_share(&self, steps: u64) -> f64 {
        if !self.ema_warmup {
            return self.ema_decay.powf(steps as f64);
        }
        // The EMA starts at the initial weights; each update keeps `decay_at(s)` of it.
        (0..steps).map(|s| self.ema_decay_at(s)).product()
    }

    /// Checks values a user could get wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut e = Vec::new();
        if self.batch == 0 {
            e.push("batch must be at least 1".to_string());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            e.push(format!("lr must be positive and finite, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            e.push(format!("ema_decay must be in [0, 1), got {}", self.ema_decay));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            e.push("beta1 and beta2 must be in [0, 1)".into());
        }
        if self.diffusion_steps < 2 {
            e.push("diffusion_steps must be at least 2".into());
        }
        if self.ckpt_every == 0 {
            e.push("ckpt_every must be at least 1".into());
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0 && c.is_finite()) {
                e.push(format!("grad_clip must be positive and finite, got {c}"));
            }
        }
        if let LrSchedule::Cosine { min_lr } = self.lr_schedule {
            if !(min_lr >= 0.0 && min_lr.is_finite()) {
                e.push(format!("the cosine schedule's min_lr must be finite and ≥ 0, got {min_lr}"));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            e.push(format!("weight_decay must be finite and ≥ 0, got {}", self.weight_decay));
        }
        if !(self.adam_eps > 0.0 && self.adam_eps.is_finite()) {
            e.push(format!("adam_eps must be finite and positive, got {}", self.adam_eps));
        }
        if e.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid training config:\n  {}", e.join("\n  "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EMA warmup: (1 + s)/(10 + s) until it reaches the cap, then the cap; without
    /// warmup the cap throughout. After 1500 steps at the cap 0.9999 the EMA held 86 % of
    /// the initialization without warmup; with it, the product Π (1+s)/(10+s) up to step
    /// ≈ 90 000 where the cap takes over is 9!·(s)!/(s+9)! ≈ 3.6e5/s⁹ — nothing.
    #[test]
    fn ema_warms_up_to_its_cap() {
        let c = TrainConfig { ema_decay: 0.99, ..Default::default() };
        assert_eq!(c.ema_decay_at(0), 0.1);
        assert_eq!(c.ema_decay_at(10), 11.0 / 20.0);
        assert_eq!(c.ema_decay_at(100), 101.0 / 110.0);
        assert_eq!(c.ema_decay_at(890), 0.99); // 891/900 = 0.99
        assert_eq!(c.ema_decay_at(5000), 0.99);
        let plain = TrainConfig { ema_warmup: false, ema_decay: 0.9999, ..Default::default() };
        assert_eq!(plain.ema_decay_at(0), 0.9999);
        assert!((plain.ema_init_share(1500) - 0.9999f64.powi(1500)).abs() < 1e-12);
        assert!(plain.ema_init_share(1500) > 0.86);
        let warm = TrainConfig { ema_decay: 0.9999, ..Default::default() };
        // Π_{s<n} (1+s)/(10+s) = 9!·n!/(n+9)!: at n = 20, 9!·20!/29! = 1/10015005.
        assert!((warm.ema_init_share(20) - 1.0 / 10_015_005.0).abs() < 1e-15, "{}", warm.ema_init_share(20));
        assert!(warm.ema_init_share(1500) < 1e-20);
    }

    /// Linear warmup then cosine decay, against values computed independently:
    ///
    /// ```python
    /// import math
    /// lr, mn, w, T = 1e-3, 1e-5, 10, 110
    /// def f(s):
    ///     if s < w: return lr * (s + 1) / w
    ///     p = min((s - w) / (T - w), 1.0)
    ///     return mn + 0.5 * (lr - mn) * (1 + math.cos(math.pi * p))
    /// for s in [0, 4, 9, 10, 35, 60, 85, 109, 110, 500]: print(s, repr(f(s)))
    /// ```
    #[test]
    fn lr_schedule_matches_reference_values() {
        let cfg = TrainConfig {
            lr: 1e-3,
            warmup: 10,
            steps: 110,
            lr_schedule: LrSchedule::Cosine { min_lr: 1e-5 },
            ..TrainConfig::default()
        };
        let want = [
            (0, 0.0001),
            (4, 0.0005),
            (9, 0.001),
            (10, 0.001),
            (35, 0.000855017856687341),
            (60, 0.000505),
            (85, 0.000154982143312659),
            (109, 1.0244252618962858e-05),
            (110, 1e-05),
            (500, 1e-05),
        ];
        for (s, w) in want {
            let got = cfg.lr_at(s);
            assert!((got - w).abs() <= 1e-12 * w, "step {s}: {got} vs {w}");
        }
        let constant = TrainConfig { lr: 2e-3, warmup: 4, ..TrainConfig::default() };
        let got: Vec<f64> = [0, 1, 3, 4, 999].iter().map(|&s| constant.lr_at(s)).collect();
        assert_eq!(got, [5e-4, 1e-3, 2e-3, 2e-3, 2e-3]);
    }
}
