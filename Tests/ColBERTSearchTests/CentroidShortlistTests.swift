import ColBERTCore
import Testing
@testable import ColBERTSearch

/// The exhaustive centroid shortlist equals a full sort of every token's centroid scores, on one
/// worker and on two, for `keep` below and above the buffered selection's limit, with and without
/// many equal scores (where the sampled floor often leaves too few above it and the plain
/// selection takes over).
@Suite struct CentroidShortlistTests {
    @Test(arguments: [false, true])
    func exhaustiveShortlistIsTheBestOfEveryCentroid(ties: Bool) {
        let dim = 16, K = 5000, nq = 5
        var g = SplitMix64(seed: ties ? 11 : 12)
        // With ties, entries from {-1, 0, 1} / 4: dot products are exact, so many scores are equal.
        func value() -> Float {
            ties ? Float(Int(g.next() % 3) - 1) / 4 : Float(Int(g.next() % 2001) - 1000) / 1000
        }
        let centroids = (0..<(K * dim)).map { _ in value() }
        let query = (0..<(nq * dim)).map { _ in value() }
        let packed = PackedRows(query, rows: nq, dim: dim)
        var table = [Float](repeating: 0, count: nq * K)
        centroids.withUnsafeBufferPointer { c in
            table.withUnsafeMutableBufferPointer { packed.dotProducts(with: c.baseAddress!, count: K, into: $0.baseAddress!, ldo: K) }
        }
        for keep in [1, 45, 300] {
            for workers in [1, 2] {
                var t = SearchTimings()
                let list = centroids.withUnsafeBufferPointer {
                    CentroidShortlist.exhaustive(query: packed, centroids: $0.baseAddress!, count: K, keep: keep,
                                                 workers: workers, timings: &t)
                }
                for i in 0..<nq {
                    let row = table[(i * K)..<((i + 1) * K)].map { $0 }
                    let want = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(keep)
                    #expect(list.counts[i] == keep, "keep \(keep) workers \(workers)")
                    let ids = (0..<list.counts[i]).map { Int(list.ids[i * keep + $0]) }
                    let scores = (0..<list.counts[i]).map { list.scores[i * keep + $0] }
                    #expect(ids == Array(want), "keep \(keep) workers \(workers) token \(i)")
                    #expect(scores == want.map { row[$0] })
                }
            }
        }
    }
}
