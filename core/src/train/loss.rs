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
    let mut out = BTreeMap::new();
    for (name, leaf) in store.leaves().filter(|(_, l)| l.trainable) {
        let g = D::take_grad(&mut grads, &leaf.value).map_err(|e| anyhow::anyhow!("gradient of `{name}`: {e:?}"))?;
        out.insert(name.clone(), g);
    }
    Ok((value, out))
}

/// [`eps_mse_and_grads`] with the gradients left on the device.
pub fn eps_mse_and_device_grads<D: Backend>(
    dit: &Dit,
    store: &ParamStore<D>,
    x_t: &[f32],
    t: &[f32],
    y: &[usize],
    eps: &[f32],
) -> Result<(f32, BTreeMap<String, Flat<D>>)> {
    let (value, mut grads) = eps_mse_backward(dit, store, x_t, t, y, eps)?;
    let mut out = BTreeMap::new();
    for (name, leaf) in store.leaves().filter(|(_, l)| l.trainable) {
        grads.try_alloc_for(&leaf.value).map_err(|e| anyhow::anyhow!("gradient of `{name}`: {e:?}"))?;
        out.insert(name.clone(), grads.get(&leaf.value)); // zeros if nothing reached it
    }
    Ok((value, out))
}

/// The loss value and the whole gradient tape.
fn eps_mse_backward<D: Backend>(
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
