//! CPU kernels: [`crate::util::gemm`] for every matrix product (strided
//! operands, so no transpose is ever materialised), rayon across rows and
//! heads, and loops written so the compiler vectorises them.

pub mod attention;
pub mod gelu;
pub mod linear;
pub mod norm;

use dfdx::shapes::HasShape;

pub use crate::util::gemm::{gemm, threads, Mat};

/// The values of a contiguous tensor (one memcpy; dfdx's `as_vec` walks
/// strides element by element). Callers make tensors contiguous first.
pub fn host<S: dfdx::shapes::Shape, T>(x: &dfdx::tensor::Tensor<S, f32, dfdx::tensor::Cpu, T>) -> Vec<f32> {
    let mut v = vec![0.0f32; x.shape().num_elements()];
    x.copy_into(&mut v);
    v
}

/// Runs a backward pass with the gradient of `out` moved out of `grads` (no
/// copy) and puts it back afterwards, so `f` may borrow other gradients mutably.
pub fn with_grad_of<S: dfdx::shapes::Shape>(
    grads: &mut dfdx::tensor::Gradients<f32, dfdx::tensor::Cpu>,
    out: &dfdx::tensor::Tensor<S, f32, dfdx::tensor::Cpu>,
    f: impl FnOnce(&mut dfdx::tensor::Gradients<f32, dfdx::tensor::Cpu>, &[f32]) -> Result<(), dfdx::tensor::CpuError>,
) -> Result<(), dfdx::tensor::CpuError> {
    let dy: Vec<f32> = std::mem::take(&mut **grads.get_or_alloc_mut(out)?);
    let result = f(grads, &dy);
    **grads.get_or_alloc_mut(out)? = dy;
    result
}

/// A pointer that rayon tasks may share; each task writes a disjoint region.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: only used for writes to disjoint regions, joined before the buffer is read.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding and subtracting it rounds an f32 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x in f32 (relative error ≈ 1e-7 on [-87, 88]; below that it returns
/// e^-87.3 instead of 0). Branch-free, so loops over slices vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND; // round(x / ln 2)
    let f = x - n * LN2_HI - n * LN2_LO; // |f| ≤ ln2/2
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_matches_std() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0;
            let (a, b) = (super::exp(x), (x as f64).exp());
            assert!(((a as f64 - b) / b).abs() < 3e-7, "exp({x}) = {a}, want {b}");
        }
        assert!(super::exp(-1e4) < 1e-37 && super::exp(-1e4) >= 0.0);
        assert!(super::exp(1e4).is_finite());
    }
}
