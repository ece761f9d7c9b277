import CBLAS

/// Thin wrappers over OpenBLAS for row-major `Float` matrices held in contiguous buffers.
public enum BLAS {
    /// Sets how many threads OpenBLAS may use, for the whole process: a program's decision,
    /// made once at its start (`peer train --threads`, 1 by default; `netsim` and the
    /// benchmarks use 1). Nothing in the library calls it.
    ///
    /// OpenBLAS splits a product across threads in a way that changes the order of summation,
    /// so bit-for-bit reproducible training needs one thread; and many nodes training in one
    /// process (a simulation) or a training step beside a node's event loop gain nothing from
    /// threads fighting over the same cores.
    public static func setThreadCount(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// The number of threads OpenBLAS currently uses.
    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// C = alpha · op(A) · op(B) + beta · C for row-major matrices, op(A) m×k, op(B) k×n, C m×n.
    @inline(__always)
    static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// y = A · x + beta · y for a row-major m × n matrix A: one sample through a dense layer,
    /// without the packing `gemm` does for a matrix.
    @inline(__always)
    static func gemv(m: Int, n: Int, a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>, beta: Float, y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(n), 1, a, Int32(lda), x, 1, beta, y, 1)
    }
}
