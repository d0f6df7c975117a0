import CKernels
import ColBERTCore

/// The first stage of a pruned search: per query token its best `keep` centroids, score
/// descending (ties: the centroid scored first).
struct CentroidShortlist {
    let keep: Int
    /// Token i's entries are `i * keep ..< i * keep + counts[i]`.
    private(set) var scores: [Float]
    private(set) var ids: [Int32]
    private(set) var counts: [Int]

    private init(tokens nq: Int, keep: Int) {
        self.keep = keep
        scores = [Float](repeating: 0, count: nq * keep)
        ids = [Int32](repeating: 0, count: nq * keep)
        counts = [Int](repeating: 0, count: nq)
    }

    /// Every centroid scored: one product `Q · Cᵀ`, then a selection per token. With `quantized`
    /// (of these centroids), the product is taken in 8-bit integers and each token's best
    /// `keep + QuantizedCentroids.extraCandidates` are re-scored in F32 (`rows`: the query
    /// row-major), of which the best `keep` are kept.
    static func exhaustive(query: PackedRows, rows: UnsafePointer<Float>, centroids C: UnsafePointer<Float>, count K: Int,
                           keep: Int, quantized: QuantizedCentroids? = nil, workers: Int,
                           timings: inout SearchTimings) -> CentroidShortlist {
        let nq = query.rows, dim = query.dim
        if let quantized, quantized.centroidCount == K, quantized.dim == dim,
           keep + QuantizedCentroids.extraCandidates < min(K, QuantizedCentroids.maximumCandidates) {
            return rescored(rows: rows, tokens: nq, centroids: C, count: K, keep: keep, quantized: quantized,
                            workers: workers, timings: &timings)
        }
        let start = nowSeconds()
        // Every score is written below (no need to zero 1 MB per query first).
        let all = [Float](unsafeUninitializedCapacity: nq * K) { s, initialized in
            initialized = nq * K
            let out = s.baseAddress!
            // Split by centroid rows (16-aligned) when there are enough to share, and only where
            // the split leaves every score as one call computes it (same results for any
            // thread count).
            let parts = query.splitsExactly ? min(workers, K / 1024) : 1
            if parts <= 1 {
                query.dotProducts(with: C, count: K, into: out, ldo: K)
            } else {
                runWorkers(parts) { w in
                    let share = blockAlignedShare(part: w, of: parts, count: K)
                    query.dotProducts(with: C + share.lowerBound * dim, count: share.count, into: out + share.lowerBound, ldo: K)
                }
            }
        }
        let scored = nowSeconds()
        timings.centroidScores += scored - start
        var list = CentroidShortlist(tokens: nq, keep: keep)
        all.withUnsafeBufferPointer { s in
            list.select(tokens: nq, workers: workers) { i in (s.baseAddress! + i * K, K, nil) }
        }
        timings.selection += nowSeconds() - scored
        return list
    }

    /// `exhaustive` through the integer scores.
    private static func rescored(rows q: UnsafePointer<Float>, tokens nq: Int, centroids C: UnsafePointer<Float>, count K: Int,
                                 keep: Int, quantized: QuantizedCentroids, workers: Int,
                                 timings: inout SearchTimings) -> CentroidShortlist {
        let dim = quantized.dim, ld = quantized.paddedCount
        let start = nowSeconds()
        let query = QuantizedCentroids.Query(q, rows: nq, dim: dim)
        let all = [Float](unsafeUninitializedCapacity: nq * ld) { s, initialized in
            initialized = nq * ld
            let out = s.baseAddress!
            // Integer sums: any split of the columns gives the same scores.
            let blocks = ld / 16, parts = max(1, min(workers, blocks / 64))
            runWorkers(parts) { w in
                quantized.scores(query, columns: (blocks * w / parts * 16)..<(blocks * (w + 1) / parts * 16), into: out, ldo: ld)
            }
        }
        let scored = nowSeconds()
        timings.centroidScores += scored - start
        let wide = keep + QuantizedCentroids.extraCandidates
        var list = CentroidShortlist(tokens: nq, keep: keep)
        list.scores.withUnsafeMutableBufferPointer { sBuf in
            list.ids.withUnsafeMutableBufferPointer { iBuf in
                list.counts.withUnsafeMutableBufferPointer { cBuf in
                    all.withUnsafeBufferPointer { a in
                        let sc = sBuf.baseAddress!, id = iBuf.baseAddress!, cn = cBuf.baseAddress!
                        let parts = min(workers, nq)
                        runWorkers(parts) { w in
                            // One worker's candidates, two tokens at a time: a token's candidates
                            // are chosen and their float rows (cold: the integer product does not
                            // read them) asked for, then the previous token's are re-scored.
                            var approx = [Float](repeating: 0, count: wide)
                            var ids = [Int32](repeating: 0, count: 2 * wide)
                            var got = [0, 0]
                            var previous = -1, i = w, slot = 0
                            ids.withUnsafeMutableBufferPointer { cand in
                                let c = cand.baseAddress!
                                while true {
                                    if i < nq {
                                        got[slot] = TopScores.select(a.baseAddress! + i * ld, count: K, keep: wide, scores: &approx,
                                                                     ids: c + slot * wide)
                                        ck_prefetch_ids(C, Int32(dim), c + slot * wide, Int32(got[slot]))
                                    }
                                    if previous >= 0 {
                                        let o = 1 - slot
                                        cn[previous] = Int(ck_rescore_best(q + previous * dim, C, Int32(dim), c + o * wide, Int32(got[o]),
                                                                           Int32(keep), sc + previous * keep, id + previous * keep))
                                    }
                                    guard i < nq else { break }
                                    previous = i
                                    slot = 1 - slot
                                    i += parts
                                }
                            }
                        }
                    }
                }
            }
        }
        timings.selection += nowSeconds() - scored
        return list
    }

    /// Only the centroids of each token's best `groups` groups scored (see `CentroidRouter`):
    /// the group centres first, then each group's block against the tokens that chose it.
    static func routed(query: UnsafePointer<Float>, packed: PackedRows, router: CentroidRouter, groups: Int,
                       keep: Int, workers: Int, timings: inout SearchTimings) -> CentroidShortlist {
        let nq = packed.rows, dim = packed.dim, G = router.groupCount
        let g = min(max(1, groups), G)
        let start = nowSeconds()
        // (a) Group scores and each token's best g groups.
        var groupScores = [Float](repeating: 0, count: nq * G)
        groupScores.withUnsafeMutableBufferPointer { s in
            router.centers.withUnsafeBufferPointer { c in
                packed.dotProducts(with: c.baseAddress!, count: G, into: s.baseAddress!, ldo: G)
            }
        }
        // Their order does not matter, so a threshold finds them (`ck_best_unordered`; a sorted
        // top-g costs O(G·g) once g is a sizeable part of G).
        var chosen = [Int32](repeating: 0, count: nq * g)
        var chosenCount = [Int](repeating: 0, count: nq)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: G * 4, alignment: 32)
        defer { scratch.deallocate() }
        groupScores.withUnsafeBufferPointer { s in
            chosen.withUnsafeMutableBufferPointer { c in
                for i in 0..<nq {
                    chosenCount[i] = Int(ck_best_unordered(s.baseAddress! + i * G, Int32(G), Int32(g), c.baseAddress! + i * g, scratch))
                }
            }
        }
        // (b) Where each (token, group) pair's scores go: token by token, its groups in choice
        // order; and the pairs listed group by group, so that each block is read once.
        var tokenStart = [Int](repeating: 0, count: nq + 1)
        var pairOut = [Int](repeating: 0, count: nq * g)
        var perGroup = [Int](repeating: 0, count: G + 1)
        var total = 0
        for i in 0..<nq {
            tokenStart[i] = total
            for j in 0..<chosenCount[i] {
                let grp = Int(chosen[i * g + j])
                pairOut[i * g + j] = total
                total += router.groupStart[grp + 1] - router.groupStart[grp]
                perGroup[grp + 1] += 1
            }
        }
        tokenStart[nq] = total
        for x in 0..<G { perGroup[x + 1] += perGroup[x] }
        let pairs = perGroup[G]
        var fill = perGroup
        var pairQuery = [UnsafePointer<Float>?](repeating: nil, count: pairs)
        var pairTarget = [Int](repeating: 0, count: pairs)
        for i in 0..<nq {
            for j in 0..<chosenCount[i] {
                let grp = Int(chosen[i * g + j])
                let at = fill[grp]
                fill[grp] += 1
                pairQuery[at] = query + i * dim
                pairTarget[at] = pairOut[i * g + j]
            }
        }
        // (c) The candidates' scores and ids.
        var candidateScores = [Float](repeating: 0, count: total)
        var candidateIds = [Int32](repeating: 0, count: total)
        candidateScores.withUnsafeMutableBufferPointer { cs in
            candidateIds.withUnsafeMutableBufferPointer { ci in
                pairQuery.withUnsafeBufferPointer { pq in
                    let out = cs.baseAddress!, idsOut = ci.baseAddress!
                    let parts = min(workers, G)
                    runWorkers(parts) { w in
                        var targets = [UnsafeMutablePointer<Float>?](repeating: nil, count: nq)
                        router.members.withUnsafeBufferPointer { members in
                            var grp = w
                            while grp < G {
                                let lo = perGroup[grp], m = perGroup[grp + 1] - lo
                                if m > 0 {
                                    let first = router.groupStart[grp], n = router.groupStart[grp + 1] - first
                                    for e in 0..<m {
                                        let at = pairTarget[lo + e]
                                        targets[e] = out + at
                                        (idsOut + at).update(from: members.baseAddress! + first, count: n)
                                    }
                                    targets.withUnsafeBufferPointer { t in
                                        router.scoreGroup(grp, queries: pq.baseAddress! + lo, count: m, outs: t.baseAddress!)
                                    }
                                }
                                grp += parts
                            }
                        }
                    }
                }
            }
        }
        let scored = nowSeconds()
        timings.centroidScores += scored - start
        // (d) Each token's best `keep` among its candidates.
        var list = CentroidShortlist(tokens: nq, keep: keep)
        candidateScores.withUnsafeBufferPointer { cs in
            candidateIds.withUnsafeBufferPointer { ci in
                list.select(tokens: nq, workers: workers) { i in
                    (cs.baseAddress! + tokenStart[i], tokenStart[i + 1] - tokenStart[i], ci.baseAddress! + tokenStart[i])
                }
            }
        }
        timings.selection += nowSeconds() - scored
        return list
    }

    /// Fills every token's entries from its scores: `row(i)` gives the token's scores, their
    /// count and the centroid id of each (nil: the position is the id).
    private mutating func select(tokens nq: Int, workers: Int,
                                 row: (Int) -> (UnsafePointer<Float>, Int, UnsafePointer<Int32>?)) {
        let keep = self.keep
        scores.withUnsafeMutableBufferPointer { sBuf in
            ids.withUnsafeMutableBufferPointer { iBuf in
                counts.withUnsafeMutableBufferPointer { cBuf in
                    let sc = sBuf.baseAddress!, id = iBuf.baseAddress!, cn = cBuf.baseAddress!
                    let parts = min(workers, nq)
                    runWorkers(parts) { w in
                        var i = w
                        while i < nq {
                            let (s, n, names) = row(i)
                            let got = n > 0 ? TopScores.select(s, count: n, keep: keep, scores: sc + i * keep, ids: id + i * keep) : 0
                            if let names {
                                for j in 0..<got { id[i * keep + j] = names[Int(id[i * keep + j])] }
                            }
                            cn[i] = got
                            i += parts
                        }
                    }
                }
            }
        }
    }
}
