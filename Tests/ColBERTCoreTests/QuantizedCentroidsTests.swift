import CKernels
import Testing
@testable import ColBERTCore

/// Centroid scores in 8-bit integers: close to the float scores, the same on both kernels and for
/// any split of the columns, and refused where the layout does not fit.
@Suite struct QuantizedCentroidsTests {
    static func unitRows(_ n: Int, dim: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        var v = (0..<(n * dim)).map { _ in Float(g.nextGaussian()) }
        VectorMath.normalizeRows(&v, dim: dim)
        return v
    }

    /// `rows × paddedCount` scores of `query` by the given kernel, in column ranges cut at `cuts`.
    static func scores(_ qc: QuantizedCentroids, _ query: [Float], rows: Int, cuts: [Int], vectorPath: Bool) -> [Float] {
        let ld = qc.paddedCount
        var out = [Float](repeating: .nan, count: rows * ld)
        let q = query.withUnsafeBufferPointer { QuantizedCentroids.Query($0.baseAddress!, rows: rows, dim: qc.dim) }
        let bounds = [0] + cuts + [ld]
        out.withUnsafeMutableBufferPointer { o in
            for (lo, hi) in zip(bounds, bounds.dropFirst()) {
                qc.scores(q, columns: lo..<hi, into: o.baseAddress!, ldo: ld, vectorPath: vectorPath)
            }
        }
        return out
    }

    @Test(arguments: [(2100, 128), (2048, 36)])
    func scoresAreCloseToTheFloatOnesAndTheSameEitherWay(count: Int, dim: Int) throws {
        let centroids = Self.unitRows(count, dim: dim, seed: 3)
        let rows = 7
        let query = Self.unitRows(rows, dim: dim, seed: 4)
        let qc = try #require(centroids.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: dim) })
        #expect(qc.paddedCount == (count + 15) / 16 * 16)
        let whole = Self.scores(qc, query, rows: rows, cuts: [], vectorPath: true)
        let split = Self.scores(qc, query, rows: rows, cuts: [1024, 1040], vectorPath: true)
        let portable = Self.scores(qc, query, rows: rows, cuts: [512], vectorPath: false)
        #expect(whole == split)
        #expect(whole == portable)
        var worst: Float = 0
        for r in 0..<rows {
            for c in 0..<count {
                var exact: Float = 0
                for k in 0..<dim { exact += query[r * dim + k] * centroids[c * dim + k] }
                worst = max(worst, abs(whole[r * qc.paddedCount + c] - exact))
            }
        }
        // Half a step of each side's scale, summed over the dims, bounds it far above this.
        #expect(worst < 0.01, "largest error \(worst)")
    }

    /// Rows at full scale in every dim (every byte at ±127, every query byte at ±63): the pair
    /// sums of the 8-bit multiply stay below the 16-bit limit, so nothing saturates.
    @Test func fullScaleRowsDoNotSaturate() throws {
        let dim = 64, count = 2048
        var centroids = [Float](repeating: 0, count: count * dim)
        for c in 0..<count {
            for k in 0..<dim { centroids[c * dim + k] = (c % 2 == 0 ? 1 : -1) * (k % 3 == 0 ? -0.125 : 0.125) }
        }
        let query = (0..<(2 * dim)).map { i -> Float in i < dim ? (i % 3 == 0 ? -0.125 : 0.125) : 0.125 }
        let qc = try #require(centroids.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: dim) })
        let got = Self.scores(qc, query, rows: 2, cuts: [], vectorPath: true)
        for r in 0..<2 {
            for c in 0..<count {
                var exact: Float = 0
                for k in 0..<dim { exact += query[r * dim + k] * centroids[c * dim + k] }
                #expect(abs(got[r * qc.paddedCount + c] - exact) < 1e-4, "row \(r) centroid \(c)")
            }
        }
    }

    @Test func unsupportedTablesAreRefused() {
        let ok = Self.unitRows(2048, dim: 8, seed: 5)
        #expect(ok.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: 8) } != nil)
        let small = Self.unitRows(QuantizedCentroids.minimumCentroids - 1, dim: 8, seed: 5)
        #expect(small.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: 8) } == nil)
        let odd = Self.unitRows(2048, dim: 6, seed: 5)
        #expect(odd.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: 6) } == nil)
        var bad = ok
        bad[17] = .nan
        #expect(bad.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: 8) } == nil)
    }
}
