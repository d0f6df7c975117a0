import ColBERTCore
import Testing
@testable import ColBERTSearch

/// Routed centroid scoring: probes chosen among the centroids of each query token's best groups.
@Suite struct RoutedCentroidTests {
    /// A router over the fixture's centroids: `groups` of them as centres, each centroid in the
    /// group of its nearest centre.
    static func router(for f: Fixture, groups: Int) throws -> CentroidRouter {
        let k = f.centroids.count / f.dim
        var centers = Array(f.centroids.prefix(groups * f.dim))
        VectorMath.normalizeRows(&centers, dim: f.dim)
        let assignment = (0..<k).map { c -> UInt32 in
            let row = Array(f.centroids[(c * f.dim)..<((c + 1) * f.dim)])
            let scores = (0..<groups).map { Fixture.dot(centers[($0 * f.dim)..<(($0 + 1) * f.dim)], row) }
            return UInt32(scores.indices.max { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 > $1) }!)
        }
        return try f.centroids.withUnsafeBufferPointer {
            try CentroidRouter(centroids: $0, dim: f.dim, centers: centers, assignment: assignment)
        }
    }

    /// Token i's reference probes: its best `groups` groups by centre score (ties: lower group),
    /// then the best `keep` of their centroids by score with the router's half-float rows (ties:
    /// lower centroid id).
    static func referenceShortlist(_ q: TokenEmbeddings, router: CentroidRouter, groups: Int, keep: Int,
                                   dim: Int) -> [[(Int32, Float)]] {
        (0..<q.count).map { i in
            let qi = q.vectors[(i * dim)..<((i + 1) * dim)]
            let g = (0..<router.groupCount).map { Fixture.dot(qi, Array(router.centers[($0 * dim)..<(($0 + 1) * dim)])) }
            let best = g.indices.sorted { g[$0] > g[$1] || (g[$0] == g[$1] && $0 < $1) }.prefix(groups)
            var candidates: [(Int32, Float)] = []
            for grp in best {
                for r in router.groupStart[grp]..<router.groupStart[grp + 1] {
                    candidates.append((router.members[r], Fixture.dot(qi, router.row(r))))
                }
            }
            candidates.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
            return Array(candidates.prefix(keep))
        }
    }

    static func shortlist(_ list: CentroidShortlist, token i: Int) -> [(Int32, Float)] {
        (0..<list.counts[i]).map { (list.ids[i * list.keep + $0], list.scores[i * list.keep + $0]) }
    }

    @Test(arguments: [1, 2, 5])
    func routedShortlistIsTheBestOfTheChosenGroups(groups: Int) throws {
        let f = try Fixture(documents: 30, dim: 16, centroidCount: 48, queries: 3, queryTokens: 6)
        let router = try Self.router(for: f, groups: 8)
        for q in f.queries {
            let packed = PackedRows(q.vectors, rows: q.count, dim: f.dim)
            for workers in [1, 2] {
                var t = SearchTimings()
                let list = q.vectors.withUnsafeBufferPointer {
                    CentroidShortlist.routed(query: $0.baseAddress!, packed: packed, router: router, groups: groups,
                                             keep: 7, workers: workers, timings: &t)
                }
                let want = Self.referenceShortlist(q, router: router, groups: groups, keep: 7, dim: f.dim)
                for i in 0..<q.count {
                    let got = Self.shortlist(list, token: i)
                    #expect(got.map(\.0) == want[i].map(\.0), "token \(i), \(groups) groups, \(workers) workers")
                    #expect(zip(got, want[i]).allSatisfy { abs($0.1 - $1.1) < 1e-5 })
                }
            }
        }
    }

    @Test func routingThroughEveryGroupScoresEveryCentroid() throws {
        let f = try Fixture(documents: 30, dim: 16, centroidCount: 40, queries: 2, queryTokens: 5)
        let router = try Self.router(for: f, groups: 6)
        for q in f.queries {
            let packed = PackedRows(q.vectors, rows: q.count, dim: f.dim)
            var t = SearchTimings()
            let routed = q.vectors.withUnsafeBufferPointer {
                CentroidShortlist.routed(query: $0.baseAddress!, packed: packed, router: router, groups: 6, keep: 9,
                                         workers: 1, timings: &t)
            }
            let all = f.centroids.withUnsafeBufferPointer { c in
                q.vectors.withUnsafeBufferPointer {
                    CentroidShortlist.exhaustive(query: packed, rows: $0.baseAddress!, centroids: c.baseAddress!, count: 40, keep: 9,
                                                 workers: 1, timings: &t)
                }
            }
            let want = Self.referenceShortlist(q, router: router, groups: 6, keep: 9, dim: f.dim)
            for i in 0..<q.count {
                let got = Self.shortlist(routed, token: i)
                #expect(got.map(\.0) == want[i].map(\.0) && zip(got, want[i]).allSatisfy { abs($0.1 - $1.1) < 1e-5 })
            }
            // Within half-float rounding of the full-precision scores of every centroid.
            #expect(routed.counts == all.counts)
            #expect(zip(routed.scores, all.scores).allSatisfy { abs($0 - $1) < 5e-3 })
        }
    }

    @Test func searchProbesTheRoutedShortlist() throws {
        let f = try Fixture(documents: 60, dim: 16, centroidCount: 32, queries: 3, queryTokens: 5)
        let router = try Self.router(for: f, groups: 8)
        let index = try InMemoryIndex(vectors: f.vectors, documentLengths: f.lengths, centroids: f.centroids,
                                      codec: f.index.codec, documentIds: f.ids, router: router)
        #expect(index.centroidRouter != nil)
        let nprobe = 3
        for q in f.queries {
            // Approximate scores over exactly the reference probes, the next candidate imputed.
            let ref = Self.referenceShortlist(q, router: router, groups: 2, keep: nprobe + 1, dim: f.dim)
            let probed = ref.map { Set($0.prefix(nprobe).map { Int($0.0) }) }
            let want = try f.bruteForce(q, normalize: false, probed: { probed[$0].contains($1) },
                                        missing: ref.map { $0.count > nprobe ? $0[nprobe].1 : $0.last?.1 ?? 0 })
            let p = SearchParameters(nprobe: nprobe, rerankDepth: 0, fastScan: false, groupProbes: 2)
            for threads in [1, 2] {
                let got = try MaxSimSearcher.search(query: q, in: index, k: 1000, parameters: p, threads: threads)
                // The probes' centroid scores come from the half-float rows (~1e-4 each).
                #expect(sameResults(got, want, tolerance: 2e-3), "threads \(threads)")
            }
            // Every group (or none) routed: the same as scoring every centroid.
            let everyCentroid = try MaxSimSearcher.search(query: q, in: index, k: 10, parameters: SearchParameters(nprobe: nprobe, rerankDepth: 20))
            for groups in [8, 100] {
                var all = SearchParameters(nprobe: nprobe, rerankDepth: 20)
                all.groupProbes = groups
                #expect(try MaxSimSearcher.search(query: q, in: index, k: 10, parameters: all) == everyCentroid)
            }
            // The re-rank's scores stay exact MaxSim.
            var routed = SearchParameters.defaults(k: 5)
            routed.groupProbes = 1
            let exact = Dictionary(uniqueKeysWithValues: try f.bruteForce(q, normalize: true).map { ($0.docId, $0.score) })
            for r in try MaxSimSearcher.search(query: q, in: index, k: 5, parameters: routed) {
                #expect(abs(r.score - (exact[r.docId] ?? .nan)) < 1e-4)
            }
        }
        var bad = SearchParameters.defaults(k: 5)
        bad.groupProbes = -1
        #expect(throws: SearchError.self) { try MaxSimSearcher.search(query: f.queries[0], in: index, k: 5, parameters: bad) }
    }
}
