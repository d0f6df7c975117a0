import ColBERTCore
import Foundation

/// A consistent read-only view of the index, backed by one LMDB read transaction. Valid only
/// inside the `withSnapshot` closure that provided it; views point into the memory map.
/// Not Sendable: an LMDB transaction must not be used by two threads at once (open one snapshot
/// per thread instead; read transactions are cheap).
public struct IndexReadSnapshot: IndexSnapshot {
    let index: ColBERTIndex
    let txn: LMDBTransaction
    let counters: Counters

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

    /// Calls `body` with the cluster's tokens, sorted by document id. A cluster stored as one chunk
    /// (always so after a build) is read in place; several chunks (left by later adds) are joined
    /// into a temporary buffer.
    public func withCluster<R>(_ centroid: Int, _ body: (ClusterView) throws -> R) throws -> R {
        let bpc = index.codec.bytesPerVector
        guard centroid >= 0, centroid < index.centroidCount else {
            return try withUnsafeTemporaryAllocation(byteCount: 1, alignment: 1) { p in
                try body(ClusterView(count: 0, docIds: UnsafeRawPointer(p.baseAddress!), codes: UnsafeRawPointer(p.baseAddress!), bytesPerCode: bpc))
            }
        }
        var chunks: [UnsafeRawBufferPointer] = []
        let prefix = Keys.u32(UInt32(centroid))
        try txn.scan(index.clusters, from: Keys.u32u64(UInt32(centroid), 0)) { k, v in
            guard k.count == 12, k[0] == prefix[0], k[1] == prefix[1], k[2] == prefix[2], k[3] == prefix[3] else { return false }
            guard v.count >= 4 else { throw IndexError.corrupt("cluster \(centroid) chunk is truncated") }
            chunks.append(v)
            return true
        }
        if chunks.count == 1 {
            let v = chunks[0]
            let n = Int(Schema.u32LE(v, 0))
            guard v.count == 4 + n * (4 + bpc) else { throw IndexError.corrupt("cluster \(centroid) chunk has a bad size") }
            return try body(ClusterView(count: n, docIds: v.baseAddress! + 4, codes: v.baseAddress! + 4 + 4 * n, bytesPerCode: bpc))
        }
        var total = 0
        for v in chunks {
            let n = Int(Schema.u32LE(v, 0))
            guard v.count == 4 + n * (4 + bpc) else { throw IndexError.corrupt("cluster \(centroid) chunk has a bad size") }
            total += n
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, total * (4 + bpc)), alignment: 16)
        defer { buffer.deallocate() }
        var at = 0
        for v in chunks {
            let n = Int(Schema.u32LE(v, 0))
            (buffer + 4 * at).copyMemory(from: v.baseAddress! + 4, byteCount: 4 * n)
            (buffer + 4 * total + bpc * at).copyMemory(from: v.baseAddress! + 4 + 4 * n, byteCount: bpc * n)
            at += n
        }
        return try body(ClusterView(count: total, docIds: UnsafeRawPointer(buffer), codes: UnsafeRawPointer(buffer + 4 * total), bytesPerCode: bpc))
    }

    /// Number of stored chunks of a cluster (1 means it is read in place).
    public func chunkCount(ofCluster centroid: Int) throws -> Int {
        var n = 0
        let prefix = Keys.u32(UInt32(centroid))
        try txn.scan(index.clusters, from: Keys.u32u64(UInt32(centroid), 0)) { k, _ in
            guard k.count == 12, k[0] == prefix[0], k[1] == prefix[1], k[2] == prefix[2], k[3] == prefix[3] else { return false }
            n += 1
            return true
        }
        return n
    }

    static func documentView(_ v: UnsafeRawBufferPointer, bpc: Int, id: UInt32) throws -> DocumentView {
        guard v.count >= 4 else { throw IndexError.corrupt("document record \(id) is truncated") }
        let n = Int(Schema.u32LE(v, 0))
        guard v.count == 4 + n * (4 + bpc) else { throw IndexError.corrupt("document record \(id) has a bad size") }
        return DocumentView(count: n, centroidIds: v.baseAddress! + 4, codes: v.baseAddress! + 4 + 4 * n, bytesPerCode: bpc)
    }

    public func withDocument<R>(_ docId: UInt32, _ body: (DocumentView?) throws -> R) throws -> R {
        guard let v = try txn.get(index.docs, key: Keys.u32(docId)) else { return try body(nil) }
        return try body(try Self.documentView(v, bpc: index.codec.bytesPerVector, id: docId))
    }

    public func forEachDocument(_ body: (UInt32, DocumentView) throws -> Void) throws {
        let bpc = index.codec.bytesPerVector
        try txn.scan(index.docs) { k, v in
            guard k.count == 4 else { throw IndexError.corrupt("bad document key") }
            let id = Keys.readU32(k)
            try body(id, try Self.documentView(v, bpc: bpc, id: id))
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
