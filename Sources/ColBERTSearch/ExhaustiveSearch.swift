import ColBERTCore

extension MaxSimSearcher {
    /// Exact MaxSim of the query against every live document (decompressed and normalised):
    /// the ground truth. Documents are gathered in blocks of ids and decompressed one at a time
    /// per worker, never all at once; documents without tokens are skipped.
    public static func exhaustive<S: IndexSnapshot>(
        query: UnsafeBufferPointer<Float>, queryTokens: Int, in index: S, k: Int,
        allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> [ScoredDocument] {
        try validate(query: query, queryTokens: queryTokens, index: index, k: k)
        let q = Array(query)
        return try exhaustiveStacked(q, rowsPerQuery: [queryTokens], index: index, k: k,
                                     allowed: allowed, threads: threads)[0]
    }

    public static func exhaustive<S: IndexSnapshot>(
        query: TokenEmbeddings, in index: S, k: Int, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> [ScoredDocument] {
        guard query.dim == index.dim else { throw SearchError.dimensionMismatch(query: query.dim, index: index.dim) }
        return try query.vectors.withUnsafeBufferPointer {
            try exhaustive(query: $0, queryTokens: query.count, in: index, k: k, allowed: allowed, threads: threads)
        }
    }

    /// Exhaustive MaxSim for many queries: each document is decompressed once per group of
    /// queries and scored against all of them in one GEMM.
    public static func exhaustiveBatch<S: IndexSnapshot>(
        queries: [TokenEmbeddings], in index: S, k: Int, allowed: DocumentFilter? = nil, threads: Int = 1
    ) throws -> [[ScoredDocument]] {
        var out: [[ScoredDocument]] = []
        out.reserveCapacity(queries.count)
        // Groups of at most ~4K query rows bound the per-worker score scratch.
        var group: [TokenEmbeddings] = []
        var rows = 0
        func flush() throws {
            guard !group.isEmpty else { return }
            var stacked: [Float] = []
            stacked.reserveCapacity(rows * index.dim)
            for g in group { stacked.append(contentsOf: g.vectors) }
            out += try exhaustiveStacked(stacked, rowsPerQuery: group.map(\.count), index: index, k: k,
                                         allowed: allowed, threads: threads)
            group = []
            rows = 0
        }
        for qe in queries {
            guard qe.dim == index.dim else { throw SearchError.dimensionMismatch(query: qe.dim, index: index.dim) }
            try qe.vectors.withUnsafeBufferPointer {
                try validate(query: $0, queryTokens: qe.count, index: index, k: k)
            }
            if rows + qe.count > 4096 { try flush() }
            group.append(qe)
            rows += qe.count
        }
        try flush()
        return out
    }

    /// One worker's exact scorer and per-query shortlists (exhaustive search and re-rank).
    final class ExactSlot {
        let scorer: ExactScorer
        var rowMax: [Float]
        var tops: [TopK]
        init(dim: Int, codec: ResidualCodec, rows: Int, queries: Int, k: Int) {
            scorer = ExactScorer(dim: dim, codec: codec)
            rowMax = [Float](repeating: 0, count: max(rows, 1))
            tops = (0..<queries).map { _ in TopK(capacity: k) }
        }

        func score(_ id: UInt32, _ view: DocumentView, q: PackedRows, offsets: [Int], centroids: UnsafePointer<Float>) {
            let ok = rowMax.withUnsafeMutableBufferPointer {
                scorer.rowMaxima(query: q, document: view, centroids: centroids, rowMax: $0.baseAddress!)
            }
            guard ok else { return }
            for qi in 0..<tops.count {
                var total: Float = 0
                for r in offsets[qi]..<offsets[qi + 1] { total += rowMax[r] }
                tops[qi].insert(ScoredDocument(docId: id, score: total))
            }
        }
    }

    static func exhaustiveStacked<S: IndexSnapshot>(
        _ stacked: [Float], rowsPerQuery: [Int], index: S, k: Int, allowed: DocumentFilter?, threads: Int
    ) throws -> [[ScoredDocument]] {
        let nQueries = rowsPerQuery.count
        var offsets = [0]
        for r in rowsPerQuery { offsets.append(offsets[offsets.count - 1] + r) }
        let rows = offsets[nQueries]
        guard k > 0, rows > 0, index.documentCount > 0, index.centroids.baseAddress != nil else {
            return [[ScoredDocument]](repeating: [], count: nQueries)
        }
        let workers = max(1, threads)
        if workers > 1 { BLAS.setThreadCount(1) }
        let slots = (0..<workers).map { _ in
            ExactSlot(dim: index.dim, codec: index.codec, rows: rows, queries: nQueries, k: k)
        }
        // Blocks of ids, so that a block's tokens are gathered at once but never the whole index.
        let bound = Int(index.documentIdBound)
        let block = 512
        let q = PackedRows(stacked, rows: rows, dim: index.dim)
        var start = 0
        while start < bound {
            var ids: [UInt32] = []
            ids.reserveCapacity(block)
            for id in start..<min(bound, start + block) where allowed?.contains(UInt32(id)) ?? true { ids.append(UInt32(id)) }
            start += block
            guard !ids.isEmpty else { continue }
            try scoreExactly(ids, query: q, offsets: offsets, index: index, slots: slots)
        }
        return (0..<nQueries).map { merged(slots, query: $0, k: k) }
    }

    /// Exact MaxSim of the documents `ids` (gathered together, on this thread) against the
    /// stacked queries, each document scored by one worker (`slots[w]`): the same scores for
    /// any number of workers.
    static func scoreExactly<S: IndexSnapshot>(_ ids: [UInt32], query q: PackedRows, offsets: [Int],
                                               index: S, slots: [ExactSlot]) throws {
        guard let C = index.centroids.baseAddress else { return }
        let workers = slots.count
        try index.withDocuments(ids, workers: workers) { views in
            runWorkers(workers) { w in
                let slot = slots[w]
                var j = w
                while j < ids.count {
                    if let view = views[j] { slot.score(ids[j], view, q: q, offsets: offsets, centroids: C) }
                    j += workers
                }
            }
        }
    }

    /// The best `k` of every slot's shortlist for query `qi`, in result order.
    static func merged(_ slots: [ExactSlot], query qi: Int, k: Int) -> [ScoredDocument] {
        var merged = TopK(capacity: k)
        for slot in slots { for d in slot.tops[qi].heap { merged.insert(d) } }
        return merged.sorted()
    }
}
