//! Matrix products on CPU: one entry point, [`gemm`](fn@gemm), over strided operands
//! (so callers never materialise a transpose). Used by the model's kernels and
//! by the Inception port.
//!
//! Backends ([`Backend`]): on x86-64 with AVX2 + FMA, [`avx2`], this crate's
//! packed kernel; elsewhere the pure-Rust `gemm` crate; with the `openblas`
//! feature, the system OpenBLAS. All stay selectable through [`gemm_with`]:
//! `fine bench gemm` times them against each other on a DiT block's shapes.
//! The packed kernel exists because both libraries, driven as one-thread
//! products over blocks (their own threads would spin beside rayon's), re-pack
//! the shared operand once per block: ≈14% of a DiT-S/2 step was OpenBLAS
//! packing. It packs once per product instead and is 1–4% faster than
//! OpenBLAS and 5–12% faster than the `gemm` crate on two threads here.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
/// The AVX2 kernel exists on x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
pub mod avx2 {
    /// Never, off x86-64.
    pub fn available() -> bool {
        false
    }
    /// Not reached: [`available`] is false.
    ///
    /// # Safety
    /// Never called.
    pub unsafe fn gemm(_: super::Product, _: usize) {
        unreachable!("the AVX2 kernel is only selected where available() is true")
    }
}

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

/// One product `dst (m × n, row stride ld) ← [dst +] scale · lhs (m × k) · rhs
/// (k × n)`, as the backends receive it.
#[derive(Clone, Copy)]
pub struct Product {
    /// Rows of dst and lhs.
    pub m: usize,
    /// Columns of dst and rhs.
    pub n: usize,
    /// Columns of lhs, rows of rhs (the depth).
    pub k: usize,
    /// The output's first element.
    pub dst: *mut f32,
    /// Floats per row of `dst`.
    pub ld: usize,
    /// Add to `dst` (else overwrite it).
    pub accumulate: bool,
    /// The left operand (m × k).
    pub lhs: Mat,
    /// The right operand (k × n).
    pub rhs: Mat,
    /// Factor on lhs · rhs.
    pub scale: f32,
}
// SAFETY: a Product is shared by rayon blocks that write disjoint parts of
// dst (see `gemm`'s contract) and only read the operands.
unsafe impl Send for Product {}
unsafe impl Sync for Product {}

impl Product {
    /// Rows s..e of the product.
    fn rows(self, s: usize, e: usize) -> Self {
        // SAFETY: callers keep s inside dst.
        Self { m: e - s, dst: unsafe { self.dst.add(s * self.ld) }, lhs: self.lhs.at_row(s), ..self }
    }
    /// Columns s..e of the product.
    fn cols(self, s: usize, e: usize) -> Self {
        // SAFETY: callers keep s inside dst.
        Self { n: e - s, dst: unsafe { self.dst.add(s) }, rhs: self.rhs.at_col(s), ..self }
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

/// Which code runs a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// [`avx2`]: this crate's packed AVX2 + FMA kernel (x86-64 CPUs that have
    /// both; the default there, unless built with `openblas`).
    Packed,
    /// The pure-Rust `gemm` crate, one-thread products over blocks of rows or
    /// columns (the default elsewhere).
    GemmCrate,
    /// The system OpenBLAS, one-thread products over blocks (the `openblas`
    /// feature, and then the default; operands it cannot express fall back to
    /// the `gemm` crate).
    #[cfg(feature = "openblas")]
    OpenBlas,
}

impl Backend {
    /// The backend [`gemm`](fn@gemm) uses on this machine: OpenBLAS when the
    /// build asked for it, else the packed kernel where the CPU runs it.
    pub fn default_here() -> Self {
        if cfg!(feature = "openblas") {
            #[cfg(feature = "openblas")]
            return Backend::OpenBlas;
        }
        if avx2::available() {
            Backend::Packed
        } else {
            Backend::GemmCrate
        }
    }
    /// Every backend this build can run here.
    pub fn all_here() -> Vec<Self> {
        let mut all = vec![Backend::GemmCrate];
        if avx2::available() {
            all.insert(0, Backend::Packed);
        }
        #[cfg(feature = "openblas")]
        all.push(Backend::OpenBlas);
        all
    }
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Packed => "packed-avx2",
            Backend::GemmCrate => "gemm-crate",
            #[cfg(feature = "openblas")]
            Backend::OpenBlas => "openblas",
        }
    }
}

/// `dst (m × n, row stride ld) ← [dst +] scale · lhs (m × k) · rhs (k × n)`,
/// threaded over `threads` rayon workers when it is worth it, on
/// [`Backend::default_here`].
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
    gemm_with(Backend::default_here(), Product { m, n, k, dst, ld, accumulate, lhs, rhs, scale }, threads)
}

/// [`gemm`](fn@gemm) of `p` on a chosen backend (benchmarks and tests compare
/// them).
///
/// # Safety
/// As [`gemm`](fn@gemm); `Backend::Packed` only where [`avx2::available`].
pub unsafe fn gemm_with(backend: Backend, p: Product, threads: usize) {
    let Product { m, n, k, dst, ld, accumulate, .. } = p;
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
    let threads = if m * n * k >= PAR_MIN_MACS { threads } else { 1 };
    if backend == Backend::Packed {
        return avx2::gemm(p, threads);
    }
    if threads > 1 {
        // Blocks of dst rows (or columns, when wider than tall), a few per
        // worker, each a one-thread product: a worker that falls behind (the
        // VM's two cores do not always run at the same speed) leaves blocks to
        // the other, and no library's own threads spin beside rayon's.
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        let blocks = (threads * BLOCKS_PER_THREAD).min(len / MIN_BLOCK).max(threads.min(len));
        let part = len.div_ceil(blocks);
        use rayon::prelude::*;
        (0..len.div_ceil(part)).into_par_iter().for_each(|i| {
            let (s, e) = (i * part, ((i + 1) * part).min(len));
            // SAFETY: block i writes rows (or columns) s..e of dst only.
            one_thread(backend, if by_rows { p.rows(s, e) } else { p.cols(s, e) });
        });
        return;
    }
    one_thread(backend, p)
}

/// A one-thread product on a library backend.
unsafe fn one_thread(backend: Backend, p: Product) {
    #[cfg(feature = "openblas")]
    if backend == Backend::OpenBlas && p.m * p.n * p.k >= BLAS_MIN_MACS && blas::sgemm(p) {
        return;
    }
    let _ = backend;
    let Product { m, n, k, dst, ld, accumulate, lhs, rhs, scale } = p;
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
pub(crate) struct SendMat(pub Mat);
// SAFETY: see above.
unsafe impl Send for SendMat {}
unsafe impl Sync for SendMat {}

/// Which code runs the matrix products on this machine.
pub fn backend_name() -> &'static str {
    Backend::default_here().name()
}

#[cfg(feature = "openblas")]
mod blas {
    use super::{Mat, Product};
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
    pub unsafe fn sgemm(p: Product) -> bool {
        let Product { m, n, k, dst, ld, accumulate, lhs, rhs, scale } = p;
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
    use super::{gemm_with, Backend, Mat, Product};

    /// Every backend against a triple loop: one-thread and threaded sizes,
    /// split by rows (tall) and by columns (wide), plain and transposed
    /// operands, with and without accumulation. For the packed kernel: edges
    /// of micro-tiles in both directions, several row blocks and column
    /// groups, a depth over two packed blocks (k = 600), and rows over one
    /// packed chunk of A (m = 2350).
    #[test]
    fn matches_a_triple_loop() {
        let val = |i: usize, s: usize| ((i * 31 + s * 17) % 19) as f32 / 9.0 - 1.0;
        let shapes = [
            (3, 5, 4),
            (37, 29, 11),
            (300, 70, 40),
            (70, 300, 40),
            (130, 129, 33),
            (301, 45, 600),
            (7, 530, 260),
            (2350, 130, 9),
        ];
        for backend in Backend::all_here() {
            for (m, n, k) in shapes {
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
                        let p = Product { m, n, k, dst: dst.as_mut_ptr(), ld, accumulate, lhs, rhs, scale: 0.5 };
                        unsafe { gemm_with(backend, p, 2) };
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
                                "{backend:?} ({m}, {n}, {k}) ta={ta} tb={tb} acc={accumulate}: [{i}, {j}] = {got}, want {want}"
                            );
                            }
                        }
                    }
                }
            }
        }
    }
}
