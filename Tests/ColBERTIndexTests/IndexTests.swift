import ColBERTCore
import Foundation
import Testing
@testable import ColBERTIndex

@Suite struct KMeansTests {
    @Test func recoversSyntheticClusters() {
        let dim = 16, k = 8, per = 60
        var rng = SplitMix64(seed: 3)
        var centers = (0..<(k * dim)).map { _ in Float(rng.nextGaussian()) }
        VectorMath.normalizeRows(&centers, dim: dim)
        var points: [Float] = []
        var truth: [Int] = []
        for c in 0..<k {
            for _ in 0..<per {
                var v = (0..<dim).map { centers[c * dim + $0] + 0.08 * Float(rng.nextGaussian()) }
                VectorMath.normalizeRows(&v, dim: dim)
                points += v
                truth.append(c)
            }
        }
        let n = k * per
        let learned = points.withUnsafeBufferPointer { KMeans.train(points: $0, count: n, dim: dim, k: k, iterations: 10, seed: 11) }
        var ids = [UInt32](repeating: 0, count: n), scores = [Float](repeating: 0, count: n)
        points.withUnsafeBufferPointer { p in learned.withUnsafeBufferPointer { c in
            KMeans.assign(points: p.baseAddress!, count: n, dim: dim, centroids: c.baseAddress!, k: k, ids: &ids, scores: &scores)
        } }
        // Every true cluster lands in one learned centroid, and distinct clusters in distinct ones.
        var mapping: [Int: Set<UInt32>] = [:]
        for i in 0..<n { mapping[truth[i], default: []].insert(ids[i]) }
        #expect(mapping.values.allSatisfy { $0.count == 1 })
        #expect(Set(mapping.values.compactMap(\.first)).count == k)
        // Deterministic for a seed.
        let again = points.withUnsafeBufferPointer { KMeans.train(points: $0, count: n, dim: dim, k: k, iterations: 10, seed: 11) }
        #expect(again == learned)
        #expect(KMeans.plaidCentroidCount(tokens: 815_632) == 8192)
    }
}

@Suite struct IndexBuildTests {
    let encoder = SyntheticEncoder()

    @Test(arguments: [1, 2, 4])
    func buildRoundTripsPerBits(nbits: Int) throws {
        let dir = TempDir()
        let docs = Fixtures.documents(120)
        try Fixtures.writeCorpus(docs, to: dir.file("corpus.jsonl"))
        let report = try IndexBuilder(encoder: encoder, options: smallOptions(nbits: nbits))
            .build(corpus: dir.file("corpus.jsonl"), index: dir.file("idx"))
        #expect(report.documentsIndexed == 120)
        #expect(report.issueCount == 0)
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        #expect(try index.verify().isEmpty)
        let stats = try index.stats()
        #expect(stats.documents == 120)
        #expect(stats.nbits == nbits)
        let expectedTokens = try encoder.encode(docs.map(\.encodedText), kind: .document).reduce(0) { $0 + $1.count }
        #expect(stats.tokens == expectedTokens)
        // Decoded tokens point the same way as the originals; more bits, closer.
        let original = try encoder.encode([docs[5].encodedText], kind: .document)[0]
        let meanCos: Float = try index.withSnapshot { s in
            let d = try #require(try s.internalId(of: "d5"))
            // Stored tokens come back grouped by centroid (ascending), in document order within
            // a centroid: order the original tokens the same way, by their nearest centroid.
            func nearest(_ row: [Float]) -> Int {
                var best = 0, bestScore = -Float.infinity
                for c in 0..<s.centroidCount {
                    var dot: Float = 0
                    for (j, x) in row.enumerated() { dot += x * s.centroids[c * s.dim + j] }
                    if dot > bestScore { bestScore = dot; best = c }
                }
                return best
            }
            let order = (0..<original.count).map { ($0, nearest(original.row($0))) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }.map(\.0)
            return try s.withDocument(d) { view in
                guard let view else { return -1 }
                var out = [Float](repeating: 0, count: s.dim), total: Float = 0
                for t in 0..<view.count {
                    let c = s.centroids.baseAddress! + Int(view.centroidId(t)) * s.dim
                    out.withUnsafeMutableBufferPointer { s.codec.decode(codes: view.code(t), centroid: c, into: $0.baseAddress!) }
                    total += zip(out, original.row(order[t])).reduce(0) { $0 + $1.0 * $1.1 }
                }
                return total / Float(view.count)
            }
        }
        let floor: [Int: Float] = [1: 0.80, 2: 0.90, 4: 0.97]
        #expect(meanCos > floor[nbits]!)
        #expect(stats.meanReconstructionError ?? 1 < [1: 0.6, 2: 0.45, 4: 0.25][nbits]!)
    }

    /// The runs of a set of documents, read from their clusters without copying, hold exactly
    /// each document's tokens (centroid and code) as the gathered views do, listed by centroid.
    @Test func documentRunsHoldTheGatheredTokens() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(120), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        try index.withSnapshot { s in
            let bpc = s.codec.bytesPerVector
            // Live ids in a scrambled order, one id that was never assigned, one repeated.
            var ids = (0..<s.documentIdBound).reversed().filter { $0 % 3 != 1 }
            ids.insert(s.documentIdBound + 5, at: 4)
            ids.append(ids[0])
            typealias Token = [UInt8]
            func tokens(_ centroid: UInt32, _ code: UnsafeRawPointer) -> Token {
                withUnsafeBytes(of: centroid.littleEndian) { Array($0) } + Array(UnsafeRawBufferPointer(start: code, count: bpc))
            }
            let want: [[Token]?] = try s.withDocuments(ids) { views in
                views.map { v in v.map { v in (0..<v.count).map { tokens(v.centroidId($0), v.code($0)) }.sorted { $0.lexicographicallyPrecedes($1) } } }
            }
            for workers in [1, 2] {
                try s.withDocumentRuns(ids, workers: workers) { got in
                    #expect(got.tokenCounts == want.map { $0?.count })
                    #expect(zip(got.runs, got.runs.dropFirst()).allSatisfy { $0.centroid <= $1.centroid })
                    var byDoc = [[Token]](repeating: [], count: ids.count)
                    for run in got.runs {
                        #expect(run.count > 0)
                        for t in 0..<Int(run.count) { byDoc[Int(run.owner)].append(tokens(run.centroid, run.codes + t * bpc)) }
                    }
                    for (k, w) in want.enumerated() {
                        #expect(byDoc[k].sorted { $0.lexicographicallyPrecedes($1) } == (w ?? []), "document \(ids[k])")
                    }
                }
            }
        }
    }

    @Test func clustersMatchDocumentsAndCompact() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(90), to: dir.file("c.jsonl"))
        var options = smallOptions(batchSize: 10)
        options.compactAtEnd = false
        _ = try IndexBuilder(encoder: encoder, options: options).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        /// Most chunks of one cluster, and whether every cluster is cut as compaction's `plan`
        /// (packing leaf pages across clusters in order) would cut it.
        func check() throws -> (maxChunks: Int, planned: Bool) {
            try index.withSnapshot { s in
                var total = 0, maxChunks = 0, planned = true
                var packing: ClusterChunkLayout.LeafPacking? = ClusterChunkLayout.LeafPacking()
                for c in 0..<s.centroidCount {
                    let chunks = try s.chunkCount(ofCluster: c)
                    maxChunks = max(maxChunks, chunks)
                    var ids: [UInt32] = []
                    try s.forEachClusterChunk(c) { view in
                        for i in 0..<view.count { ids.append(view.docId(i)) }
                    }
                    for i in ids.indices.dropFirst() { #expect(ids[i - 1] <= ids[i]) }
                    total += ids.count
                    if ClusterChunkLayout.plan(count: ids.count, bytesPerCode: s.codec.bytesPerVector, docId: { ids[$0] },
                                               packing: &packing).count != chunks { planned = false }
                }
                #expect(total == s.tokenCount)
                return (maxChunks, planned)
            }
        }
        let before = try check()
        #expect(before.maxChunks > 1)  // nine batches leave several chunks in busy clusters
        #expect(!before.planned)
        try index.compact()
        #expect(try check().planned)
        #expect(try index.verify().isEmpty)
        // Compacting again changes nothing but the table in use.
        try index.compact()
        #expect(try check().planned)
        #expect(try index.verify().isEmpty)
    }

    @Test func addDeleteReplaceKeepInvariants() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(60), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        let before = try index.stats()

        let extra = Fixtures.documents(20, prefix: "x", salt: 99)
        let r1 = try index.add(documents: extra, encoder: encoder)
        #expect(r1.added == 20 && r1.replaced == 0)
        let replacement = CorpusDocument(id: "d3", title: "", text: "virus virus virus immune")
        let r2 = try index.add(documents: [replacement], encoder: encoder)
        #expect(r2.replaced == 1)
        #expect(try index.delete(externalIds: ["d4", "x7", "missing"]) == 2)
        #expect(try index.verify().isEmpty)

        let stats = try index.stats()
        #expect(stats.documents == 60 + 20 - 2)
        let got = try index.documents(externalIds: ["d3", "d4", "x0", "d10"])
        #expect(got[0]?.text == "virus virus virus immune")
        #expect(got[1] == nil)
        #expect(got[2]?.title == "Title 0")
        #expect(got[3]?.metadataJSON == nil)  // corpus lines here have no extra fields
        #expect(stats.addedTokens > 0 && before.addedTokens == 0)
        #expect(stats.drift != nil)

        // The replaced document's old internal id is gone from every cluster.
        try index.withSnapshot { s in
            let live = try #require(try s.internalId(of: "d3"))
            #expect(try s.externalId(of: live) == "d3")
            var liveIds = Set<UInt32>()
            try s.forEachDocument { id, _ in liveIds.insert(id) }
            #expect(liveIds.count == s.documentCount)
            for c in 0..<s.centroidCount {
                try s.forEachClusterChunk(c) { v in for i in 0..<v.count { #expect(liveIds.contains(v.docId(i))) } }
            }
        }
    }

    @Test func refusesAnotherModel() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(40), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        let other = SyntheticEncoder(fingerprint: "another-model")
        #expect(throws: IndexError.modelMismatch(index: "synthetic-v1", encoder: "another-model")) {
            try index.add(documents: Fixtures.documents(2, prefix: "n"), encoder: other)
        }
        #expect(throws: IndexError.self) {
            try IndexBuilder(encoder: other, options: smallOptions()).add(corpus: dir.file("c.jsonl"), to: index)
        }
        #expect(throws: Never.self) { try index.checkModel(fingerprint: "synthetic-v1") }
        #expect(try index.stats().documents == 40)
    }

    @Test func badCorpusLinesAreReportedWithLineNumbers() throws {
        let dir = TempDir()
        let good = Fixtures.documents(6)
        var lines = good.map { Array(Fixtures.jsonLine($0).utf8) }
        lines.insert(Array("{not json".utf8), at: 1)                       // line 2
        lines.insert(Array("{\"title\":\"t\",\"text\":\"no id\"}".utf8), at: 3)  // line 4
        lines.insert(Array("{\"_id\":\"e\",\"title\":\"\",\"text\":\"  \"}".utf8), at: 4) // line 5
        lines.insert(Array(Fixtures.jsonLine(good[0]).utf8), at: 6)         // line 7: duplicate of d0
        lines.insert(Array("{\"_id\":\"u\",\"text\":\"bad ".utf8) + [0xC3, 0x28] + Array("\"}".utf8), at: 7) // line 8
        lines.insert(Array("{\"id\":\"alt\",\"text\":\"gene cell\",\"year\":2020}".utf8), at: 8) // line 9: valid, "id" key
        let data = Data(lines.map { $0 + [0x0A] }.joined())
        try data.write(to: URL(fileURLWithPath: dir.file("c.jsonl")))

        let report = try IndexBuilder(encoder: encoder, options: smallOptions(centroids: 4, batchSize: 3))
            .build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        #expect(report.issues.map(\.line) == [2, 4, 5, 7, 8])
        #expect(report.issues[0].reason.contains("JSON"))
        #expect(report.issues[1].reason.contains("id"))
        #expect(report.issues[2].reason.contains("empty"))
        #expect(report.issues[3].reason.contains("duplicate"))
        #expect(report.issues[4].reason.contains("UTF-8"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        #expect(try index.stats().documents == 7)
        #expect(try index.documents(externalIds: ["alt"])[0]?.metadataJSON == "{\"year\":2020}")
        #expect(try index.verify().isEmpty)

        // abort: stops at line 2 but keeps what came before it.
        var abort = smallOptions(centroids: 4, batchSize: 3)
        abort.onError = .abort
        #expect(throws: IndexError.badCorpusLine(CorpusIssue(line: 2, reason: "invalid JSON"))) {
            try IndexBuilder(encoder: encoder, options: abort).build(corpus: dir.file("c.jsonl"), index: dir.file("idx2"))
        }
        let partial = try ColBERTIndex.open(at: dir.file("idx2"))
        #expect(try partial.stats().documents == 1)
        #expect(try partial.verify().isEmpty)
    }

    @Test func interruptedBuildResumesWithoutDuplicates() throws {
        let dir = TempDir()
        let docs = Fixtures.documents(100)
        try Fixtures.writeCorpus(docs, to: dir.file("c.jsonl"))
        var options = smallOptions(batchSize: 20)
        options.maxSampleTokens = 200  // small sample: indexing must encode (and fail) on its own
        // The sample takes part of the encoder's budget; the crash comes in the middle of indexing.
        let failing = FailingEncoder(encoder, failAfter: 70)
        #expect(throws: IndexError.self) {
            try IndexBuilder(encoder: failing, options: options).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        }
        do {
            let index = try ColBERTIndex.open(at: dir.file("idx"))
            let n = try index.stats().documents
            #expect(n > 0 && n < 100 && n % 20 == 0)  // exactly the committed batches
            #expect(try index.verify().isEmpty)
        }
        let report = try IndexBuilder(encoder: encoder, options: options).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        #expect(report.resumedAfterLine != nil)
        #expect(!report.trained)
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        #expect(try index.stats().documents == 100)
        #expect(try index.verify().isEmpty)
        let found = try index.documents(externalIds: docs.map(\.id))
        #expect(found.allSatisfy { $0 != nil })
        // Running the finished build again changes nothing.
        let again = try IndexBuilder(encoder: encoder, options: options).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        #expect(again.alreadyComplete)
        #expect(try index.stats().documents == 100)
    }

    @Test func untrainedLeftoversStartOver() throws {
        let dir = TempDir()
        // An environment without index metadata (as left by a kill during training).
        _ = try LMDBEnvironment(path: { try? FileManager.default.createDirectory(atPath: dir.file("idx"), withIntermediateDirectories: true); return dir.file("idx") }(),
                                databases: Schema.databases, mapSize: 1 << 20, readOnly: false)
        #expect(throws: IndexError.notAnIndex(dir.file("idx"))) { try ColBERTIndex.open(at: dir.file("idx")) }
        try Fixtures.writeCorpus(Fixtures.documents(30), to: dir.file("c.jsonl"))
        let r = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        #expect(r.trained && r.documentsIndexed == 30)
    }

    @Test func mapGrowsByItself() throws {
        let dir = TempDir()
        var options = smallOptions(batchSize: 50)
        options.initialMapSize = 1 << 16
        try Fixtures.writeCorpus(Fixtures.documents(300), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: options).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"), mapSize: 1 << 16)
        let stats = try index.stats()
        #expect(stats.documents == 300)
        #expect(stats.fileSizeBytes > 1 << 16)
        #expect(stats.mapSizeBytes >= stats.fileSizeBytes)
        // More data into the reopened (small-map) index grows the map again.
        _ = try index.add(documents: Fixtures.documents(200, prefix: "m", salt: 5), encoder: encoder)
        #expect(try index.stats().documents == 500)
        #expect(try index.verify().isEmpty)
    }

    @Test func mapGrowthWithoutCommitRebuildsTheChunkDirectory() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(40), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        let before = try index.withSnapshot { s in try s.directory() }
        #expect(try index.withSnapshot { s in try s.directory() } === before)
        // A write that fills the map once (the map grows, i.e. is remapped) and then fails: no
        // commit, so the transaction id is unchanged, but views into the old map are stale.
        struct Refused: Error {}
        var attempts = 0
        #expect(throws: Refused.self) {
            try index.env.withWriteTransaction { _ in
                attempts += 1
                if attempts == 1 { throw LMDBError(code: -30792 /* MDB_MAP_FULL */, operation: "test") }
                throw Refused()
            }
        }
        #expect(attempts == 2)
        let after = try index.withSnapshot { s in try s.directory() }
        #expect(after !== before)
        #expect(after.transactionId == before.transactionId)
        // Every token is reachable through the rebuilt directory.
        let (tokens, listed) = try index.withSnapshot { s in
            (s.tokenCount, try s.withClusterChunks { t in t.chunks.reduce(0) { $0 + $1.count } })
        }
        #expect(listed == tokens && tokens > 0)
        #expect(try index.verify().isEmpty)
    }

    @Test func longExternalIdsAreHashed() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(20), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        let long = String(repeating: "é", count: 700)
        try index.add(documents: [CorpusDocument(id: long, text: "gene gene")], encoder: encoder)
        #expect(try index.documents(externalIds: [long])[0]?.id == long)
        #expect(try index.documents(externalIds: [long + "x"])[0] == nil)
        #expect(try index.verify().isEmpty)
        #expect(try index.delete(externalIds: [long]) == 1)
    }

    @Test func verifyReportsCorruption() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(20), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        // Break the maps behind the index's back: drop one int2ext entry and one cluster chunk.
        try index.env.withWriteTransaction { txn in
            try txn.delete(index.int2ext, key: Keys.u32(0))
            let clusters = try index.clusters(try index.readCounters(txn))
            var firstKey: [UInt8] = []
            try txn.scan(clusters) { k, _ in firstKey = Array(k); return false }
            try txn.delete(clusters, key: firstKey)
        }
        let violations = try index.verify()
        #expect(violations.contains { $0.kind == .idMap })
        #expect(violations.contains { $0.kind == .mismatch })
        #expect(violations.contains { $0.kind == .counts })
    }

    @Test func concurrentReadersDuringWrites() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(40), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"), mapSize: 1 << 16)
        let enc = encoder
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            if worker == 0 {
                for b in 0..<5 { _ = try? index.add(documents: Fixtures.documents(30, prefix: "w\(b)-", salt: UInt64(b)), encoder: enc) }
            } else {
                for _ in 0..<30 {
                    _ = try? index.withSnapshot { s in
                        var total = 0
                        for c in 0..<s.centroidCount { try s.forEachClusterChunk(c) { total += $0.count } }
                        precondition(total == s.tokenCount, "snapshot saw a torn state")
                    }
                }
            }
        }
        #expect(try index.stats().documents == 40 + 150)
        #expect(try index.verify().isEmpty)
    }
}

/// The centroid groups an index stores for routed centroid scoring.
@Suite struct CentroidGroupTests {
    static func create(_ dir: TempDir, centroids k: Int, dim: Int = 8) throws -> ColBERTIndex {
        var rng = SplitMix64(seed: 11)
        var c = (0..<(k * dim)).map { _ in Float(rng.nextGaussian()) }
        VectorMath.normalizeRows(&c, dim: dim)
        let codec = try ResidualCodec(dim: dim, nbits: 1, bucketCutoffs: [0], bucketWeights: [-0.1, 0.1])
        return try ColBERTIndex.create(at: dir.file("idx"), configuration: IndexConfiguration(modelFingerprint: "m", centroids: c, codec: codec))
    }

    @Test func createdIndexStoresItsGroups() throws {
        let dir = TempDir()
        let index = try Self.create(dir, centroids: CentroidRouter.minimumCentroids)
        let stored = try #require(index.storedCentroidGroups())
        let router = try #require(index.centroidRouter)
        #expect(router.groupCount == CentroidRouter.groupCount(centroids: CentroidRouter.minimumCentroids))
        #expect(stored.centers == router.centers)
        // Deterministic: grouping again gives what was stored.
        let again = try #require(ColBERTIndex.groupCentroids(index.centroids, count: index.centroidCount, dim: index.dim, allCores: false))
        #expect(again.centers == stored.centers && again.assignment == stored.assignment)
        // A reopened index reads the same groups.
        let reopened = try ColBERTIndex.open(at: dir.file("idx"), readOnly: true)
        #expect(reopened.centroidRouter?.members == router.members)
        #expect(try index.verify().isEmpty)
        #expect(try index.stats().centroidGroups == router.groupCount)
    }

    @Test func smallIndexesScoreEveryCentroid() throws {
        let dir = TempDir()
        let index = try Self.create(dir, centroids: 64)
        #expect(index.storedCentroidGroups() == nil && index.centroidRouter == nil)
        #expect(try index.stats().centroidGroups == nil)
    }

    @Test func damagedGroupsAreReportedAndRegrouped() throws {
        let dir = TempDir()
        let built = try Self.create(dir, centroids: CentroidRouter.minimumCentroids)
        let members = try #require(built.centroidRouter).members
        try built.env.withWriteTransaction { txn in
            try txn.put(built.meta, key: Schema.metaKey("centroid_groups"), value: [1, 0, 0, 0, 7])
        }
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        #expect(index.storedCentroidGroups() == nil)
        #expect(index.centroidRouter?.members == members)
        #expect(try index.verify().contains { $0.kind == .metadata })
        #expect(try index.stats().centroidGroups == nil)
        // Regrouping stores them again.
        #expect(try index.storeCentroidGroups() == CentroidRouter.groupCount(centroids: CentroidRouter.minimumCentroids))
        #expect(try index.verify().isEmpty)
        #expect(try ColBERTIndex.open(at: dir.file("idx"), readOnly: true).centroidRouter?.members == members)
        #expect(try Self.create(TempDir(), centroids: 64).storeCentroidGroups() == 0)
    }
}
