import ColBERTCore
import Synchronization

/// MaxSim search over an `IndexSnapshot`: WARP-style centroid-pruned search with implicit
/// decompression, an exact re-rank, and exhaustive MaxSim as ground truth.
///
/// Results are sorted by score descending, ties by internal id ascending, and are bit-identical
/// for every thread count: each document's score is always computed by one worker with the same
/// operation order, whatever the number of workers.
///
/// Missing similarity: WARP's best-unselected centroid score is the default; the last selected
/// one and zero are options. On synthetic data (1.2M tokens, 16K centroids) best-unselected and
/// last-selected gave the same recall within 0.01 at every nprobe, so WARP's rule stays.
///
/// With `threads > 1` the snapshot's `forEachClusterChunk` is called concurrently from several
/// threads (after `prepareClusterReads` on the calling thread; `searchBatch` also gathers
/// documents on its workers), and OpenBLAS is switched to one thread (process-wide) so that its
/// pool does not fight ours; callers that want multithreaded BLAS afterwards set it back.
public enum MaxSimSearcher {

    // MARK: Pruned search

    /// Centroid-pruned MaxSim. `query` is row-major `queryTokens × dim`.
    public static func search<S: IndexSnapshot>(
        query: UnsafeBufferPointer<Float>, queryTokens: Int, in index: S, k: Int,
        parameters: SearchParameters? = nil, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> [ScoredDocument] {
        var t = SearchTimings()
        return try pruned(query: query, queryTokens: queryTokens, index: index, k: k,
                          parameters: parameters ?? .defaults(k: k), allowed: allowed,
                          threads: threads, timings: &t)
    }

    /// `search` on an encoder output.
    public static func search<S: IndexSnapshot>(
        query: TokenEmbeddings, in index: S, k: Int,
        parameters: SearchParameters? = nil, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> [ScoredDocument] {
        try searchWithTimings(query: query, in: index, k: k, parameters: parameters,
                              allowed: allowed, threads: threads).results
    }

    /// `search` that also reports the time spent in each stage.
    public static func searchWithTimings<S: IndexSnapshot>(
        query: UnsafeBufferPointer<Float>, queryTokens: Int, in index: S, k: Int,
        parameters: SearchParameters? = nil, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> (results: [ScoredDocument], timings: SearchTimings) {
        var t = SearchTimings()
        let r = try pruned(query: query, queryTokens: queryTokens, index: index, k: k,
                           parameters: parameters ?? .defaults(k: k), allowed: allowed,
                           threads: threads, timings: &t)
        return (r, t)
    }

    public static func searchWithTimings<S: IndexSnapshot>(
        query: TokenEmbeddings, in index: S, k: Int,
        parameters: SearchParameters? = nil, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> (results: [ScoredDocument], timings: SearchTimings) {
        guard query.dim == index.dim else { throw SearchError.dimensionMismatch(query: query.dim, index: index.dim) }
        return try query.vectors.withUnsafeBufferPointer {
            try searchWithTimings(query: $0, queryTokens: query.count, in: index, k: k,
                                  parameters: parameters, allowed: allowed, threads: threads)
        }
    }

    /// Many queries at once for throughput: queries are spread over `threads` workers, each
    /// query searched on one thread. Timings are summed over queries.
    public static func searchBatch<S: IndexSnapshot>(
        queries: [TokenEmbeddings], in index: S, k: Int,
        parameters: SearchParameters? = nil, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> (results: [[ScoredDocument]], timings: SearchTimings) {
        for q in queries where q.dim != index.dim {
            throw SearchError.dimensionMismatch(query: q.dim, index: index.dim)
        }
        let workers = max(1, min(threads, queries.count))
        if workers > 1 { BLAS.setThreadCount(1) }
        try index.prepareClusterReads()
        let slots = (0..<workers).map { _ in BatchSlot() }
        runWorkers(workers) { w in
            let slot = slots[w]
            var qi = w
            while qi < queries.count {
                do {
                    var t = SearchTimings()
                    let r = try queries[qi].vectors.withUnsafeBufferPointer {
                        try pruned(query: $0, queryTokens: queries[qi].count, index: index, k: k,
                                   parameters: parameters ?? .defaults(k: k), allowed: allowed,
                                   threads: 1, timings: &t)
                    }
                    slot.results.append((qi, r))
                    slot.timings += t
                } catch {
                    slot.error = error
                    return
                }
                qi += workers
            }
        }
        var out = [[ScoredDocument]](repeating: [], count: queries.count)
        var timings = SearchTimings()
        for slot in slots {
            if let e = slot.error { throw e }
            for (qi, r) in slot.results { out[qi] = r }
            timings += slot.timings
        }
        return (out, timings)
    }

    private final class BatchSlot {
        var results: [(Int, [ScoredDocument])] = []
        var timings = SearchTimings()
        var error: (any Error)?
    }

    /// One worker's shortlist; its candidates are the documents of its own contiguous id range
    /// (`worker` of `workers` equal parts of the id bound).
    private final class ScoringSlot {
        var top: TopK
        var error: (any Error)?
        init(capacity: Int) { top = TopK(capacity: capacity) }
    }

    static func validate<S: IndexSnapshot>(query: UnsafeBufferPointer<Float>, queryTokens: Int, index: S, k: Int) throws {
        guard k >= 0 else { throw SearchError.invalidParameter("k must be >= 0 (got \(k))") }
        guard queryTokens >= 0, query.count == queryTokens * index.dim else {
            throw SearchError.queryShape(values: query.count, tokens: queryTokens, dim: index.dim)
        }
        for v in query where !v.isFinite { throw SearchError.nonFiniteQuery }
    }

    static func pruned<S: IndexSnapshot>(
        query: UnsafeBufferPointer<Float>, queryTokens nq: Int, index: S, k: Int,
        parameters p: SearchParameters, allowed: DocumentFilter?, threads: Int,
        timings: inout SearchTimings
    ) throws -> [ScoredDocument] {
        try validate(query: query, queryTokens: nq, index: index, k: k)
        guard p.nprobe >= 1 else { throw SearchError.invalidParameter("nprobe must be >= 1 (got \(p.nprobe))") }
        guard p.rerankDepth >= 0 else { throw SearchError.invalidParameter("rerankDepth must be >= 0 (got \(p.rerankDepth))") }
        if let t = p.centroidScoreThreshold, !t.isFinite {
            throw SearchError.invalidParameter("centroidScoreThreshold must be finite")
        }
        let K = index.centroidCount, dim = index.dim
        let codec = index.codec
        guard k > 0, nq > 0, K > 0, index.documentCount > 0, allowed.map({ $0.count > 0 }) ?? true,
              let q = query.baseAddress, let C = index.centroids.baseAddress else { return [] }
        guard index.centroids.count >= K * dim else {
            throw SearchError.invalidParameter("index holds \(index.centroids.count) centroid values, expected \(K * dim)")
        }
        let start = nowSeconds()
        let workers = max(1, threads)
        if workers > 1 { BLAS.setThreadCount(1) }

        // (1) Centroid scores S = Q · Cᵀ.
        let packedQuery = PackedRows(q, rows: nq, dim: dim)
        // Every score is written below (no need to zero 1 MB per query first).
        let centroidScores = [Float](unsafeUninitializedCapacity: nq * K) { s, initialized in
            initialized = nq * K
            let out = s.baseAddress!
            // Split by centroid rows (16-aligned) when there are enough to share, and only where
            // the split leaves every score as one call computes it (same results for any
            // thread count).
            let parts = packedQuery.splitsExactly ? min(workers, K / 1024) : 1
            if parts <= 1 {
                packedQuery.dotProducts(with: C, count: K, into: out, ldo: K)
            } else {
                runWorkers(parts) { w in
                    let share = blockAlignedShare(part: w, of: parts, count: K)
                    packedQuery.dotProducts(with: C + share.lowerBound * dim, count: share.count, into: out + share.lowerBound, ldo: K)
                }
            }
        }
        let t1 = nowSeconds()
        timings.centroidScores += t1 - start

        // (2) Per query token the top-nprobe clusters (above the threshold) and the imputed
        // similarity for documents none of whose tokens are in them.
        let nprobe = min(p.nprobe, K)
        var probeIds = [Int32](repeating: 0, count: nq * nprobe)
        var probeCounts = [Int](repeating: 0, count: nq)
        var missing = [Float](repeating: 0, count: nq)
        centroidScores.withUnsafeBufferPointer { sBuf in
            probeIds.withUnsafeMutableBufferPointer { idsBuf in
                probeCounts.withUnsafeMutableBufferPointer { countBuf in
                    missing.withUnsafeMutableBufferPointer { missBuf in
                        let s = sBuf.baseAddress!, ids = idsBuf.baseAddress!
                        let counts = countBuf.baseAddress!, miss = missBuf.baseAddress!
                        let selWorkers = min(workers, nq)
                        runWorkers(selWorkers) { w in
                            var keepScores = [Float](repeating: 0, count: nprobe + 1)
                            var keepIds = [Int32](repeating: 0, count: nprobe + 1)
                            var i = w
                            while i < nq {
                                let n = selectTop(s + i * K, count: K, keep: nprobe + 1,
                                                  scores: &keepScores, ids: &keepIds)
                                var selected = min(n, nprobe)
                                if let th = p.centroidScoreThreshold {
                                    var c = 0
                                    while c < selected && keepScores[c] >= th { c += 1 }
                                    selected = c
                                }
                                for j in 0..<selected { ids[i * nprobe + j] = keepIds[j] }
                                counts[i] = selected
                                switch p.missingSimilarity {
                                case .zero: miss[i] = 0
                                case .bestUnselected: miss[i] = selected < n ? keepScores[selected] : keepScores[max(0, n - 1)]
                                case .lastSelected: miss[i] = keepScores[max(0, selected - 1)]
                                }
                                i += selWorkers
                            }
                        }
                    }
                }
            }
        }
        let t2 = nowSeconds()
        timings.selection += t2 - t1

        // (3) Lookup tables for implicit decompression.
        let lutSize = codec.lookupTableSize
        var luts = [Float](repeating: 0, count: nq * lutSize)
        luts.withUnsafeMutableBufferPointer { lBuf in
            let l = lBuf.baseAddress!
            let lutWorkers = min(workers, nq)
            runWorkers(lutWorkers) { w in
                var i = w
                while i < nq {
                    LookupTables.fill(codec: codec, query: q + i * dim, table: l + i * lutSize)
                    i += lutWorkers
                }
            }
        }
        let t3 = nowSeconds()
        timings.lookupTables += t3 - t2

        // (4a) Scoring, query token by query token: the best score per document over the
        // token's probed clusters goes into a dense per-document row that stays cache-resident,
        // then is folded into the document's running sum (see `ScoringScratch`).
        let bound = Int(index.documentIdBound)
        let shortlist = p.rerankDepth > 0 ? max(k, p.rerankDepth) : k
        let scratches = (0..<workers).map { _ in ScoringScratch.take(bound: bound) }
        defer { for sc in scratches { ScoringScratch.give(sc) } }
        let slots = (0..<workers).map { _ in ScoringSlot(capacity: shortlist) }
        let bytesPerCode = codec.bytesPerVector
        let normalize = p.normalizeScores
        try index.prepareClusterReads()
        centroidScores.withUnsafeBufferPointer { sBuf in
            luts.withUnsafeBufferPointer { lBuf in
                missing.withUnsafeBufferPointer { mBuf in
                    let s = sBuf.baseAddress!, l = lBuf.baseAddress!, miss = mBuf.baseAddress!
                    runWorkers(workers) { w in
                        let slot = slots[w]
                        let scratch = scratches[w]
                        var norms = normalize ? NormCache(centroids: K, codec: codec) : NormCache(centroids: 0, codec: codec)
                        do {
                            for i in 0..<nq {
                                let lut = l + i * lutSize
                                for j in 0..<probeCounts[i] {
                                    let c = Int(probeIds[i * nprobe + j])
                                    let base = s[i * K + c]
                                    // Inverse norms of the cluster's tokens follow its chunks in order.
                                    var at = normalize ? try norms.offset(of: c, index: index, centroid: C + c * dim) : 0
                                    try index.forEachClusterChunk(c) { view in
                                        guard view.bytesPerCode == bytesPerCode else {
                                            throw SearchError.invalidParameter("cluster \(c) has \(view.bytesPerCode)-byte codes, the codec expects \(bytesPerCode)")
                                        }
                                        if normalize {
                                            norms.store.withUnsafeBufferPointer { nb in
                                                scratch.score(view, base: base, lut: lut, bytesPerCode: bytesPerCode,
                                                              worker: w, workers: workers, idBound: bound, allowed: allowed,
                                                              inverseNorms: nb.baseAddress! + at)
                                            }
                                            at += view.count
                                        } else {
                                            scratch.score(view, base: base, lut: lut, bytesPerCode: bytesPerCode,
                                                          worker: w, workers: workers, idBound: bound, allowed: allowed, inverseNorms: nil)
                                        }
                                    }
                                }
                                scratch.fold(queryToken: i, missing: miss)
                            }
                        } catch {
                            slot.error = error
                        }
                    }
                }
            }
        }
        for slot in slots { if let e = slot.error { throw e } }
        let t4 = nowSeconds()
        timings.scoring += t4 - t3

        // (4b) Reduction: the imputed tail of each candidate's sum, keeping the shortlist.
        missing.withUnsafeBufferPointer { mBuf in
            let miss = mBuf.baseAddress!
            runWorkers(workers) { w in
                let slot = slots[w]
                scratches[w].finish(queryTokens: nq, missing: miss) { doc, total in
                    if slot.top.admits(total, doc) { slot.top.insert(ScoredDocument(docId: doc, score: total)) }
                }
            }
        }
        var merged = TopK(capacity: shortlist)
        for (w, slot) in slots.enumerated() {
            timings.candidates += scratches[w].candidateCount
            timings.scoredTokens += scratches[w].scored
            for d in slot.top.heap { merged.insert(d) }
        }
        let approximate = merged.sorted()
        let t5 = nowSeconds()
        timings.reduction += t5 - t4

        guard p.rerankDepth > 0, !approximate.isEmpty else {
            timings.total += t5 - start
            return Array(approximate.prefix(k))
        }

        // (5) Exact re-rank of the shortlist from decompressed, normalised tokens.
        let result = try rerank(approximate.map(\.docId), query: packedQuery, index: index, k: k, workers: workers)
        let t6 = nowSeconds()
        timings.rerank += t6 - t5
        timings.total += t6 - start
        return result
    }

    /// The best `keep` of `count` scores in (score desc, index asc) order; returns how many.
    @inline(__always)
    private static func selectTop(_ s: UnsafePointer<Float>, count: Int, keep: Int,
                                  scores: inout [Float], ids: inout [Int32]) -> Int {
        guard keep > 0 else { return 0 }
        precondition(scores.count >= keep && ids.count >= keep)
        return scores.withUnsafeMutableBufferPointer { sb in
            ids.withUnsafeMutableBufferPointer { ib in
                TopScores.select(s, count: count, keep: keep, scores: sb.baseAddress!, ids: ib.baseAddress!)
            }
        }
    }

    /// Exact MaxSim of the given documents, top `k` of them in result order.
    static func rerank<S: IndexSnapshot>(
        _ docs: [UInt32], query: PackedRows, index: S, k: Int, workers: Int
    ) throws -> [ScoredDocument] {
        let slots = (0..<max(1, min(workers, docs.count))).map { _ in
            ExactSlot(dim: index.dim, codec: index.codec, rows: query.rows, queries: 1, k: k)
        }
        try scoreExactly(docs, query: query, offsets: [0, query.rows], index: index, slots: slots)
        return merged(slots, query: 0, k: k)
    }
}

/// One worker's scoring state over the internal id range, reused across queries (allocating and
/// clearing id-sized arrays per query would cost more than scoring on large indexes).
///
/// For the current query token, `best[d]` is document d's best token score over the probed
/// clusters (-inf when none held it); `fold` then adds it to `sum[d]`, first adding the missing
/// similarity of every query token since the document was last seen. Each document's sum is so
/// built in query-token order, one term per token, exactly as `Σ_i (found_i ? best_i : missing_i)`:
/// the same score whatever the number of workers. The row of one token is small and hot, unlike a
/// per-candidate row of all query tokens.
final class ScoringScratch: @unchecked Sendable {
    // @unchecked: a scratch is used by one worker at a time; the pool's lock hands it over.
    let capacity: Int
    private var best: UnsafeMutablePointer<Float>
    private var sum: UnsafeMutablePointer<Float>
    /// Last query token folded into `sum[d]`; -1 when d is not a candidate of this query.
    private var last: UnsafeMutablePointer<Int32>
    /// Documents with a score for the current query token (each at most once: `capacity` slots).
    private var touched: UnsafeMutablePointer<UInt32>
    private var touchedCount = 0
    private var candidates: [UInt32] = []
    private(set) var scored = 0
    /// Candidates of the last finished query.
    private(set) var candidateCount = 0

    private init(capacity: Int) {
        self.capacity = capacity
        best = .allocate(capacity: max(1, capacity))
        best.initialize(repeating: -Float.infinity, count: max(1, capacity))
        sum = .allocate(capacity: max(1, capacity))
        sum.initialize(repeating: 0, count: max(1, capacity))
        last = .allocate(capacity: max(1, capacity))
        last.initialize(repeating: -1, count: max(1, capacity))
        touched = .allocate(capacity: max(1, capacity))
    }

    deinit {
        best.deallocate()
        sum.deallocate()
        last.deallocate()
        touched.deallocate()
    }

    private static let pool = Mutex<[ScoringScratch]>([])

    /// A clean scratch covering ids below `bound`.
    static func take(bound: Int) -> ScoringScratch {
        let reused = pool.withLock { p -> ScoringScratch? in
            guard let i = p.firstIndex(where: { $0.capacity >= bound }) else { return p.popLast() }
            return p.remove(at: i)
        }
        if let reused, reused.capacity >= bound {
            reused.scored = 0
            reused.candidateCount = 0
            return reused
        }
        return ScoringScratch(capacity: max(bound, 1))
    }

    /// Returns a scratch to the pool; it must be clean (`finish` ran, or nothing was scored).
    static func give(_ s: ScoringScratch) {
        s.reset()
        pool.withLock { p in if p.count < 16 { p.append(s) } }
    }

    /// Drops every pooled scratch (tests use it to control which sizes the next search gets).
    static func emptyPool() { pool.withLock { $0.removeAll() } }

    /// Back to the clean state after an interrupted query (an error between fold and finish).
    private func reset() {
        for j in 0..<touchedCount { best[Int(touched[j])] = -Float.infinity }
        touchedCount = 0
        for d in candidates { last[Int(d)] = -1 }
        candidates.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    func score(_ view: ClusterView, base: Float, lut: UnsafePointer<Float>, bytesPerCode: Int,
               worker w: Int, workers: Int, idBound: Int, allowed: DocumentFilter?, inverseNorms: UnsafePointer<Float>?) {
        let bound = capacity
        // Each worker owns a contiguous range of document ids (cut from the index's id bound, the
        // same for every worker; scratches are pooled, so their capacities may differ); a chunk's
        // entries are in document order, so a worker reads only its own part of each chunk.
        var first = 0, end = view.count
        if workers > 1 {
            first = view.firstEntry(atLeast: UInt32(idBound * w / workers))
            if w < workers - 1 { end = view.firstEntry(atLeast: UInt32(idBound * (w + 1) / workers)) }
        }
        let best = self.best, touched = self.touched
        var scored = 0, touchedCount = self.touchedCount
        for t in first..<max(first, end) {
            let doc = view.docId(t)
            let d = Int(doc)
            if d >= bound { continue }
            if let f = allowed, !f.contains(doc) { continue }
            var score = base + LookupTables.sum(lut, view.code(t), bytes: bytesPerCode)
            if let inv = inverseNorms { score *= inv[t] }
            scored += 1
            let old = best[d]
            if old == -Float.infinity {
                touched[touchedCount] = doc
                touchedCount += 1
            }
            if score > old { best[d] = score }
        }
        self.scored += scored
        self.touchedCount = touchedCount
    }

    /// Adds the current query token's best scores to the documents' sums.
    func fold(queryToken i: Int, missing: UnsafePointer<Float>) {
        let best = self.best, sum = self.sum, last = self.last
        for j in 0..<touchedCount {
            let doc = touched[j]
            let d = Int(doc)
            var from = Int(last[d]) + 1
            var total: Float
            if from == 0 {
                candidates.append(doc)
                total = 0
            } else {
                total = sum[d]
            }
            while from < i { total += missing[from]; from += 1 }
            sum[d] = total + best[d]
            best[d] = -Float.infinity
            last[d] = Int32(i)
        }
        touchedCount = 0
    }

    /// Calls `body` with every candidate and its full sum (the missing similarity of the query
    /// tokens after its last fold added), and leaves the scratch clean.
    func finish(queryTokens nq: Int, missing: UnsafePointer<Float>, _ body: (UInt32, Float) -> Void) {
        let sum = self.sum, last = self.last
        candidateCount = candidates.count
        for doc in candidates {
            let d = Int(doc)
            var total = sum[d]
            var from = Int(last[d]) + 1
            while from < nq { total += missing[from]; from += 1 }
            last[d] = -1
            body(doc, total)
        }
        candidates.removeAll(keepingCapacity: true)
    }
}

/// Inverse norms of decompressed tokens, per probed cluster, computed through lookup tables:
/// ‖c + r‖² = ‖c‖² + Σ_d (2 c_d w_d + w_d²), so that `(S[i,c] + Σ LUT_i) / ‖c + r‖` is exactly
/// the cosine with the normalised decompressed token that exhaustive MaxSim scores, without
/// rebuilding vectors. Each cluster is done once per query (per worker), however many query
/// tokens probe it.
struct NormCache {
    let codec: ResidualCodec
    var offsets: [Int]
    var store: [Float] = []
    private var table: [Float]
    private var twice: [Float]
    /// Σ over a byte's dims of w_b², by byte value (the same for every byte position).
    private let squares: [Float]

    init(centroids: Int, codec: ResidualCodec) {
        self.codec = codec
        offsets = [Int](repeating: -1, count: centroids)
        table = centroids > 0 ? [Float](repeating: 0, count: codec.lookupTableSize) : []
        twice = [Float](repeating: 0, count: codec.dim)
        let per = codec.dimsPerByte, nbits = codec.nbits, mask = (1 << nbits) - 1
        squares = (0..<256).map { byte in
            var s: Float = 0
            for j in 0..<per {
                let w = codec.bucketWeights[(byte >> (8 - nbits * (j + 1))) & mask]
                s += w * w
            }
            return s
        }
    }

    /// Offset in `store` of the cluster's per-token inverse norms (its chunks' tokens in order),
    /// computing them on first use.
    mutating func offset<S: IndexSnapshot>(of c: Int, index: S, centroid: UnsafePointer<Float>) throws -> Int {
        if offsets[c] >= 0 { return offsets[c] }
        let off = store.count
        offsets[c] = off
        let dim = codec.dim, bytes = codec.bytesPerVector
        var cc: Float = 0
        for d in 0..<dim {
            cc += centroid[d] * centroid[d]
            twice[d] = 2 * centroid[d]
        }
        let codec = self.codec
        var inverse: [Float] = []
        try twice.withUnsafeBufferPointer { tw in
            try table.withUnsafeMutableBufferPointer { tb in
                LookupTables.fill(codec: codec, query: tw.baseAddress!, table: tb.baseAddress!)
                squares.withUnsafeBufferPointer { sq in
                    for p in 0..<bytes {
                        let row = tb.baseAddress! + p * 256
                        for b in 0..<256 { row[b] += sq[b] }
                    }
                }
                try index.forEachClusterChunk(c) { view in
                    guard view.bytesPerCode == bytes else { return }
                    for t in 0..<view.count {
                        let sq = cc + LookupTables.sum(UnsafePointer(tb.baseAddress!), view.code(t), bytes: bytes)
                        inverse.append(1 / max(max(sq, 0).squareRoot(), 1e-12))
                    }
                }
            }
        }
        store += inverse
        return off
    }
}
