import CKernels
import ColBERTCore
import Synchronization

/// MaxSim search over an `IndexSnapshot`: WARP-style centroid-pruned search that scores each
/// probed cluster's packed residuals once per query (through the query tokens' fast-scan tables
/// where the codec allows), an exact re-rank, and exhaustive MaxSim as ground truth.
///
/// Results are sorted by score descending, ties by internal id ascending, and are bit-identical
/// for every thread count: each document's score is always computed by one worker with the same
/// operation order, whatever the number of workers.
///
/// Missing similarity: WARP's best-unselected centroid score is the default; the last selected
/// one and zero are options. On synthetic data (1.2M tokens, 16K centroids) best-unselected and
/// last-selected gave the same recall within 0.01 at every nprobe, so WARP's rule stays.
///
/// With `threads > 1` the snapshot's `withClusterChunks` is called concurrently from several
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
                          parameters: parameters ?? .defaults(k: k, for: index), allowed: allowed,
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
                           parameters: parameters ?? .defaults(k: k, for: index), allowed: allowed,
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
                                   parameters: parameters ?? .defaults(k: k, for: index), allowed: allowed,
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
        guard p.groupProbes >= 0 else { throw SearchError.invalidParameter("groupProbes must be >= 0 (got \(p.groupProbes))") }
        guard p.rerankDepth >= 0 else { throw SearchError.invalidParameter("rerankDepth must be >= 0 (got \(p.rerankDepth))") }
        if let m = p.rerankMargin, !(m.isFinite && m >= 0) {
            throw SearchError.invalidParameter("rerankMargin must be finite and >= 0")
        }
        if let t = p.centroidScoreThreshold, !t.isFinite {
            throw SearchError.invalidParameter("centroidScoreThreshold must be finite")
        }
        let K = index.centroidCount, dim = index.dim
        guard k > 0, nq > 0, K > 0, index.documentCount > 0, allowed.map({ $0.count > 0 }) ?? true,
              let q = query.baseAddress, let C = index.centroids.baseAddress else { return [] }
        guard index.centroids.count >= K * dim else {
            throw SearchError.invalidParameter("index holds \(index.centroids.count) centroid values, expected \(K * dim)")
        }
        let start = nowSeconds()
        let workers = max(1, threads)
        if workers > 1 { BLAS.setThreadCount(1) }

        // (1) Per query token its best nprobe + 1 centroids (the one after the probes gives the
        // imputed similarity): from every centroid's score, or, where the index groups its
        // centroids, from those of the token's best groups.
        let packedQuery = PackedRows(q, rows: nq, dim: dim)
        let nprobe = min(p.nprobe, K)
        let probed: CentroidShortlist
        if p.groupProbes > 0, let router = index.centroidRouter, router.centroidCount == K, p.groupProbes < router.groupCount {
            probed = .routed(query: q, packed: packedQuery, router: router, groups: p.groupProbes, keep: nprobe + 1,
                             workers: workers, timings: &timings)
        } else {
            probed = .exhaustive(query: packedQuery, rows: q, centroids: C, count: K, keep: nprobe + 1,
                                 quantized: p.quantizedCentroidScores ? index.quantizedCentroids : nil, workers: workers,
                                 timings: &timings)
        }
        let t1 = nowSeconds()

        // (2) The probes (above the threshold) and the imputed similarity for documents none of
        // whose tokens are in them.
        var probeIds = [Int32](repeating: 0, count: nq * nprobe)
        var probeScores = [Float](repeating: 0, count: nq * nprobe)
        var probeCounts = [Int](repeating: 0, count: nq)
        var missing = [Float](repeating: 0, count: nq)
        for i in 0..<nq {
            let n = probed.counts[i], at = i * probed.keep
            var selected = min(n, nprobe)
            if let th = p.centroidScoreThreshold {
                var c = 0
                while c < selected && probed.scores[at + c] >= th { c += 1 }
                selected = c
            }
            for j in 0..<selected {
                probeIds[i * nprobe + j] = probed.ids[at + j]
                probeScores[i * nprobe + j] = probed.scores[at + j]
            }
            probeCounts[i] = selected
            switch p.missingSimilarity {
            case .zero: missing[i] = 0
            case .bestUnselected: missing[i] = n == 0 ? 0 : probed.scores[at + (selected < n ? selected : n - 1)]
            case .lastSelected: missing[i] = n == 0 ? 0 : probed.scores[at + max(0, selected - 1)]
            }
        }
        let t2 = nowSeconds()
        timings.selection += t2 - t1

        // (3) The probes grouped by cluster: each probed cluster is read once per query, for
        // every query token that probes it; and the query tokens' fast-scan tables.
        let fastScan = p.fastScan && !p.normalizeScores ? FastScanTables(query: q, rows: nq, codec: index.codec) : nil
        let plan = ProbePlan(probeIds: probeIds, probeScores: probeScores, probeCounts: probeCounts, nprobe: nprobe,
                             query: q, dim: dim, fastScan: fastScan)
        let t3 = nowSeconds()
        timings.grouping += t3 - t2

        // (4a) Scoring. First, cluster by cluster, the scores of the cluster's tokens against the
        // query tokens that probe it (one decompression per token). Then, query token by query
        // token, the best score per document over the token's probed clusters goes into a dense
        // per-document row that stays cache-resident, and is folded into the document's running
        // sum (see `ScoringScratch`).
        let bound = Int(index.documentIdBound)
        let shortlist = p.rerankDepth > 0 ? max(k, p.rerankDepth) : k
        let scratches = (0..<workers).map { _ in ScoringScratch.take(bound: bound) }
        defer { for sc in scratches { ScoringScratch.give(sc) } }
        let slots = (0..<workers).map { _ in ScoringSlot(capacity: shortlist) }
        let normalize = p.normalizeScores
        try index.prepareClusterReads()
        let idBound = Int(index.documentIdBound), codec = index.codec
        try index.withClusterChunks { table in
            missing.withUnsafeBufferPointer { mBuf in
                let miss = mBuf.baseAddress!
                runWorkers(workers) { w in
                    let scratch = scratches[w]
                    do {
                        try withExtendedLifetime(fastScan) {
                            try scratch.scoreClusters(of: plan, table: table, codec: codec, centroids: C, idBound: idBound,
                                                      worker: w, workers: workers, normalize: normalize)
                        }
                        for i in 0..<nq {
                            for j in 0..<probeCounts[i] {
                                // The next probe's document ids are cold (pass one read only codes).
                                let next = j + 1 < probeCounts[i] ? i * nprobe + j + 1 : (i + 1 < nq && probeCounts[i + 1] > 0 ? (i + 1) * nprobe : -1)
                                if next >= 0 { scratch.prefetchDocumentIds(ofProbe: next, plan: plan) }
                                scratch.takeScores(ofProbe: i * nprobe + j, plan: plan, allowed: allowed)
                            }
                            scratch.fold(queryToken: i, missing: miss)
                        }
                    } catch {
                        slots[w].error = error
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
        let result: [ScoredDocument]
        if let margin = p.rerankMargin {
            result = try rerankUntilSettled(approximate, margin: margin * Float(nq), query: packedQuery,
                                            index: index, k: k, workers: workers, timings: &timings)
        } else {
            result = try rerank(approximate.map(\.docId), query: packedQuery, index: index, k: k, workers: workers)
            timings.reranked += approximate.count
        }
        let t6 = nowSeconds()
        timings.rerank += t6 - t5
        timings.total += t6 - start
        return result
    }

    /// The re-rank of `rerankMargin`: `approximate` (in result order) re-scored block by block
    /// until no later candidate is likely to enter the top `k` (see `SearchParameters.rerankMargin`).
    static func rerankUntilSettled<S: IndexSnapshot>(
        _ approximate: [ScoredDocument], margin: Float, query: PackedRows, index: S, k: Int, workers: Int,
        timings: inout SearchTimings
    ) throws -> [ScoredDocument] {
        var top = TopK(capacity: k)
        // The largest (exact − approximate) among the re-scored candidates.
        var underestimate = -Float.infinity
        var next = 0
        while next < approximate.count {
            let block = approximate[next ..< min(approximate.count, next + SearchParameters.rerankBlock(startingAt: next))]
            let exact = try rerank(block.map(\.docId), query: query, index: index, k: block.count, workers: workers)
            var approximateScore: [UInt32: Float] = [:]
            for d in block { approximateScore[d.docId] = d.score }
            for d in exact {
                top.insert(d)
                if let a = approximateScore[d.docId] { underestimate = max(underestimate, d.score - a) }
            }
            next = block.endIndex
            if next < approximate.count, top.heap.count == k,
               let kth = top.heap.first, kth.score > approximate[next].score + underestimate + margin {
                break
            }
        }
        timings.reranked += next
        return top.sorted()
    }

    /// Exact MaxSim of the given documents, top `k` of them in result order.
    static func rerank<S: IndexSnapshot>(
        _ docs: [UInt32], query: PackedRows, index: S, k: Int, workers: Int
    ) throws -> [ScoredDocument] {
        if MaxSimKernel.canScoreRuns(codec: index.codec, query: query) {
            return try rerankByRuns(docs, query: query, index: index, k: k, workers: workers)
        }
        let slots = (0..<max(1, min(workers, docs.count))).map { _ in
            ExactSlot(dim: index.dim, codec: index.codec, rows: query.rows, queries: 1, k: k)
        }
        try scoreExactly(docs, query: query, offsets: [0, query.rows], index: index, slots: slots)
        return merged(slots, query: 0, k: k)
    }
}

extension MaxSimSearcher {
    /// `rerank` straight from the documents' runs in their clusters: no copy of each document's
    /// codes, and the centroid table read forward. Each worker raises the maxima of its share of
    /// the runs in its own table; the tables are merged by maximum, so the scores equal the
    /// document-by-document ones for any number of workers.
    static func rerankByRuns<S: IndexSnapshot>(
        _ docs: [UInt32], query: PackedRows, index: S, k: Int, workers: Int
    ) throws -> [ScoredDocument] {
        guard let C = index.centroids.baseAddress, !docs.isEmpty, query.rows > 0 else { return [] }
        let stride = (query.rows + 15) / 16 * 16
        let expand = index.codec.expansionTable()
        return try index.withDocumentRuns(docs, workers: workers) { gathered in
            let runs = gathered.runs
            let parts = max(1, min(workers, runs.count / 1024))
            let perPart = docs.count * stride
            // Worker w's maxima are `tables[w * perPart ..< (w + 1) * perPart]`.
            let tables = UnsafeMutablePointer<Float>.allocate(capacity: parts * perPart)
            tables.initialize(repeating: -.infinity, count: parts * perPart)
            defer { tables.deallocate() }
            expand.withUnsafeBufferPointer { e in
                runWorkers(parts) { w in
                    let share = UnsafeBufferPointer(rebasing: runs[runs.count * w / parts ..< runs.count * (w + 1) / parts])
                    MaxSimKernel.maxSimOfRuns(query, runs: share, codec: index.codec, centroids: C,
                                              expansion: e.baseAddress!, rowMax: tables + w * perPart, stride: stride)
                }
            }
            for w in 1..<parts {
                for i in 0..<perPart { tables[i] = max(tables[i], tables[w * perPart + i]) }
            }
            var top = TopK(capacity: k)
            for (j, count) in gathered.tokenCounts.enumerated() {
                guard let count, count > 0 else { continue }
                var total: Float = 0
                for r in 0..<query.rows { total += tables[j * stride + r] }
                top.insert(ScoredDocument(docId: docs[j], score: total))
            }
            return top.sorted()
        }
    }
}

/// A query's probes grouped by cluster, so that each probed cluster is scored once for all the
/// query tokens that probe it.
struct ProbePlan {
    /// The distinct probed clusters, ascending.
    private(set) var clusters: [Int32] = []
    /// Probes of `clusters[u]`: `groupStart[u] ..< groupStart[u + 1]` of `queryRows`.
    private(set) var groupStart: [Int] = [0]
    /// Per probe in group order, its query token's vector (ascending token within a group) and
    /// that token's score with the cluster's centroid.
    private(set) var queryRows: [UnsafePointer<Float>?] = []
    private(set) var bases: [Float] = []
    /// With fast-scan: per probe in group order, its query token's table and step (`bases` then
    /// include the table's offset); empty otherwise.
    private(set) var tables: [UnsafePointer<UInt8>?] = []
    private(set) var scales: [Float] = []
    /// A plan without probes scores nothing, so it needs no flag of its own.
    var usesFastScan: Bool { !tables.isEmpty }
    /// Per probe `i * nprobe + j` (query token i's j-th cluster): its group and its place there.
    private(set) var probeGroup: [Int32]
    private(set) var probeRank: [Int32]

    var clusterCount: Int { clusters.count }

    /// `query` and `fastScan` must outlive the plan's use: `queryRows` and `tables` point into them.
    /// `probeScores` holds each probe's centroid score, as `probeIds` its centroid.
    init(probeIds: [Int32], probeScores: [Float], probeCounts: [Int], nprobe: Int, query: UnsafePointer<Float>, dim: Int,
         fastScan: FastScanTables? = nil) {
        probeGroup = [Int32](repeating: -1, count: probeIds.count)
        probeRank = [Int32](repeating: 0, count: probeIds.count)
        var keys: [UInt64] = []
        keys.reserveCapacity(probeIds.count)
        for (i, n) in probeCounts.enumerated() {
            for j in 0..<n { keys.append(UInt64(UInt32(bitPattern: probeIds[i * nprobe + j])) << 32 | UInt64(i * nprobe + j)) }
        }
        Self.sortByCluster(&keys)
        queryRows.reserveCapacity(keys.count)
        bases.reserveCapacity(keys.count)
        for key in keys {
            let c = Int32(bitPattern: UInt32(key >> 32)), probe = Int(key & 0xFFFF_FFFF)
            if clusters.last != c {
                if !clusters.isEmpty { groupStart.append(queryRows.count) }
                clusters.append(c)
            }
            probeGroup[probe] = Int32(clusters.count - 1)
            probeRank[probe] = Int32(queryRows.count - groupStart[groupStart.count - 1])
            let i = probe / nprobe
            queryRows.append(query + i * dim)
            let centroidScore = probeScores[probe]
            if let fastScan {
                tables.append(fastScan.table(i))
                scales.append(fastScan.scales[i])
                bases.append(centroidScore + fastScan.offsets[i])
            } else {
                bases.append(centroidScore)
            }
        }
        groupStart.append(queryRows.count)
    }
}

extension ProbePlan {
    /// Sorts `keys` (cluster << 32 | probe, appended in ascending probe order) ascending: a
    /// stable radix sort on the cluster's bytes, which leaves each cluster's probes in the order
    /// they came, i.e. ascending. A comparison sort of the ~1,400 keys of a 32-token query at 44
    /// probes cost 0.06 ms.
    static func sortByCluster(_ keys: inout [UInt64]) {
        guard keys.count > 1, let top = keys.max().map({ $0 >> 32 }) else { return }
        var spare = [UInt64](repeating: 0, count: keys.count)
        var shift: UInt64 = 32
        while shift < 64 && top >> (shift - 32) > 0 {
            var counts = [Int](repeating: 0, count: 257)
            for k in keys { counts[Int((k >> shift) & 0xFF) + 1] += 1 }
            for d in 0..<256 { counts[d + 1] += counts[d] }
            for k in keys {
                let d = Int((k >> shift) & 0xFF)
                spare[counts[d]] = k
                counts[d] += 1
            }
            swap(&keys, &spare)
            shift += 8
        }
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
    /// Documents with a score for the current query token (each at most once, in `capacity` of
    /// its `capacity + 1` slots).
    private var touched: UnsafeMutablePointer<UInt32>
    private var touchedCount = 0
    private var candidates: [UInt32] = []
    /// This query's cluster scores (`scoreClusters`), and where each probed cluster's scores
    /// begin (`ProbePlan` group order).
    private var scores = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var scoreCapacity = 1
    /// Per probed cluster (`ProbePlan` group order), its parts' entries in `parts`:
    /// `partStart[u] ..< partStart[u + 1]`. Pass two reads a cluster's parts from here: the
    /// chunk table's entries, read in pass one, are cold again by then.
    private var partStart: [Int] = []
    private var parts: [ScoredPart] = []

    /// This worker's entries of one cluster chunk and where their scores begin in `scores` (the
    /// scores of the group's probe of rank r start `r * count` further).
    struct ScoredPart {
        let docOffsets: UnsafePointer<UInt8>
        let docBase: UInt32
        let count: Int32
        let scoresAt: Int
    }
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
        // One slot more than there are documents: `take` stores before it knows whether to count.
        touched = .allocate(capacity: max(1, capacity) + 1)
    }

    deinit {
        best.deallocate()
        sum.deallocate()
        last.deallocate()
        touched.deallocate()
        scores.deallocate()
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

    /// The entries of `view` that `worker` scores. Each worker owns a contiguous range of
    /// document ids (cut from the index's id bound, the same for every worker; scratches are
    /// pooled, so their capacities may differ); a chunk's entries are in document order, so a
    /// worker reads only its own part of each chunk.
    @inline(__always)
    static func share(of view: ClusterView, worker w: Int, workers: Int, idBound: Int) -> Range<Int> {
        guard workers > 1 else { return 0..<view.count }
        let first = view.firstEntry(atLeast: UInt32(idBound * w / workers))
        let end = w < workers - 1 ? view.firstEntry(atLeast: UInt32(idBound * (w + 1) / workers)) : view.count
        return first..<max(first, end)
    }

    /// Pass one of a query's scoring: for every cluster of `plan`, the scores of this worker's
    /// entries against the query tokens that probe it, each token decompressed once
    /// (`MaxSimKernel.clusterScores`) or looked up in the query tokens' fast-scan tables
    /// (`MaxSimKernel.fastScanScores`), stored cluster after cluster, chunk after chunk.
    func scoreClusters(of plan: ProbePlan, table: ClusterChunkTable, codec: ResidualCodec, centroids: UnsafePointer<Float>,
                       idBound: Int, worker w: Int, workers: Int, normalize: Bool) throws {
        let dim = codec.dim, bytesPerCode = codec.bytesPerVector
        var cursor = 0
        partStart.removeAll(keepingCapacity: true)
        parts.removeAll(keepingCapacity: true)
        let fastScan = plan.usesFastScan
        // The table's entries of the probed clusters are cold (the centroid stage streamed
        // megabytes through the caches since the last query) and each cluster's lookup depends on
        // the one before: asked for all at once, their misses overlap.
        if let first = table.first.baseAddress, let chunks = table.chunks.baseAddress {
            for c in plan.clusters { ck_prefetch(first + Int(c)) }
            for c in plan.clusters { ck_prefetch(chunks + table.chunkRange(Int(c)).lowerBound) }
        }
        try plan.queryRows.withUnsafeBufferPointer { rows in
            try plan.bases.withUnsafeBufferPointer { bases in
                try plan.tables.withUnsafeBufferPointer { tables in
                    try plan.scales.withUnsafeBufferPointer { scales in
                        try codec.bucketWeights.withUnsafeBufferPointer { weights in
                            for u in 0..<plan.clusterCount {
                                let c = Int(plan.clusters[u])
                                let group = plan.groupStart[u], m = plan.groupStart[u + 1] - group
                                partStart.append(parts.count)
                                // The next cluster's first codes, which the kernel would otherwise start on cold.
                                if u + 1 < plan.clusterCount {
                                    for j in table.chunkRange(Int(plan.clusters[u + 1])) {
                                        let view = table.chunks[j]
                                        view.prefetchCodes(Self.share(of: view, worker: w, workers: workers, idBound: idBound))
                                    }
                                }
                                for j in table.chunkRange(c) {
                                    let view = table.chunks[j]
                                    guard view.bytesPerCode == bytesPerCode else {
                                        throw SearchError.invalidParameter("cluster \(c) has \(view.bytesPerCode)-byte codes, the codec expects \(bytesPerCode)")
                                    }
                                    let part = Self.share(of: view, worker: w, workers: workers, idBound: idBound)
                                    guard !part.isEmpty else { continue }
                                    reserveScores(cursor + m * part.count, keeping: cursor)
                                    parts.append(ScoredPart(docOffsets: view.docOffsets.assumingMemoryBound(to: UInt8.self) + 2 * part.lowerBound,
                                                            docBase: view.docBase, count: Int32(part.count), scoresAt: cursor))
                                    if fastScan {
                                        MaxSimKernel.fastScanScores(codes: view.code(part.lowerBound), codec: codec, count: part.count,
                                                                    tables: tables.baseAddress! + group, scales: scales.baseAddress! + group,
                                                                    bases: bases.baseAddress! + group, queryCount: m,
                                                                    into: scores + cursor, ldo: part.count)
                                    } else {
                                        MaxSimKernel.clusterScores(codes: view.code(part.lowerBound), codec: codec, count: part.count,
                                                                   weights: weights.baseAddress!, centroid: centroids + c * dim,
                                                                   queries: rows.baseAddress! + group, bases: bases.baseAddress! + group,
                                                                   queryCount: m, normalize: normalize, into: scores + cursor, ldo: part.count)
                                    }
                                    cursor += m * part.count
                                }
                            }
                        }
                    }
                }
            }
        }
        partStart.append(parts.count)
    }

    /// Pass two, for one probe (query token i's j-th cluster, `i * nprobe + j`): takes its scores
    /// of this worker's entries into the documents' best scores for the current query token.
    func takeScores(ofProbe probe: Int, plan: ProbePlan, allowed: DocumentFilter?) {
        let u = Int(plan.probeGroup[probe]), rank = Int(plan.probeRank[probe])
        parts.withUnsafeBufferPointer { p in
            for x in partStart[u] ..< partStart[u + 1] {
                let part = p[x]
                take(part, scores: scores + part.scoresAt + rank * Int(part.count), allowed: allowed)
            }
        }
    }

    /// Asks for the cache lines of a probe's document ids (this worker's entries), ahead of its
    /// `takeScores`.
    func prefetchDocumentIds(ofProbe probe: Int, plan: ProbePlan) {
        let u = Int(plan.probeGroup[probe])
        parts.withUnsafeBufferPointer { p in
            for x in partStart[u] ..< partStart[u + 1] {
                var o = 0
                let end = 2 * Int(p[x].count)
                while o < end { ck_prefetch(p[x].docOffsets + o); o += 64 }
            }
        }
    }

    /// Grows the score store to `count` floats, keeping the first `used`.
    private func reserveScores(_ count: Int, keeping used: Int) {
        guard count > scoreCapacity else { return }
        let grown = max(count, scoreCapacity * 2, 1 << 14)
        let fresh = UnsafeMutablePointer<Float>.allocate(capacity: grown)
        fresh.update(from: scores, count: used)
        scores.deallocate()
        scores = fresh
        scoreCapacity = grown
    }

    /// Takes the current query token's scores of `part` (`scores[t]` for its entry t) into the
    /// documents' best scores (`ck_take_best`, in C: Swift's loop compiled the test for a new
    /// document to a branch, mispredicted on about every other entry).
    @inline(__always)
    private func take(_ part: ScoredPart, scores s: UnsafePointer<Float>, allowed: DocumentFilter?) {
        var taken = 0
        let bound = UInt32(clamping: capacity)
        if let allowed {
            touchedCount = allowed.words.withUnsafeBufferPointer { w in
                ck_take_best(part.docOffsets, part.docBase, Int(part.count), s, bound, 1, w.baseAddress, w.count, best, touched,
                             touchedCount, &taken)
            }
        } else {
            touchedCount = ck_take_best(part.docOffsets, part.docBase, Int(part.count), s, bound, 0, nil, 0, best, touched,
                                        touchedCount, &taken)
        }
        scored += taken
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
