//! Inference ops of the FID Inception port, on plain host buffers in NHWC
//! layout: activations, pools, bilinear resize, and a helper that spreads work
//! over threads.
//!
//! Ops that feed a channel concatenation write into an [`OutView`]: a slice of
//! `rows × ld` floats where the op fills the channels `off..off + c` of every
//! row (one row = one pixel), so branches write straight into their part of
//! the concatenated block output.

use std::sync::Mutex;

// ----- activations -----

/// A batch of activations, `(N, H, W, C)` row-major (channels last).
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    /// Images in the batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n · h · w · c` values.
    pub data: Vec<f32>,
}

impl Act {
    /// All-zero activations of the given shape.
    pub fn zeros(n: usize, h: usize, w: usize, c: usize) -> Act {
        Act { n, h, w, c, data: vec![0.0; n * h * w * c] }
    }

    /// Number of pixels, `n · h · w` (rows of the `(pixels, C)` matrix view).
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// A view writing all channels of `self`.
    pub fn view(&mut self) -> OutView<'_> {
        OutView { ld: self.c, off: 0, data: &mut self.data }
    }
}

/// Where an op writes: channels `off..off + c` of each `ld`-wide row of `data`.
pub struct OutView<'a> {
    /// `rows · ld` values.
    pub data: &'a mut [f32],
    /// Row length (total channels of the destination).
    pub ld: usize,
    /// First channel written.
    pub off: usize,
}

// ----- threads -----

/// Calls `f(i, chunk)` for every `chunk_len`-long chunk `i` of `out` (the last
/// may be shorter), spreading the chunks over `threads` threads.
pub fn par_chunks(out: &mut [f32], chunk_len: usize, threads: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk_len = chunk_len.max(1);
    let n_chunks = out.len().div_ceil(chunk_len);
    let threads = threads.clamp(1, n_chunks.max(1));
    if threads == 1 {
        out.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    let work = Mutex::new(out.chunks_mut(chunk_len).enumerate());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let next = work.lock().unwrap_or_else(|e| e.into_inner()).next();
                match next {
                    Some((i, c)) => f(i, c),
                    None => break,
                }
            });
        }
    });
}

/// Output size of a window op: `(size + 2·pad − k) / stride + 1`.
pub fn out_size(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    assert!(size + 2 * pad >= k, "window {k} larger than padded input {size}+2·{pad}");
    (size + 2 * pad - k) / stride + 1
}

// ----- pools -----

/// Max pool `k × k`, stride `s`, padding `p` (padded positions are ignored, as
/// torch pads with −∞). Writes `(N, OH, OW, C)` into `out`.
pub fn max_pool(x: &Act, k: usize, s: usize, p: usize, out: OutView<'_>, threads: usize) {
    window_pool(
        x,
        k,
        s,
        p,
        out,
        threads,
        |vals: &mut [f32], src: &[f32], first: bool| {
            if first {
                vals.copy_from_slice(src);
            } else {
                for (v, &a) in vals.iter_mut().zip(src) {
                    *v = v.max(a);
                }
            }
        },
        |_vals, _count| {},
    );
}

/// Average pool `k × k`, stride `s`, padding `p`, with `count_include_pad =
/// false`: each output is the mean over the window positions inside the input.
pub fn avg_pool_exclude_pad(x: &Act, k: usize, s: usize, p: usize, out: OutView<'_>, threads: usize) {
    window_pool(
        x,
        k,
        s,
        p,
        out,
        threads,
        |vals: &mut [f32], src: &[f32], first: bool| {
            if first {
                vals.copy_from_slice(src);
            } else {
                for (v, &a) in vals.iter_mut().zip(src) {
                    *v += a;
                }
            }
        },
        |vals, count| {
            let inv = 1.0 / count as f32;
            vals.iter_mut().for_each(|v| *v *= inv);
        },
    );
}

/// Shared window loop of the pools: `acc(out_channels, in_channels, first)`
/// folds one input pixel in; `finish(out_channels, count)` runs once per output.
#[allow(clippy::too_many_arguments)]
fn window_pool(
    x: &Act,
    k: usize,
    s: usize,
    p: usize,
    out: OutView<'_>,
    threads: usize,
    acc: impl Fn(&mut [f32], &[f32], bool) + Sync,
    finish: impl Fn(&mut [f32], usize) + Sync,
) {
    let (oh, ow, c) = (out_size(x.h, k, s, p), out_size(x.w, k, s, p), x.c);
    let OutView { data, ld, off } = out;
    assert_eq!(data.len(), x.n * oh * ow * ld, "pool output view has the wrong size");
    // One chunk = one output row (b, oy) of `ow` pixels.
    par_chunks(data, ow * ld, threads, |row, dst| {
        let (b, oy) = (row / oh, row % oh);
        let y0 = (oy * s) as isize - p as isize;
        for ox in 0..ow {
            let x0 = (ox * s) as isize - p as isize;
            let vals = &mut dst[ox * ld + off..ox * ld + off + c];
            let mut count = 0;
            for iy in y0.max(0)..(y0 + k as isize).min(x.h as isize) {
                for ix in x0.max(0)..(x0 + k as isize).min(x.w as isize) {
                    let at = ((b * x.h + iy as usize) * x.w + ix as usize) * c;
                    acc(vals, &x.data[at..at + c], count == 0);
                    count += 1;
                }
            }
            finish(vals, count);
        }
    });
}

/// Mean over all pixels of each image: `(N, H, W, C)` → `(N, C)`.
pub fn global_avg_pool(x: &Act) -> Vec<f32> {
    let hw = x.h * x.w;
    let mut out = vec![0.0f32; x.n * x.c];
    for (b, o) in out.chunks_mut(x.c).enumerate() {
        for px in x.data[b * hw * x.c..(b + 1) * hw * x.c].chunks(x.c) {
            o.iter_mut().zip(px).for_each(|(o, &v)| *o += v);
        }
        o.iter_mut().for_each(|v| *v /= hw as f32);
    }
    out
}

// ----- resize -----

/// Source taps of a bilinear resize along one axis, as torch's
/// `F.interpolate(mode="bilinear", align_corners=False)` with an output size:
/// `src = (dst + 0.5) · in/out − 0.5`, clamped at 0; `i0 = ⌊src⌋`,
/// `i1 = min(i0 + 1, in − 1)`, weights `(1 − λ, λ)` with `λ = src − i0`.
pub fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize (align_corners = false) of one `h × w` plane to `oh × ow`.
pub fn resize_bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    assert_eq!(src.len(), h * w);
    let (ty, tx) = (bilinear_taps(h, oh), bilinear_taps(w, ow));
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, wy0, wy1) in &ty {
        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
        for &(x0, x1, wx0, wx1) in &tx {
            out.push(wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(n: usize, h: usize, w: usize, c: usize, f: impl Fn(usize) -> f32) -> Act {
        Act { n, h, w, c, data: (0..n * h * w * c).map(f).collect() }
    }

    #[test]
    fn avg_pool_excludes_padding_at_the_borders() {
        // One 3×4 channel 0..12 (plus a second channel = 10·first).
        let x = act(1, 3, 4, 2, |i| if i % 2 == 0 { (i / 2) as f32 } else { 10.0 * (i / 2) as f32 });
        let mut y = Act::zeros(1, 3, 4, 2);
        avg_pool_exclude_pad(&x, 3, 1, 1, y.view(), 2);
        let plane = |r: usize, c: usize| (r * 4 + c) as f32;
        // Corner (0,0): mean of the 4 in-bounds values, not sum/9.
        let corner = (plane(0, 0) + plane(0, 1) + plane(1, 0) + plane(1, 1)) / 4.0;
        assert!((y.data[0] - corner).abs() < 1e-6, "{} vs {corner}", y.data[0]);
        assert!((y.data[1] - 10.0 * corner).abs() < 1e-5);
        // Edge (0,1): 6 values.
        let edge = (0..2).flat_map(|r| (0..3).map(move |c| plane(r, c))).sum::<f32>() / 6.0;
        assert!((y.data[2] - edge).abs() < 1e-6);
        // Interior (1,1): all 9.
        let inner = (0..3).flat_map(|r| (0..3).map(move |c| plane(r, c))).sum::<f32>() / 9.0;
        assert!((y.data[(4 + 1) * 2] - inner).abs() < 1e-6);
        // Bottom-right corner (2,3).
        let br = (plane(1, 2) + plane(1, 3) + plane(2, 2) + plane(2, 3)) / 4.0;
        assert!((y.data[(2 * 4 + 3) * 2] - br).abs() < 1e-6);
    }

    #[test]
    fn max_pool_strided_and_padded_into_a_concat_view() {
        // 2 images 5×5, 1 channel; image b pixel (r, c) = b·100 + (r·5 + c)·(−1)^(r+c).
        let v = |b: usize, r: usize, c: usize| {
            b as f32 * 100.0 + (r * 5 + c) as f32 * if (r + c) & 1 == 0 { 1.0 } else { -1.0 }
        };
        let x = act(2, 5, 5, 1, |i| v(i / 25, (i % 25) / 5, i % 5));
        let naive = |b: usize, oy: usize, ox: usize, s: usize, p: usize| {
            let mut m = f32::NEG_INFINITY;
            for dy in 0..3 {
                for dx in 0..3 {
                    let (r, c) = ((oy * s + dy) as isize - p as isize, (ox * s + dx) as isize - p as isize);
                    if (0..5).contains(&r) && (0..5).contains(&c) {
                        m = m.max(v(b, r as usize, c as usize));
                    }
                }
            }
            m
        };
        // Stride 2, no padding: 5 → 2; write into channel 1 of a 3-wide concat.
        let mut buf = vec![-7.0f32; 2 * 2 * 2 * 3];
        max_pool(&x, 3, 2, 0, OutView { data: &mut buf, ld: 3, off: 1 }, 2);
        for b in 0..2 {
            for oy in 0..2 {
                for ox in 0..2 {
                    let row = ((b * 2 + oy) * 2 + ox) * 3;
                    assert_eq!(buf[row + 1], naive(b, oy, ox, 2, 0));
                    assert_eq!((buf[row], buf[row + 2]), (-7.0, -7.0), "other channels untouched");
                }
            }
        }
        // Stride 1, padding 1 (mixed_10's branch pool): 5 → 5.
        let mut y = Act::zeros(2, 5, 5, 1);
        max_pool(&x, 3, 1, 1, y.view(), 1);
        for (i, &got) in y.data.iter().enumerate() {
            assert_eq!(got, naive(i / 25, (i % 25) / 5, i % 5, 1, 1));
        }
    }

    #[test]
    fn global_avg_pool_means_each_channel() {
        let x = act(2, 2, 2, 3, |i| i as f32);
        // Image 0: channel c has values c, 3+c, 6+c, 9+c → mean 4.5+c.
        assert_eq!(global_avg_pool(&x), vec![4.5, 5.5, 6.5, 16.5, 17.5, 18.5]);
    }

    #[test]
    fn bilinear_resize_matches_torch_interpolate() {
        // Reference from PyTorch 2.x:
        //   import torch, torch.nn.functional as F
        //   x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4) ** 1.5
        //   print(F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False).flatten().tolist())
        let src: Vec<f32> = (0..12).map(|i| (i as f32).powf(1.5)).collect();
        let got = resize_bilinear(&src, 3, 4, 5, 7);
        let want = TORCH_3X4_TO_5X7;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "pixel {i}: {g} vs torch {w}");
        }
        // Upscaling a constant keeps it; identity size keeps the image.
        assert!(resize_bilinear(&[3.0; 4], 2, 2, 9, 5).iter().all(|&v| (v - 3.0).abs() < 1e-6));
        assert_eq!(resize_bilinear(&src, 3, 4, 3, 4), src);
    }

    #[test]
    fn bilinear_taps_follow_the_half_pixel_formula() {
        // 28 → 299: scale = 28/299; dst 0 → src clamped to 0; dst 298 → i0 = 27, i1 clamped.
        let t = bilinear_taps(28, 299);
        assert_eq!(t[0], (0, 1, 1.0, 0.0));
        let (i0, i1, _, l1) = t[298];
        assert_eq!((i0, i1), (27, 27));
        assert!(l1 > 0.0 && l1 < 1.0);
        let d = 150;
        let src = (d as f32 + 0.5) * (28.0 / 299.0) - 0.5;
        assert_eq!(t[d].0, src.floor() as usize);
        assert!((t[d].3 - src.fract()).abs() < 1e-6);
    }

    /// The torch output quoted above, to 7 significant digits.
    #[rustfmt::skip]
    const TORCH_3X4_TO_5X7: [f32; 35] = [
        0.0, 0.3571429, 0.9285715, 1.914214, 2.997551, 4.350536, 5.196152,
        3.2, 3.86862, 4.938412, 6.323985, 7.786544, 9.472239, 10.5258,
        8.0, 9.135836, 10.95317, 12.93864, 14.97003, 17.15479, 18.52026,
        16.77645, 18.16777, 20.39388, 22.76229, 25.16997, 27.71019, 29.29783,
        22.62742, 24.18905, 26.68767, 29.31139, 31.96992, 34.74712, 36.48287,
    ];
}
