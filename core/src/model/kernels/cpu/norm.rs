//! LayerNorm → adaLN modulate, and adaLN-Zero's gated residual, one pass each.
//!
//! `m` is adaLN's (B, k·D) output; shift/scale/gate are read in place as its
//! chunks, so the six (B, D) slices of a DiT block are never copied out.
//!
//! ```text
//! ln_modulate   n = (x − μ)·r, r = 1/√(var + eps)        x, n (B, T, D)
//!               y = n·(1 + scale_b) + shift_b
//!   backward    dshift_b += Σ_t dy      dscale_b += Σ_t dy·n
//!               dn = dy·(1 + scale_b)
//!               dx += r·(dn − mean(dn) − n·mean(dn·n))
//! gate_residual z = x + gate_b·y
//!   backward    dx += dz   dy += dz·gate_b   dgate_b += Σ_t dz·y
//! ```

use super::SendPtr;
use super::{output, view, with_grad_of, zeroed};
use crate::model::layers::{T2, T3};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Rows of (B, T, D) per rayon task.
fn rows_per_task(d: usize) -> usize {
    (8192 / d.max(1)).max(1)
}

pub fn ln_modulate<T: Tape<f32, Cpu>>(
    x: T3<Cpu, T>,
    m: T2<Cpu, T>,
    shift: usize,
    scale: usize,
    eps: f64,
) -> T3<Cpu, T> {
    let (b, t, d) = *x.shape();
    let md = m.shape().1;
    assert!(
        m.shape().0 == b && (shift + 1) * d <= md && (scale + 1) * d <= md,
        "ln_modulate: m {:?} for x {:?}",
        m.shape(),
        x.shape()
    );
    let (x, tx) = x.contiguous().split_tape();
    let (m, tm) = m.contiguous().split_tape();
    let tape = tx.merge(tm);
    let (mv, xv) = (view(&m), view(&x)); // (B, k·D), (B, T, D)
    let mut n = zeroed(b * t * d); // the normalised x
    let mut rstd = vec![0.0f32; b * t];
    let mut y = zeroed(b * t * d);
    let chunk = rows_per_task(d);
    n.par_chunks_mut(chunk * d)
        .zip(y.par_chunks_mut(chunk * d))
        .zip(rstd.par_chunks_mut(chunk))
        .zip(xv.par_chunks(chunk * d))
        .enumerate()
        .for_each(|(c, (((n, y), rs), x))| {
            for (i, (((nr, yr), r), xr)) in n.chunks_mut(d).zip(y.chunks_mut(d)).zip(rs).zip(x.chunks(d)).enumerate() {
                let bi = (c * chunk + i) / t;
                let mean = xr.iter().sum::<f32>() / d as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                *r = 1.0 / (var + eps as f32).sqrt();
                let sh = &mv[bi * md + shift * d..][..d];
                let sc = &mv[bi * md + scale * d..][..d];
                for j in 0..d {
                    nr[j] = (xr[j] - mean) * *r;
                    yr[j] = nr[j] * (1.0 + sc[j]) + sh[j];
                }
            }
        });
    drop(xv);
    let y = output(x.device(), y, (b, t, d));
    let y_ghost = y.clone();
    let mut tape = tape;
    tape.add_backward_op(move |grads| {
        with_grad_of(grads, &y_ghost, |grads, dy| {
            let dm = grads.get_or_alloc_mut(&m)?;
            let dm_ptr = SendPtr(dm.as_mut_ptr());
            // Shift/scale gradients: per sample, summed over tokens (samples in parallel).
            (0..b).into_par_iter().for_each(|bi| {
                let p = dm_ptr;
                // SAFETY: sample bi writes only row bi of dm.
                let row = unsafe { std::slice::from_raw_parts_mut(p.0.add(bi * md), md) };
                for ti in 0..t {
                    let r0 = (bi * t + ti) * d;
                    let (dyr, nr) = (&dy[r0..r0 + d], &n[r0..r0 + d]);
                    for j in 0..d {
                        row[shift * d + j] += dyr[j];
                        row[scale * d + j] += dyr[j] * nr[j];
                    }
                }
            });
            let dx = grads.get_or_alloc_mut(&x)?;
            let chunk = rows_per_task(d);
            dx.par_chunks_mut(chunk * d).enumerate().for_each(|(c, dxc)| {
                let mut dn = vec![0.0f32; d];
                for (i, dxr) in dxc.chunks_mut(d).enumerate() {
                    let row = c * chunk + i;
                    let (bi, r0) = (row / t, row * d);
                    let sc = &mv[bi * md + scale * d..][..d];
                    let (dyr, nr) = (&dy[r0..r0 + d], &n[r0..r0 + d]);
                    let (mut s1, mut s2) = (0.0f32, 0.0f32);
                    for j in 0..d {
                        dn[j] = dyr[j] * (1.0 + sc[j]);
                        s1 += dn[j];
                        s2 += dn[j] * nr[j];
                    }
                    let (s1, s2, r) = (s1 / d as f32, s2 / d as f32, rstd[row]);
                    for j in 0..d {
                        dxr[j] += r * (dn[j] - s1 - nr[j] * s2);
                    }
                }
            });
            Ok(())
        })
    });
    y.put_tape(tape)
}

pub fn gate_residual<T: Tape<f32, Cpu>>(x: T3<Cpu, T>, m: T2<Cpu, T>, gate: usize, y: T3<Cpu, T>) -> T3<Cpu, T> {
    let (b, t, d) = *x.shape();
    let md = m.shape().1;
    assert!(
        y.shape() == x.shape() && m.shape().0 == b && (gate + 1) * d <= md,
        "gate_residual: x {:?}, y {:?}, m {:?}",
        x.shape(),
        y.shape(),
        m.shape()
    );
    let (x, tx) = x.contiguous().split_tape();
    let (m, tm) = m.contiguous().split_tape();
    let (y, ty) = y.contiguous().split_tape();
    let mut tape = tx.merge(tm).merge(ty);
    let (mv, yv, xv) = (view(&m), view(&y), view(&x));
    let mut z = zeroed(b * t * d);
    let chunk = rows_per_task(d);
    z.par_chunks_mut(chunk * d).zip(xv.par_chunks(chunk * d)).enumerate().for_each(|(c, (zc, xc))| {
        for (i, (zr, xr)) in zc.chunks_mut(d).zip(xc.chunks(d)).enumerate() {
            let row = c * chunk + i;
            let g = &mv[(row / t) * md + gate * d..][..d];
            let yr = &yv[row * d..][..d];
            for j in 0..d {
                zr[j] = xr[j] + g[j] * yr[j];
            }
        }
    });
    drop(xv);
    let z = output(x.device(), z, (b, t, d));
    let z_ghost = z.clone();
    tape.add_backward_op(move |grads| {
        with_grad_of(grads, &z_ghost, |grads, dz| {
            let chunk = rows_per_task(d);
            let dx = grads.get_or_alloc_mut(&x)?;
            dx.par_chunks_mut(chunk * d).zip(dz.par_chunks(chunk * d)).for_each(|(a, g)| {
                a.iter_mut().zip(g).for_each(|(a, g)| *a += g);
            });
            let dy = grads.get_or_alloc_mut(&y)?;
            dy.par_chunks_mut(chunk * d).zip(dz.par_chunks(chunk * d)).enumerate().for_each(|(c, (dyc, dzc))| {
                for (i, (dyr, dzr)) in dyc.chunks_mut(d).zip(dzc.chunks(d)).enumerate() {
                    let g = &mv[((c * chunk + i) / t) * md + gate * d..][..d];
                    for j in 0..d {
                        dyr[j] += dzr[j] * g[j];
                    }
                }
            });
            // Gate gradient: per sample, summed over tokens (samples in parallel).
            let dm = grads.get_or_alloc_mut(&m)?;
            dm.par_chunks_mut(md).enumerate().for_each(|(bi, dmr)| {
                let dg = &mut dmr[gate * d..][..d];
                for ti in 0..t {
                    let r0 = (bi * t + ti) * d;
                    let (yr, dzr) = (&yv[r0..r0 + d], &dz[r0..r0 + d]);
                    for j in 0..d {
                        dg[j] += dzr[j] * yr[j];
                    }
                }
            });
            Ok(())
        })
    });
    z.put_tape(tape)
}
