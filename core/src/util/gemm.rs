//! Matrix products on CPU: one entry point, [`gemm`](fn@gemm), over strided operands
//! (so callers never materialise a transpose). The pure-Rust `gemm` crate by
//! default; with the `openblas` feature, the system OpenBLAS for products from
//! 32k multiply-adds. Used by the model's kernels and by the Inception port.

/// A strided matrix operand: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// A row-major matrix with `ld` floats per row.
    pub fn rows(s: &[f32], ld: usize) -> Self {
        Self { ptr: s.as_ptr(), rs: ld as isize, cs: 1 }
    }
    /// The transpose of a row-major matrix with `ld` floats per row.
    pub fn cols(s: &[f32], ld: usize) -> Self {
        Self { ptr: s.as_ptr(), rs: 1, cs: ld as isize }
    }
    /// The matrix from row `i` on.
    pub fn at_row(self, i: usize) -> Self {
        // SAFETY: callers keep rows inside the allocation.
        Self { ptr: unsafe { self.ptr.offset(i as isize * self.rs) }, ..self }
    }
    /// The matrix from column `j` on.
    pub fn at_col(self, j: usize) -> Self {
        // SAFETY: callers keep columns inside the allocation.
        Self { ptr: unsafe { self.ptr.offset(j as isize * self.cs) }, ..self }
    }
    /// The same matrix starting `off` floats later.
    pub fn at(self, off: usize) -> Self {
        // SAFETY: callers keep offsets inside the allocation.
        Self { ptr: unsafe { self.ptr.add(off) }, ..self }
    }
}

/// With `openblas`, products from this many multiply-adds go to BLAS.
#[cfg(feature = "openblas")]
const BLAS_MIN_MACS: usize = 1 << 15;

/// Products below this many multiply-adds run on one thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// Blocks of rows (or columns) per rayon worker in a threaded product, and the
/// smallest block.
const BLOCKS_PER_THREAD: usize = 4;
const MIN_BLOCK: usize = 64;

/// `dst (m × n, row stride ld) ← [dst +] scale · lhs (m × k) · rhs (k × n)`,
/// threaded over `threads` rayon workers when it is worth it.
///
/// # Safety
/// Every element of every operand lies in a live allocation; `dst` aliases
/// neither operand, and no other thread writes the same `dst` elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * ld), n).fill(0.0);
            }
        }
        return;
    }
    if threads > 1 && m * n * k >= PAR_MIN_MACS {
        // Blocks of dst rows (or columns, when wider than tall), a few per
        // worker, each a one-thread product: a worker that falls behind (the
        // VM's two cores do not always run at the same speed) leaves blocks to
        // the other, and no library's own threads spin beside rayon's.
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        let blocks = (threads * BLOCKS_PER_THREAD).min(len / MIN_BLOCK).max(threads.min(len));
        let part = len.div_ceil(blocks);
        let (dst, lhs, rhs) = (SendPtr(dst), SendMat(lhs), SendMat(rhs));
        use rayon::prelude::*;
        (0..len.div_ceil(part)).into_par_iter().for_each(|i| {
            let (dst, lhs, rhs) = (dst, lhs, rhs);
            let (s, e) = (i * part, ((i + 1) * part).min(len));
            // SAFETY: block i writes rows (or columns) s..e of dst only.
            if by_rows {
                gemm(e - s, n, k, dst.0.add(s * ld), ld, accumulate, lhs.0.at_row(s), rhs.0, scale, 1);
            } else {
                gemm(m, e - s, k, dst.0.add(s), ld, accumulate, lhs.0, rhs.0.at_col(s), scale, 1);
            }
        });
        return;
    }
    // One thread: OpenBLAS (with the feature, from BLAS_MIN_MACS and when it
    // can read the operands' layout), otherwise the `gemm` crate.
    #[cfg(feature = "openblas")]
    if m * n * k >= BLAS_MIN_MACS && blas::sgemm(m, n, k, dst, ld, accumulate, lhs, rhs, scale) {
        return;
    }

    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ld as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        if accumulate { 1.0 } else { 0.0 },
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// A pointer that rayon tasks may share; each task writes a disjoint region,
/// joined before the buffer is read.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: see above.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// An operand that rayon blocks share and only read.
#[derive(Clone, Copy)]
struct SendMat(Mat);
// SAFETY: see above.
unsafe impl Send for SendMat {}
unsafe impl Sync for SendMat {}

/// Which library runs the large matrix products.
pub const GEMM: &str = if cfg!(feature = "openblas") { "openblas" } else { "gemm-crate" };

#[cfg(feature = "openblas")]
mod blas {
    use super::Mat;
    use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT::CblasRowMajor, CBLAS_TRANSPOSE as Tr};

    /// A (rows × cols) operand as (transpose flag, leading dimension), if BLAS can read it.
    fn operand(a: Mat, rows: usize, cols: usize) -> Option<(Tr, i32)> {
        match (a.rs, a.cs) {
            (ld, 1) if ld >= cols.max(1) as isize => Some((Tr::CblasNoTrans, ld as i32)),
            (1, ld) if ld >= rows.max(1) as isize => Some((Tr::CblasTrans, ld as i32)),
            _ => None,
        }
    }

    extern "C" {
        fn openblas_set_num_threads(n: i32);
    }

    /// [`super::gemm`] on one thread, through cblas_sgemm with one OpenBLAS thread (its
    /// own threads would spin beside rayon's). False (nothing done) when an
    /// operand has a layout BLAS cannot express.
    ///
    /// # Safety
    /// As [`super::gemm`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        ld: usize,
        accumulate: bool,
        lhs: Mat,
        rhs: Mat,
        scale: f32,
    ) -> bool {
        static ONE_THREAD: std::sync::Once = std::sync::Once::new();
        ONE_THREAD.call_once(|| openblas_set_num_threads(1));
        let (Some((ta, lda)), Some((tb, ldb))) = (operand(lhs, m, k), operand(rhs, k, n)) else { return false };
        let beta = if accumulate { 1.0 } else { 0.0 };
        cblas_sgemm(
            CblasRowMajor,
            ta,
            tb,
            m as i32,
            n as i32,
            k as i32,
            scale,
            lhs.ptr,
            lda,
            rhs.ptr,
            ldb,
            beta,
            dst,
            ld as i32,
        );
        true
    }
}

/// Worker threads of the global rayon pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::{gemm, Mat};

    /// `gemm` against a triple loop: one-thread and threaded sizes, split by
    /// rows (tall) and by columns (wide), plain and transposed operands, with
    /// and without accumulation.
    #[test]
    fn matches_a_triple_loop() {
        let val = |i: usize, s: usize| ((i * 31 + s * 17) % 19) as f32 / 9.0 - 1.0;
        for (m, n, k) in [(3, 5, 4), (37, 29, 11), (300, 70, 40), (70, 300, 40), (130, 129, 33)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for accumulate in [false, true] {
                    let a: Vec<f32> = (0..m * k).map(|i| val(i, 1)).collect();
                    let b: Vec<f32> = (0..k * n).map(|i| val(i, 2)).collect();
                    // A (m × k) read from a (k × m) buffer when transposed; B likewise.
                    let lhs = if ta { Mat::cols(&a, m) } else { Mat::rows(&a, k) };
                    let rhs = if tb { Mat::cols(&b, k) } else { Mat::rows(&b, n) };
                    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
                    let ld = n + 3;
                    let init: Vec<f32> = (0..m * ld).map(|i| val(i, 3)).collect();
                    let mut dst = init.clone();
                    // SAFETY: operands and dst are live buffers of the stated shapes.
                    unsafe { gemm(m, n, k, dst.as_mut_ptr(), ld, accumulate, lhs, rhs, 0.5, 2) };
                    for i in 0..m {
                        for j in 0..ld {
                            let got = dst[i * ld + j];
                            if j >= n {
                                assert_eq!(got, init[i * ld + j], "padding column {j} written");
                                continue;
                            }
                            let dot: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                            let want = 0.5 * dot + if accumulate { init[i * ld + j] } else { 0.0 };
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "({m}, {n}, {k}) ta={ta} tb={tb} acc={accumulate}: [{i}, {j}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
