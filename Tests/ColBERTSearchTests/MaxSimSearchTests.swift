import ColBERTCore
import Testing
@testable import ColBERTSearch

@Suite struct MaxSimSearchTests {
    @Test func exhaustiveMatchesBruteForceOverNormalisedDecompressedTokens() throws {
        let f = try Fixture()
        for q in f.queries {
            let got = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 1000)
            let want = try f.bruteForce(q, normalize: true)
            #expect(got.count == f.lengths.count)
            #expect(sameResults(got, want))
            #expect(zip(got, got.dropFirst()).allSatisfy { ScoredDocument.ranksBefore($0, $1) })
        }
    }

    @Test(arguments: [1, 2, 4])
    func prunedProbingEveryClusterComputesUnnormalisedMaxSim(nbits: Int) throws {
        let f = try Fixture(nbits: nbits)
        let all = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 0, normalizeScores: false)
        for q in f.queries {
            let got = try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: all)
            let want = try f.bruteForce(q, normalize: false)
            #expect(got.count == f.lengths.count)
            #expect(sameResults(got, want))
            // Normalisation matters: the approximate scores are not the exact ones.
            let exact = try f.bruteForce(q, normalize: true)
            #expect(!sameResults(got, exact, tolerance: 1e-5))
        }
    }

    /// Where the codec allows fast-scan (whole 32-byte codes), the approximate scores of a search
    /// probing every cluster stay within the tables' quantisation bound of unnormalised MaxSim (half
    /// a step per nibble position and query token), `fastScan: false` gives that MaxSim itself,
    /// and with a full re-rank both return the exhaustive results.
    @Test(arguments: [1, 2, 4])
    func fastScanScoresStayWithinTheirBoundOfUnnormalisedMaxSim(nbits: Int) throws {
        let dim = 32 * 8 / nbits
        let f = try Fixture(documents: 50, dim: dim, nbits: nbits, queries: 3, queryTokens: 6)
        #expect(FastScanTables.supports(f.index.codec))
        let fast = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 0)
        var exact = fast
        exact.fastScan = false
        #expect(fast.fastScan && SearchParameters.defaults(k: 10).fastScan)
        for q in f.queries {
            let want = try f.bruteForce(q, normalize: false)
            #expect(sameResults(try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: exact), want))
            let got = try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: fast, threads: 2)
            // The same floats whatever the thread count.
            #expect(try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: fast, threads: 1) == got)
            #expect(try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: fast, threads: 3) == got)
            let tables = try #require(q.vectors.withUnsafeBufferPointer {
                FastScanTables(query: $0.baseAddress!, rows: q.count, codec: f.index.codec)
            })
            let bound = tables.scales.reduce(0, +) * Float(f.index.codec.bytesPerVector) + 1e-4
            let wanted = Dictionary(uniqueKeysWithValues: want.map { ($0.docId, $0.score) })
            #expect(got.count == want.count)
            for d in got {
                let w = try #require(wanted[d.docId])
                #expect(abs(d.score - w) <= bound, "doc \(d.docId): \(d.score) vs \(w), bound \(bound)")
            }
            // Some score moved: the tables are in use.
            #expect(!sameResults(got, want, tolerance: 1e-6))
            var reranked = fast
            reranked.rerankDepth = 1000
            #expect(try MaxSimSearcher.search(query: q, in: f.index, k: 7, parameters: reranked)
                    == MaxSimSearcher.exhaustive(query: q, in: f.index, k: 7))
        }
    }

    @Test(arguments: [1, 2, 4])
    func normalisedScoresEqualExhaustiveWhenEveryClusterIsProbed(nbits: Int) throws {
        let f = try Fixture(nbits: nbits)
        let all = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 0, normalizeScores: true)
        for q in f.queries {
            let got = try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: all, threads: 2)
            #expect(sameResults(got, try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 1000)))
        }
    }

    @Test func prunedWithRerankProbingEveryClusterEqualsExhaustive() throws {
        let f = try Fixture()
        let p = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 1000)
        for q in f.queries {
            let got = try MaxSimSearcher.search(query: q, in: f.index, k: 7, parameters: p)
            let want = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 7)
            #expect(got == want)
        }
    }

    /// The re-rank and the exhaustive search score documents from their token runs (no copy of
    /// their codes, blocks of tokens from many documents): at the model's width, with two 16-row
    /// query blocks and the runs split between workers, the scores equal the document-by-document
    /// ones bit for bit.
    /// (4-bit codes have no runs kernel: they take the document-by-document path, also checked.)
    @Test(arguments: [1, 2, 4])
    func exactScoresFromTokenRunsEqualDocumentByDocument(nbits: Int) throws {
        let f = try Fixture(documents: 400, dim: 128, nbits: nbits, centroidCount: 16, queries: 2, queryTokens: 32)
        let p = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 1000)
        for q in f.queries {
            let packed = PackedRows(q.vectors, rows: q.count, dim: f.dim)
            let slots = [MaxSimSearcher.ExactSlot(dim: f.dim, codec: f.index.codec, rows: q.count, queries: 1, k: 50)]
            try MaxSimSearcher.scoreExactly(f.ids, query: packed, offsets: [0, q.count], index: f.index, slots: slots)
            let want = MaxSimSearcher.merged(slots, query: 0, k: 50)
            #expect(want.count == 50)
            for threads in [1, 2] {
                #expect(try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 50, threads: threads) == want, "threads \(threads)")
                let got = try MaxSimSearcher.search(query: q, in: f.index, k: 50, parameters: p, threads: threads)
                #expect(got == want, "threads \(threads)")
            }
        }
    }

    @Test(arguments: MissingSimilarity.allCases, [false, true])
    func partialProbingImputesMissingSimilarity(missing: MissingSimilarity, normalize: Bool) throws {
        let f = try Fixture(documents: 60, centroidCount: 12)
        let nprobe = 3
        for q in f.queries {
            // Reference selection: per query token the nprobe best centroids.
            var probed: [[Int]] = []
            var miss: [Float] = []
            for i in 0..<q.count {
                let qi = q.vectors[(i * f.dim)..<((i + 1) * f.dim)]
                let scores = (0..<12).map { c in Fixture.dot(qi, Array(f.centroids[(c * f.dim)..<((c + 1) * f.dim)])) }
                let order = (0..<12).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
                probed.append(Array(order.prefix(nprobe)))
                switch missing {
                case .bestUnselected: miss.append(scores[order[nprobe]])
                case .lastSelected: miss.append(scores[order[nprobe - 1]])
                case .zero: miss.append(0)
                }
            }
            let want = try f.bruteForce(q, normalize: normalize, probed: { probed[$0].contains($1) }, missing: miss)
            let p = SearchParameters(nprobe: nprobe, rerankDepth: 0, missingSimilarity: missing, normalizeScores: normalize)
            let got = try MaxSimSearcher.search(query: q, in: f.index, k: 1000, parameters: p)
            #expect(sameResults(got, want))
            #expect(got.count < f.lengths.count || want.count == f.lengths.count)
        }
    }

    @Test func centroidScoreThresholdDropsWeakClusters() throws {
        let f = try Fixture()
        let q = f.queries[0]
        let none = try MaxSimSearcher.search(query: q, in: f.index, k: 1000,
                                             parameters: SearchParameters(nprobe: 8, centroidScoreThreshold: 2))
        #expect(none.isEmpty)
        let loose = try MaxSimSearcher.search(query: q, in: f.index, k: 1000,
                                              parameters: SearchParameters(nprobe: 8, centroidScoreThreshold: -2))
        #expect(loose.count == f.lengths.count)
    }

    @Test func reusedScoringScratchGivesTheSameResults() throws {
        // Scratch buffers are pooled across searches and indexes of other sizes; an earlier
        // search, on a larger index or with other parameters, must leave nothing behind.
        let big = try Fixture(documents: 150, centroidCount: 16, queries: 2)
        let small = try Fixture(documents: 30, centroidCount: 8, queries: 2)
        let p = SearchParameters(nprobe: 3, rerankDepth: 0)
        let first = try big.queries.map { try MaxSimSearcher.search(query: $0, in: big.index, k: 20, parameters: p, threads: 2) }
        let smallFirst = try small.queries.map { try MaxSimSearcher.search(query: $0, in: small.index, k: 20, parameters: p) }
        for _ in 0..<3 {
            for (q, want) in zip(small.queries, smallFirst) {
                #expect(try MaxSimSearcher.search(query: q, in: small.index, k: 20, parameters: p) == want)
            }
            for (q, want) in zip(big.queries, first) {
                #expect(try MaxSimSearcher.search(query: q, in: big.index, k: 20, parameters: p, threads: 2) == want)
                #expect(try MaxSimSearcher.search(query: q, in: big.index, k: 20, parameters: p, threads: 1) == want)
            }
            // Workers of one search holding scratches of different sizes (one pooled from a larger
            // index, one new) must still split the documents between them exactly.
            for (q, want) in zip(small.queries, smallFirst) {
                ScoringScratch.emptyPool()
                ScoringScratch.give(ScoringScratch.take(bound: 500))
                #expect(try MaxSimSearcher.search(query: q, in: small.index, k: 20, parameters: p, threads: 2) == want)
            }
        }
    }

    @Test func resultsAreIdenticalForEveryThreadCount() throws {
        let f = try Fixture(documents: 120, centroidCount: 16, queries: 3)
        let settings = [SearchParameters(nprobe: 3, rerankDepth: 0), SearchParameters(nprobe: 4, rerankDepth: 20),
                        SearchParameters(nprobe: 2, rerankDepth: 0, normalizeScores: true)]
        for q in f.queries {
            for p in settings {
                let one = try MaxSimSearcher.search(query: q, in: f.index, k: 15, parameters: p, threads: 1)
                #expect(one.count == 15)
                for t in [2, 3, 5] {
                    #expect(try MaxSimSearcher.search(query: q, in: f.index, k: 15, parameters: p, threads: t) == one)
                }
            }
            let ex1 = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 15, threads: 1)
            for t in [2, 3] {
                #expect(try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 15, threads: t) == ex1)
            }
        }
        let p = SearchParameters(nprobe: 3, rerankDepth: 10)
        let batch1 = try MaxSimSearcher.searchBatch(queries: f.queries, in: f.index, k: 10, parameters: p, threads: 1).results
        let batch2 = try MaxSimSearcher.searchBatch(queries: f.queries, in: f.index, k: 10, parameters: p, threads: 2).results
        #expect(batch1 == batch2)
        for (i, q) in f.queries.enumerated() {
            #expect(batch1[i] == (try MaxSimSearcher.search(query: q, in: f.index, k: 10, parameters: p)))
        }
        let exBatch = try MaxSimSearcher.exhaustiveBatch(queries: f.queries, in: f.index, k: 10, threads: 2)
        for (i, q) in f.queries.enumerated() {
            #expect(sameResults(exBatch[i], try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 10), tolerance: 1e-5))
        }
    }

    @Test func filterRestrictsResultsToAllowedDocuments() throws {
        let f = try Fixture()
        let allowedIds: [UInt32] = [1, 4, 5, 9, 22, 39, 500]
        let filter = DocumentFilter(allowing: allowedIds)
        #expect(filter.count == 7 && filter.contains(22) && !filter.contains(23) && filter.ids == allowedIds)
        let allowedSet = Set(allowedIds)
        for q in f.queries {
            let ex = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 100, allowed: filter, threads: 2)
            #expect(sameResults(ex, try f.bruteForce(q, normalize: true, allowed: allowedSet)))
            #expect(ex.count == 6)
            let all = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 0, normalizeScores: false)
            let pr = try MaxSimSearcher.search(query: q, in: f.index, k: 100, parameters: all, allowed: filter, threads: 2)
            #expect(sameResults(pr, try f.bruteForce(q, normalize: false, allowed: allowedSet)))
            let partial = try MaxSimSearcher.search(query: q, in: f.index, k: 3,
                                                    parameters: SearchParameters(nprobe: 2, rerankDepth: 5), allowed: filter)
            #expect(partial.allSatisfy { allowedSet.contains($0.docId) })
        }
        let empty = DocumentFilter(allowing: [UInt32]())
        #expect(try MaxSimSearcher.search(query: f.queries[0], in: f.index, k: 5, allowed: empty).isEmpty)
        #expect(try MaxSimSearcher.exhaustive(query: f.queries[0], in: f.index, k: 5, allowed: empty).isEmpty)
    }

    @Test func documentIdsWithGapsAreReturned() throws {
        let ids: [UInt32] = (0..<30).map { UInt32($0 * 3 + 7) }
        let f = try Fixture(documents: 30, ids: ids)
        #expect(f.index.documentIdBound == 95)
        for q in f.queries {
            let ex = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 30, threads: 3)
            #expect(Set(ex.map(\.docId)) == Set(ids))
            let p = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 30)
            #expect(try MaxSimSearcher.search(query: q, in: f.index, k: 30, parameters: p, threads: 2) == ex)
        }
    }

    @Test func edgeCasesReturnEmptyOrEverything() throws {
        let f = try Fixture(documents: 5)
        let q = f.queries[0]
        #expect(try MaxSimSearcher.search(query: q, in: f.index, k: 0).isEmpty)
        #expect(try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 0).isEmpty)
        // k beyond the corpus: every document once.
        let ex = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 50)
        #expect(ex.count == 5 && Set(ex.map(\.docId)).count == 5)
        let pr = try MaxSimSearcher.search(query: q, in: f.index, k: 50,
                                           parameters: SearchParameters(nprobe: 8, rerankDepth: 10))
        #expect(pr == ex)
        // Empty index.
        let empty = try InMemoryIndex(vectors: [], documentLengths: [], centroids: f.centroids, codec: f.index.codec)
        #expect(empty.documentCount == 0)
        #expect(try MaxSimSearcher.search(query: q, in: empty, k: 10).isEmpty)
        #expect(try MaxSimSearcher.exhaustive(query: q, in: empty, k: 10, threads: 2).isEmpty)
        // A query without tokens.
        #expect(try MaxSimSearcher.search(query: UnsafeBufferPointer(start: nil, count: 0), queryTokens: 0, in: f.index, k: 3).isEmpty)
    }

    @Test func badInputIsRejected() throws {
        let f = try Fixture(documents: 5)
        let q = f.queries[0]
        let wrongDim = TokenEmbeddings(tokenIds: [0], vectors: [Float](repeating: 0.1, count: 8), dim: 8)
        #expect(throws: SearchError.dimensionMismatch(query: 8, index: 16)) {
            try MaxSimSearcher.search(query: wrongDim, in: f.index, k: 3)
        }
        var nan = q.vectors
        nan[3] = .nan
        #expect(throws: SearchError.nonFiniteQuery) {
            try MaxSimSearcher.search(query: TokenEmbeddings(tokenIds: q.tokenIds, vectors: nan, dim: 16), in: f.index, k: 3)
        }
        #expect(throws: SearchError.self) {
            try MaxSimSearcher.search(query: q, in: f.index, k: 3, parameters: SearchParameters(nprobe: 0))
        }
        #expect(throws: SearchError.self) {
            try MaxSimSearcher.search(query: q, in: f.index, k: -1)
        }
        for margin: Float in [-0.1, .nan, .infinity] {
            #expect(throws: SearchError.self) {
                try MaxSimSearcher.search(query: q, in: f.index, k: 3,
                                          parameters: SearchParameters(nprobe: 2, rerankDepth: 8, rerankMargin: margin))
            }
        }
        #expect(throws: SearchError.queryShape(values: 80, tokens: 4, dim: 16)) {
            try q.vectors.withUnsafeBufferPointer {
                try MaxSimSearcher.search(query: $0, queryTokens: 4, in: f.index, k: 3)
            }
        }
    }

    /// With exact first-stage scores (every cluster probed, normalised) no candidate is
    /// underestimated, so a zero margin stops after the first block, with exhaustive's top k;
    /// a huge margin never stops early.
    @Test func earlyStoppingRerankStopsOnceTheTopKIsSettled() throws {
        let f = try Fixture(documents: 120)
        for q in f.queries {
            let want = try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 5)
            var p = SearchParameters(nprobe: f.index.centroidCount, rerankDepth: 100, rerankMargin: 0, normalizeScores: true)
            let (settled, t) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: p)
            #expect(settled == want)
            #expect(t.reranked == SearchParameters.rerankBlock(startingAt: 0))
            p.rerankMargin = 1e6
            let (all, tAll) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: p, threads: 2)
            #expect(all == want)
            #expect(tAll.reranked == 100)
        }
    }

    /// With rough first-stage scores, whatever the margin, every returned score is the exact one
    /// and the order is the result order; a margin too large to stop equals the full re-rank.
    @Test(arguments: [1, 2, 4])
    func earlyStoppingRerankReturnsExactScores(nbits: Int) throws {
        let f = try Fixture(documents: 150, nbits: nbits, queryTokens: 8)
        for q in f.queries {
            let exact = Dictionary(uniqueKeysWithValues: try MaxSimSearcher.exhaustive(query: q, in: f.index, k: 150).map { ($0.docId, $0.score) })
            let full = try MaxSimSearcher.search(query: q, in: f.index, k: 10, parameters: SearchParameters(nprobe: 2, rerankDepth: 80))
            for margin: Float in [0, 0.01, 1e6] {
                let p = SearchParameters(nprobe: 2, rerankDepth: 80, rerankMargin: margin)
                let (got, t) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 10, parameters: p)
                #expect(got.count == 10)
                #expect(got.allSatisfy { exact[$0.docId] == $0.score })
                #expect(zip(got, got.dropFirst()).allSatisfy { ScoredDocument.ranksBefore($0, $1) })
                #expect(t.reranked >= SearchParameters.rerankBlock(startingAt: 0) && t.reranked <= 80)
                if margin == 1e6 { #expect(got == full && t.reranked == 80) }
            }
        }
    }

    /// The defaults keep the probes they were tuned with where clusters hold at least as many
    /// tokens as SciFact's (100), and probe proportionally more clusters, up to 4x and never more
    /// than there are, where clusters are smaller.
    @Test func defaultProbesGrowAsClustersShrink() {
        #expect(SearchParameters.defaults(k: 10, tokens: 815_632, centroids: 8_192) == SearchParameters.defaults(k: 10))
        #expect(SearchParameters.defaults(k: 10, tokens: 815_632, centroids: 16_384).nprobe == 64)
        #expect(SearchParameters.defaults(k: 10, tokens: 1_200_000, centroids: 16_384).nprobe == 44)
        #expect(SearchParameters.defaults(k: 10, tokens: 815_632, centroids: 4_096).nprobe == 32)
        #expect(SearchParameters.defaults(k: 10, tokens: 50_000_000, centroids: 65_536).nprobe == 32)
        #expect(SearchParameters.defaults(k: 10, tokens: 10_000, centroids: 1_024).nprobe == 128)
        #expect(SearchParameters.defaults(k: 10, tokens: 1_000, centroids: 64).nprobe == 64)
        #expect(SearchParameters.defaults(k: 10, tokens: 100, centroids: 8).nprobe == 32)
        #expect(SearchParameters.defaults(k: 500, tokens: 815_632, centroids: 16_384).nprobe == 96)
        #expect(SearchParameters.defaults(k: 10, tokens: 0, centroids: 0) == SearchParameters.defaults(k: 10))
        // Only the probes change.
        var scaled = SearchParameters.defaults(k: 100, tokens: 815_632, centroids: 16_384)
        scaled.nprobe = SearchParameters.defaults(k: 100).nprobe
        #expect(scaled == SearchParameters.defaults(k: 100))
    }

    @Test func searchWithoutParametersUsesTheIndexDefaults() throws {
        // ~6 tokens per cluster: the index's defaults probe all 64 clusters, those for k alone 32.
        let f = try Fixture(documents: 60, centroidCount: 64, queries: 2)
        let own = SearchParameters.defaults(k: 5, for: f.index)
        #expect(own == SearchParameters.defaults(k: 5, tokens: f.index.tokenCount, centroids: 64))
        #expect(own.nprobe == 64 && SearchParameters.defaults(k: 5).nprobe == 32)
        for q in f.queries {
            let (implicit, t) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5)
            let (explicit, tOwn) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: own)
            #expect(implicit == explicit)
            #expect(t.scoredTokens == tOwn.scoredTokens)
            // The default centroid score threshold cuts most probes of random vectors, so the
            // extra probes show with it off.
            var ownAll = own, baseAll = SearchParameters.defaults(k: 5)
            ownAll.centroidScoreThreshold = nil
            baseAll.centroidScoreThreshold = nil
            let (_, tOwnAll) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: ownAll)
            let (_, tBaseAll) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: baseAll)
            #expect(tOwnAll.scoredTokens > tBaseAll.scoredTokens)
            #expect(t.scoredTokens <= tOwnAll.scoredTokens)
        }
    }

    /// The defaults skip probes whose centroid score is under 0.3 (0.25 past k = 100); nil probes
    /// the top nprobe whatever their scores, and a threshold above every score leaves only the
    /// imputed similarity, so nothing is scored.
    @Test func defaultCentroidThresholdSkipsFarClusters() throws {
        #expect(SearchParameters.defaults(k: 10).centroidScoreThreshold == 0.3)
        #expect(SearchParameters.defaults(k: 100).centroidScoreThreshold == 0.3)
        #expect(SearchParameters.defaults(k: 500).centroidScoreThreshold == 0.25)
        let f = try Fixture(documents: 60, centroidCount: 16, queries: 2)
        for q in f.queries {
            var p = SearchParameters(nprobe: 16)
            let (_, tAll) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: p)
            // Every probe of every query token: each token of the index once per query token.
            #expect(tAll.scoredTokens > 0 && tAll.scoredTokens % f.index.tokenCount == 0)
            p.centroidScoreThreshold = 0.3
            let (_, tCut) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: p)
            #expect(tCut.scoredTokens < tAll.scoredTokens)  // random vectors: most centroid scores are low
            p.centroidScoreThreshold = 2
            let (_, tNone) = try MaxSimSearcher.searchWithTimings(query: q, in: f.index, k: 5, parameters: p)
            #expect(tNone.scoredTokens == 0)
        }
    }

    @Test func timingsCoverEveryStage() throws {
        let f = try Fixture()
        let (r, t) = try MaxSimSearcher.searchWithTimings(query: f.queries[0], in: f.index, k: 5,
                                                          parameters: SearchParameters(nprobe: 2, rerankDepth: 8))
        #expect(r.count == 5)
        #expect(t.total > 0 && t.rerank > 0 && t.scoredTokens > 0 && t.candidates >= 5)
        #expect(t.total >= t.centroidScores + t.selection + t.scoring)
    }
}

@Suite struct KernelTests {
    @Test func topKKeepsTheBestAndBreaksTiesByIdAscending() {
        var top = TopK(capacity: 3)
        let items: [(UInt32, Float)] = [(9, 1), (3, 2), (7, 2), (1, 0.5), (2, 2), (5, 3), (4, 2)]
        for (id, s) in items { top.insert(ScoredDocument(docId: id, score: s)) }
        #expect(top.sorted() == [ScoredDocument(docId: 5, score: 3), ScoredDocument(docId: 2, score: 2),
                                 ScoredDocument(docId: 3, score: 2)])
        var none = TopK(capacity: 0)
        none.insert(ScoredDocument(docId: 1, score: 1))
        #expect(none.sorted().isEmpty)
    }
}

