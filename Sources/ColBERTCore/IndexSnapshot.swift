import CKernels
/// A run of one cluster's tokens as stored cluster-major (a chunk): `count` document ids, each
/// `docBase` plus a UInt16 little-endian offset (ascending, possibly unaligned), then `count`
/// packed residual codes of `bytesPerCode` bytes. Pointers are valid only inside the closure that
/// received the view.
public struct ClusterView {
    public let count: Int
    public let docBase: UInt32
    public let docOffsets: UnsafeRawPointer
    public let codes: UnsafeRawPointer
    public let bytesPerCode: Int

    public init(count: Int, docBase: UInt32, docOffsets: UnsafeRawPointer, codes: UnsafeRawPointer, bytesPerCode: Int) {
        self.count = count
        self.docBase = docBase
        self.docOffsets = docOffsets
        self.codes = codes
        self.bytesPerCode = bytesPerCode
    }

    @inlinable public func docId(_ i: Int) -> UInt32 {
        docBase &+ UInt32(UInt16(littleEndian: docOffsets.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
    }
    @inlinable public func code(_ i: Int) -> UnsafeRawPointer { codes + i * bytesPerCode }

    /// Asks for the first lines of the codes of `entries` (up to 16 codes), ahead of scoring them.
    @inlinable public func prefetchCodes(_ entries: Range<Int>) {
        var o = entries.lowerBound * bytesPerCode
        let end = min(entries.upperBound, entries.lowerBound + 16) * bytesPerCode
        while o < end { ck_prefetch(codes + o); o += 64 }
    }

    @inlinable func offset(_ i: Int) -> UInt16 {
        UInt16(littleEndian: docOffsets.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
    }

    /// Index of the first entry whose document id is at least `doc` (`count` when none is), by
    /// binary search: entries are in document order.
    @inlinable
    public func firstEntry(atLeast doc: UInt32) -> Int {
        guard count > 0, doc > docBase else { return 0 }
        guard doc - docBase <= UInt32(UInt16.max) else { return count }
        return ck_lower_bound_u16(docOffsets.assumingMemoryBound(to: UInt8.self), count, doc - docBase)
    }

    /// Entries of `doc`: the range `lo..<hi` (empty when absent), by binary search.
    @inlinable
    public func entries(of doc: UInt32) -> Range<Int> {
        guard count > 0, doc >= docBase, doc - docBase <= UInt32(UInt16.max) else { return 0..<0 }
        let target = UInt16(doc - docBase)
        let lo = firstEntry(atLeast: doc)
        var end = lo
        while end < count && offset(end) == target { end += 1 }
        return lo..<end
    }
}

/// The stored form of a cluster chunk and how a cluster's sorted tokens are cut into chunks.
///
/// Record: docBase UInt32 LE, then count UInt16 LE doc-id offsets and count codes (the count
/// follows from the record's size).
/// Chunks are cut so that LMDB stores them without waste: a value of at most
/// `inlineValueBytes` stays in a leaf page (two fit one page), a larger one takes whole 4 KiB
/// overflow pages (less a 16-byte header), so big chunks are sized to fill their pages.
public enum ClusterChunkLayout {
    public static let headerBytes = 4
    /// Largest value LMDB 0.9 keeps inline next to an 8-byte key on a 4 KiB page (its node
    /// limit, 2,038 bytes, less the 8-byte node header and the key).
    public static let inlineValueBytes = 2022
    static let pageBytes = 4096, overflowHeaderBytes = 16, maxPages = 8
    /// Doc ids of one chunk lie within `docBase ... docBase + maxSpan`.
    public static let maxSpan = UInt32(UInt16.max)

    public static func byteCount(count: Int, bytesPerCode: Int) -> Int {
        headerBytes + count * (2 + bytesPerCode)
    }

    /// The chunk stored in `value`, or nil when its size does not match its header.
    public static func view(_ value: UnsafeRawBufferPointer, bytesPerCode: Int) -> ClusterView? {
        guard value.count >= headerBytes, let p = value.baseAddress else { return nil }
        let entry = 2 + bytesPerCode
        guard (value.count - headerBytes) % entry == 0 else { return nil }
        let n = (value.count - headerBytes) / entry
        let base = UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))
        return ClusterView(count: n, docBase: base, docOffsets: p + headerBytes,
                           codes: p + headerBytes + 2 * n, bytesPerCode: bytesPerCode)
    }

    /// Writes a chunk of `count` entries into `out` (`byteCount` bytes); `docId` must ascend and
    /// span at most `maxSpan`.
    public static func write(into out: UnsafeMutableRawPointer, count: Int, bytesPerCode: Int,
                             docId: (Int) -> UInt32, code: (Int) -> UnsafeRawPointer) {
        let base = count > 0 ? docId(0) : 0
        out.storeBytes(of: base.littleEndian, as: UInt32.self)
        let codes = out + headerBytes + 2 * count
        for i in 0..<count {
            let offset = docId(i) &- base
            precondition(offset <= maxSpan, "chunk doc ids span more than \(maxSpan)")
            out.storeBytes(of: UInt16(offset).littleEndian, toByteOffset: headerBytes + 2 * i, as: UInt16.self)
            (codes + i * bytesPerCode).copyMemory(from: code(i), byteCount: bytesPerCode)
        }
    }

    /// Where the next appended node lands: the free bytes of the last leaf page. Appending in
    /// key order (MDB_APPEND), LMDB puts a node that does not fit into a fresh page and leaves
    /// the full one as it is, so a writer that tracks this can cut chunks to fill each page.
    public struct LeafPacking: Sendable {
        static let pageRoom = pageBytes - 16
        public private(set) var free = pageRoom
        public init() {}

        /// Leaf bytes of a node with an 8-byte key: header, key, value (or an overflow page
        /// number) and its 2-byte index slot, rounded to even.
        static func nodeBytes(value: Int) -> Int {
            let size = 8 + 8 + (value > inlineValueBytes ? 8 : value) + 2
            return (size + 1) & ~1
        }

        mutating func place(value: Int) {
            let n = Self.nodeBytes(value: value)
            if n > free { free = Self.pageRoom }
            free -= n
        }
    }

    /// Chunk sizes for `count` entries with ascending `docId`: runs within `maxSpan`, each either
    /// small enough to stay inline or exactly filling 1 to 8 overflow pages.
    public static func plan(count n: Int, bytesPerCode: Int, docId: (Int) -> UInt32) -> [Int] {
        var unused: LeafPacking? = nil
        return plan(count: n, bytesPerCode: bytesPerCode, docId: docId, packing: &unused)
    }

    /// As `plan`, for chunks appended in key order: inline pieces are also cut to fill the rest
    /// of the current leaf page (`packing` follows LMDB's placement across calls).
    public static func plan(count n: Int, bytesPerCode: Int, docId: (Int) -> UInt32, packing: inout LeafPacking?) -> [Int] {
        let entry = 2 + bytesPerCode
        let inlineCap = max(1, (inlineValueBytes - headerBytes) / entry)
        func pageCap(_ pages: Int) -> Int { (pages * pageBytes - overflowHeaderBytes - headerBytes) / entry }
        var sizes: [Int] = []
        var i = 0
        while i < n {
            // Longest run from i whose ids stay within the span (binary search: ids ascend).
            let first = docId(i)
            var lo = i + 1, hi = n
            while lo < hi { let m = (lo + hi + 1) / 2; if docId(m - 1) &- first <= maxSpan { lo = m } else { hi = m - 1 } }
            let avail = lo - i
            var take: Int
            if avail >= pageCap(1) {
                var pages = 1
                while pages < maxPages && pageCap(pages + 1) <= avail { pages += 1 }
                take = pageCap(pages)
            } else if let p = packing {
                // As much as fits the current leaf page, else a fresh page's worth.
                let room = (p.free - LeafPacking.nodeBytes(value: headerBytes) ) / entry
                take = room >= 1 ? min(avail, room, inlineCap) : min(avail, inlineCap)
            } else if avail <= inlineCap {
                take = avail
            } else {
                let pieces = (avail + inlineCap - 1) / inlineCap
                take = (avail + pieces - 1) / pieces
            }
            packing?.place(value: byteCount(count: take, bytesPerCode: bytesPerCode))
            sizes.append(take)
            i += take
        }
        return sizes
    }
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

/// Many documents' tokens as runs (consecutive tokens of one document in one cluster), for
/// scoring without first copying each document's codes together. A store lists them by centroid,
/// so that decoding reads the centroid table forward.
public struct DocumentTokenRuns {
    /// `owner` of a run is its document's position in the requested ids. Valid only inside the
    /// closure that provided them.
    public let runs: UnsafeBufferPointer<ck_token_run>
    /// Per requested id: its number of tokens, or nil when the id is not live.
    public let tokenCounts: [Int?]

    public init(runs: UnsafeBufferPointer<ck_token_run>, tokenCounts: [Int?]) {
        self.runs = runs
        self.tokenCounts = tokenCounts
    }
}

/// Every cluster's chunks at once: those of cluster c are `chunks[first[c] ..< first[c + 1]]`.
/// For loops that visit many clusters per query, which would otherwise pay a call and a closure
/// per visit. Valid only inside the closure that received it.
public struct ClusterChunkTable {
    public let first: UnsafeBufferPointer<Int>
    public let chunks: UnsafeBufferPointer<ClusterView>

    public init(first: UnsafeBufferPointer<Int>, chunks: UnsafeBufferPointer<ClusterView>) {
        self.first = first
        self.chunks = chunks
    }

    /// Positions in `chunks` of the cluster's chunks (empty for a centroid out of range).
    @inlinable public func chunkRange(_ centroid: Int) -> Range<Int> {
        guard centroid >= 0, centroid + 1 < first.count else { return 0..<0 }
        return first[centroid]..<first[centroid + 1]
    }
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
    /// Tokens of the live documents.
    var tokenCount: Int { get }
    /// Exclusive upper bound of internal document ids ever assigned (ids may have gaps).
    var documentIdBound: UInt32 { get }
    /// The centroids grouped for routed centroid scoring, where the store has them (nil: every
    /// centroid is scored).
    var centroidRouter: CentroidRouter? { get }
    /// The centroids in 8-bit integers for choosing probes, where the store has them (nil: scored
    /// in F32).
    var quantizedCentroids: QuantizedCentroids? { get }

    /// Calls `body` with every cluster's chunks, each cluster's in ascending document id order
    /// (an empty cluster has none). May be called from several threads after
    /// `prepareClusterReads`.
    func withClusterChunks<R>(_ body: (ClusterChunkTable) throws -> R) throws -> R
    /// Calls `body` with the document's tokens, or nil when the id is not live.
    func withDocument<R>(_ docId: UInt32, _ body: (DocumentView?) throws -> R) throws -> R
    /// Calls `body` with the views of many documents at once (nil where an id is not live),
    /// which a store may gather faster than one by one. The views may be read from several
    /// threads inside `body`.
    func withDocuments<R>(_ docIds: [UInt32], _ body: ([DocumentView?]) throws -> R) throws -> R
    /// `withDocuments`, gathering on up to `workers` threads when the store can.
    func withDocuments<R>(_ docIds: [UInt32], workers: Int, _ body: ([DocumentView?]) throws -> R) throws -> R
    /// The tokens of many documents as runs (see `DocumentTokenRuns`), located on up to
    /// `workers` threads when the store can.
    func withDocumentRuns<R>(_ docIds: [UInt32], workers: Int, _ body: (DocumentTokenRuns) throws -> R) throws -> R
    /// Visits every live document in increasing internal id order.
    func forEachDocument(_ body: (UInt32, DocumentView) throws -> Void) throws
    /// Sets up whatever `forEachClusterChunk` needs, on the calling thread, before several
    /// threads read clusters at once.
    func prepareClusterReads() throws
}

extension IndexSnapshot {
    public func prepareClusterReads() throws {}

    /// Calls `body` with each chunk of the cluster's tokens, in ascending document id order
    /// (never for an empty cluster, nor for a centroid out of range).
    public func forEachClusterChunk(_ centroid: Int, _ body: (ClusterView) throws -> Void) throws {
        try withClusterChunks { table in
            for j in table.chunkRange(centroid) { try body(table.chunks[j]) }
        }
    }

    public var centroidRouter: CentroidRouter? { nil }

    public var quantizedCentroids: QuantizedCentroids? { nil }

    public func withDocuments<R>(_ docIds: [UInt32], workers: Int, _ body: ([DocumentView?]) throws -> R) throws -> R {
        try withDocuments(docIds, body)
    }

    /// Runs cut from the documents' views: one per stretch of tokens with the same centroid, in
    /// document order (correct for any store; a store that can list them by centroid should).
    public func withDocumentRuns<R>(_ docIds: [UInt32], workers: Int, _ body: (DocumentTokenRuns) throws -> R) throws -> R {
        try withDocuments(docIds, workers: workers) { views in
            var runs: [ck_token_run] = []
            var counts: [Int?] = []
            counts.reserveCapacity(views.count)
            for (k, view) in views.enumerated() {
                guard let view else { counts.append(nil); continue }
                counts.append(view.count)
                var t = 0
                while t < view.count {
                    let c = view.centroidId(t)
                    var end = t + 1
                    while end < view.count && view.centroidId(end) == c { end += 1 }
                    runs.append(ck_token_run(codes: view.code(t).assumingMemoryBound(to: UInt8.self),
                                             count: Int32(end - t), owner: Int32(k), centroid: c))
                    t = end
                }
            }
            return try runs.withUnsafeBufferPointer { try body(DocumentTokenRuns(runs: $0, tokenCounts: counts)) }
        }
    }
}
