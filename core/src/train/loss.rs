//! The ε-prediction loss and its gradients with respect to the store's leaves.

use crate::model::layers::embed::patchify_channels_last;
use crate::model::store::Flat;
use crate::model::{Backend, Dit, ParamStore};
use anyhow::Result;
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// Mean squared error between the model's ε-prediction for (x_t, t, y) and the
/// true noise `eps`; returns the loss and the gradient of every trainable leaf
/// as host values.
pub fn eps_mse_and_grads<D: Backend>(
    dit: &Dit,
    store: &ParamStore<D>,
    x_t: &[f32],
    t: &[f32],
    y: &[usize],
    eps: &[f32],
) -> Result<(f32, BTreeMap<String, Vec<f32>>)> {
    let (value, mut grads) = eps_mse_backward(dit, store, x_t, t, y, eps)?;
    Ok((value, per_leaf(store, &mut grads, D::take_grad)?))
}

/// The gradient of every trainable leaf, left on the device (zeros where
/// nothing reached a leaf), out of [`eps_mse_backward`]'s tape.
pub fn device_grads<D: Backend>(
    store: &ParamStore<D>,
    grads: &mut Gradients<f32, D>,
) -> Result<BTreeMap<String, Flat<D>>> {
    per_leaf(store, grads, |grads, leaf| {
        grads.try_alloc_for(leaf)?;
        Ok(grads.get(leaf))
    })
}

/// `take(grads, leaf)` for every trainable leaf, by name.
fn per_leaf<D: Backend, G>(
    store: &ParamStore<D>,
    grads: &mut Gradients<f32, D>,
    take: impl Fn(&mut Gradients<f32, D>, &Flat<D>) -> Result<G, D::Err>,
) -> Result<BTreeMap<String, G>> {
    let mut out = BTreeMap::new();
    for (name, leaf) in store.leaves().filter(|(_, l)| l.trainable) {
        let g = take(grads, &leaf.value).map_err(|e| anyhow::anyhow!("gradient of `{name}`: {e:?}"))?;
        out.insert(name.clone(), g);
    }
    Ok(out)
}

/// The loss value and the whole gradient tape.
pub fn eps_mse_backward<D: Backend>(
    dit: &Dit,
    store: &ParamStore<D>,
    x_t: &[f32],
    t: &[f32],
    y: &[usize],
    eps: &[f32],
) -> Result<(f32, Gradients<f32, D>)> {
    let g = &dit.graph;
    let b = t.len();
    let p = store.view::<OwnedTape<f32, D>>();
    let out = dit.forward(&p, x_t, t, y)?; // (B·T, p·p·C)
    let target = patchify_channels_last(eps, b, g.input.channels, g.input.height, g.input.width, g.patch_size);
    let target = store.dev.tensor_from_vec(target, *out.shape());
    let loss = (out - target).square().mean::<Rank0, _>();
    let value = loss.retaped::<NoneTape>().as_vec()[0];
    Ok((value, loss.backward()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::CpuDevice;
    use rand::SeedableRng;

    /// The loss is mean((ε̂ − ε)²) over every value, with ε̂ the model's own
    /// NCHW prediction (patchifying is a permutation, so the mean is the same),
    /// and the gradient of the output bias matches a central difference (the
    /// loss is quadratic in it, so the difference is exact up to rounding).
    #[test]
    fn loss_is_the_mean_squared_error_and_its_gradient_matches_a_difference() {
        let g = crate::graph::test_graph(1, 8, 2, 16, 2, 2);
        let dit = Dit::new(&g);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut store = ParamStore::init(CpuDevice::default(), dit.plain_parameterization(), &mut rng).unwrap();
        let bias: Vec<f32> = (0..4).map(|i| i as f32 * 0.2 - 0.3).collect();
        store.set("final_layer.linear.bias", bias.clone()).unwrap(); // a non-zero prediction
        let (b, n) = (2, 64);
        let x: Vec<f32> = (0..b * n).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
        let eps: Vec<f32> = (0..b * n).map(|i| ((i * 5) % 9) as f32 / 4.0 - 1.0).collect();
        let (t, y) = ([10.0f32, 700.0], [2usize, 5]);
        let (loss, grads) = eps_mse_and_grads(&dit, &store, &x, &t, &y, &eps).unwrap();
        let mse = |s: &ParamStore<CpuDevice>| {
            let pred = dit.predict(&s.view::<NoneTape>(), &x, &t, &y).unwrap();
            pred.iter().zip(&eps).map(|(p, e)| ((p - e) as f64).powi(2)).sum::<f64>() / pred.len() as f64
        };
        let want = mse(&store);
        assert!((loss as f64 - want).abs() < 1e-6 * want, "{loss} vs {want}");
        let h = 1e-2;
        for k in 0..4 {
            let mut at = |d: f32| {
                let mut v = bias.clone();
                v[k] += d;
                store.set("final_layer.linear.bias", v).unwrap();
                mse(&store)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            let got = grads["final_layer.linear.bias"][k] as f64;
            assert!((got - fd).abs() < 1e-4 * fd.abs().max(1e-2), "bias[{k}]: {got} vs {fd}");
        }
    }
}
