//! Exponential moving average of the leaves (DiT keeps one with decay 0.9999).

use std::collections::BTreeMap;

/// ema ← decay·ema + (1 − decay)·θ, per leaf.
pub fn update(ema: &mut BTreeMap<String, Vec<f32>>, name: &str, value: &[f32], decay: f64) {
    let e = ema.entry(name.to_string()).or_insert_with(|| value.to_vec());
    let (d, r) = (decay as f32, (1.0 - decay) as f32);
    for (a, &b) in e.iter_mut().zip(value) {
        *a = d * *a + r * b;
    }
}
