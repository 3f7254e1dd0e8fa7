//! Every CPU kernel against its portable dfdx composition (values and the
//! gradient of every input) and against central finite differences.

use super::{portable, Kernels};
use dfdx::prelude::*;
use rand::{Rng, SeedableRng};

type Tp = OwnedTape<f32, Cpu>;
/// Runs an op on inputs (fused CPU kernel or portable), returns its output and
/// the gradient of `Σ r ⊙ out` (r fixed) with respect to every input.
type Run = dyn Fn(bool, &[Vec<f32>]) -> (Vec<f32>, Vec<Vec<f32>>);

fn weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect()
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// Flat leaves for `ins` (the first leaky-traced, the others on empty tapes
/// merged by the op), the op's output, and the gradients of Σ r ⊙ out.
fn traced<S: Shape>(
    ins: &[Vec<f32>],
    op: impl FnOnce(Vec<Tensor<(usize,), f32, Cpu, Tp>>) -> Tensor<S, f32, Cpu, Tp>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dev = Cpu::default();
    let leaves: Vec<Tensor<(usize,), f32, Cpu>> =
        ins.iter().map(|v| dev.tensor_from_vec(v.clone(), (v.len(),))).collect();
    let traced =
        leaves.iter().enumerate().map(|(i, l)| if i == 0 { l.leaky_trace() } else { l.retaped::<Tp>() }).collect();
    let out = op(traced);
    let value = out.retaped::<NoneTape>().as_vec();
    let n = value.len();
    let r = dev.tensor_from_vec(weights(n), (n,));
    let grads = (out.reshape_like(&(n,)) * r).sum::<Rank0, _>().backward();
    (value, leaves.iter().map(|l| grads.get(l).as_vec()).collect())
}

fn check(name: &str, run: &Run, inputs: &[Vec<f32>], tol: f32) {
    let (o1, g1) = run(true, inputs);
    let (o2, g2) = run(false, inputs);
    let close = |a: f32, b: f32, scale: f32| (a - b).abs() <= tol * (1.0 + scale);
    let max_abs = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let s = max_abs(&o2);
    for (i, (a, b)) in o1.iter().zip(&o2).enumerate() {
        assert!(close(*a, *b, s), "{name}: output {i}: fused {a} vs portable {b}");
    }
    for (k, (ga, gb)) in g1.iter().zip(&g2).enumerate() {
        let s = max_abs(gb);
        for (i, (a, b)) in ga.iter().zip(gb).enumerate() {
            assert!(close(*a, *b, s), "{name}: grad of input {k}[{i}]: fused {a} vs portable {b}");
        }
    }
    // Central differences of Σ r ⊙ out through the fused kernel, in f64 sums.
    let loss = |ins: &[Vec<f32>]| -> f64 {
        let (o, _) = run(true, ins);
        o.iter().zip(weights(o.len())).map(|(a, b)| *a as f64 * b as f64).sum()
    };
    for (k, x) in inputs.iter().enumerate() {
        for i in (0..x.len()).step_by((x.len() / 7).max(1)) {
            let h = 1e-2f32;
            let mut ins = inputs.to_vec();
            ins[k][i] = x[i] + h;
            let up = loss(&ins);
            ins[k][i] = x[i] - h;
            let down = loss(&ins);
            let fd = (up - down) / (2.0 * h as f64);
            let g = g1[k][i] as f64;
            assert!(
                (g - fd).abs() <= 2e-2 * (1.0 + fd.abs()),
                "{name}: finite difference of input {k}[{i}]: grad {g} vs fd {fd}"
            );
        }
    }
}

#[test]
fn linear_matches_portable_and_finite_differences() {
    let (n, i, o) = (13, 9, 7);
    for bias in [true, false] {
        let run = move |fused: bool, ins: &[Vec<f32>]| {
            traced(ins, |mut v| {
                let b = if bias { Some(v.pop().unwrap()) } else { None };
                let w = v.pop().unwrap().reshape_like(&(o, i));
                let x = v.pop().unwrap().reshape_like(&(n, i));
                if fused {
                    Cpu::linear(x, w, b)
                } else {
                    portable::linear(x, w, b)
                }
            })
        };
        let mut ins = vec![random(n * i, 1, 1.0), random(o * i, 2, 0.5)];
        if bias {
            ins.push(random(o, 3, 0.5));
        }
        check("linear", &run, &ins, 1e-5);
    }
    // Big enough to take the threaded gemm path.
    let (n, i, o) = (96, 64, 80);
    let run = move |fused: bool, ins: &[Vec<f32>]| {
        traced(ins, |mut v| {
            let b = Some(v.pop().unwrap());
            let w = v.pop().unwrap().reshape_like(&(o, i));
            let x = v.pop().unwrap().reshape_like(&(n, i));
            if fused {
                Cpu::linear(x, w, b)
            } else {
                portable::linear(x, w, b)
            }
        })
    };
    check("linear (threaded)", &run, &[random(n * i, 4, 1.0), random(o * i, 5, 0.2), random(o, 6, 0.5)], 1e-5);
}

#[test]
fn ln_modulate_matches_portable_and_finite_differences() {
    let (b, t, d, k) = (3, 5, 8, 6);
    for (shift, scale) in [(0, 1), (3, 4), (5, 2)] {
        let run = move |fused: bool, ins: &[Vec<f32>]| {
            traced(ins, |mut v| {
                let m = v.pop().unwrap().reshape_like(&(b, k * d));
                let x = v.pop().unwrap().reshape_like(&(b, t, d));
                if fused {
                    Cpu::ln_modulate(x, m, shift, scale, 1e-6)
                } else {
                    portable::ln_modulate(x, m, shift, scale, 1e-6)
                }
            })
        };
        check("ln_modulate", &run, &[random(b * t * d, 7, 2.0), random(b * k * d, 8, 0.5)], 2e-5);
    }
}

#[test]
fn gate_residual_matches_portable_and_finite_differences() {
    let (b, t, d, k) = (3, 4, 6, 6);
    for gate in [2, 5] {
        let run = move |fused: bool, ins: &[Vec<f32>]| {
            traced(ins, |mut v| {
                let y = v.pop().unwrap().reshape_like(&(b, t, d));
                let m = v.pop().unwrap().reshape_like(&(b, k * d));
                let x = v.pop().unwrap().reshape_like(&(b, t, d));
                if fused {
                    Cpu::gate_residual(x, m, gate, y)
                } else {
                    portable::gate_residual(x, m, gate, y)
                }
            })
        };
        check(
            "gate_residual",
            &run,
            &[random(b * t * d, 9, 1.0), random(b * k * d, 10, 1.0), random(b * t * d, 11, 1.0)],
            1e-5,
        );
    }
}

#[test]
fn attention_matches_portable_and_finite_differences() {
    for (b, t, h, hd) in [(2, 5, 3, 4), (3, 17, 2, 8)] {
        let d = h * hd;
        let run = move |fused: bool, ins: &[Vec<f32>]| {
            traced(ins, |mut v| {
                let qkv = v.pop().unwrap().reshape_like(&(b * t, 3 * d));
                if fused {
                    super::cpu::attention::attention(qkv, b, t, h)
                } else {
                    portable::attention(qkv, b, t, h)
                }
            })
        };
        check("attention", &run, &[random(b * t * 3 * d, 12, 1.5)], 2e-5);
    }
}

/// The attention from its input (q, k, v from row blocks of W on CUDA; one
/// product and the attention kernel on the CPU). W and b reach the op through
/// a scale, so a dropped tape would lose their gradients.
#[test]
fn qkv_attention_matches_portable_and_finite_differences() {
    let (b, t, h, hd) = (2, 5, 3, 4);
    let d = h * hd;
    for bias in [true, false] {
        let run = move |fused: bool, ins: &[Vec<f32>]| {
            traced(ins, |mut v| {
                let bb = if bias { Some(v.pop().unwrap() * 1.5) } else { None };
                let w = v.pop().unwrap().reshape_like(&(3 * d, d)) * 1.25;
                let x = v.pop().unwrap().reshape_like(&(b * t, d));
                if fused {
                    Cpu::qkv_attention(x, w, bb, b, t, h)
                } else {
                    portable::qkv_attention(x, w, bb, b, t, h)
                }
            })
        };
        let mut ins = vec![random(b * t * d, 13, 1.0), random(3 * d * d, 14, 0.4)];
        if bias {
            ins.push(random(3 * d, 15, 0.5));
        }
        check("qkv_attention", &run, &ins, 2e-5);
    }
}

#[test]
fn gelu_matches_portable_and_finite_differences() {
    let run = |fused: bool, ins: &[Vec<f32>]| {
        traced(ins, |mut v| {
            let x = v.pop().unwrap();
            if fused {
                Cpu::gelu_tanh(x)
            } else {
                x.fast_gelu()
            }
        })
    };
    let xs: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 12.0).collect();
    check("gelu", &run, &[xs], 2e-6);
}

/// A DiT block's kernels chained (linear → ln_modulate → attention → linear
/// → gate_residual → GELU): each reads the previous output in place (its
/// buffer, not a copy), and values and gradients still match the portable
/// composition and finite differences.
#[test]
fn chained_kernels_read_outputs_in_place_and_match() {
    let (b, t, h, hd) = (2, 6, 2, 4);
    let d = h * hd;
    let run = move |fused: bool, ins: &[Vec<f32>]| {
        traced(ins, |mut v| {
            let wo = v.pop().unwrap().reshape_like(&(d, d));
            let wqkv = v.pop().unwrap().reshape_like(&(3 * d, d));
            let wm = v.pop().unwrap().reshape_like(&(6 * d, d));
            let c = v.pop().unwrap().reshape_like(&(b, d));
            let x = v.pop().unwrap().reshape_like(&(b, t, d));
            if fused {
                let m = Cpu::linear(c, wm, None); // (B, 6D)
                let hn = Cpu::ln_modulate(x.with_empty_tape(), m.with_empty_tape(), 0, 1, 1e-6);
                let hn = hn.reshape_like(&(b * t, d));
                assert!(super::cpu::view(&hn).is_borrowed(), "a kernel output is read in place");
                let qkv = Cpu::linear(hn, wqkv, None);
                let a = super::cpu::attention::attention(qkv, b, t, h);
                let o = Cpu::linear(a, wo, None).reshape_like(&(b, t, d));
                Cpu::gelu_tanh(Cpu::gate_residual(x, m, 2, o))
            } else {
                let m = portable::linear(c, wm, None);
                let hn = portable::ln_modulate(x.with_empty_tape(), m.with_empty_tape(), 0, 1, 1e-6);
                let qkv = portable::linear(hn.reshape_like(&(b * t, d)), wqkv, None);
                let a = portable::attention(qkv, b, t, h);
                let o = portable::linear(a, wo, None).reshape_like(&(b, t, d));
                portable::gate_residual(x, m, 2, o).fast_gelu()
            }
        })
    };
    let ins = [
        random(b * t * d, 20, 1.0),
        random(b * d, 21, 1.0),
        random(6 * d * d, 22, 0.3),
        random(3 * d * d, 23, 0.4),
        random(d * d, 24, 0.4),
    ];
    check("chained kernels", &run, &ins, 3e-5);
    // A tensor no kernel made is copied.
    let leaf = Cpu::default().tensor_from_vec(vec![1.0f32, 2.0, 3.0], (3,));
    let v = super::cpu::view(&leaf);
    assert!(!v.is_borrowed());
    assert_eq!(&v[..], &[1.0, 2.0, 3.0]);
}

/// `cargo test --release -p fine-core kernel_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn kernel_speed() {
    let dev = Cpu::default();
    for (n, i, o) in [(392, 128, 512), (392, 512, 128), (392, 128, 384), (2048, 384, 1536)] {
        let x = dev.tensor_from_vec(random(n * i, 1, 1.0), (n, i));
        let w = dev.tensor_from_vec(random(o * i, 2, 1.0), (o, i));
        let reps = 20;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let y = Cpu::linear(x.clone(), w.clone(), None);
            std::hint::black_box(y);
        }
        let f = t.elapsed().as_secs_f64() / reps as f64;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let y = Cpu::linear(x.leaky_trace(), w.retaped::<Tp>(), None);
            let g = y.sum::<Rank0, _>().backward();
            std::hint::black_box(g);
        }
        let fb = t.elapsed().as_secs_f64() / reps as f64;
        let gf = 2.0 * (n * i * o) as f64 / 1e9;
        println!(
            "linear {n}x{i}->{o}: fwd {:.2} ms ({:.0} GFLOP/s), fwd+bwd {:.2} ms ({:.0} GFLOP/s)",
            f * 1e3,
            gf / f,
            fb * 1e3,
            3.0 * gf / fb
        );
    }
}
