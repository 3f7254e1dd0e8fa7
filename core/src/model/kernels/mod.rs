//! Fused ops with hand-written backward passes, per device.
//!
//! Every op of the DiT's hot path is a method of [`Kernels`]. The default
//! method body is the portable composition of dfdx ops (what any device
//! without a specialised kernel runs, e.g. CUDA for now, where the compositions
//! are arranged for few launches and little memory: `docs/results/cuda-h200.md`);
//! `cpu/` holds the CPU kernel of each op, one file per op, with its backward
//! pass written by hand:
//!
//! | op | CPU kernel |
//! |---|---|
//! | [`Kernels::linear`] `x·Wᵀ + b` | `cpu/linear.rs`: `gemm` with strided operands, no transposes materialised |
//! | [`Kernels::ln_modulate`] LayerNorm → adaLN modulate | `cpu/norm.rs`: one pass per row, reads shift/scale in place from the (B, k·D) modulation |
//! | [`Kernels::gate_residual`] `x + gate ⊙ y` | `cpu/norm.rs` |
//! | [`Kernels::qkv_attention`] softmax(QKᵀ/√d)·V of x·W_qkvᵀ + b | `linear`, then `cpu/attention.rs`: per (batch, head), straight from the qkv rows (the portable one makes q, k, v by three products) |
//! | [`Kernels::gelu_tanh`] | `cpu/gelu.rs` |
//!
//! `tests.rs` checks every CPU kernel against its default (forward values and
//! the gradients of every input) and against finite differences.

use crate::model::layers::{T2, T3};
use dfdx::prelude::*;

/// The device trait every backend (CPU, CUDA) satisfies.
pub trait Backend: Device<f32> + Kernels + Clone + 'static {}
impl<D: Device<f32> + Kernels + Clone + 'static> Backend for D {}

/// A flat (1-D) tensor with runtime length.
pub type Flat<D, T = NoneTape> = Tensor<(usize,), f32, D, T>;

/// The values of a contiguous tensor (flat tensors always are): one copy,
/// where dfdx's `as_vec` walks strides element by element.
pub fn flat_values<S: Shape, D: Backend, T>(t: &Tensor<S, f32, D, T>) -> Vec<f32> {
    let mut v = crate::util::zeroed(t.shape().num_elements());
    t.copy_into(&mut v);
    v
}

mod cpu;
pub use crate::util::gemm::backend_name as gemm_backend;
#[cfg(test)]
mod tests;

/// Device-specific fused ops used by the model. Tensors are row-major; shapes
/// are given per argument. The default bodies are [`portable`]'s dfdx compositions.
pub trait Kernels: Device<f32> {
    /// Whether the optimizer step (gradient norm, clipping, AdamW, EMA) runs
    /// on the host over host copies of the gradients (the CPU, where that copy
    /// is free) or on the device as tensor ops
    /// ([`DeviceState`](crate::train::optim::DeviceState); a GPU, where the
    /// round trip over the bus would cost more than the step's kernels).
    const HOST_STEP: bool = false;
    /// GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    fn gelu_tanh<S: Shape, T: Tape<f32, Self>>(x: Tensor<S, f32, Self, T>) -> Tensor<S, f32, Self, T> {
        x.fast_gelu()
    }
    /// The gradient of leaf `t` as host values, taken out of `grads` (zeros if
    /// nothing reached it).
    fn take_grad(grads: &mut Gradients<f32, Self>, t: &Flat<Self>) -> Result<Vec<f32>, Self::Err> {
        grads.try_alloc_for(t)?;
        Ok(flat_values(&grads.get(t)))
    }
    /// `x·Wᵀ + b`: x (N, in), W (out, in) as PyTorch stores it, b (out) → (N, out).
    fn linear<T: Tape<f32, Self>>(x: T2<Self, T>, w: T2<Self, T>, b: Option<Flat<Self, T>>) -> T2<Self, T> {
        portable::linear(x, w, b)
    }
    /// `LayerNorm(x)·(1 + scale) + shift` (no affine LayerNorm, biased
    /// variance): x (B, T, D); `m` (B, k·D) is adaLN's output, read as k chunks
    /// of D, and shift/scale are chunks `shift` and `scale`, broadcast over T.
    fn ln_modulate<T: Tape<f32, Self>>(
        x: T3<Self, T>,
        m: T2<Self, T>,
        shift: usize,
        scale: usize,
        eps: f64,
    ) -> T3<Self, T> {
        portable::ln_modulate(x, m, shift, scale, eps)
    }
    /// `x + gate ⊙ y`: x, y (B, T, D); gate is chunk `gate` of `m` (B, k·D),
    /// broadcast over T (adaLN-Zero's gated residual).
    fn gate_residual<T: Tape<f32, Self>>(x: T3<Self, T>, m: T2<Self, T>, gate: usize, y: T3<Self, T>) -> T3<Self, T> {
        portable::gate_residual(x, m, gate, y)
    }
    /// Multi-head self-attention from its input: `x·Wᵀ + b` with x (B·T, D),
    /// W (3D, D), b (3D) gives qkv (B·T, 3D), its columns laid out (3, H, hd)
    /// as PyTorch's `reshape(B, N, 3, H, hd)`; then softmax(QKᵀ/√hd)·V as
    /// (B·T, D), heads concatenated.
    fn qkv_attention<T: Tape<f32, Self>>(
        x: T2<Self, T>,
        w: T2<Self, T>,
        b: Option<Flat<Self, T>>,
        bsz: usize,
        t: usize,
        heads: usize,
    ) -> T2<Self, T> {
        portable::qkv_attention(x, w, b, bsz, t, heads)
    }
}

/// The ops as compositions of dfdx ops, for any device (and the reference the
/// CPU kernels are tested against).
pub mod portable {
    use super::*;

    /// See [`Kernels::linear`].
    pub fn linear<D: Device<f32>, T: Tape<f32, D>>(x: T2<D, T>, w: T2<D, T>, b: Option<Flat<D, T>>) -> T2<D, T> {
        let (n, out) = (x.shape().0, w.shape().0);
        let y = x.matmul(w.permute::<_, Axes2<1, 0>>()); // (N, out)
        match b {
            None => y,
            Some(b) => y + b.broadcast_like::<_, Axis<0>>(&(n, out)),
        }
    }

    /// See [`Kernels::ln_modulate`].
    pub fn ln_modulate<D: Device<f32>, T: Tape<f32, D>>(
        x: T3<D, T>,
        m: T2<D, T>,
        shift: usize,
        scale: usize,
        eps: f64,
    ) -> T3<D, T> {
        let s = *x.shape();
        let d = s.2;
        let sh = m.with_empty_tape().slice((.., shift * d..(shift + 1) * d)); // (B, D)
        let sc = m.slice((.., scale * d..(scale + 1) * d)); // (B, D)
        x.normalize::<Axis<2>>(eps) * (sc + 1.0).broadcast_like::<_, Axis<1>>(&s) + sh.broadcast_like::<_, Axis<1>>(&s)
    }

    /// See [`Kernels::gate_residual`].
    pub fn gate_residual<D: Device<f32>, T: Tape<f32, D>>(
        x: T3<D, T>,
        m: T2<D, T>,
        gate: usize,
        y: T3<D, T>,
    ) -> T3<D, T> {
        let s = *x.shape();
        let d = s.2;
        let g = m.slice((.., gate * d..(gate + 1) * d)); // (B, D)
        x + g.broadcast_like::<_, Axis<1>>(&s) * y
    }

    /// The attention core of [`Kernels::qkv_attention`] from qkv (B·T, 3D):
    /// the reference `cpu/attention.rs` is tested against.
    pub fn attention<D: Device<f32>, T: Tape<f32, D>>(qkv: T2<D, T>, b: usize, t: usize, heads: usize) -> T2<D, T> {
        let d = qkv.shape().1 / 3;
        let q = qkv.with_empty_tape().slice((.., 0..d)); // (B·T, D)
        let k = qkv.with_empty_tape().slice((.., d..2 * d));
        let v = qkv.slice((.., 2 * d..3 * d));
        attention_of(q, k, v, b, t, heads)
    }

    /// See [`Kernels::qkv_attention`]. q, k and v come from three products
    /// with row blocks of W, so no (B·T, 3D) output is made and then sliced
    /// (dfdx keeps every intermediate and its gradient until the backward
    /// pass ends: 6·B·T·D values fewer per layer).
    pub fn qkv_attention<D: Device<f32>, T: Tape<f32, D>>(
        x: T2<D, T>,
        w: T2<D, T>,
        bias: Option<Flat<D, T>>,
        b: usize,
        t: usize,
        heads: usize,
    ) -> T2<D, T> {
        let d = x.shape().1;
        // x, W and b are each used three times: two uses on empty tapes, the
        // last one carrying the tape (e.g. W = U·diag(σ)·Vᵀ's backward ops).
        let wq = w.with_empty_tape().slice((0..d, ..)); // (D, D)
        let wk = w.with_empty_tape().slice((d..2 * d, ..));
        let wv = w.slice((2 * d..3 * d, ..));
        let (bq, bk, bv) = match bias {
            Some(bb) => (
                Some(bb.with_empty_tape().slice((0..d,))),
                Some(bb.with_empty_tape().slice((d..2 * d,))),
                Some(bb.slice((2 * d..3 * d,))),
            ),
            None => (None, None, None),
        };
        let q = linear(x.with_empty_tape(), wq, bq); // (B·T, D)
        let k = linear(x.with_empty_tape(), wk, bk);
        let v = linear(x, wv, bv);
        attention_of(q, k, v, b, t, heads)
    }

    /// softmax(QKᵀ/√hd)·V of q, k, v (B·T, D) each, heads concatenated. The
    /// products are 3-D, (B·H) batches in one batched GEMM each: dfdx's 4-D
    /// matmul issues one GEMM call per batch element (on CUDA, 2·B launches
    /// forward and 4·B backward per layer).
    fn attention_of<D: Device<f32>, T: Tape<f32, D>>(
        q: T2<D, T>,
        k: T2<D, T>,
        v: T2<D, T>,
        b: usize,
        t: usize,
        heads: usize,
    ) -> T2<D, T> {
        let d = q.shape().1;
        let (h, hd) = (heads, d / heads);
        // (B·T, D) → (B, T, H, hd) → (B, H, T, hd) → contiguous (B·H, T, hd)
        let split = |x: T2<D, T>| {
            x.reshape_like(&(b, t, h, hd)).permute::<_, Axes4<0, 2, 1, 3>>().reshape_like(&(b * h, t, hd))
        };
        // q is scaled by 1/√hd before the product, not the (B·H, T, T) scores:
        // one T×T intermediate (and its gradient) fewer per layer.
        let q = split(q) * (hd as f32).powf(-0.5); // (B·H, T, hd)
        let k = split(k).permute::<_, Axes3<0, 2, 1>>(); // (B·H, hd, T)
        let v = split(v); // (B·H, T, hd)
        let att = q.matmul(k).softmax::<Axis<2>>(); // (B·H, T, T)
        att.matmul(v).reshape_like(&(b, h, t, hd)).permute::<_, Axes4<0, 2, 1, 3>>().reshape_like(&(b * t, d))
        // (B·T, D)
    }
}

#[cfg(feature = "cuda")]
impl Kernels for dfdx::tensor::Cuda {}

impl Kernels for Cpu {
    const HOST_STEP: bool = true;
    fn take_grad(grads: &mut Gradients<f32, Self>, t: &Flat<Self>) -> Result<Vec<f32>, Self::Err> {
        Ok(std::mem::take(&mut **grads.get_or_alloc_mut(t)?)) // no copy
    }
    fn gelu_tanh<S: Shape, T: Tape<f32, Self>>(x: Tensor<S, f32, Self, T>) -> Tensor<S, f32, Self, T> {
        cpu::gelu::gelu_tanh(x)
    }
    fn linear<T: Tape<f32, Self>>(x: T2<Self, T>, w: T2<Self, T>, b: Option<Flat<Self, T>>) -> T2<Self, T> {
        cpu::linear::linear(x, w, b)
    }
    fn ln_modulate<T: Tape<f32, Self>>(
        x: T3<Self, T>,
        m: T2<Self, T>,
        shift: usize,
        scale: usize,
        eps: f64,
    ) -> T3<Self, T> {
        cpu::norm::ln_modulate(x, m, shift, scale, eps)
    }
    fn gate_residual<T: Tape<f32, Self>>(x: T3<Self, T>, m: T2<Self, T>, gate: usize, y: T3<Self, T>) -> T3<Self, T> {
        cpu::norm::gate_residual(x, m, gate, y)
    }
    fn qkv_attention<T: Tape<f32, Self>>(
        x: T2<Self, T>,
        w: T2<Self, T>,
        b: Option<Flat<Self, T>>,
        bsz: usize,
        t: usize,
        heads: usize,
    ) -> T2<Self, T> {
        // One product straight into the layout the attention kernel reads.
        cpu::attention::attention(cpu::linear::linear(x, w, b), bsz, t, heads)
    }
}
