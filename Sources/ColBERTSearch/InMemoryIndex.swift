import ColBERTCore

/// An `IndexSnapshot` held in memory, built from raw token vectors with given centroids and
/// codec: for tests and synthetic benchmarks. Immutable after construction, so safe to share
/// across threads and to read concurrently.
public final class InMemoryIndex: IndexSnapshot, @unchecked Sendable {
    public let dim: Int
    public let codec: ResidualCodec
    public let centroidCount: Int
    public let documentCount: Int
    public let documentIdBound: UInt32
    public let centroidRouter: CentroidRouter?
    public let quantizedCentroids: QuantizedCentroids?

    private let centroidStorage: UnsafeMutableBufferPointer<Float>
    // Cluster-major, in the stored chunk layout: chunks of cluster c are chunkViews[chunkFirst[c]
    // ..< chunkFirst[c + 1]], each pointing into chunkBytes.
    private let chunkFirst: [Int]
    private let chunkViews: [ClusterView]
    private let chunkBytes: UnsafeMutableRawBufferPointer
    // Document-major: tokens of the document in row `docRow[id]` at docOffsets[row] ..< +1.
    private let docRow: [Int32]
    private let docOffsets: [Int]
    private let docCentroids: UnsafeMutableRawBufferPointer
    private let docCodes: UnsafeMutableRawBufferPointer
    private let liveIds: [UInt32]

    public enum BuildError: Error, Equatable, CustomStringConvertible {
        case shape(String)
        public var description: String {
            switch self { case .shape(let m): return "cannot build in-memory index: \(m)" }
        }
    }

    public var centroids: UnsafeBufferPointer<Float> { UnsafeBufferPointer(centroidStorage) }

    /// Builds the index. `vectors` is row-major `Σ documentLengths × dim` (documents in order),
    /// `centroids` row-major `K × dim`; each token goes to its nearest centroid by dot product.
    /// `documentIds` (unique) defaults to 0, 1, 2, ...; gaps model deleted documents.
    /// `assignments` (one centroid per token) skips the nearest-centroid search when known.
    public init(vectors: [Float], documentLengths: [Int], centroids: [Float], codec: ResidualCodec,
                documentIds: [UInt32]? = nil, assignments: [Int32]? = nil, router: CentroidRouter? = nil) throws {
        let dim = codec.dim
        guard dim > 0, centroids.count % dim == 0, !centroids.isEmpty else {
            throw BuildError.shape("centroids must be a non-empty K x \(dim) matrix")
        }
        guard documentLengths.allSatisfy({ $0 >= 0 }) else { throw BuildError.shape("negative document length") }
        let totalTokens = documentLengths.reduce(0, +)
        guard vectors.count == totalTokens * dim else {
            throw BuildError.shape("\(vectors.count) values for \(totalTokens) tokens of \(dim) dims")
        }
        guard vectors.allSatisfy({ $0.isFinite }), centroids.allSatisfy({ $0.isFinite }) else {
            throw BuildError.shape("non-finite value")
        }
        let ids = documentIds ?? (0..<documentLengths.count).map { UInt32($0) }
        guard ids.count == documentLengths.count else {
            throw BuildError.shape("\(ids.count) document ids for \(documentLengths.count) documents")
        }
        guard Set(ids).count == ids.count else { throw BuildError.shape("duplicate document ids") }
        guard ids.allSatisfy({ $0 < UInt32.max }) else { throw BuildError.shape("document id too large") }

        if let router, router.centroidCount * dim != centroids.count || router.dim != dim {
            throw BuildError.shape("the router groups \(router.centroidCount) centroids of \(router.dim) dims")
        }
        centroidRouter = router
        self.dim = dim
        self.codec = codec
        let K = centroids.count / dim
        self.centroidCount = K
        self.documentCount = ids.count
        self.documentIdBound = (ids.max() ?? 0) + (ids.isEmpty ? 0 : 1)

        let centroidStorage = UnsafeMutableBufferPointer<Float>.allocate(capacity: centroids.count)
        _ = centroidStorage.initialize(from: centroids)
        self.centroidStorage = centroidStorage
        quantizedCentroids = QuantizedCentroids(centroids: UnsafeBufferPointer(centroidStorage), dim: dim)

        if let a = assignments {
            guard a.count == totalTokens, a.allSatisfy({ $0 >= 0 && Int($0) < K }) else {
                throw BuildError.shape("assignments must give a centroid in 0..<\(K) for each of \(totalTokens) tokens")
            }
        }
        // Assign tokens to centroids in blocks: one GEMM + argmax per block.
        var assignment = assignments ?? [Int32](repeating: 0, count: totalTokens)
        let block = 1024
        var scores = [Float](repeating: 0, count: assignments == nil ? block * K : 0)
        vectors.withUnsafeBufferPointer { v in
            centroids.withUnsafeBufferPointer { c in
                scores.withUnsafeMutableBufferPointer { s in
                    var start = assignments == nil ? 0 : totalTokens
                    while start < totalTokens {
                        let m = min(block, totalTokens - start)
                        BLAS.sgemm(transB: true, m: m, n: K, k: dim, a: v.baseAddress! + start * dim, lda: dim,
                                   b: c.baseAddress!, ldb: dim, c: s.baseAddress!, ldc: K)
                        for r in 0..<m {
                            let row = s.baseAddress! + r * K
                            var bestC = 0
                            for j in 1..<K where row[j] > row[bestC] { bestC = j }
                            assignment[start + r] = Int32(bestC)
                        }
                        start += m
                    }
                }
            }
        }

        // Encode every token once, document-major in input order.
        let bpc = codec.bytesPerVector
        let codes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, totalTokens * bpc), alignment: 8)
        vectors.withUnsafeBufferPointer { v in
            for t in 0..<totalTokens {
                codec.encode(vector: v.baseAddress! + t * dim,
                             centroid: UnsafePointer(centroidStorage.baseAddress! + Int(assignment[t]) * dim),
                             into: codes.baseAddress!.assumingMemoryBound(to: UInt8.self) + t * bpc)
            }
        }

        var tokenStart = [Int](repeating: 0, count: ids.count + 1)
        for (i, n) in documentLengths.enumerated() { tokenStart[i + 1] = tokenStart[i] + n }

        // Documents in increasing id order (forEachDocument's contract and cluster order).
        let order = ids.indices.sorted { ids[$0] < ids[$1] }
        self.liveIds = order.map { ids[$0] }
        var docRow = [Int32](repeating: -1, count: Int(documentIdBound))
        var docOffsets = [0]
        let docCentroids = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, totalTokens * 4), alignment: 4)
        let docCodes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, totalTokens * bpc), alignment: 8)
        self.docCentroids = docCentroids
        self.docCodes = docCodes
        var clusterCounts = [Int](repeating: 0, count: K)
        var pos = 0
        for (row, i) in order.enumerated() {
            docRow[Int(ids[i])] = Int32(row)
            for t in tokenStart[i]..<tokenStart[i + 1] {
                docCentroids.storeBytes(of: UInt32(assignment[t]).littleEndian, toByteOffset: pos * 4, as: UInt32.self)
                (docCodes.baseAddress! + pos * bpc).copyMemory(from: codes.baseAddress! + t * bpc, byteCount: bpc)
                clusterCounts[Int(assignment[t])] += 1
                pos += 1
            }
            docOffsets.append(pos)
        }
        self.docRow = docRow
        self.docOffsets = docOffsets

        var clusterOffsets = [Int](repeating: 0, count: K + 1)
        for c in 0..<K { clusterOffsets[c + 1] = clusterOffsets[c] + clusterCounts[c] }
        // Tokens grouped by cluster, each group in document id order.
        var entryDoc = [UInt32](repeating: 0, count: totalTokens)
        var entryToken = [Int](repeating: 0, count: totalTokens)
        var fill = Array(clusterOffsets.dropLast())
        for (row, i) in order.enumerated() {
            for t in docOffsets[row]..<docOffsets[row + 1] {
                let c = Int(docCentroids.load(fromByteOffset: t * 4, as: UInt32.self))
                entryDoc[fill[c]] = ids[i]
                entryToken[fill[c]] = t
                fill[c] += 1
            }
        }
        var chunkFirst = [0], chunkStart = [0]
        var plans: [[Int]] = []
        for c in 0..<K {
            let lo = clusterOffsets[c]
            let plan = ClusterChunkLayout.plan(count: clusterCounts[c], bytesPerCode: bpc) { entryDoc[lo + $0] }
            for n in plan { chunkStart.append(chunkStart[chunkStart.count - 1] + ClusterChunkLayout.byteCount(count: n, bytesPerCode: bpc)) }
            chunkFirst.append(chunkFirst[c] + plan.count)
            plans.append(plan)
        }
        let chunkBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, chunkStart[chunkStart.count - 1]), alignment: 8)
        var chunk = 0
        var chunkViews: [ClusterView] = []
        chunkViews.reserveCapacity(chunkStart.count - 1)
        for c in 0..<K {
            var at = clusterOffsets[c]
            for n in plans[c] {
                let from = at
                ClusterChunkLayout.write(into: chunkBytes.baseAddress! + chunkStart[chunk], count: n, bytesPerCode: bpc,
                                         docId: { entryDoc[from + $0] },
                                         code: { UnsafeRawPointer(docCodes.baseAddress! + entryToken[from + $0] * bpc) })
                let bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(chunkBytes)[chunkStart[chunk]..<chunkStart[chunk + 1]])
                // The chunk was just written in this layout; a failure here is a bug in the layout.
                guard let view = ClusterChunkLayout.view(bytes, bytesPerCode: bpc) else {
                    preconditionFailure("cluster \(c): a chunk of \(n) entries does not read back")
                }
                chunkViews.append(view)
                at += n
                chunk += 1
            }
        }
        self.chunkFirst = chunkFirst
        self.chunkViews = chunkViews
        self.chunkBytes = chunkBytes
        codes.deallocate()
    }

    deinit {
        centroidStorage.deallocate()
        chunkBytes.deallocate()
        docCentroids.deallocate()
        docCodes.deallocate()
    }

    /// Number of tokens stored.
    public var tokenCount: Int { docOffsets.last ?? 0 }

    public func withClusterChunks<R>(_ body: (ClusterChunkTable) throws -> R) throws -> R {
        try chunkFirst.withUnsafeBufferPointer { f in
            try chunkViews.withUnsafeBufferPointer { try body(ClusterChunkTable(first: f, chunks: $0)) }
        }
    }

    public func withDocument<R>(_ docId: UInt32, _ body: (DocumentView?) throws -> R) throws -> R {
        try body(view(of: docId))
    }

    public func withDocuments<R>(_ docIds: [UInt32], _ body: ([DocumentView?]) throws -> R) throws -> R {
        try body(docIds.map(view(of:)))
    }

    private func view(of id: UInt32) -> DocumentView? {
        guard Int(id) < docRow.count, docRow[Int(id)] >= 0 else { return nil }
        return view(row: Int(docRow[Int(id)]))
    }

    public func forEachDocument(_ body: (UInt32, DocumentView) throws -> Void) throws {
        for (row, id) in liveIds.enumerated() { try body(id, view(row: row)) }
    }

    private func view(row: Int) -> DocumentView {
        let a = docOffsets[row], b = docOffsets[row + 1]
        let bpc = codec.bytesPerVector
        return DocumentView(count: b - a, centroidIds: UnsafeRawPointer(docCentroids.baseAddress! + a * 4),
                            codes: UnsafeRawPointer(docCodes.baseAddress! + a * bpc), bytesPerCode: bpc)
    }
}
