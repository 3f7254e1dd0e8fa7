//! Layers, one per file. Each takes the [`Params`](super::Params) view and a
//! name prefix, so parameter names are `prefix.weight`, `prefix.bias`, as in
//! DiT's PyTorch state dict. Each layer also declares the weights it reads
//! (`declare`: name from its prefix, shape, initialization from
//! [`init`](super::init), role): the model's weight list, parameter counts and
//! the weights strategies see all come from those declarations.

pub mod attention;
pub mod block;
pub mod embed;
pub mod final_layer;
pub mod linear;
pub mod mlp;

use dfdx::prelude::*;
pub use fine_plugin_api::WeightSpec;

/// (rows, cols) activation with runtime dims.
pub type T2<D, T> = Tensor<(usize, usize), f32, D, T>;
/// (B, T, D) activation with runtime dims.
pub type T3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;
/// (B, H, T, d) activation with runtime dims.
pub type T4<D, T> = Tensor<(usize, usize, usize, usize), f32, D, T>;

/// SiLU(x) = x · sigmoid(x). `x` is used twice, so one use gets an empty tape.
pub fn silu<S: Shape, D: super::Backend, T: Tape<f32, D>>(x: Tensor<S, f32, D, T>) -> Tensor<S, f32, D, T> {
    let s = x.with_empty_tape().sigmoid();
    x * s
}
