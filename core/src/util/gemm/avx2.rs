//! A BLIS-style single-precision GEMM for x86-64 with AVX2 + FMA: operands are
//! packed once per call into MR-row and NR-column micro-panels, and a 6 × 16
//! register-blocked micro-kernel does the multiply-adds (12 accumulators, two
//! FMA pipes). Threaded calls pack each operand block once, shared by all
//! workers (splitting a product into independent one-thread products re-packs
//! the shared operand per block: ≈14% of a DiT-S/2 step went to OpenBLAS's
//! packing that way), then hand out (row block × column group) tiles, so a
//! worker that falls behind leaves tiles to the other.
//!
//! Loop nest (BLIS names): jc over NC columns → pc over ≤ KC depth → pack B
//! (kc × nc) → chunks of M_CHUNK rows → pack A (chunk × kc) → tiles of (MC rows
//! × a group of NR panels) → jr over NR panels → ir over MR panels →
//! micro-kernel over kc.

use super::{Mat, Product, SendMat, SendPtr};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Micro-tile rows (A broadcasts per k).
const MR: usize = 6;
/// Micro-tile columns (two 8-float vectors).
const NR: usize = 16;
/// Largest depth of a packed block: an NR-panel of B (≤ 24 KiB) stays in L1.
/// Deeper products are cut into equal blocks of at most this depth.
const KC: usize = 384;
/// Rows of A per tile: a 144 × 384 block of packed A (216 KiB) stays in L2
/// (512 KiB per core here).
const MC: usize = 144;
/// Columns of B per packed block.
const NC: usize = 4096;
/// Rows of A packed at a time (16 row blocks: ≤ 3.4 MiB of packed A, however
/// tall the product).
const M_CHUNK: usize = 16 * MC;
/// Widest product whose row-major lhs is read in place (not packed).
const IN_PLACE_MAX_N: usize = 128;
/// Tiles per worker a threaded product aims for (load balance).
const TILES_PER_THREAD: usize = 4;

/// Whether this CPU can run the kernel (checked once).
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

thread_local! {
    /// Packing buffers of the calling thread, reused across calls (fresh
    /// multi-megabyte buffers would be page-faulted in on every product).
    static BUFS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The product `p` on `threads` rayon workers (1: the calling thread only).
///
/// # Safety
/// As [`super::gemm`]; and [`available`] is true.
pub unsafe fn gemm(p: Product, threads: usize) {
    BUFS.with(|bufs| match bufs.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            drive(p, threads, a, b)
        }
        // A product started while this thread's buffers are in use (rayon ran
        // another task on it while it waited): fresh buffers.
        Err(_) => drive(p, threads, &mut Vec::new(), &mut Vec::new()),
    })
}

/// The loop nest of the module doc, packing into `abuf` and `bbuf` (grown as
/// needed).
unsafe fn drive(p: Product, threads: usize, abuf: &mut Vec<f32>, bbuf: &mut Vec<f32>) {
    use rayon::prelude::*;
    let Product { m, n, k, dst, ld, accumulate, lhs, rhs, scale } = p;
    // A row-major lhs feeding few columns is read in place: the kernel
    // broadcasts its elements from six row streams, which the hardware
    // prefetcher follows. Packing it costs as much as the product when n is
    // small (attention's P·V: n = 64); from IN_PLACE_MAX_N columns, the packed
    // panel's locality wins.
    let pack_lhs = lhs.cs != 1 || n > IN_PLACE_MAX_N;
    let kc_step = k.div_ceil(k.div_ceil(KC));
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels = nc.div_ceil(NR);
        for pc in (0..k).step_by(kc_step) {
            let kc = kc_step.min(k - pc);
            let acc = accumulate || pc > 0;
            grow(bbuf, panels * NR * kc);
            let bp = SendPtr(bbuf.as_mut_ptr());
            let b_src = SendMat(rhs.at_row(pc).at_col(jc));
            // Pack B: panel p holds columns p·NR.. as (kc, NR), zero-padded.
            let pack_b = |p: usize| {
                let (b_src, bp) = (b_src, bp);
                pack_b(kc, (nc - p * NR).min(NR), b_src.0.at_col(p * NR), bp.0.add(p * NR * kc))
            };
            for ic in (0..m).step_by(M_CHUNK) {
                let mc = M_CHUNK.min(m - ic);
                let row_blocks = mc.div_ceil(MC);
                // Column groups: enough tiles for every worker to take a few.
                let groups =
                    if threads > 1 { (threads * TILES_PER_THREAD).div_ceil(row_blocks).clamp(1, panels) } else { 1 };
                let per_group = panels.div_ceil(groups);
                let groups = panels.div_ceil(per_group);
                if pack_lhs {
                    grow(abuf, mc.next_multiple_of(MR) * kc);
                }
                let (ap, cp) = (SendPtr(abuf.as_mut_ptr()), SendPtr(dst.add(ic * ld + jc)));
                let a_src = SendMat(lhs.at_row(ic).at_col(pc));
                // Pack A: panel q holds rows ic + q·MR.. as (kc, MR), zero-padded.
                let pack_a = |q: usize| {
                    let (a_src, ap) = (a_src, ap);
                    pack_a(kc, (mc - q * MR).min(MR), a_src.0.at_row(q * MR), ap.0.add(q * MR * kc))
                };
                let tile = |t: usize| {
                    let (ap, bp, cp, a_src) = (ap, bp, cp, a_src);
                    let (rb, g) = (t / groups, t % groups);
                    let (r0, r1) = (rb * MC, ((rb + 1) * MC).min(mc));
                    let (p0, p1) = (g * per_group, ((g + 1) * per_group).min(panels));
                    for p in p0..p1 {
                        let b = bp.0.add(p * NR * kc) as *const f32;
                        let cols = (nc - p * NR).min(NR);
                        for r in (r0..r1).step_by(MR) {
                            let c = cp.0.add(r * ld + p * NR);
                            let rows = (r1 - r).min(MR);
                            if pack_lhs {
                                kernel(kc, ap.0.add(r * kc), 1, MR as isize, b, c, ld, rows, cols, scale, acc);
                            } else {
                                kernel(kc, a_src.0.at_row(r).ptr, a_src.0.rs, 1, b, c, ld, rows, cols, scale, acc);
                            }
                        }
                    }
                };
                // B's panels (with the first chunk), then A's: one parallel
                // loop, since every fork-join costs microseconds that small
                // graphs' products notice.
                let b_panels = if ic == 0 { panels } else { 0 };
                let a_panels = if pack_lhs { mc.div_ceil(MR) } else { 0 };
                let pack = |i: usize| if i < b_panels { pack_b(i) } else { pack_a(i - b_panels) };
                if threads > 1 {
                    (0..b_panels + a_panels).into_par_iter().for_each(pack);
                    (0..row_blocks * groups).into_par_iter().for_each(tile);
                } else {
                    (0..b_panels + a_panels).for_each(pack);
                    (0..row_blocks * groups).for_each(tile);
                }
            }
        }
    }
}

/// Makes `buf` hold at least `len` floats (contents unspecified).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        *buf = vec![0.0; len];
    }
}

/// Packs `rows` (≤ MR) rows × kc of `a` as kc groups of MR floats, padding
/// missing rows with zeros.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a(kc: usize, rows: usize, a: Mat, out: *mut f32) {
    let mut p0 = 0;
    if a.cs == 1 && rows == MR {
        // Row-major source: 8 columns of the six rows at a time, transposed in
        // registers (two zero rows pad the 8 × 8 transpose). Each group is
        // stored as 8 floats; the next store overwrites the 2 pad floats.
        let zero = _mm256_setzero_ps();
        while p0 + 8 <= kc {
            let r = |i: usize| _mm256_loadu_ps(a.ptr.offset(i as isize * a.rs).add(p0));
            let t = transpose8([r(0), r(1), r(2), r(3), r(4), r(5), zero, zero]);
            let o = out.add(p0 * MR);
            for (p, tp) in t.iter().enumerate().take(7) {
                _mm256_storeu_ps(o.add(p * MR), *tp);
            }
            // The last group: 6 floats, nothing past it.
            _mm_storeu_ps(o.add(7 * MR), _mm256_castps256_ps128(t[7]));
            _mm_storel_epi64(o.add(7 * MR + 4) as *mut __m128i, _mm_castps_si128(_mm256_extractf128_ps::<1>(t[7])));
            p0 += 8;
        }
    } else if a.rs == 1 && rows == MR {
        // Column-major source: each group is 6 contiguous floats.
        for p in 0..kc {
            std::ptr::copy_nonoverlapping(a.ptr.offset(p as isize * a.cs), out.add(p * MR), MR);
        }
        return;
    }
    for p in p0..kc {
        let src = a.ptr.offset(p as isize * a.cs);
        for i in 0..MR {
            *out.add(p * MR + i) = if i < rows { *src.offset(i as isize * a.rs) } else { 0.0 };
        }
    }
}

/// Packs kc × `cols` (≤ NR) of `b` as kc groups of NR floats, padding missing
/// columns with zeros.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b(kc: usize, cols: usize, b: Mat, out: *mut f32) {
    let mut p0 = 0;
    if b.cs == 1 && cols == NR {
        for p in 0..kc {
            std::ptr::copy_nonoverlapping(b.ptr.offset(p as isize * b.rs), out.add(p * NR), NR);
        }
        return;
    } else if b.rs == 1 && cols == NR {
        // Column-major source (a transposed row-major matrix): 8 rows of the
        // 16 columns at a time, as two 8 × 8 register transposes.
        while p0 + 8 <= kc {
            let col = |j: usize| _mm256_loadu_ps(b.ptr.offset(j as isize * b.cs).add(p0));
            let lo = transpose8(std::array::from_fn(col));
            let hi = transpose8(std::array::from_fn(|j| col(j + 8)));
            for p in 0..8 {
                _mm256_storeu_ps(out.add((p0 + p) * NR), lo[p]);
                _mm256_storeu_ps(out.add((p0 + p) * NR + 8), hi[p]);
            }
            p0 += 8;
        }
    }
    for p in p0..kc {
        let src = b.ptr.offset(p as isize * b.rs);
        for j in 0..NR {
            *out.add(p * NR + j) = if j < cols { *src.offset(j as isize * b.cs) } else { 0.0 };
        }
    }
}

/// The 8 × 8 transpose of eight rows: `out[p][i] = rows[i][p]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// The 6 × 16 micro-kernel: `C[..rows, ..cols] ← [C +] scale · A·B` with
/// A (MR × kc) element (i, p) at `a + i·ars + p·acs` (packed: ars 1, acs MR;
/// in place: the source's row stride, 1) and B a packed panel (kc × NR); C
/// has row stride ldc.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    ars: isize,
    acs: isize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    scale: f32,
    acc: bool,
) {
    // The C tile is read (or written) after the loop: fetch it meanwhile
    // (prefetches never fault; wrapping_add keeps the address arithmetic
    // defined past an edge tile's last column).
    for i in 0..rows {
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + NR - 1) as *const i8);
    }
    // Rows past the edge re-read row 0 (their results are dropped).
    let r: [*const f32; MR] = std::array::from_fn(|i| if i < rows { a.offset(i as isize * ars) } else { a });
    let mut c0 = [_mm256_setzero_ps(); MR];
    let mut c1 = [_mm256_setzero_ps(); MR];
    let step = |p: usize, c0: &mut [__m256; MR], c1: &mut [__m256; MR]| {
        let b0 = _mm256_loadu_ps(b.add(p * NR));
        let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
        let off = p as isize * acs;
        for i in 0..MR {
            let ai = _mm256_broadcast_ss(&*r[i].offset(off));
            c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
        }
    };
    let mut p = 0;
    while p + 4 <= kc {
        step(p, &mut c0, &mut c1);
        step(p + 1, &mut c0, &mut c1);
        step(p + 2, &mut c0, &mut c1);
        step(p + 3, &mut c0, &mut c1);
        p += 4;
    }
    while p < kc {
        step(p, &mut c0, &mut c1);
        p += 1;
    }
    let s = _mm256_set1_ps(scale);
    if rows == MR && cols == NR {
        for i in 0..MR {
            let ci = c.add(i * ldc);
            let (mut v0, mut v1) = (_mm256_mul_ps(c0[i], s), _mm256_mul_ps(c1[i], s));
            if acc {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ci));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ci.add(8)));
            }
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci.add(8), v1);
        }
    } else {
        let mut tile = [0f32; MR * NR];
        for i in 0..MR {
            _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR), _mm256_mul_ps(c0[i], s));
            _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + 8), _mm256_mul_ps(c1[i], s));
        }
        for i in 0..rows {
            let ci = c.add(i * ldc);
            for j in 0..cols {
                let v = tile[i * NR + j];
                *ci.add(j) = if acc { *ci.add(j) + v } else { v };
            }
        }
    }
}
