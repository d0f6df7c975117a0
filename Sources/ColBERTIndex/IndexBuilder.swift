import ColBERTCore
import Foundation

/// Options of a build (and of adds from a file, which use the batch, store and error options).
public struct IndexBuildOptions: Sendable {
    /// Bits per dimension of the residual codes: 1, 2 or 4.
    public var nbits: Int = 2
    /// Number of centroids; nil → PLAID's 2^floor(log2(16·sqrt(tokens))).
    public var centroids: Int?
    public var seed: UInt64 = 42
    /// Documents per LMDB write transaction.
    public var batchSize: Int = 1000
    /// Documents per encoder call.
    public var encodeBatchSize: Int = 64
    public var storeText: Bool = true
    public var onError: OnErrorPolicy = .skip
    public var kmeansIterations: Int = 4
    /// Bound on the k-means sample held in memory (tokens).
    public var maxSampleTokens: Int = 1 << 21
    /// Tokens whose residuals train the codec tables.
    public var codecTrainingTokens: Int = 1 << 16
    public var initialMapSize: Int = 1 << 30
    public var maxMapSize: Int = 1 << 40
    /// Merge cluster chunks at the end so that search reads every cluster in place.
    public var compactAtEnd: Bool = true
    /// After a complete build, rewrite `data.mdb` without free pages (`ColBERTIndex.compactFile`).
    /// Skipped, with a note in the report, while another process has the index open.
    public var compactFileAtEnd: Bool = true

    public init() {}
}

/// A progress report, sent after every encoder call and phase change.
public struct IndexProgress: Sendable {
    public enum Phase: String, Sendable { case scanning, sampling, training, indexing, compacting, done }
    public var phase: Phase
    public var documentsDone: Int
    /// Documents expected in this phase (non-blank lines), when known.
    public var documentsTotal: Int?
    public var tokensDone: Int
    public var elapsedSeconds: Double
}

/// What a build or an add from a file did.
public struct IndexBuildReport: Sendable {
    public var documentsIndexed = 0
    public var documentsReplaced = 0
    public var tokensIndexed = 0
    /// Bad lines (the first 1,000; `issueCount` counts all).
    public var issues: [CorpusIssue] = []
    public var issueCount = 0
    /// Lines up to this one were committed by an earlier, interrupted run and skipped.
    public var resumedAfterLine: Int?
    /// Whether this run trained the centroids (false when resuming or adding).
    public var trained = false
    public var centroids = 0
    public var training: TrainingSummary?
    public var alreadyComplete = false
    public var seconds = 0.0
    /// Time spent inside the encoder.
    public var encodeSeconds = 0.0
    /// The rewrite of `data.mdb` without free pages at the end of the build, if it ran.
    public var fileCompaction: IndexFileCompaction?
    /// Why the file was not compacted (e.g. another process had the index open).
    public var fileCompactionSkipped: String?
}

/// Builds an index from a BEIR corpus file, streaming: memory is bounded by the batch (plus the
/// k-means sample). Every batch is one write transaction that also records how far the corpus
/// was read, so a killed build re-run with the same arguments continues where it stopped.
public struct IndexBuilder: Sendable {
    public var encoder: any TokenEncoder
    public var options: IndexBuildOptions
    public var progress: (@Sendable (IndexProgress) -> Void)?
    public var onIssue: (@Sendable (CorpusIssue) -> Void)?

    public init(encoder: any TokenEncoder, options: IndexBuildOptions = IndexBuildOptions(),
                progress: (@Sendable (IndexProgress) -> Void)? = nil,
                onIssue: (@Sendable (CorpusIssue) -> Void)? = nil) {
        self.encoder = encoder
        self.options = options
        self.progress = progress
        self.onIssue = onIssue
    }

    static let buildKey = "build"
    static let addKey = "add"

    /// Builds (or resumes building) the index in directory `indexPath` from `corpus`.
    public func build(corpus: String, index indexPath: String) throws -> IndexBuildReport {
        // Every index object of the build is released when `buildIndex` returns, which the file
        // compaction needs (it swaps data.mdb while no handle is open).
        var report = try buildIndex(corpus: corpus, index: indexPath)
        if options.compactFileAtEnd {
            let start = Date()
            do {
                report.fileCompaction = try ColBERTIndex.compactFile(at: indexPath)
            } catch let e as IndexError {
                guard case .inUse = e else { throw e }
                report.fileCompactionSkipped = "\(e); run `colbert index compact` later"
            }
            report.seconds += Date().timeIntervalSince(start)
        }
        return report
    }

    private func buildIndex(corpus: String, index indexPath: String) throws -> IndexBuildReport {
        try validate()
        let start = Date()
        let identity = try CorpusParser.identity(path: corpus)
        var report = IndexBuildReport()
        var index: ColBERTIndex?
        if FileManager.default.fileExists(atPath: indexPath + "/data.mdb") {
            do { index = try ColBERTIndex.open(at: indexPath, mapSize: options.initialMapSize) } catch IndexError.notAnIndex {
                index = nil  // never trained: start over
            }
        }
        var resumeAfter = 0
        if let existing = index {
            guard let progress = try existing.readProgress(Self.buildKey), progress.corpus == identity else {
                throw IndexError.alreadyExists("\(indexPath) already holds an index built from another corpus or by another route; use `add`, or remove the directory to rebuild")
            }
            try existing.checkModel(fingerprint: encoder.fingerprint, dim: encoder.dim)
            report.centroids = existing.centroidCount
            if progress.complete {
                report.alreadyComplete = true
                if options.compactAtEnd { try existing.compact() }
                report.seconds = Date().timeIntervalSince(start)
                return report
            }
            resumeAfter = progress.lastLine
            report.resumedAfterLine = progress.lastLine
        }
        var cache = SampleCache(dim: encoder.dim)
        let built: ColBERTIndex
        if let existing = index {
            built = existing
        } else {
            let trained = try train(corpus: corpus, report: &report, cache: &cache)
            report.trained = true
            report.training = trained.training
            let progress = FileProgress(corpus: identity, lastLine: 0, complete: false)
            built = try ColBERTIndex.create(at: indexPath, configuration: trained, extraMeta: [Self.buildKey: try JSONRecord.encode(progress)])
        }
        report.centroids = built.centroidCount
        try stream(corpus: corpus, into: built, identity: identity, progressKey: Self.buildKey, origin: .build,
                   resumeAfter: resumeAfter, cache: &cache, report: &report, start: start)
        if options.compactAtEnd {
            emit(.compacting, 0, nil, 0, start)
            try built.compact()
        }
        report.seconds = Date().timeIntervalSince(start)
        emit(.done, report.documentsIndexed, nil, report.tokensIndexed, start)
        return report
    }

    /// Adds (or replaces) the documents of `corpus` to an existing index, one transaction per
    /// batch. An interrupted add of the same file resumes after its last committed line.
    public func add(corpus: String, to index: ColBERTIndex) throws -> IndexBuildReport {
        try validate()
        try index.checkModel(fingerprint: encoder.fingerprint, dim: encoder.dim)
        let start = Date()
        let identity = try CorpusParser.identity(path: corpus)
        var report = IndexBuildReport()
        report.centroids = index.centroidCount
        var resumeAfter = 0
        if let p = try index.readProgress(Self.addKey), p.corpus == identity, !p.complete {
            resumeAfter = p.lastLine
            report.resumedAfterLine = p.lastLine
        } else {
            try index.writeProgress(Self.addKey, FileProgress(corpus: identity, lastLine: 0, complete: false))
        }
        var cache = SampleCache(dim: encoder.dim)
        try stream(corpus: corpus, into: index, identity: identity, progressKey: Self.addKey, origin: .add,
                   resumeAfter: resumeAfter, cache: &cache, report: &report, start: start)
        report.seconds = Date().timeIntervalSince(start)
        emit(.done, report.documentsIndexed, nil, report.tokensIndexed, start)
        return report
    }

    private func validate() throws {
        guard [1, 2, 4].contains(options.nbits) else { throw IndexError.invalidOption("--nbits must be 1, 2 or 4 (got \(options.nbits))") }
        guard options.batchSize > 0, options.encodeBatchSize > 0 else { throw IndexError.invalidOption("batch sizes must be positive") }
        if let k = options.centroids, k <= 0 { throw IndexError.invalidOption("--centroids must be positive (got \(k))") }
        guard encoder.dim > 0, (encoder.dim * options.nbits) % 8 == 0 else {
            throw IndexError.invalidOption("encoder dimension \(encoder.dim) cannot be packed at \(options.nbits) bits")
        }
    }

    private func emit(_ phase: IndexProgress.Phase, _ docs: Int, _ total: Int?, _ tokens: Int, _ start: Date) {
        progress?(IndexProgress(phase: phase, documentsDone: docs, documentsTotal: total, tokensDone: tokens,
                                elapsedSeconds: Date().timeIntervalSince(start)))
    }

    private func encode(_ texts: [String]) throws -> [TokenEmbeddings] {
        let out = try encoder.encode(texts, kind: .document)
        guard out.count == texts.count else { throw IndexError.encoderFailed("returned \(out.count) results for \(texts.count) texts") }
        for e in out where e.dim != encoder.dim { throw IndexError.dimensionMismatch(index: encoder.dim, encoder: e.dim) }
        return out
    }

    // MARK: Training

    /// Samples documents, runs k-means and trains the codec. Keeps the sample's embeddings in
    /// `cache` (by line number) so that indexing does not encode them twice.
    private func train(corpus: String, report: inout IndexBuildReport, cache: inout SampleCache) throws -> IndexConfiguration {
        let start = Date()
        emit(.scanning, 0, nil, 0, start)
        var candidates: [Int32] = []
        var reader = try JSONLinesReader(path: corpus)
        while let line = reader.next() {
            switch line {
            case .line(let n, let bytes):
                if bytes.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) { candidates.append(Int32(n)) }
            case .tooLong: continue
            }
        }
        guard !candidates.isEmpty else { throw IndexError.invalidOption("the corpus \(corpus) has no documents") }
        var rng = SplitMix64(seed: options.seed)
        let sampleSize = min(candidates.count, KMeans.plaidSampleSize(documents: candidates.count))
        var order = candidates
        for i in 0..<sampleSize {
            let j = i + Int(rng.next() % UInt64(order.count - i))
            order.swapAt(i, j)
        }
        let sampled = Set(order[0..<sampleSize].map(Int.init))
        order = []

        // Encode sampled documents (valid lines only), up to the token budget.
        emit(.sampling, 0, sampleSize, 0, start)
        var points: [Float] = []
        var sampleDocs = 0
        var pending: [(Int, String)] = []
        var full = false
        func flush() throws {
            guard !pending.isEmpty else { return }
            let t0 = Date()
            let embs = try encodeTolerant(pending.map(\.1))
            report.encodeSeconds += Date().timeIntervalSince(t0)
            for (i, e) in embs.enumerated() {
                guard let e else { continue }
                guard !full else { break }
                cache.spans[pending[i].0] = (points.count / encoder.dim, e.count)
                points.append(contentsOf: e.vectors)
                sampleDocs += 1
                if points.count / encoder.dim >= options.maxSampleTokens { full = true }
            }
            pending.removeAll(keepingCapacity: true)
            emit(.sampling, sampleDocs, sampleSize, points.count / encoder.dim, start)
        }
        reader = try JSONLinesReader(path: corpus)
        while !full, let line = reader.next() {
            guard case .line(let n, let bytes) = line, sampled.contains(n) else { continue }
            guard case .success(let doc) = CorpusParser.parse(bytes) else { continue }
            pending.append((n, doc.encodedText))
            if pending.count >= options.encodeBatchSize { try flush() }
        }
        try flush()
        let dim = encoder.dim
        let sampleTokens = points.count / dim
        guard sampleTokens > 0 else { throw IndexError.invalidOption("no valid documents with tokens to train on in \(corpus)") }
        let estimated = Int((Double(sampleTokens) / Double(max(sampleDocs, 1)) * Double(candidates.count)).rounded())
        var k = options.centroids ?? KMeans.plaidCentroidCount(tokens: estimated)
        k = max(1, min(k, sampleTokens))

        emit(.training, sampleDocs, sampleSize, sampleTokens, start)
        let t0 = Date()
        let centroids = points.withUnsafeBufferPointer { p in
            KMeans.train(points: p, count: sampleTokens, dim: dim, k: k, iterations: options.kmeansIterations, seed: options.seed)
        }
        // Codec tables from the residuals of an evenly strided subset of the sample.
        let stride = max(1, sampleTokens / options.codecTrainingTokens)
        var subset: [Float] = []
        var row = 0
        while row < sampleTokens { subset.append(contentsOf: points[(row * dim)..<((row + 1) * dim)]); row += stride }
        // The sample stays in memory once, as the cache indexing reads instead of re-encoding.
        cache.points = points
        points = []
        let m = subset.count / dim
        var ids = [UInt32](repeating: 0, count: m), scores = [Float](repeating: 0, count: m)
        subset.withUnsafeBufferPointer { s in
            centroids.withUnsafeBufferPointer { c in
                KMeans.assign(points: s.baseAddress!, count: m, dim: dim, centroids: c.baseAddress!, k: k, ids: &ids, scores: &scores)
            }
        }
        var residuals = [Float](repeating: 0, count: m * dim)
        var normSum = 0.0
        for r in 0..<m {
            for d in 0..<dim { residuals[r * dim + d] = subset[r * dim + d] - centroids[Int(ids[r]) * dim + d] }
            normSum += Double(max(0, 2 - 2 * scores[r])).squareRoot()
        }
        let codec = try ResidualCodec.train(dim: dim, nbits: options.nbits, residuals: residuals)
        let summary = TrainingSummary(sampleDocuments: sampleDocs, sampleTokens: sampleTokens, estimatedTokens: estimated,
                                      iterations: options.kmeansIterations, meanResidualNorm: normSum / Double(max(m, 1)),
                                      seconds: Date().timeIntervalSince(t0))
        return IndexConfiguration(modelFingerprint: encoder.fingerprint, centroids: centroids, codec: codec,
                                  storeText: options.storeText, seed: options.seed, training: summary,
                                  initialMapSize: options.initialMapSize, maxMapSize: options.maxMapSize)
    }

    /// Encodes a batch; if the encoder fails on it, encodes one text at a time so that only the
    /// failing documents are lost (nil entries).
    private func encodeTolerant(_ texts: [String]) throws -> [TokenEmbeddings?] {
        do { return try encode(texts) } catch let e as IndexError { throw e } catch {
            let single = texts.map { t in (try? encode([t]))?.first }
            // Failing on every document means the encoder is broken, not the documents: stop.
            if texts.count > 1, single.allSatisfy({ $0 == nil }) { throw IndexError.encoderFailed("\(error)") }
            return single
        }
    }

    // MARK: Indexing

    private func stream(corpus: String, into index: ColBERTIndex, identity: String, progressKey: String,
                        origin: TokenOrigin, resumeAfter: Int, cache: inout SampleCache,
                        report: inout IndexBuildReport, start: Date) throws {
        // Count lines first for the progress bar's total (cheap next to encoding).
        var total = 0
        var counter = try JSONLinesReader(path: corpus)
        while let line = counter.next() {
            if case .line(let n, let b) = line, n > resumeAfter, b.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) { total += 1 }
            else if case .tooLong(let n, _) = line, n > resumeAfter { total += 1 }
        }
        var reader = try JSONLinesReader(path: corpus)
        var toEncode: [(line: Int, doc: CorpusDocument)] = []
        var encoded: [(CorpusDocument, TokenEmbeddings)] = []
        var batchIds = Set<String>()
        var runIds = Set<String>()  // duplicate detection within the file for adds
        var processed = 0
        var tokens = 0

        func issue(_ line: Int, _ reason: String) throws {
            let i = CorpusIssue(line: line, reason: reason)
            report.issueCount += 1
            if report.issues.count < 1000 { report.issues.append(i) }
            onIssue?(i)
        }
        func encodePending() throws {
            guard !toEncode.isEmpty else { return }
            var need: [Int] = []
            for (i, item) in toEncode.enumerated() where cache.spans[item.line] == nil { need.append(i) }
            var fresh: [TokenEmbeddings?] = []
            if !need.isEmpty {
                let t0 = Date()
                fresh = try encodeTolerant(need.map { toEncode[$0].doc.encodedText })
                report.encodeSeconds += Date().timeIntervalSince(t0)
            }
            var f = 0
            for (i, item) in toEncode.enumerated() {
                let emb: TokenEmbeddings?
                if f < need.count, need[f] == i { emb = fresh[f]; f += 1 } else { emb = cache.take(item.line) }
                guard let emb else {
                    try issue(item.line, "the encoder failed on this document")
                    if options.onError == .abort { throw IndexError.badCorpusLine(CorpusIssue(line: item.line, reason: "the encoder failed on this document")) }
                    continue
                }
                encoded.append((item.doc, emb))
                tokens += emb.count
            }
            processed += toEncode.count
            toEncode.removeAll(keepingCapacity: true)
            emit(.indexing, processed, total, tokens, start)
        }
        func commit(lastLine: Int, complete: Bool) throws {
            try encodePending()
            let prepared = try index.prepare(encoded)
            let r = try index.writeBatch(prepared, deleting: [], origin: origin,
                                         progress: (progressKey, FileProgress(corpus: identity, lastLine: lastLine, complete: complete)))
            report.documentsIndexed += r.added
            report.documentsReplaced += r.replaced
            report.tokensIndexed += r.tokens
            encoded.removeAll(keepingCapacity: true)
            batchIds.removeAll(keepingCapacity: true)
        }

        func handleBad(_ n: Int, _ reason: String) throws {
            try issue(n, reason)
            if options.onError == .abort {
                // Keep everything before the bad line, then stop.
                try commit(lastLine: n - 1, complete: false)
                throw IndexError.badCorpusLine(CorpusIssue(line: n, reason: reason))
            }
        }

        var lastLine = resumeAfter
        while let line = reader.next() {
            let number: Int
            switch line {
            case .tooLong(let n, let length):
                number = n
                if n > resumeAfter {
                    processed += 1
                    try handleBad(n, "line of \(length) bytes is too long")
                }
            case .line(let n, let bytes):
                number = n
                guard n > resumeAfter else { break }
                guard bytes.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { break }
                switch CorpusParser.parse(bytes) {
                case .failure(let e):
                    processed += 1
                    try handleBad(n, e.reason)
                case .success(let doc):
                    let dup: Bool
                    if batchIds.contains(doc.id) { dup = true }
                    else if origin == .build { dup = try index.contains(externalId: doc.id) }
                    else { dup = runIds.contains(doc.id) }
                    if dup {
                        processed += 1
                        try handleBad(n, "duplicate id \"\(doc.id)\" (an earlier line of this file has it)")
                    } else {
                        batchIds.insert(doc.id)
                        if origin == .add { runIds.insert(doc.id) }
                        toEncode.append((n, doc))
                        if toEncode.count >= options.encodeBatchSize { try encodePending() }
                    }
                }
            }
            lastLine = number
            if batchIds.count >= options.batchSize { try commit(lastLine: number, complete: false) }
        }
        try commit(lastLine: lastLine, complete: true)

    }
}

/// The k-means sample's embeddings, kept once (flat) so that indexing does not encode the
/// sampled documents a second time.
struct SampleCache {
    let dim: Int
    var points: [Float] = []
    /// Line number → (first row, row count) in `points`.
    var spans: [Int: (Int, Int)] = [:]

    init(dim: Int) { self.dim = dim }

    mutating func take(_ line: Int) -> TokenEmbeddings? {
        guard let (start, count) = spans.removeValue(forKey: line) else { return nil }
        let embeddings = slice(start, count)
        if spans.isEmpty { points = [] }  // the last cached document: free the sample
        return embeddings
    }

    private func slice(_ start: Int, _ count: Int) -> TokenEmbeddings {
        TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: count),
                        vectors: Array(points[(start * dim)..<((start + count) * dim)]), dim: dim)
    }
}
