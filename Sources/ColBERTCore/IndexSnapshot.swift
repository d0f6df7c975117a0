/// One cluster's tokens as stored cluster-major: `count` internal document ids (UInt32, little
/// endian, possibly unaligned) followed by `count` packed residual codes of `bytesPerCode` bytes.
/// Pointers are valid only inside the closure that received the view.
public struct ClusterView {
    public let count: Int
    public let docIds: UnsafeRawPointer
    public let codes: UnsafeRawPointer
    public let bytesPerCode: Int

    public init(count: Int, docIds: UnsafeRawPointer, codes: UnsafeRawPointer, bytesPerCode: Int) {
        self.count = count
        self.docIds = docIds
        self.codes = codes
        self.bytesPerCode = bytesPerCode
    }

    @inlinable public func docId(_ i: Int) -> UInt32 {
        UInt32(littleEndian: docIds.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
    }
    @inlinable public func code(_ i: Int) -> UnsafeRawPointer { codes + i * bytesPerCode }
}

/// One document's tokens as stored document-major: per token its centroid id (UInt32 little
/// endian, possibly unaligned) and packed residual code.
public struct DocumentView {
    public let count: Int
    public let centroidIds: UnsafeRawPointer
    public let codes: UnsafeRawPointer
    public let bytesPerCode: Int

    public init(count: Int, centroidIds: UnsafeRawPointer, codes: UnsafeRawPointer, bytesPerCode: Int) {
        self.count = count
        self.centroidIds = centroidIds
        self.codes = codes
        self.bytesPerCode = bytesPerCode
    }

    @inlinable public func centroidId(_ i: Int) -> UInt32 {
        UInt32(littleEndian: centroidIds.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
    }
    @inlinable public func code(_ i: Int) -> UnsafeRawPointer { codes + i * bytesPerCode }
}

/// Read access to one consistent snapshot of a compressed token index. Search is written against
/// this protocol; the LMDB index provides it from a read transaction, tests from memory.
public protocol IndexSnapshot {
    var dim: Int { get }
    var codec: ResidualCodec { get }
    /// Number of centroids K.
    var centroidCount: Int { get }
    /// Row-major `K × dim` centroids; valid for the snapshot's lifetime.
    var centroids: UnsafeBufferPointer<Float> { get }
    /// Live documents.
    var documentCount: Int { get }
    /// Exclusive upper bound of internal document ids ever assigned (ids may have gaps).
    var documentIdBound: UInt32 { get }

    /// Calls `body` with the cluster's tokens (count 0 for an empty cluster).
    func withCluster<R>(_ centroid: Int, _ body: (ClusterView) throws -> R) throws -> R
    /// Calls `body` with the document's tokens, or nil when the id is not live.
    func withDocument<R>(_ docId: UInt32, _ body: (DocumentView?) throws -> R) throws -> R
    /// Visits every live document in increasing internal id order.
    func forEachDocument(_ body: (UInt32, DocumentView) throws -> Void) throws
}
