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
                let list = centroids.withUnsafeBufferPointer { c in
                    query.withUnsafeBufferPointer {
                        CentroidShortlist.exhaustive(query: packed, rows: $0.baseAddress!, centroids: c.baseAddress!, count: K,
                                                     keep: keep, workers: workers, timings: &t)
                    }
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

    /// Through the 8-bit scores, the shortlist holds the same centroids in the same order as the
    /// float one (its scores re-computed in F32, so equal up to rounding), on one and two workers.
    @Test func quantizedShortlistEqualsTheFloatOne() throws {
        let dim = 32, K = 5000, nq = 6
        var g = SplitMix64(seed: 21)
        var centroids = (0..<(K * dim)).map { _ in Float(g.nextGaussian()) }
        VectorMath.normalizeRows(&centroids, dim: dim)
        var query = (0..<(nq * dim)).map { _ in Float(g.nextGaussian()) }
        VectorMath.normalizeRows(&query, dim: dim)
        let quantized = try #require(centroids.withUnsafeBufferPointer { QuantizedCentroids(centroids: $0, dim: dim) })
        let packed = PackedRows(query, rows: nq, dim: dim)
        for keep in [1, 45] {
            for workers in [1, 2] {
                var t = SearchTimings()
                let (float, viaIntegers) = centroids.withUnsafeBufferPointer { c in
                    query.withUnsafeBufferPointer { q in
                        (CentroidShortlist.exhaustive(query: packed, rows: q.baseAddress!, centroids: c.baseAddress!, count: K,
                                                      keep: keep, workers: workers, timings: &t),
                         CentroidShortlist.exhaustive(query: packed, rows: q.baseAddress!, centroids: c.baseAddress!, count: K,
                                                      keep: keep, quantized: quantized, workers: workers, timings: &t))
                    }
                }
                #expect(viaIntegers.counts == float.counts)
                #expect(viaIntegers.ids == float.ids, "keep \(keep) workers \(workers)")
                #expect(zip(viaIntegers.scores, float.scores).allSatisfy { abs($0 - $1) < 1e-5 })
            }
        }
    }

    /// A search takes its probes from the 8-bit scores where the index has them, with the same
    /// results as scoring every centroid in F32. (Distinct centroids: with many copies of a few
    /// vectors, as the fixture's data-drawn centroids would be at this count, eight extra
    /// candidates span only a couple of distinct scores.)
    @Test func searchWithQuantizedCentroidsFindsTheSameDocuments() throws {
        let f = try Fixture(documents: 60, dim: 16, queries: 3)
        var g = SplitMix64(seed: 8)
        var centroids = (0..<(QuantizedCentroids.minimumCentroids * f.dim)).map { _ in Float(g.nextGaussian()) }
        VectorMath.normalizeRows(&centroids, dim: f.dim)
        let index = try InMemoryIndex(vectors: f.vectors, documentLengths: f.lengths, centroids: centroids, codec: f.index.codec)
        #expect(index.quantizedCentroids != nil)
        for q in f.queries {
            var p = SearchParameters(nprobe: 24, rerankDepth: 20)
            let viaIntegers = try MaxSimSearcher.search(query: q, in: index, k: 10, parameters: p)
            p.quantizedCentroidScores = false
            let float = try MaxSimSearcher.search(query: q, in: index, k: 10, parameters: p)
            #expect(viaIntegers.map(\.docId) == float.map(\.docId))
            #expect(viaIntegers == float)
        }
    }
}

/// The probe plan's radix sort orders (cluster, probe) keys as a comparison sort does, for
/// cluster ids of one to four bytes.
@Suite struct ProbeSortTests {
    @Test(arguments: [200, 70_000, 3_000_000_000] as [UInt64])
    func radixSortMatchesSorted(clusterBound: UInt64) {
        var rng = SplitMix64(seed: clusterBound)
        for count in [0, 1, 2, 37, 1_408, 5_000] {
            // Appended in ascending probe order, as the plan builds them.
            var keys = (0..<count).map { p in (rng.next() % clusterBound) << 32 | UInt64(p) }
            let expected = keys.sorted()
            ProbePlan.sortByCluster(&keys)
            #expect(keys == expected)
        }
    }
}
