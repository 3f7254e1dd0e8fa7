//! GELU (tanh approximation) with its derivative computed in the same pass.

use super::{output, view, with_grad_of, zeroed};
use dfdx::prelude::*;
use rayon::prelude::*;

const K: f32 = 0.797_884_6; // √(2/π)
const C: f32 = 0.044_715;
const CHUNK: usize = 1 << 14;

/// GELU(x) and its derivative; tanh through one `exp`: 1 − 2/(e^{2z} + 1).
#[inline(always)]
fn gelu_and_grad(x: f32) -> (f32, f32) {
    let t = 1.0 - 2.0 / (super::exp(2.0 * K * (x + C * x * x * x)) + 1.0);
    let y = 0.5 * x * (1.0 + t);
    let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * C * x * x);
    (y, dy)
}

pub fn gelu_tanh<S: Shape, T: Tape<f32, Cpu>>(x: Tensor<S, f32, Cpu, T>) -> Tensor<S, f32, Cpu, T> {
    // The gradient buffer is indexed in logical order: make x contiguous (a no-op if it is).
    let (x, mut tape) = x.contiguous().split_tape();
    let xv = view(&x);
    let (mut y, mut dy) = (zeroed(xv.len()), zeroed(xv.len()));
    y.par_chunks_mut(CHUNK).zip(dy.par_chunks_mut(CHUNK)).zip(xv.par_chunks(CHUNK)).for_each(|((y, dy), x)| {
        for ((v, d), x) in y.iter_mut().zip(dy).zip(x) {
            (*v, *d) = gelu_and_grad(*x);
        }
    });
    drop(xv);
    let out = output(x.device(), y, *x.shape());
    let out_ghost = out.clone();
    tape.add_backward_op(move |grads| {
        with_grad_of(grads, &out_ghost, |grads, g_out| {
            let g_in = grads.get_or_alloc_mut(&x)?;
            g_in.par_chunks_mut(CHUNK).zip(g_out.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)).for_each(
                |((gi, go), d)| {
                    for ((gi, go), d) in gi.iter_mut().zip(go).zip(d) {
                        *gi += go * d;
                    }
                },
            );
            Ok(())
        })
    });
    out.put_tape(tape)
}
