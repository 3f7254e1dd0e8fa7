//! `fine bench gemm`: every matrix-product backend on the shapes of one DiT
//! block's linear layers (forward `x·Wᵀ`, input gradient `dy·W`, weight
//! gradient `dyᵀ·x`), interleaved in one run, as GFLOP/s and as time relative
//! to the first backend.

use anyhow::{bail, Result};
use fine_core::util::gemm::{gemm_with, threads, Backend, Mat, Product};
use std::time::Instant;

/// `fine bench gemm`: prints a markdown table and one JSON line.
pub fn run(tokens: usize, hidden: usize, reps: usize) -> Result<()> {
    if tokens == 0 || hidden == 0 || reps == 0 {
        bail!("--tokens, --hidden and --reps must be positive");
    }
    let d = hidden;
    // (name, in, out) of a DiT block's linears.
    let layers = [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, 4 * d), ("fc2", 4 * d, d)];
    let backends = Backend::all_here();
    let th = threads();
    let fill = |n: usize, s: usize| (0..n).map(|i| ((i * 37 + s * 11) % 23) as f32 / 11.0 - 1.0).collect::<Vec<f32>>();
    println!("tokens {tokens}, hidden {hidden}, {th} threads, best of {reps} (backends interleaved)\n");
    print!("| product (m, n, k) |");
    for b in &backends {
        print!(" {} GFLOP/s |", b.name());
    }
    println!();
    println!("|---|{}", "---:|".repeat(backends.len()));
    let mut total = vec![0f64; backends.len()];
    for (name, inp, out) in layers {
        let (x, w, dy) = (fill(tokens * inp, 1), fill(out * inp, 2), fill(tokens * out, 3));
        // (label, m, n, k, lhs, rhs)
        let forms = [
            ("y=x·Wᵀ", tokens, out, inp, Mat::rows(&x, inp), Mat::cols(&w, inp)),
            ("dx=dy·W", tokens, inp, out, Mat::rows(&dy, out), Mat::rows(&w, inp)),
            ("dW=dyᵀ·x", out, inp, tokens, Mat::cols(&dy, out), Mat::rows(&x, inp)),
        ];
        for (label, m, n, k, lhs, rhs) in forms {
            let mut dst = vec![0f32; m * n];
            let mut best = vec![f64::INFINITY; backends.len()];
            for _ in 0..reps + 1 {
                for (bi, &b) in backends.iter().enumerate() {
                    let t0 = Instant::now();
                    let p = Product { m, n, k, dst: dst.as_mut_ptr(), ld: n, accumulate: false, lhs, rhs, scale: 1.0 };
                    // SAFETY: operands and dst are live buffers of the stated shapes.
                    unsafe { gemm_with(b, p, th) };
                    best[bi] = best[bi].min(t0.elapsed().as_secs_f64());
                }
            }
            print!("| {name} {label} ({m}, {n}, {k}) |");
            for (bi, s) in best.iter().enumerate() {
                print!(" {:.1} |", 2.0 * (m * n * k) as f64 / s / 1e9);
                total[bi] += s;
            }
            println!();
        }
    }
    print!("| **all twelve, total ms** |");
    for s in &total {
        print!(" {:.2} |", s * 1e3);
    }
    println!();
    print!("| **time relative to {}** |", backends[0].name());
    for s in &total {
        print!(" {:.2}× |", s / total[0]);
    }
    println!("\n");
    let json: serde_json::Map<String, serde_json::Value> =
        backends.iter().zip(&total).map(|(b, s)| (b.name().to_string(), serde_json::json!(s * 1e3))).collect();
    println!("{}", serde_json::json!({"tokens": tokens, "hidden": hidden, "threads": th, "block_linears_ms": json}));
    Ok(())
}
