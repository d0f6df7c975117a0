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
    /// Chunks of cluster c are `chunks[first[c] ..< first[c + 1]]`.
    let first: [Int]
    let chunks: [ClusterView]

    init(txn: LMDBTransaction, database: LMDBDatabase, table: Int, mapAddress: UInt, centroids: Int, bytesPerCode: Int) throws {
        transactionId = txn.id
        self.mapAddress = mapAddress
        self.table = table
        var first = [Int](repeating: 0, count: centroids + 1)
        var chunks: [ClusterView] = []
        var previous = -1
        var lastDoc: UInt32 = 0
        try txn.scan(database) { k, v in
            guard k.count == 12 else { throw IndexError.corrupt("cluster key of \(k.count) bytes") }
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
            return true
        }
        while previous < centroids { previous += 1; first[previous] = chunks.count }
        self.first = first
        self.chunks = chunks
    }
}

/// The directory a snapshot has fetched, shared by the threads that read the snapshot.
final class DirectoryBox: Sendable {
    let directory = Mutex<ClusterDirectory?>(nil)
}

/// A consistent read-only view of the index, backed by one LMDB read transaction. Valid only
/// inside the `withSnapshot` closure that provided it; views point into the memory map.
/// Cluster reads go through the chunk directory, document reads gather a document's tokens
/// from its clusters; both may run on several threads at once (searches do).
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

    /// Gathers the document's tokens from the clusters its record names (binary search by id in
    /// each) into a temporary document-major view. Tokens come grouped by centroid, not in
    /// document order; MaxSim does not depend on the order.
    private func gather<R>(_ docId: UInt32, record: UnsafeRawBufferPointer, _ body: (DocumentView) throws -> R) throws -> R {
        guard let (n, centroidIds) = Schema.decodeDocument(record) else { throw IndexError.corrupt("document record \(docId) is malformed") }
        let bpc = index.codec.bytesPerVector
        let d = try directory()
        return try withUnsafeTemporaryAllocation(byteCount: max(1, n * (4 + bpc)), alignment: 16) { buf in
            let out = buf.baseAddress!
            var at = 0
            for c in centroidIds {
                guard Int(c) < index.centroidCount else { throw IndexError.corrupt("document \(docId): centroid \(c) out of range") }
                let lo = d.first[Int(c)], hi = d.first[Int(c) + 1]
                // First chunk whose last id is >= docId, then forward while chunks start at or below it.
                var a = lo, b = hi
                while a < b {
                    let m = (a + b) / 2
                    let v = d.chunks[m]
                    if v.docId(v.count - 1) < docId { a = m + 1 } else { b = m }
                }
                var j = a
                while j < hi, d.chunks[j].docBase <= docId {
                    let v = d.chunks[j]
                    for i in v.entries(of: docId) {
                        guard at < n else { throw IndexError.corrupt("document \(docId): clusters hold more than its \(n) tokens") }
                        out.storeBytes(of: c.littleEndian, toByteOffset: 4 * at, as: UInt32.self)
                        (out + 4 * n + bpc * at).copyMemory(from: v.code(i), byteCount: bpc)
                        at += 1
                    }
                    j += 1
                }
            }
            guard at == n else { throw IndexError.corrupt("document \(docId): its record has \(n) tokens, its clusters \(at)") }
            return try body(DocumentView(count: n, centroidIds: UnsafeRawPointer(out), codes: UnsafeRawPointer(out + 4 * n), bytesPerCode: bpc))
        }
    }

    public func withDocument<R>(_ docId: UInt32, _ body: (DocumentView?) throws -> R) throws -> R {
        guard let v = try txn.get(index.docs, key: Keys.u32(docId)) else { return try body(nil) }
        return try gather(docId, record: v) { try body($0) }
    }

    public func forEachDocument(_ body: (UInt32, DocumentView) throws -> Void) throws {
        try txn.scan(index.docs) { k, v in
            guard k.count == 4 else { throw IndexError.corrupt("bad document key") }
            let id = Keys.readU32(k)
            try gather(id, record: v) { try body(id, $0) }
            return true
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
