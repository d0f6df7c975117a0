import CKernels
import ColBERTCore
import Foundation
import Synchronization

/// Where every cluster chunk of one snapshot lies in the memory map, so that searches and
/// document reads reach a cluster without a B-tree lookup. Built by one scan of the cluster
/// database and shared by all snapshots of the same transaction id and map generation: the pages
/// of a committed transaction do not move while any reader can see it (each user of this
/// directory holds such a reader), and the map itself only moves when this process remaps it.
final class ClusterDirectory: @unchecked Sendable {
    // @unchecked: immutable after init; the pointers are only dereferenced under a read
    // transaction of `transactionId`.
    let transactionId: Int
    let mapGeneration: Int
    let table: Int
    /// Chunks of cluster c are `chunks[first[c] ..< first[c + 1]]`; `lastDocs[j]` is the last
    /// document id of chunk j (kept here so that finding a document's chunk reads no chunk).
    let first: [Int]
    let chunks: [ClusterView]
    let lastDocs: [UInt32]

    init(txn: LMDBTransaction, database: LMDBDatabase, table: Int, mapGeneration: Int, centroids: Int, bytesPerCode: Int) throws {
        transactionId = txn.id
        self.mapGeneration = mapGeneration
        self.table = table
        var first = [Int](repeating: 0, count: centroids + 1)
        var chunks: [ClusterView] = []
        var lastDocs: [UInt32] = []
        var previous = -1
        var lastDoc: UInt32 = 0
        try txn.scan(database) { k, v in
            guard k.count == 8 else { throw IndexError.corrupt("cluster key of \(k.count) bytes") }
            let c = Int(Keys.readU32(k))
            guard c < centroids else { throw IndexError.corrupt("chunk of centroid \(c) out of range") }
            guard let view = ClusterChunkLayout.view(v, bytesPerCode: bytesPerCode), view.count > 0 else {
                throw IndexError.corrupt("cluster \(c) chunk has a bad size")
            }
            if c == previous, view.docId(0) < lastDoc {
                throw IndexError.corrupt("cluster \(c): chunks out of document order")
            }
            while previous < c { previous += 1; first[previous] = chunks.count }
            chunks.append(view)
            lastDoc = view.docId(view.count - 1)
            lastDocs.append(lastDoc)
            return true
        }
        while previous < centroids { previous += 1; first[previous] = chunks.count }
        self.first = first
        self.chunks = chunks
        self.lastDocs = lastDocs
    }

    /// Appends where the tokens of `doc` in cluster `c` lie (one run per chunk holding any)
    /// and returns how many there are.
    @inline(__always)
    func locate(doc: UInt32, cluster c: Int, position k: Int32, into runs: inout [ck_token_run]) -> Int {
        let lo = first[c], hi = first[c + 1]
        // First chunk whose last id is >= doc, then forward while chunks start at or below it.
        var a = lo, b = hi
        while a < b {
            let m = (a + b) / 2
            if lastDocs[m] < doc { a = m + 1 } else { b = m }
        }
        var found = 0
        var j = a
        while j < hi, chunks[j].docBase <= doc {
            let v = chunks[j]
            let r = v.entries(of: doc)
            if !r.isEmpty {
                runs.append(ck_token_run(codes: v.code(r.lowerBound).assumingMemoryBound(to: UInt8.self), count: Int32(r.count),
                                         owner: k, centroid: UInt32(c)))
                found += r.count
            }
            j += 1
        }
        return found
    }

    /// Asks for `c`'s first chunk descriptor and last id, ahead of `prefetch(cluster:)`, which
    /// reads the descriptor (a 700 KB array on SciFact: its loads stalled).
    @inline(__always)
    func prefetchDescriptor(cluster c: Int) {
        let j = first[c]
        chunks.withUnsafeBufferPointer { if let b = $0.baseAddress { ck_prefetch(b + j) } }
        lastDocs.withUnsafeBufferPointer { if let b = $0.baseAddress { ck_prefetch(b + j) } }
    }

    /// Asks for the lines of `c`'s first chunk's id offsets (up to four) ahead of a `locate`.
    @inline(__always)
    func prefetch(cluster c: Int) {
        let j = first[c]
        guard j < first[c + 1] else { return }
        let v = chunks[j]
        var o = 0
        while o < min(2 * v.count, 256) { ck_prefetch(v.docOffsets + o); o += 64 }
    }
}

/// One gathering worker's runs, and per requested document how many tokens it found and where
/// its runs of that document start in the output.
final class GatherShare: @unchecked Sendable {
    // @unchecked: each share is written by one worker at a time; the hand-overs between the
    // locate pass, the start offsets and the copy pass are separated by the pool's barriers.
    var runs: [ck_token_run] = []
    var located: [Int] = []
    var start: [Int] = []
}

/// The gathered buffer; workers write disjoint token ranges of it.
struct GatherOutput: @unchecked Sendable {
    let buffer: UnsafeMutableRawPointer
    let codes: UnsafeMutableRawPointer
}

/// What `locateRuns` found: per share its runs in centroid order, and per document where its
/// tokens start in a gathered buffer and whether it is live.
struct LocatedRuns {
    let shares: [GatherShare]
    let tokenStart: [Int]
    let live: [Bool]
}

/// A code copy without a library call: codes are a few dozen bytes, copied once per token.
@inline(__always)
func copyCode(from src: UnsafeRawPointer, to dst: UnsafeMutableRawPointer, bytes: Int) {
    var o = 0
    while o + 8 <= bytes {
        dst.storeBytes(of: src.loadUnaligned(fromByteOffset: o, as: UInt64.self), toByteOffset: o, as: UInt64.self)
        o += 8
    }
    while o < bytes {
        dst.storeBytes(of: src.load(fromByteOffset: o, as: UInt8.self), toByteOffset: o, as: UInt8.self)
        o += 1
    }
}

/// The directory a snapshot has fetched, shared by the threads that read the snapshot.
final class DirectoryBox: Sendable {
    let directory = Mutex<ClusterDirectory?>(nil)
}

/// A consistent read-only view of the index, backed by one LMDB read transaction. Valid only
/// inside the `withSnapshot` closure that provided it; views point into the memory map.
/// Cluster reads go through the chunk directory (built once per transaction, on the thread
/// that calls `prepareClusterReads`), document reads gather a document's tokens from its
/// clusters. Searches read clusters from several threads; only batched searches also read
/// document records from several threads (see `ColBERTIndex.withSnapshot`).
public struct IndexReadSnapshot: IndexSnapshot {
    let index: ColBERTIndex
    let txn: LMDBTransaction
    let counters: Counters
    private let directoryBox = DirectoryBox()

    init(index: ColBERTIndex, txn: LMDBTransaction, counters: Counters) {
        self.index = index
        self.txn = txn
        self.counters = counters
    }

    public var dim: Int { index.dim }
    public var codec: ResidualCodec { index.codec }
    public var centroidCount: Int { index.centroidCount }
    public var centroids: UnsafeBufferPointer<Float> { index.centroids }
    public var centroidRouter: CentroidRouter? { index.centroidRouter }
    public var quantizedCentroids: QuantizedCentroids? { index.quantizedCentroids }
    public var documentCount: Int { counters.documents }
    public var documentIdBound: UInt32 { counters.nextDocId }
    /// Live token count.
    public var tokenCount: Int { counters.tokens }

    /// This snapshot's chunk directory: the index's cached one when it belongs to the same
    /// transaction, else built now (and cached for the snapshots that follow).
    func directory() throws -> ClusterDirectory {
        try directoryBox.directory.withLock { mine in
            if let mine { return mine }
            let id = txn.id, generation = index.env.mapGeneration, table = counters.clusterTable
            let built = try index.directoryCache.withLock { cached -> ClusterDirectory in
                if let d = cached, d.transactionId == id, d.mapGeneration == generation, d.table == table { return d }
                let d = try ClusterDirectory(txn: txn, database: try index.clusters(counters), table: table, mapGeneration: generation,
                                             centroids: index.centroidCount, bytesPerCode: index.codec.bytesPerVector)
                cached = d
                return d
            }
            mine = built
            return built
        }
    }

    /// Builds (or fetches) the chunk directory here, so that search workers only read it.
    public func prepareClusterReads() throws { _ = try directory() }

    public func withClusterChunks<R>(_ body: (ClusterChunkTable) throws -> R) throws -> R {
        let d = try directory()
        return try d.first.withUnsafeBufferPointer { f in
            try d.chunks.withUnsafeBufferPointer { try body(ClusterChunkTable(first: f, chunks: $0)) }
        }
    }

    /// Number of stored chunks of a cluster.
    public func chunkCount(ofCluster centroid: Int) throws -> Int {
        guard centroid >= 0, centroid < index.centroidCount else { return 0 }
        let d = try directory()
        return d.first[centroid + 1] - d.first[centroid]
    }

    public func withDocument<R>(_ docId: UInt32, _ body: (DocumentView?) throws -> R) throws -> R {
        try withDocuments([docId]) { try body($0[0]) }
    }

    public func withDocuments<R>(_ docIds: [UInt32], _ body: ([DocumentView?]) throws -> R) throws -> R {
        try withDocuments(docIds, workers: 1, body)
    }

    /// Gathers all the documents in one pass over their clusters in centroid order, so that the
    /// reads sweep the cluster database forward instead of jumping between clusters per document.
    /// With several workers, each locates and copies the runs of its own share of the
    /// (centroid, document) pairs; a document's tokens still come out in centroid order.
    public func withDocuments<R>(_ docIds: [UInt32], workers: Int, _ body: ([DocumentView?]) throws -> R) throws -> R {
        let bpc = index.codec.bytesPerVector
        let located = try locateRuns(docIds, workers: workers)
        let shares = located.shares, tokenStart = located.tokenStart
        let total = tokenStart[docIds.count]
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, total * (4 + bpc)), alignment: 16)
        defer { buffer.deallocate() }
        let codes = buffer + 4 * total
        // Each share writes its runs of document k from where the previous shares' end.
        var cursor = tokenStart
        for share in shares {
            share.start = cursor
            for k in docIds.indices { cursor[k] += share.located[k] }
        }
        let out = GatherOutput(buffer: buffer, codes: codes)
        let copy: @Sendable (Int) -> Void = { w in
            let share = shares[w]
            let runs = share.runs
            var filled = share.start
            let copyAhead = 16
            for (i, run) in runs.enumerated() {
                if i + copyAhead < runs.count { ck_prefetch(runs[i + copyAhead].codes) }
                let k = Int(run.owner), n = Int(run.count)
                var at = filled[k]
                for t in 0..<n {
                    out.buffer.storeBytes(of: run.centroid.littleEndian, toByteOffset: 4 * at, as: UInt32.self)
                    copyCode(from: run.codes + t * bpc, to: out.codes + bpc * at, bytes: bpc)
                    at += 1
                }
                filled[k] = at
            }
        }
        if shares.count == 1 { copy(0) } else { DispatchQueue.concurrentPerform(iterations: shares.count, execute: copy) }
        var views: [DocumentView?] = []
        views.reserveCapacity(docIds.count)
        for k in docIds.indices {
            guard located.live[k] else { views.append(nil); continue }
            let s = tokenStart[k], n = tokenStart[k + 1] - s
            views.append(DocumentView(count: n, centroidIds: UnsafeRawPointer(buffer + 4 * s), codes: UnsafeRawPointer(codes + bpc * s), bytesPerCode: bpc))
        }
        return try body(views)
    }

    /// The documents' runs straight from their clusters, in centroid order, without copying codes.
    public func withDocumentRuns<R>(_ docIds: [UInt32], workers: Int, _ body: (DocumentTokenRuns) throws -> R) throws -> R {
        let located = try locateRuns(docIds, workers: workers)
        let counts: [Int?] = docIds.indices.map { located.live[$0] ? located.tokenStart[$0 + 1] - located.tokenStart[$0] : nil }
        let runs = located.shares.count == 1 ? located.shares[0].runs : located.shares.flatMap(\.runs)
        return try runs.withUnsafeBufferPointer { try body(DocumentTokenRuns(runs: $0, tokenCounts: counts)) }
    }

    /// Where every token of the documents lies: each document's record gives its centroids; the
    /// (centroid, document) pairs, sorted by centroid, are located in their clusters in shares
    /// of up to `workers` threads. Throws when a record and its clusters disagree.
    private func locateRuns(_ docIds: [UInt32], workers: Int) throws -> LocatedRuns {
        let d = try directory()
        var tokenStart = [Int](repeating: 0, count: docIds.count + 1)
        var live = [Bool](repeating: false, count: docIds.count)
        var centroidIds: [UInt32] = []
        // (centroid, position in docIds) for every distinct centroid of every document, bucketed
        // by centroid (a counting sort: the pairs are many, the centroids a fixed range).
        let K = index.centroidCount
        var pairCentroid: [UInt32] = []
        var pairDoc: [Int32] = []
        var bucketStart = [Int32](repeating: 0, count: K + 1)
        for (k, id) in docIds.enumerated() {
            var n = 0
            if let v = try txn.get(index.docs, key: Keys.u32(id)) {
                guard let count = Schema.decodeDocument(v, centroids: &centroidIds) else { throw IndexError.corrupt("document record \(id) is malformed") }
                for c in centroidIds {
                    guard Int(c) < K else { throw IndexError.corrupt("document \(id): centroid \(c) out of range") }
                    pairCentroid.append(c)
                    pairDoc.append(Int32(k))
                    bucketStart[Int(c) + 1] += 1
                }
                n = count
                live[k] = true
            }
            tokenStart[k + 1] = tokenStart[k] + n
        }
        for c in 0..<K { bucketStart[c + 1] += bucketStart[c] }
        var sortedDoc = [Int32](repeating: 0, count: pairDoc.count)
        var sortedCentroid = [UInt32](repeating: 0, count: pairDoc.count)
        var fill = bucketStart
        for (c, k) in zip(pairCentroid, pairDoc) {
            let at = Int(fill[Int(c)])
            sortedDoc[at] = k
            sortedCentroid[at] = c
            fill[Int(c)] += 1
        }
        // Memory latency overlaps: each pair's cluster is prefetched a few pairs ahead.
        let pairs = sortedDoc.count
        let parts = max(1, min(workers, pairs / 1024))
        let shares = (0..<parts).map { _ in GatherShare() }
        let orderedDocs = sortedDoc, orderedCentroids = sortedCentroid
        let locate: @Sendable (Int) -> Void = { w in
            let p0 = pairs * w / parts, p1 = pairs * (w + 1) / parts
            var runs: [ck_token_run] = []
            runs.reserveCapacity((p1 - p0) + (p1 - p0) / 4)
            var located = [Int](repeating: 0, count: docIds.count)
            let ahead = 8, farther = 20
            for p in p0..<p1 {
                if p + farther < p1 { d.prefetchDescriptor(cluster: Int(orderedCentroids[p + farther])) }
                if p + ahead < p1 { d.prefetch(cluster: Int(orderedCentroids[p + ahead])) }
                let k = Int(orderedDocs[p])
                located[k] += d.locate(doc: docIds[k], cluster: Int(orderedCentroids[p]), position: Int32(k), into: &runs)
            }
            shares[w].runs = runs
            shares[w].located = located
        }
        if parts == 1 { locate(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: locate) }
        var found = [Int](repeating: 0, count: docIds.count)
        for share in shares { for k in docIds.indices { found[k] += share.located[k] } }
        for k in docIds.indices where found[k] != tokenStart[k + 1] - tokenStart[k] {
            throw IndexError.corrupt("document \(docIds[k]): its record has \(tokenStart[k + 1] - tokenStart[k]) tokens, its clusters \(found[k])")
        }
        return LocatedRuns(shares: shares, tokenStart: tokenStart, live: live)
    }

    /// Tokens come grouped by centroid (ascending), as `withDocuments` gathers them; MaxSim
    /// does not depend on their order.
    public func forEachDocument(_ body: (UInt32, DocumentView) throws -> Void) throws {
        var ids: [UInt32] = []
        try txn.scan(index.docs) { k, _ in
            guard k.count == 4 else { throw IndexError.corrupt("bad document key") }
            ids.append(Keys.readU32(k))
            return true
        }
        var start = 0
        while start < ids.count {
            let block = Array(ids[start..<min(ids.count, start + 512)])
            start += block.count
            try withDocuments(block) { views in
                for (id, view) in zip(block, views) {
                    guard let view else { throw IndexError.corrupt("document \(id) vanished from its snapshot") }
                    try body(id, view)
                }
            }
        }
    }

    /// External id of a live internal id.
    public func externalId(of internalId: UInt32) throws -> String? {
        guard let v = try txn.get(index.int2ext, key: Keys.u32(internalId)) else { return nil }
        return String(decoding: v, as: UTF8.self)
    }

    /// Internal id of an external id, if the document is live.
    public func internalId(of externalId: String) throws -> UInt32? {
        guard let v = try txn.get(index.ext2int, key: Schema.externalKey(externalId)), v.count >= 4 else { return nil }
        guard String(decoding: UnsafeRawBufferPointer(rebasing: v[4...]), as: UTF8.self) == externalId else { return nil }
        return Schema.u32LE(v, 0)
    }

    /// Stored id, title, text and metadata of a live internal id.
    public func document(_ internalId: UInt32) throws -> StoredDocument? {
        guard let id = try externalId(of: internalId) else { return nil }
        guard let v = try txn.get(index.stored, key: Keys.u32(internalId)) else {
            return StoredDocument(id: id, title: nil, text: nil, metadataJSON: nil)
        }
        return Schema.decodeStored(v, id: id)
    }
}
