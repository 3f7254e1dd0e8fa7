//! AdamW over the store's trainable leaves (PyTorch's `torch.optim.AdamW`),
//! with global-norm gradient clipping and the EMA update, on the host
//! ([`AdamW`], [`global_norm`], [`clip`]) or as device tensors ([`DeviceState`],
//! [`device_global_norm`]) for backends that step on the device (CUDA): the
//! same arithmetic, so a GPU run keeps its weights, moments and EMA on the GPU.
//! [`OptState`] holds the state wherever it lives.

use crate::model::store::{flat_values, Flat};
use crate::model::Backend;
use anyhow::{anyhow, Result};
use dfdx::prelude::*;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Values per rayon task in the element-wise updates.
const CHUNK: usize = 1 << 15;

/// AdamW moments for every trainable leaf.
#[derive(Debug, Clone, Default)]
pub struct AdamW {
    /// First moments by leaf name.
    pub m: BTreeMap<String, Vec<f32>>,
    /// Second moments by leaf name.
    pub v: BTreeMap<String, Vec<f32>>,
}

/// Hyper-parameters of one update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWHp {
    /// Learning rate.
    pub lr: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamW {
    /// Applies one AdamW update to `param` given `grad`.
    pub fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32], hp: AdamWHp, t: u64) {
        let n = param.len();
        let m = self.m.entry(name.to_string()).or_insert_with(|| vec![0.0; n]);
        let v = self.v.entry(name.to_string()).or_insert_with(|| vec![0.0; n]);
        let (b1, b2) = (hp.beta1 as f32, hp.beta2 as f32);
        let bc1 = 1.0 - hp.beta1.powi(t as i32);
        let bc2 = 1.0 - hp.beta2.powi(t as i32);
        let step = (hp.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - hp.lr * hp.weight_decay) as f32;
        let eps = hp.eps as f32;
        let (m, v) = (&mut m[..], &mut v[..]);
        let update = |(((p, m), v), g): (((&mut [f32], &mut [f32]), &mut [f32]), &[f32])| {
            for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p = *p * decay - step * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        };
        assert_eq!(grad.len(), n, "AdamW: `{name}` has {n} values and {} gradients", grad.len());
        param
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(grad.par_chunks(CHUNK))
            .for_each(update);
    }
}

/// Global L2 norm of a set of gradients (accumulated in f64).
pub fn global_norm<'a>(grads: impl Iterator<Item = &'a Vec<f32>>) -> f64 {
    let sq = |c: &[f32]| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    // Chunk sums in parallel, added in a fixed order: the same norm on every run.
    grads.map(|g| g.par_chunks(CHUNK).map(sq).collect::<Vec<f64>>().iter().sum::<f64>()).sum::<f64>().sqrt()
}

/// Scales gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor max_norm / (norm + 1e-6) when norm exceeds it).
pub fn clip(grads: &mut BTreeMap<String, Vec<f32>>, norm: f64, max_norm: f64) {
    let f = max_norm / (norm + 1e-6);
    if f < 1.0 {
        let f = f as f32;
        grads.values_mut().flat_map(|g| g.iter_mut()).for_each(|x| *x *= f);
    }
}

// ---------------------------------------------------------------- on the device

/// AdamW moments and the EMA as device tensors, for a backend whose
/// [`Kernels::HOST_STEP`](crate::model::kernels::Kernels::HOST_STEP) is false.
/// [`OptState`] moves the state between these and the host maps ([`AdamW`],
/// the EMA) that checkpoints hold.
pub struct DeviceState<D: Backend> {
    /// First moments by leaf name.
    pub m: BTreeMap<String, Flat<D>>,
    /// Second moments by leaf name.
    pub v: BTreeMap<String, Flat<D>>,
    /// EMA by leaf name.
    pub ema: BTreeMap<String, Flat<D>>,
}

impl<D: Backend> DeviceState<D> {
    /// Device copies of host moments and EMA.
    pub fn upload(dev: &D, opt: &AdamW, ema: &BTreeMap<String, Vec<f32>>) -> Self {
        let up = |m: &BTreeMap<String, Vec<f32>>| -> BTreeMap<String, Flat<D>> {
            m.iter().map(|(k, v)| (k.clone(), dev.tensor_from_vec(v.clone(), (v.len(),)))).collect()
        };
        Self { m: up(&opt.m), v: up(&opt.v), ema: up(ema) }
    }

    /// Host copies: (first moments, second moments, EMA).
    #[allow(clippy::type_complexity)]
    pub fn download(&self) -> (BTreeMap<String, Vec<f32>>, BTreeMap<String, Vec<f32>>, BTreeMap<String, Vec<f32>>) {
        (Self::to_host(&self.m), Self::to_host(&self.v), Self::to_host(&self.ema))
    }

    /// Host copies of one of the maps.
    pub fn to_host(map: &BTreeMap<String, Flat<D>>) -> BTreeMap<String, Vec<f32>> {
        map.iter().map(|(k, t)| (k.clone(), flat_values(t))).collect()
    }

    /// [`AdamW::update`] of `param` by `scale · grad` (`scale` < 1 when
    /// clipping), then the EMA update with `ema_decay` ([`super::ema::update`]),
    /// all on the device: dfdx's in-place `axpy` where the formula allows.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        name: &str,
        param: &mut Flat<D>,
        grad: &Flat<D>,
        scale: f32,
        hp: AdamWHp,
        t: u64,
        ema_decay: f64,
    ) -> Result<()> {
        let n = param.shape().0;
        if grad.shape().0 != n {
            return Err(anyhow!("AdamW: `{name}` has {n} values and {} gradients", grad.shape().0));
        }
        let dev = param.device().clone();
        let zeros = || dev.zeros_like(&(n,));
        let m = self.m.entry(name.to_string()).or_insert_with(zeros);
        let v = self.v.entry(name.to_string()).or_insert_with(zeros);
        let bc1 = 1.0 - hp.beta1.powi(t as i32);
        let bc2 = 1.0 - hp.beta2.powi(t as i32);
        let step = (hp.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - hp.lr * hp.weight_decay) as f32;
        let g = if scale == 1.0 { grad.clone() } else { grad.clone() * scale };
        m.axpy(hp.beta1 as f32, &g, 1.0 - hp.beta1 as f32); // m ← β1·m + (1−β1)·g
        v.axpy(hp.beta2 as f32, &g.square(), 1.0 - hp.beta2 as f32); // v ← β2·v + (1−β2)·g²
        let denom = v.clone().sqrt() / bc2_sqrt + hp.eps as f32; // √v / √(1−β2ᵗ) + ε
        param.axpy(decay, &(m.clone() / denom), -step); // θ ← θ·(1 − lr·λ) − lr/(1−β1ᵗ) · m / denom
        match self.ema.get_mut(name) {
            Some(e) => e.axpy(ema_decay as f32, param, (1.0 - ema_decay) as f32),
            None => {
                self.ema.insert(name.to_string(), param.clone());
            }
        }
        Ok(())
    }
}

/// A map of leaf name → host values.
pub type HostMap = BTreeMap<String, Vec<f32>>;

/// The optimizer's whole state — AdamW's moments, the EMA of every leaf and
/// the update count — in one place: on the host, or on the device once the
/// optimizer steps there, never both (so no copy goes stale). Reads
/// ([`Self::host_copy`], [`Self::ema`]) work wherever it is.
pub struct OptState<D: Backend> {
    /// Updates applied so far (AdamW's t).
    pub t: u64,
    place: Place<D>,
}

/// Where an [`OptState`] lives.
enum Place<D: Backend> {
    Host { adam: AdamW, ema: HostMap },
    Device(DeviceState<D>),
}

impl<D: Backend> OptState<D> {
    /// A host state: moments `m`, `v`, EMA `ema`, after `t` updates.
    pub fn host(m: HostMap, v: HostMap, ema: HostMap, t: u64) -> Self {
        OptState { t, place: Place::Host { adam: AdamW { m, v }, ema } }
    }

    /// Whether the state lives on the device.
    pub fn on_device(&self) -> bool {
        matches!(self.place, Place::Device(_))
    }

    /// The host moments and EMA, for a host update (moved back from the device first).
    pub fn host_mut(&mut self) -> (&mut AdamW, &mut HostMap) {
        if let Place::Device(d) = &self.place {
            let (m, v, ema) = d.download();
            self.place = Place::Host { adam: AdamW { m, v }, ema };
        }
        match &mut self.place {
            Place::Host { adam, ema } => (adam, ema),
            Place::Device(_) => unreachable!("moved to the host above"),
        }
    }

    /// The device moments and EMA, for a device update (uploaded to `dev` first).
    pub fn device_mut(&mut self, dev: &D) -> &mut DeviceState<D> {
        if let Place::Host { adam, ema } = &self.place {
            self.place = Place::Device(DeviceState::upload(dev, adam, ema));
        }
        match &mut self.place {
            Place::Device(d) => d,
            Place::Host { .. } => unreachable!("moved to the device above"),
        }
    }

    /// Moves the state to the host (no-op when it is there).
    pub fn to_host(&mut self) {
        self.host_mut();
    }

    /// (m, v, EMA) as host values, read from wherever the state is.
    pub fn host_copy(&self) -> (HostMap, HostMap, HostMap) {
        match &self.place {
            Place::Host { adam, ema } => (adam.m.clone(), adam.v.clone(), ema.clone()),
            Place::Device(d) => d.download(),
        }
    }

    /// The EMA as host values.
    pub fn ema(&self) -> HostMap {
        match &self.place {
            Place::Host { ema, .. } => ema.clone(),
            Place::Device(d) => DeviceState::to_host(&d.ema),
        }
    }
}

/// [`global_norm`] of device gradients: one sum of squares per leaf, added on
/// the device, one value read back.
pub fn device_global_norm<'a, D: Backend>(grads: impl Iterator<Item = &'a Flat<D>>) -> f64 {
    let mut total: Option<Tensor<Rank0, f32, D>> = None;
    for g in grads {
        let s = g.clone().square().sum::<Rank0, _>();
        total = Some(match total {
            Some(t) => t + s,
            None => s,
        });
    }
    total.map_or(0.0, |t| (t.as_vec()[0] as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Matches torch.optim.AdamW for two steps:
    /// ```python
    /// import torch
    /// p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    /// o = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    /// for g in ([0.5, -1.0, 2.0], [0.1, 0.3, -0.2]):
    ///     p.grad = torch.tensor(g); o.step()
    /// print(p.tolist())  # [0.8177969455718994, -1.8533172607421875, 0.33983564376831055]
    /// ```
    #[test]
    fn adamw_matches_pytorch() {
        let mut o = AdamW::default();
        let mut p = vec![1.0f32, -2.0, 0.5];
        let hp = AdamWHp { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        o.update("p", &mut p, &[0.5, -1.0, 2.0], hp, 1);
        o.update("p", &mut p, &[0.1, 0.3, -0.2], hp, 2);
        let want = [0.8177969455718994f32, -1.8533172607421875, 0.33983564376831055];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 5e-6, "{p:?}"); // f32 rounding
        }
    }

    /// PyTorch's factor max_norm / (norm + 1e-6): with a norm of the same order
    /// as the 1e-6, the +1e-6 is what decides the factor (1e-6 / 3e-6 = 1/3).
    #[test]
    fn clip_uses_norm_plus_1e6() {
        let mut g = BTreeMap::from([("a".to_string(), vec![3.0f32, -6.0])]);
        clip(&mut g, 2e-6, 1e-6);
        assert!((g["a"][0] - 1.0).abs() < 1e-5 && (g["a"][1] + 2.0).abs() < 1e-5, "{:?}", g["a"]);
        let mut g = BTreeMap::from([("a".to_string(), vec![3.0f32])]);
        clip(&mut g, 0.5, 1.0); // under the limit: unchanged
        assert_eq!(g["a"], vec![3.0]);
    }

    /// The state moves to the device and back with its values, and `ema`
    /// reads the EMA wherever the state is (the CPU device stands in for a GPU).
    #[test]
    fn opt_state_round_trips_through_the_device() {
        let map = |x: f32| BTreeMap::from([("w".to_string(), vec![x, x + 1.0])]);
        let mut s = OptState::<crate::model::store::CpuDevice>::host(map(1.0), map(2.0), map(3.0), 7);
        assert!(!s.on_device());
        assert_eq!(s.ema(), map(3.0));
        s.device_mut(&Default::default());
        assert!(s.on_device());
        assert_eq!(s.ema(), map(3.0));
        s.to_host();
        assert!(!s.on_device());
        assert_eq!(s.host_copy(), (map(1.0), map(2.0), map(3.0)));
    }
}
