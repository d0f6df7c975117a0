import COpenBLAS
import ColBERTCore
import Foundation

/// Spherical k-means over unit token vectors, as PLAID trains its centroids: assignment is one
/// GEMM per block plus an argmax, centroids are re-normalised after every update.
public enum KMeans {
    /// PLAID's number of centroids for `tokens` token vectors: 2^floor(log2(16·sqrt(tokens))).
    public static func plaidCentroidCount(tokens: Int) -> Int {
        let target = 16 * Double(max(tokens, 1)).squareRoot()
        return 1 << Int(log2(max(target, 1)).rounded(.down))
    }

    /// PLAID's number of documents to sample for training: 16·sqrt(120·documents).
    public static func plaidSampleSize(documents: Int) -> Int {
        Int((16 * (120 * Double(max(documents, 1))).squareRoot()).rounded(.up))
    }

    /// Trains `k` unit centroids on `count` rows of `points` (row-major, `dim` wide).
    /// Deterministic for a seed. Returns `k × dim` floats. `allCores: false` leaves OpenBLAS's
    /// thread count alone (for callers that may run beside searches, which set it themselves).
    public static func train(points: UnsafeBufferPointer<Float>, count: Int, dim: Int, k requested: Int,
                             iterations: Int, seed: UInt64, allCores: Bool = true) -> [Float] {
        precondition(count > 0 && points.count >= count * dim)
        let k = max(1, min(requested, count))
        // The encoder may have pinned OpenBLAS to one thread (it parallelises itself); the big
        // assignment GEMMs here want every core. Restore the caller's setting afterwards.
        let previousThreads = BLAS.threadCount
        if allCores { BLAS.setThreadCount(ProcessInfo.processInfo.activeProcessorCount) }
        defer { if allCores { BLAS.setThreadCount(previousThreads) } }
        var rng = SplitMix64(seed: seed)
        // Initialise with k distinct sample points (partial Fisher–Yates over row indices).
        var order = Array(0..<count)
        for i in 0..<k {
            let j = i + Int(rng.next() % UInt64(count - i))
            order.swapAt(i, j)
        }
        var centroids = [Float](repeating: 0, count: k * dim)
        guard let base = points.baseAddress else { return centroids }
        for i in 0..<k {
            for d in 0..<dim { centroids[i * dim + d] = base[order[i] * dim + d] }
        }
        VectorMath.normalizeRows(&centroids, dim: dim)
        var assignment = [UInt32](repeating: 0, count: count)
        var scores = [Float](repeating: 0, count: count)
        var sums = [Double](repeating: 0, count: k * dim)
        var sizes = [Int](repeating: 0, count: k)
        for _ in 0..<max(1, iterations) {
            centroids.withUnsafeBufferPointer { c in
                assign(points: base, count: count, dim: dim, centroids: c.baseAddress!, k: k,
                       ids: &assignment, scores: &scores)
            }
            for i in 0..<sums.count { sums[i] = 0 }
            for i in 0..<k { sizes[i] = 0 }
            for r in 0..<count {
                let c = Int(assignment[r])
                sizes[c] += 1
                let row = base + r * dim
                for d in 0..<dim { sums[c * dim + d] += Double(row[d]) }
            }
            for c in 0..<k {
                if sizes[c] == 0 {
                    // Re-seed an empty cluster with a random point so that k centroids stay useful.
                    let r = Int(rng.next() % UInt64(count))
                    for d in 0..<dim { centroids[c * dim + d] = base[r * dim + d] }
                } else {
                    for d in 0..<dim { centroids[c * dim + d] = Float(sums[c * dim + d]) }
                }
            }
            VectorMath.normalizeRows(&centroids, dim: dim)
        }
        return centroids
    }

    /// Rows processed per GEMM block: bounds the score scratch to `blockRows × k` floats.
    static let blockRows = 1024

    /// Assigns each of `count` rows to the centroid with the highest dot product; `scores` receives
    /// that dot product. `ids` and `scores` must hold at least `count` entries.
    public static func assign(points: UnsafePointer<Float>, count: Int, dim: Int,
                              centroids: UnsafePointer<Float>, k: Int,
                              ids: inout [UInt32], scores: inout [Float]) {
        guard count > 0, k > 0 else { return }
        let rowsPerBlock = min(blockRows, count)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: rowsPerBlock * k)
        defer { scratch.deallocate() }
        ids.withUnsafeMutableBufferPointer { idp in
            scores.withUnsafeMutableBufferPointer { sp in
                guard let idBase = idp.baseAddress, let scoreBase = sp.baseAddress else { return }
                var start = 0
                while start < count {
                    let rows = min(rowsPerBlock, count - start)
                    // Scores are shifted by +offset (dot products of unit vectors lie in [-1, 1]) so
                    // that BLAS's vectorised isamax (max |x|) finds the highest score.
                    scratch.update(repeating: scoreOffset, count: rows * k)
                    BLAS.sgemm(transB: true, m: rows, n: k, k: dim,
                               a: points + start * dim, lda: dim, b: centroids, ldb: dim,
                               beta: 1, c: scratch, ldc: k)
                    let blockStart = start
                    let workers = rows >= 256 ? 2 : 1
                    let per = (rows + workers - 1) / workers
                    // The argmax is as costly as a good share of the GEMM: split it over the cores.
                    let ids = UnsafeSendable(idBase), sc = UnsafeSendable(scoreBase), sr = UnsafeSendable(scratch)
                    DispatchQueue.concurrentPerform(iterations: workers) { w in
                        let lo = w * per, hi = min(rows, lo + per)
                        guard lo < hi else { return }
                        for r in lo..<hi {
                            let (best, score) = argmax(sr.value + r * k, k)
                            ids.value[blockStart + r] = UInt32(best)
                            sc.value[blockStart + r] = score
                        }
                    }
                    start += rows
                }
            }
        }
    }

    static let scoreOffset: Float = 4

    /// Index and (unshifted) value of the highest score in a row shifted by `scoreOffset`.
    @inline(__always)
    static func argmax(_ row: UnsafePointer<Float>, _ n: Int) -> (Int, Float) {
        let i = Int(cblas_isamax(Int32(n), row, 1))
        guard i >= 0, i < n, row[i] >= 0 else { return argmaxScalar(row, n) }
        return (i, row[i] - scoreOffset)
    }

    /// Fallback for rows that break the shift's assumption (non-unit inputs).
    static func argmaxScalar(_ row: UnsafePointer<Float>, _ n: Int) -> (Int, Float) {
        var i = 0
        var mv = SIMD16<Float>(repeating: -.infinity)
        let raw = UnsafeRawPointer(row)
        while i + 16 <= n {
            mv = pointwiseMax(mv, raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self))
            i += 16
        }
        var best = mv.max()
        while i < n { if row[i] > best { best = row[i] }; i += 1 }
        for j in 0..<n where row[j] == best { return (j, best - scoreOffset) }
        return (0, row[0] - scoreOffset)  // only reached when every score is NaN
    }
}

/// Carries a pointer into `concurrentPerform`, whose workers write disjoint ranges.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
