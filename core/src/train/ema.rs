//! Exponential moving average of the leaves (DiT keeps one with decay 0.9999).

use rayon::prelude::*;
use std::collections::BTreeMap;

/// ema ← decay·ema + (1 − decay)·θ, per leaf.
pub fn update(ema: &mut BTreeMap<String, Vec<f32>>, name: &str, value: &[f32], decay: f64) {
    let e = ema.entry(name.to_string()).or_insert_with(|| value.to_vec());
    let (d, r) = (decay as f32, (1.0 - decay) as f32);
    e.par_chunks_mut(1 << 15).zip(value.par_chunks(1 << 15)).for_each(|(e, v)| {
        for (a, &b) in e.iter_mut().zip(v) {
            *a = d * *a + r * b;
        }
    });
}
