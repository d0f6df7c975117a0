import ColBERTCore
import Dispatch

/// Splits the forward pass's work across the encoder's own worker threads. OpenBLAS runs
/// single-threaded underneath: on few cores, threading whole row blocks ourselves (GEMMs,
/// element-wise kernels and attention heads alike) scales better than OpenBLAS's per-call threads,
/// which leave the Swift kernels and the many small attention GEMMs serial.
struct WorkSplit: Sendable {
    let workers: Int
    /// The forward pass's own spinning helpers (`workers - 1` threads), when there is more than
    /// one worker.
    private let helpers: SpinningWorkers?

    init(workers: Int) {
        self.workers = max(1, workers)
        self.helpers = self.workers > 1 ? SpinningWorkers(helpers: self.workers - 1) : nil
    }

    /// Calls `body(part)` for `parts` parts, concurrently when there is more than one: on the
    /// spinning helpers when they are free, else on Dispatch's pool.
    func run(_ parts: Int, _ body: @Sendable (Int) -> Void) {
        if parts <= 1 { body(0); return }
        if let helpers, parts <= helpers.helpers + 1, helpers.tryRun(parts, body) { return }
        DispatchQueue.concurrentPerform(iterations: parts, execute: body)
    }

    /// Calls `body(r0, r1)` on disjoint row ranges covering `0..<rows`, split only when each part
    /// gets at least `minRows` rows.
    func rows(_ rows: Int, minRows: Int = 8, _ body: @Sendable (Int, Int) -> Void) {
        let parts = max(1, min(workers, rows / max(1, minRows)))
        run(parts) { p in body(rows * p / parts, rows * (p + 1) / parts) }
    }

    /// C[m×n] = A[m×k] · Wᵀ + beta·C with W stored n×k (a Linear layer's weight), split into row
    /// blocks of A when there are many rows, else into column blocks of W.
    func linear(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, w: UnsafePointer<Float>, ldw: Int,
                beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let a = SendablePointer(a), w = SendablePointer(w), c = SendableMutablePointer(c)
        let big = m * n * k >= 1 << 18
        let parts = big ? workers : 1
        let fewRows = big && m < 64 * parts && lda == k && ldw == k && (beta == 0 || beta == 1)
        if parts <= 1 && !fewRows {
            BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.p, lda: lda, b: w.p, ldb: ldw, beta: beta, c: c.p, ldc: ldc)
        } else if m >= 64 * parts {
            run(parts) { p in
                let r0 = m * p / parts, r1 = m * (p + 1) / parts
                BLAS.sgemm(transB: true, m: r1 - r0, n: n, k: k, a: a.p + r0 * lda, lda: lda, b: w.p, ldb: ldw,
                           beta: beta, c: c.p + r0 * ldc, ldc: ldc)
            }
        } else if fewRows {
            // Few rows (a single query): pack them once and split W's rows (the output columns)
            // between the workers; BLAS would re-pack W (the larger operand) in every call, which
            // at a few dozen rows costs as much as the arithmetic. One worker takes this path too.
            // Splitting the query's rows instead would make every worker stream all of W from
            // memory (42 MB per query for the default model) and give each W row to one 16-row
            // block instead of two.
            let packed = PackedRows(a.p, rows: m, dim: k)
            run(parts) { p in
                let cols = blockAlignedShare(part: p, of: parts, count: n)
                guard !cols.isEmpty else { return }
                packed.dotProducts(with: w.p + cols.lowerBound * ldw, count: cols.count, into: c.p + cols.lowerBound, ldo: ldc,
                                   accumulate: beta == 1)
            }
        } else {
            // Few rows with strided operands: split the output columns, keeping blocks 16-aligned.
            run(parts) { p in
                let cols = blockAlignedShare(part: p, of: parts, count: n)
                guard !cols.isEmpty else { return }
                BLAS.sgemm(transB: true, m: m, n: cols.count, k: k, a: a.p, lda: lda, b: w.p + cols.lowerBound * ldw, ldb: ldw,
                           beta: beta, c: c.p + cols.lowerBound, ldc: ldc)
            }
        }
    }
}

/// Raw pointers handed to worker threads; each worker writes only its own disjoint range.
struct SendablePointer: @unchecked Sendable {
    let p: UnsafePointer<Float>
    init(_ p: UnsafePointer<Float>) { self.p = p }
}

struct SendableMutablePointer: @unchecked Sendable {
    let p: UnsafeMutablePointer<Float>
    init(_ p: UnsafeMutablePointer<Float>) { self.p = p }
}
