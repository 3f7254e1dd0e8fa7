//! Convolution → batch norm → ReLU, the unit the FID Inception is built of,
//! with the batch norm folded into the convolution, in NHWC layout.
//!
//! The convolution is im2col + one matrix product per chunk of output pixels:
//! `out (rows, Cout) = col (rows, kh·kw·Cin) × W (kh·kw·Cin, Cout)`, with
//! [`crate::util::gemm`] on host buffers. Chunks
//! bound the im2col memory and are spread over threads; 1×1 stride-1 convs
//! skip im2col (the input already is the `(rows, Cin)` matrix).

use super::ops::{out_size, par_chunks, Act, OutView};
use crate::util::gemm::{gemm, Mat};

/// im2col chunks are sized to about this many floats (4 MiB).
const COL_CHUNK_FLOATS: usize = 1 << 20;

/// A convolution (no bias) followed by an inference batch norm without gamma
/// (`(x − mean) / sqrt(var + eps) + beta`) and a ReLU, folded into
/// `relu(conv(x, W·scale) + bias)` with `scale = 1/sqrt(var + eps)` and
/// `bias = beta − mean·scale`.
#[derive(Debug, Clone)]
pub struct ConvBnRelu {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (same along both axes).
    pub stride: usize,
    /// Zero padding `(top/bottom, left/right)`.
    pub pad: (usize, usize),
    /// Folded weights, `(kh·kw·Cin, Cout)` row-major (im2col order `ky, kx, cin`).
    w: Vec<f32>,
    /// Folded bias, `(Cout,)`.
    b: Vec<f32>,
}

impl ConvBnRelu {
    /// Folds a torch conv weight `(Cout, Cin, kh, kw)` and the batch norm's
    /// `beta`, `running_mean`, `running_var` (each `(Cout,)`) with `eps`.
    /// Panics if the lengths disagree with the shape (callers check shapes).
    #[allow(clippy::too_many_arguments)]
    pub fn fold(
        weight: &[f32],
        shape: [usize; 4],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f64,
        stride: usize,
        pad: (usize, usize),
    ) -> ConvBnRelu {
        let [cout, cin, kh, kw] = shape;
        assert_eq!(weight.len(), cout * cin * kh * kw);
        assert!(beta.len() == cout && mean.len() == cout && var.len() == cout);
        let scale: Vec<f64> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect();
        let b = (0..cout).map(|o| (beta[o] as f64 - mean[o] as f64 * scale[o]) as f32).collect();
        let mut w = vec![0.0f32; kh * kw * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let v = weight[((o * cin + i) * kh + ky) * kw + kx] as f64 * scale[o];
                        w[((ky * kw + kx) * cin + i) * cout + o] = v as f32;
                    }
                }
            }
        }
        ConvBnRelu { cin, cout, kh, kw, stride, pad, w, b }
    }

    /// Output `(height, width)` for an `h × w` input.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (out_size(h, self.kh, self.stride, self.pad.0), out_size(w, self.kw, self.stride, self.pad.1))
    }

    /// `relu(bn(conv(x)))` as new activations.
    pub fn forward(&self, x: &Act, threads: usize) -> Act {
        let (oh, ow) = self.out_hw(x.h, x.w);
        let mut y = Act::zeros(x.n, oh, ow, self.cout);
        self.forward_into(x, y.view(), threads);
        y
    }

    /// `relu(bn(conv(x)))` written into channels `off..off + Cout` of `out`.
    pub fn forward_into(&self, x: &Act, out: OutView<'_>, threads: usize) {
        assert_eq!(x.c, self.cin, "conv expects {} input channels, got {}", self.cin, x.c);
        let (oh, ow) = self.out_hw(x.h, x.w);
        let OutView { data, ld, off } = out;
        let rows = x.n * oh * ow;
        assert_eq!(data.len(), rows * ld, "conv output view has the wrong size");
        assert!(off + self.cout <= ld);
        let k = self.kh * self.kw * self.cin;
        let direct = self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == (0, 0);
        // Rows per chunk: bounded im2col memory, and at least one chunk per thread.
        let by_mem = if direct { rows } else { (COL_CHUNK_FLOATS / k).max(16) };
        let chunk_rows = by_mem.min(rows.div_ceil(threads.max(1))).max(1);
        par_chunks(data, chunk_rows * ld, threads, |i, dst| {
            let (r0, m) = (i * chunk_rows, dst.len() / ld);
            let mut col = Vec::new();
            let (lhs, lhs_rs) = if direct {
                (&x.data[r0 * k..(r0 + m) * k], k)
            } else {
                col.resize(m * k, 0.0);
                self.im2col(x, oh, ow, r0, &mut col);
                (&col[..], k)
            };
            // SAFETY: lhs is (m, k) with row stride lhs_rs, self.w is (k, cout),
            // dst holds m rows of ld ≥ off + cout floats; all within bounds.
            unsafe {
                let lhs = Mat { ptr: lhs.as_ptr(), rs: lhs_rs as isize, cs: 1 };
                gemm(m, self.cout, k, dst.as_mut_ptr().add(off), ld, false, lhs, Mat::rows(&self.w, self.cout), 1.0, 1);
            }
            for row in dst.chunks_mut(ld) {
                for (v, &b) in row[off..off + self.cout].iter_mut().zip(&self.b) {
                    *v = (*v + b).max(0.0);
                }
            }
        });
    }

    /// Fills `col` (`(m, kh·kw·Cin)`) with the input patches of output pixels
    /// `r0..r0 + m` (pixel index over `(N, OH, OW)`), zeros outside the input.
    fn im2col(&self, x: &Act, oh: usize, ow: usize, r0: usize, col: &mut [f32]) {
        let (cin, k) = (self.cin, self.kh * self.kw * self.cin);
        for (j, patch) in col.chunks_mut(k).enumerate() {
            let r = r0 + j;
            let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
            for ky in 0..self.kh {
                let iy = (oy * self.stride + ky) as isize - self.pad.0 as isize;
                for kx in 0..self.kw {
                    let ix = (ox * self.stride + kx) as isize - self.pad.1 as isize;
                    let dst = &mut patch[(ky * self.kw + kx) * cin..(ky * self.kw + kx + 1) * cin];
                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                        dst.fill(0.0);
                    } else {
                        let at = ((b * x.h + iy as usize) * x.w + ix as usize) * cin;
                        dst.copy_from_slice(&x.data[at..at + cin]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Direct NCHW convolution + batch norm + ReLU, in f64, from the torch
    /// definitions; returns NHWC to compare with the port.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &Act,
        weight: &[f32],
        [cout, cin, kh, kw]: [usize; 4],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        stride: usize,
        (ph, pw): (usize, usize),
    ) -> Act {
        let oh = (x.h + 2 * ph - kh) / stride + 1;
        let ow = (x.w + 2 * pw - kw) / stride + 1;
        let mut y = Act::zeros(x.n, oh, ow, cout);
        for b in 0..x.n {
            for o in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0.0f64;
                        for i in 0..cin {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * stride + ky) as isize - ph as isize;
                                    let ix = (ox * stride + kx) as isize - pw as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < x.h && (ix as usize) < x.w {
                                        let xv = x.data[((b * x.h + iy as usize) * x.w + ix as usize) * cin + i];
                                        s += xv as f64 * weight[((o * cin + i) * kh + ky) * kw + kx] as f64;
                                    }
                                }
                            }
                        }
                        let bn = (s - mean[o] as f64) / (var[o] as f64 + 1e-3).sqrt() + beta[o] as f64;
                        y.data[((b * oh + oy) * ow + ox) * cout + o] = bn.max(0.0) as f32;
                    }
                }
            }
        }
        y
    }

    fn check(shape: [usize; 4], stride: usize, pad: (usize, usize), (n, h, w): (usize, usize, usize), threads: usize) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((shape[2] * 10 + shape[3] + stride * 100) as u64);
        let [cout, cin, kh, kw] = shape;
        let mut r = |len: usize, lo: f32, hi: f32| (0..len).map(|_| rng.gen_range(lo..hi)).collect::<Vec<f32>>();
        let weight = r(cout * cin * kh * kw, -0.5, 0.5);
        let (beta, mean, var) = (r(cout, -0.5, 0.5), r(cout, -0.5, 0.5), r(cout, 0.1, 2.0));
        let x = Act { n, h, w, c: cin, data: r(n * h * w * cin, -1.0, 1.0) };
        let conv = ConvBnRelu::fold(&weight, shape, &beta, &mean, &var, 1e-3, stride, pad);
        let want = naive(&x, &weight, shape, &beta, &mean, &var, stride, pad);
        let got = conv.forward(&x, threads);
        assert_eq!((got.n, got.h, got.w, got.c), (want.n, want.h, want.w, want.c), "{shape:?} s{stride} p{pad:?}");
        let positive = want.data.iter().filter(|&&v| v > 0.0).count();
        assert!(positive > want.data.len() / 10, "test too degenerate: {positive} positive outputs");
        for (i, (g, e)) in got.data.iter().zip(&want.data).enumerate() {
            assert!((g - e).abs() < 1e-4, "{shape:?} s{stride} p{pad:?}: output {i}: {g} vs {e}");
        }
        // Into a concat view: channels [2, 2 + cout) of a wider buffer, others untouched.
        let ld = cout + 5;
        let mut buf = vec![9.0f32; got.pixels() * ld];
        conv.forward_into(&x, OutView { data: &mut buf, ld, off: 2 }, threads);
        for (p, row) in buf.chunks(ld).enumerate() {
            assert_eq!(&row[2..2 + cout], &got.data[p * cout..(p + 1) * cout]);
            assert!(row[..2].iter().chain(&row[2 + cout..]).all(|&v| v == 9.0));
        }
    }

    #[test]
    fn conv_matches_a_direct_convolution() {
        check([4, 3, 3, 3], 2, (0, 0), (2, 9, 8), 2); // stem conv: 3×3 stride 2
        check([5, 4, 3, 3], 1, (1, 1), (2, 6, 7), 2); // 3×3 same padding
        check([3, 6, 1, 1], 1, (0, 0), (3, 5, 4), 2); // 1×1: direct gemm path
        check([4, 3, 1, 7], 1, (0, 3), (2, 9, 10), 2); // 1×7
        check([4, 3, 7, 1], 1, (3, 0), (2, 10, 9), 1); // 7×1
        check([3, 4, 1, 3], 1, (0, 1), (1, 5, 6), 2); // 1×3
        check([3, 4, 3, 1], 1, (1, 0), (1, 6, 5), 2); // 3×1
        check([6, 5, 5, 5], 1, (2, 2), (2, 7, 7), 2); // 5×5 pad 2
        check([3, 4, 3, 3], 2, (0, 0), (2, 9, 9), 3); // 3×3 stride 2 (InceptionB/D)
    }

    #[test]
    fn im2col_chunks_cover_many_rows() {
        // Large enough that im2col splits into several chunks per thread.
        let k = 3 * 3 * 16;
        let rows_per_chunk = COL_CHUNK_FLOATS / k;
        let side = ((3 * rows_per_chunk) as f64).sqrt() as usize + 3;
        check([2, 16, 3, 3], 1, (1, 1), (1, side, side), 2);
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use dfdx::prelude::*;

    fn cpu_secs() -> f64 {
        let t = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<&str> = t.rsplit(')').next().unwrap().split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }

    /// `cargo test --release -p fine-core --lib conv::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn conv_gemm_vs_dfdx() {
        for &(cin, cout, k, hw, n) in &[
            (32usize, 64usize, 3usize, 147usize, 4usize),
            (768, 192, 1, 17, 16),
            (384, 384, 3, 35, 8),
            (2048, 448, 1, 8, 16),
        ] {
            let shape = [cout, cin, k, k];
            let w: Vec<f32> = (0..cout * cin * k * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
            let ones = vec![1.0f32; cout];
            let zeros = vec![0.0f32; cout];
            let conv = ConvBnRelu::fold(&w, shape, &zeros, &zeros, &ones, 1e-3, 1, ((k - 1) / 2, (k - 1) / 2));
            let x =
                Act { n, h: hw, w: hw, c: cin, data: (0..n * hw * hw * cin).map(|i| (i % 7) as f32 * 0.1).collect() };
            let flops = 2.0 * (n * hw * hw) as f64 * (cin * k * k * cout) as f64;
            for threads in [1, 2] {
                let (t0, c0) = (std::time::Instant::now(), cpu_secs());
                let reps = 3;
                for _ in 0..reps {
                    std::hint::black_box(conv.forward(&x, threads));
                }
                let (s, c) = (t0.elapsed().as_secs_f64() / reps as f64, (cpu_secs() - c0) / reps as f64);
                println!(
                    "gemm direct  {cin}->{cout} {k}x{k} {hw}² n{n} threads {threads}: {:.1} ms, {:.1} GFLOP/s wall, {:.1} GFLOP/s per cpu-s",
                    s * 1e3, flops / s / 1e9, flops / c / 1e9
                );
            }
            // dfdx matmul on the same im2col matrix (the im2col itself excluded).
            let dev = Cpu::default();
            let rows = n * hw * hw;
            let kk = k * k * cin;
            let mut col = vec![0.0f32; rows * kk];
            let (oh, ow) = conv.out_hw(hw, hw);
            if k == 1 {
                col.copy_from_slice(&x.data);
            } else {
                conv.im2col(&x, oh, ow, 0, &mut col);
            }
            let wt: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(conv.w.clone(), (kk, cout));
            let (t0, c0) = (std::time::Instant::now(), cpu_secs());
            let reps = 3;
            for _ in 0..reps {
                let a: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(col.clone(), (rows, kk));
                let y = a.matmul(wt.clone());
                std::hint::black_box(y.as_vec());
            }
            let (s, c) = (t0.elapsed().as_secs_f64() / reps as f64, (cpu_secs() - c0) / reps as f64);
            println!(
                "dfdx matmul  {cin}->{cout} {k}x{k} {hw}² n{n} (gemm only, rayon): {:.1} ms, {:.1} GFLOP/s wall, {:.1} GFLOP/s per cpu-s",
                s * 1e3, flops / s / 1e9, flops / c / 1e9
            );
        }
    }
}
