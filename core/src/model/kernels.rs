//! Fused kernels with hand-written backward passes, per device.
//!
//! Each op has a portable default built from dfdx ops (used by any device
//! without a specialised kernel, e.g. CUDA for now) and a CPU kernel next to
//! it. Tests check each kernel against the default and against finite
//! differences.

use dfdx::prelude::*;

/// Device-specific fused ops used by the model.
pub trait Kernels: Device<f32> {
    /// GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    fn gelu_tanh<S: Shape, T: Tape<f32, Self>>(x: Tensor<S, f32, Self, T>) -> Tensor<S, f32, Self, T> {
        x.fast_gelu()
    }
}

#[cfg(feature = "cuda")]
impl Kernels for dfdx::tensor::Cuda {}

// ---------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------

const K: f32 = 0.797_884_6; // √(2/π)
const C: f32 = 0.044_715;

/// tanh through one `exp`: 1 − 2/(e^{2z} + 1) (exact limits ±1 for large |z|).
#[inline]
fn tanh_fast(z: f32) -> f32 {
    1.0 - 2.0 / ((2.0 * z).exp() + 1.0)
}

/// GELU(x) and its derivative.
#[inline]
fn gelu_and_grad(x: f32) -> (f32, f32) {
    let t = tanh_fast(K * (x + C * x * x * x));
    let y = 0.5 * x * (1.0 + t);
    let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * C * x * x);
    (y, dy)
}

impl Kernels for Cpu {
    fn gelu_tanh<S: Shape, T: Tape<f32, Self>>(x: Tensor<S, f32, Self, T>) -> Tensor<S, f32, Self, T> {
        // The kernel indexes the gradient buffer in logical order: make x contiguous (a no-op if it is).
        let (x, mut tape) = x.contiguous().split_tape();
        let xs = x.as_vec();
        let (y, dy): (Vec<f32>, Vec<f32>) = xs.iter().map(|&v| gelu_and_grad(v)).unzip();
        let out = x.device().tensor_from_vec(y, *x.shape());
        let out_ghost = out.clone();
        tape.add_backward_op(move |grads| {
            let g_out = grads.get(&out_ghost).as_vec();
            let g_in = grads.get_or_alloc_mut(&x)?;
            for ((gi, go), d) in g_in.iter_mut().zip(&g_out).zip(&dy) {
                *gi += go * d;
            }
            Ok(())
        });
        out.put_tape(tape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_gelu_matches_dfdx_and_finite_differences() {
        let dev = Cpu::default();
        let xs: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 12.0).collect();
        let r: Vec<f32> = (0..200).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let x = dev.tensor_from_vec(xs.clone(), (200usize,));
        let rt = dev.tensor_from_vec(r.clone(), (200usize,));
        let fused = <Cpu as Kernels>::gelu_tanh(x.leaky_trace());
        let reference = x.leaky_trace().fast_gelu();
        for (a, b) in fused.as_vec().iter().zip(reference.as_vec()) {
            assert!((a - b).abs() < 2e-6, "{a} vs {b}");
        }
        let g1 = (fused * rt.clone()).sum::<Rank0, _>().backward().get(&x).as_vec();
        let g2 = (reference * rt).sum::<Rank0, _>().backward().get(&x).as_vec();
        for i in 0..200 {
            assert!((g1[i] - g2[i]).abs() < 1e-5, "grad {i}: {} vs {}", g1[i], g2[i]);
            // Central difference in f64 of the same formula.
            let f = |v: f64| 0.5 * v * (1.0 + (0.7978845608028654 * (v + 0.044715 * v * v * v)).tanh());
            let (h, v) = (1e-4, xs[i] as f64);
            let fd = (f(v + h) - f(v - h)) / (2.0 * h) * r[i] as f64;
            assert!((g1[i] as f64 - fd).abs() < 1e-4, "fd {i}: {} vs {fd}", g1[i]);
        }
    }
}
