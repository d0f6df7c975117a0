import ColBERTCore
import Foundation
import Synchronization

/// Where every cluster chunk of one snapshot lies in the memory map, so that searches and
/// document reads reach a cluster without a B-tree lookup. Built by one scan of the cluster
/// database and shared by all snapshots of the same transaction id and map address: the pages
/// of a committed transaction do not move while any reader can see it, and each user of this
/// directory holds such a reader.
final class ClusterDirectory: @unchecked Sendable {
    // @unchecked: immutable after init; the pointers are only dereferenced under a read
    // transaction of `transactionId`.
    let transactionId: Int
    let mapAddress: UInt
    let table: Int
    /// Chunks of cluster c are `chunks[first[c] ..< first[c + 1]]`; `lastDocs[j]` is the last
    /// document id of chunk j (kept here so that finding a document's chunk reads no chunk).
    let first: [Int]
    let chunks: [ClusterView]
    let lastDocs: [UInt32]

    init(txn: LMDBTransaction, database: LMDBDatabase, table: Int, mapAddress: UInt, centroids: Int, bytesPerCode: Int) throws {
        transactionId = txn.id
        self.mapAddress = mapAddress
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

    /// Copies the tokens of `doc` in cluster `c` to `out` (centroid ids) and `codes`, from
    /// `at` on, without writing at or past `limit`; returns the new `at`, or nil past `limit`.
    @inline(__always)
    func gather(doc: UInt32, cluster c: Int, into out: UnsafeMutableRawPointer, codes: UnsafeMutableRawPointer,
                at start: Int, limit: Int, bytesPerCode bpc: Int) -> Int? {
        let lo = first[c], hi = first[c + 1]
        // First chunk whose last id is >= doc, then forward while chunks start at or below it.
        var a = lo, b = hi
        while a < b {
            let m = (a + b) / 2
            if lastDocs[m] < doc { a = m + 1 } else { b = m }
        }
        var at = start
        var j = a
        while j < hi, chunks[j].docBase <= doc {
            let v = chunks[j]
            for i in v.entries(of: doc) {
                guard at < limit else { return nil }
                out.storeBytes(of: UInt32(c).littleEndian, toByteOffset: 4 * at, as: UInt32.self)
                (codes + bpc * at).copyMemory(from: v.code(i), byteCount: bpc)
                at += 1
            }
            j += 1
        }
        return at
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
    public var documentCount: Int { counters.documents }
    public var documentIdBound: UInt32 { counters.nextDocId }
    /// Live token count.
    public var tokenCount: Int { counters.tokens }

    /// This snapshot's chunk directory: the index's cached one when it belongs to the same
    /// transaction, else built now (and cached for the snapshots that follow).
    func directory() throws -> ClusterDirectory {
        try directoryBox.directory.withLock { mine in
            if let mine { return mine }
            let id = txn.id, address = index.env.mapAddress, table = counters.clusterTable
            let built = try index.directoryCache.withLock { cached -> ClusterDirectory in
                if let d = cached, d.transactionId == id, d.mapAddress == address, d.table == table { return d }
                let d = try ClusterDirectory(txn: txn, database: try index.clusters(counters), table: table, mapAddress: address,
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

    public func forEachClusterChunk(_ centroid: Int, _ body: (ClusterView) throws -> Void) throws {
        guard centroid >= 0, centroid < index.centroidCount else { return }
        let d = try directory()
        for j in d.first[centroid]..<d.first[centroid + 1] { try body(d.chunks[j]) }
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

    /// Gathers all the documents in one pass over their clusters in centroid order, so that the
    /// reads sweep the cluster database forward instead of jumping between clusters per document.
    public func withDocuments<R>(_ docIds: [UInt32], _ body: ([DocumentView?]) throws -> R) throws -> R {
        let bpc = index.codec.bytesPerVector
        let d = try directory()
        var tokenStart = [Int](repeating: 0, count: docIds.count + 1)
        var live = [Bool](repeating: false, count: docIds.count)
        // (centroid << 32 | position in docIds) for every distinct centroid of every document.
        var pairs: [UInt64] = []
        for (k, id) in docIds.enumerated() {
            var n = 0
            if let v = try txn.get(index.docs, key: Keys.u32(id)) {
                guard let (count, centroidIds) = Schema.decodeDocument(v) else { throw IndexError.corrupt("document record \(id) is malformed") }
                for c in centroidIds {
                    guard Int(c) < index.centroidCount else { throw IndexError.corrupt("document \(id): centroid \(c) out of range") }
                    pairs.append(UInt64(c) << 32 | UInt64(k))
                }
                n = count
                live[k] = true
            }
            tokenStart[k + 1] = tokenStart[k] + n
        }
        pairs.sort()
        let total = tokenStart[docIds.count]
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, total * (4 + bpc)), alignment: 16)
        defer { buffer.deallocate() }
        let codes = buffer + 4 * total
        var filled = tokenStart
        for pair in pairs {
            let c = Int(pair >> 32), k = Int(pair & 0xFFFF_FFFF)
            guard let next = d.gather(doc: docIds[k], cluster: c, into: buffer, codes: codes, at: filled[k],
                                      limit: tokenStart[k + 1], bytesPerCode: bpc) else {
                throw IndexError.corrupt("document \(docIds[k]): clusters hold more than its \(tokenStart[k + 1] - tokenStart[k]) tokens")
            }
            filled[k] = next
        }
        var views: [DocumentView?] = []
        views.reserveCapacity(docIds.count)
        for k in docIds.indices {
            guard live[k] else { views.append(nil); continue }
            guard filled[k] == tokenStart[k + 1] else {
                throw IndexError.corrupt("document \(docIds[k]): its record has \(tokenStart[k + 1] - tokenStart[k]) tokens, its clusters \(filled[k] - tokenStart[k])")
            }
            let s = tokenStart[k], n = tokenStart[k + 1] - s
            views.append(DocumentView(count: n, centroidIds: UnsafeRawPointer(buffer + 4 * s), codes: UnsafeRawPointer(codes + bpc * s), bytesPerCode: bpc))
        }
        return try body(views)
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
