import CKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Thin, Swift-typed wrapper over the CBLAS calls the project uses. All matrices are row-major F32.
public enum BLAS {
    /// Number of threads OpenBLAS uses for one call. Global to the process.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
    }

    /// The core type OpenBLAS picked for this CPU at load time (e.g. "Haswell", "SkylakeX").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The core type to force through `OPENBLAS_CORETYPE`, or nil to keep OpenBLAS's choice.
    /// OpenBLAS releases older than the CPU (Debian 12's 0.3.21 on Xeons of model 207, for one)
    /// do not know its model number and fall back to their SSE3 "Prescott" kernels, which made
    /// the encoder's matrix products 3–5x slower than the AVX-512 kernels on such a machine
    /// (docs/BENCHMARKS.md, `run27`). Only that fallback is overridden, and never a core type the
    /// user set.
    public static func coreTypeOverride(detected: String, environment: String?, cpuBest: String?) -> String? {
        guard environment == nil, let cpuBest, detected.lowercased() == "prescott" else { return nil }
        return cpuBest
    }

    /// Re-executes this process with `OPENBLAS_CORETYPE` set when `coreTypeOverride` says so
    /// (OpenBLAS reads it once, when the library is loaded). Returns only when no override is
    /// needed or the re-exec failed, in which case the process goes on with OpenBLAS's choice.
    public static func reexecWithFasterCoreTypeIfNeeded() {
        let env = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        let best = ck_blas_core_for_cpu().map { String(cString: $0) }
        guard let core = coreTypeOverride(detected: coreName, environment: env, cpuBest: best) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        #if os(Linux)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        #endif
        // Still here: this process keeps OpenBLAS's choice; the processes it starts get the override.
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
