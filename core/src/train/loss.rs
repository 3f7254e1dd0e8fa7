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
