import COpenBLAS

/// Thin, Swift-typed wrapper over the CBLAS calls the project uses. All matrices are row-major F32.
public enum BLAS {
    /// Number of threads OpenBLAS uses for one call. Global to the process.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
    }

    /// Sets OpenBLAS's thread count (global). Callers that parallelise across queries set 1.
    public static func setThreadCount(_ n: Int) {
        openblas_set_num_threads(Int32(max(1, n)))
    }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major.
    /// `a` is m×k (or k×m when `transA`), `b` is k×n (or n×k when `transB`).
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            // BLAS leaves C untouched for k == 0 only when beta == 1; make the contract explicit.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } }
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Convenience: C = A · Bᵀ where A is m×k and B is n×k (the common "scores" shape).
    public static func matmulTransposed(_ a: [Float], rows m: Int, _ b: [Float], rows n: Int, k: Int) -> [Float] {
        precondition(a.count >= m * k && b.count >= n * k, "matmulTransposed: buffers too small")
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    guard let ap = pa.baseAddress, let bp = pb.baseAddress, let cp = pc.baseAddress else { return }
                    sgemm(transB: true, m: m, n: n, k: k, a: ap, lda: k, b: bp, ldb: k, c: cp, ldc: n)
                }
            }
        }
        return c
    }
}

/// Vector helpers used outside BLAS calls.
public enum VectorMath {
    /// In-place L2 normalisation of `count` rows of width `dim`, as torch's `normalize(p=2, eps=1e-12)`.
    public static func normalizeRows(_ p: UnsafeMutablePointer<Float>, rows count: Int, dim: Int) {
        for r in 0..<count {
            let row = p + r * dim
            var s: Float = 0
            for d in 0..<dim { s += row[d] * row[d] }
            let inv = 1 / max(s.squareRoot(), 1e-12)
            for d in 0..<dim { row[d] *= inv }
        }
    }

    public static func normalizeRows(_ v: inout [Float], dim: Int) {
        let rows = dim > 0 ? v.count / dim : 0
        v.withUnsafeMutableBufferPointer { buf in
            if let base = buf.baseAddress { normalizeRows(base, rows: rows, dim: dim) }
        }
    }

    @inlinable
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s: Float = 0
        for i in 0..<n { s += a[i] * b[i] }
        return s
    }
}
