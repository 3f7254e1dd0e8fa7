//! Matrix products on CPU: one entry point, [`gemm`], over strided operands
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
    let big = threads > 1 && m * n * k >= PAR_MIN_MACS;
    #[cfg(feature = "openblas")]
    if m * n * k >= BLAS_MIN_MACS
        && blas::sgemm(m, n, k, dst, ld, accumulate, lhs, rhs, scale, if big { threads } else { 1 })
    {
        return;
    }
    let par = if big { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
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
        par,
    );
}

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

    /// Blocks of rows (or columns) per rayon worker, and the smallest block.
    const BLOCKS_PER_THREAD: usize = 4;
    const MIN_BLOCK: usize = 64;

    extern "C" {
        fn openblas_set_num_threads(n: i32);
    }

    /// [`super::gemm`] through cblas_sgemm, split into `threads` blocks of
    /// rows (or columns) run on the rayon pool, each a one-thread OpenBLAS
    /// call: OpenBLAS's own threads would spin beside rayon's. False (nothing
    /// done) when an operand has a layout BLAS cannot express.
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
        threads: usize,
    ) -> bool {
        static ONE_THREAD: std::sync::Once = std::sync::Once::new();
        ONE_THREAD.call_once(|| openblas_set_num_threads(1));
        let (Some((ta, lda)), Some((tb, ldb))) = (operand(lhs, m, k), operand(rhs, k, n)) else { return false };
        let beta = if accumulate { 1.0 } else { 0.0 };
        let dst = SendPtr(dst);
        let (lhs, rhs) = (SendMat(lhs), SendMat(rhs));
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        // A few blocks per worker, so one that falls behind (the VM's cores do
        // not always run at the same speed) leaves the rest to the other.
        let blocks = (threads * BLOCKS_PER_THREAD).min(len / MIN_BLOCK).max(threads.min(len)).max(1);
        let part = len.div_ceil(blocks);
        use rayon::prelude::*;
        (0..len.div_ceil(part)).into_par_iter().for_each(|i| {
            let (lhs, rhs, dst) = (lhs, rhs, dst);
            let (s, e) = (i * part, ((i + 1) * part).min(len));
            // SAFETY: block i covers rows (or columns) s..e of dst only.
            if by_rows {
                let a = lhs.0.ptr.offset(s as isize * lhs.0.rs);
                cblas_sgemm(
                    CblasRowMajor,
                    ta,
                    tb,
                    (e - s) as i32,
                    n as i32,
                    k as i32,
                    scale,
                    a,
                    lda,
                    rhs.0.ptr,
                    ldb,
                    beta,
                    dst.0.add(s * ld),
                    ld as i32,
                );
            } else {
                let b = rhs.0.ptr.offset(s as isize * rhs.0.cs);
                cblas_sgemm(
                    CblasRowMajor,
                    ta,
                    tb,
                    m as i32,
                    (e - s) as i32,
                    k as i32,
                    scale,
                    lhs.0.ptr,
                    lda,
                    b,
                    ldb,
                    beta,
                    dst.0.add(s),
                    ld as i32,
                );
            }
        });
        true
    }

    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);
    // SAFETY: each block writes its own rows (or columns) of dst.
    unsafe impl Send for SendPtr {}
    unsafe impl Sync for SendPtr {}

    #[derive(Clone, Copy)]
    struct SendMat(Mat);
    // SAFETY: read-only operands shared by the blocks.
    unsafe impl Send for SendMat {}
    unsafe impl Sync for SendMat {}
}

/// Worker threads of the global rayon pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}
