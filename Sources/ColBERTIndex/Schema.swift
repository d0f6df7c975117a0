import ColBERTCore
import Foundation

/// Errors of the index with messages meant for users.
public enum IndexError: Error, CustomStringConvertible, Equatable {
    case notAnIndex(String)
    case unsupportedFormat(found: Int, supported: Int)
    case corrupt(String)
    case modelMismatch(index: String, encoder: String)
    case dimensionMismatch(index: Int, encoder: Int)
    case cannotReadCorpus(String)
    case badCorpusLine(CorpusIssue)
    case duplicateId(String)
    case invalidId(String)
    case invalidOption(String)
    case alreadyExists(String)
    case encoderFailed(String)
    case readOnly
    case inUse(String)

    public var description: String {
        switch self {
        case .notAnIndex(let p): return "\(p) is not a ColBERT index (no index metadata found)"
        case .unsupportedFormat(let f, let s): return "index format version \(f) is not supported by this build (supports \(s)); rebuild the index"
        case .corrupt(let m): return "index is corrupt: \(m)"
        case .modelMismatch(let i, let e):
            return "model mismatch: the index was built with model fingerprint \(i) but the encoder has \(e); use the model the index was built with, or rebuild the index"
        case .dimensionMismatch(let i, let e): return "dimension mismatch: the index stores \(i)-dim vectors but the encoder produces \(e)"
        case .cannotReadCorpus(let p): return "cannot read corpus file \(p)"
        case .badCorpusLine(let issue): return "bad corpus \(issue)"
        case .duplicateId(let id): return "duplicate document id \"\(id)\" in one batch"
        case .invalidId(let m): return "invalid document id: \(m)"
        case .invalidOption(let m): return m
        case .alreadyExists(let m): return m
        case .encoderFailed(let m): return "encoder failed: \(m)"
        case .readOnly: return "the index was opened read-only"
        case .inUse(let m): return m
        }
    }
}

/// On-disk layout (format version 3; 2 differed only in its chunk keys and header). Named LMDB databases:
/// - `meta`: string keys → `config` (JSON), `centroids` (K×dim F32 LE), `codec` (cutoffs then
///   weights, F32 LE), `counters` (JSON), `training` (JSON), `build`/`add` progress (JSON).
/// - `clusters` and `clusters.b`, the active one named by the counters (compaction writes the
///   other one afresh and switches): (centroid UInt32 BE, chunk sequence UInt32 BE) → a chunk in
///   `ClusterChunkLayout`; a cluster's chunks in key order hold ascending document ids. These are
///   the only copy of the packed codes.
/// - `docs`: internal id UInt32 BE → token count UInt32 LE, number of distinct centroids UInt32
///   LE, then those centroids ascending as LEB128 varints of their differences (the first as is).
///   A document's codes are read back from those clusters.
/// - `ext2int`: external id key (UTF-8 bytes, or 0xFF + SHA-256 when longer than 480 bytes) →
///   internal id UInt32 LE + the full external id (checked on lookup).
/// - `int2ext`: internal id UInt32 BE → external id UTF-8.
/// - `stored`: internal id UInt32 BE → title, text (optional) and metadata JSON.
enum Schema {
    static let formatVersion = 3
    static let databases = ["meta", "clusters", "clusters.b", "docs", "ext2int", "int2ext", "stored"]
    static let clusterTables = ["clusters", "clusters.b"]
    static let maxRawKeyBytes = 480

    static func metaKey(_ s: String) -> [UInt8] { Array(s.utf8) }

    static func externalKey(_ id: String) -> [UInt8] {
        let bytes = Array(id.utf8)
        if bytes.count <= maxRawKeyBytes { return bytes }
        // 0xFF never starts valid UTF-8, so hashed keys cannot collide with raw ones.
        return [0xFF] + Fingerprint.sha256(bytes)
    }

    static func floatsLE(_ values: [Float]) -> [UInt8] {
        var out = [UInt8](); out.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    static func readFloatsLE(_ p: UnsafeRawBufferPointer) -> [Float] {
        (0..<(p.count / 4)).map { Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
    }

    static func u32LE(_ p: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    static func storeU32LE(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt32) {
        p.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// The centroid groups of `CentroidRouter` (meta key `centroid_groups`): the group count
    /// (UInt32 LE), the `groups × dim` centres (Float LE), then one group per centroid (UInt32 LE).
    static func encodeCentroidGroups(centers: [Float], assignment: [UInt32], dim: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(4 + centers.count * 4 + assignment.count * 4)
        withUnsafeBytes(of: UInt32(centers.count / dim).littleEndian) { out.append(contentsOf: $0) }
        out += floatsLE(centers)
        for g in assignment { withUnsafeBytes(of: g.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    /// The record of `encodeCentroidGroups` for `centroids` centroids of `dim` values, or nil when
    /// its size or a group id does not fit.
    static func decodeCentroidGroups(_ p: UnsafeRawBufferPointer, centroids k: Int, dim: Int) -> (centers: [Float], assignment: [UInt32])? {
        guard p.count >= 4 else { return nil }
        let groups = Int(u32LE(p, 0))
        guard groups > 0, p.count == 4 + groups * dim * 4 + k * 4 else { return nil }
        let centers = readFloatsLE(UnsafeRawBufferPointer(rebasing: p[4..<(4 + groups * dim * 4)]))
        let base = 4 + groups * dim * 4
        let assignment = (0..<k).map { u32LE(p, base + $0 * 4) }
        guard assignment.allSatisfy({ Int($0) < groups }), centers.allSatisfy({ $0.isFinite }) else { return nil }
        return (centers, assignment)
    }

    /// A document record: its token count and distinct centroids (ascending).
    static func encodeDocument(tokens: Int, centroids: [UInt32]) -> [UInt8] {
        var out = [UInt8](); out.reserveCapacity(8 + centroids.count + centroids.count / 2)
        withUnsafeBytes(of: UInt32(tokens).littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(centroids.count).littleEndian) { out.append(contentsOf: $0) }
        var previous: UInt32 = 0
        for c in centroids {
            var x = c &- previous
            previous = c
            while x >= 0x80 { out.append(UInt8(x & 0x7F) | 0x80); x >>= 7 }
            out.append(UInt8(x))
        }
        return out
    }

    /// Token count and distinct centroids of a document record; nil when malformed (truncated,
    /// trailing bytes, or centroids not strictly ascending).
    static func decodeDocument(_ p: UnsafeRawBufferPointer) -> (tokens: Int, centroids: [UInt32])? {
        var out: [UInt32] = []
        guard let tokens = decodeDocument(p, centroids: &out) else { return nil }
        return (tokens, out)
    }

    /// `decodeDocument` into a caller's buffer (replacing its contents), returning the token count.
    static func decodeDocument(_ p: UnsafeRawBufferPointer, centroids out: inout [UInt32]) -> Int? {
        out.removeAll(keepingCapacity: true)
        guard p.count >= 8 else { return nil }
        let tokens = Int(u32LE(p, 0)), m = Int(u32LE(p, 4))
        guard m <= tokens, m <= p.count - 8 else { return nil }
        out.reserveCapacity(m)
        var at = 8
        var previous: UInt32 = 0
        for i in 0..<m {
            var x: UInt32 = 0, shift: UInt32 = 0
            while true {
                guard at < p.count, shift < 32 else { return nil }
                let b = p[at]; at += 1
                x |= UInt32(b & 0x7F) << shift
                if b < 0x80 { break }
                shift += 7
            }
            guard i == 0 || x > 0 else { return nil }
            let (c, overflow) = previous.addingReportingOverflow(x)
            guard !overflow else { return nil }
            out.append(c)
            previous = c
        }
        guard at == p.count, (m == 0) == (tokens == 0) else { return nil }
        return tokens
    }

    /// Stored fields: flags byte (1 = text stored), title, text, metadata, each UInt32 LE length + bytes.
    static func encodeStored(_ doc: CorpusDocument, storeText: Bool) -> [UInt8] {
        var out: [UInt8] = [storeText ? 1 : 0]
        func append(_ s: String) {
            let b = Array(s.utf8)
            withUnsafeBytes(of: UInt32(b.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: b)
        }
        append(storeText ? doc.title : "")
        append(storeText ? doc.text : "")
        append(doc.metadataJSON ?? "")
        return out
    }

    static func decodeStored(_ p: UnsafeRawBufferPointer, id: String) -> StoredDocument? {
        guard p.count >= 13 else { return nil }
        let hasText = p[0] == 1
        var offset = 1
        func next() -> String? {
            guard offset + 4 <= p.count else { return nil }
            let n = Int(u32LE(p, offset)); offset += 4
            guard offset + n <= p.count else { return nil }
            defer { offset += n }
            return String(decoding: UnsafeRawBufferPointer(rebasing: p[offset..<(offset + n)]), as: UTF8.self)
        }
        guard let title = next(), let text = next(), let meta = next() else { return nil }
        return StoredDocument(id: id, title: hasText ? title : nil, text: hasText ? text : nil,
                              metadataJSON: meta.isEmpty ? nil : meta)
    }
}

/// A stored document as `get` returns it.
public struct StoredDocument: Sendable, Equatable, Codable {
    public var id: String
    /// nil when the index was built without stored text.
    public var title: String?
    public var text: String?
    /// The corpus line's other fields as a JSON object text.
    public var metadataJSON: String?

    public init(id: String, title: String?, text: String?, metadataJSON: String?) {
        self.id = id
        self.title = title
        self.text = text
        self.metadataJSON = metadataJSON
    }

    enum CodingKeys: String, CodingKey {
        case id, title, text
        case metadataJSON = "metadata"
    }
}

/// Index-wide settings fixed at creation.
struct ConfigRecord: Codable, Equatable {
    var formatVersion: Int
    var dim: Int
    var nbits: Int
    var centroidCount: Int
    var modelFingerprint: String
    var storeText: Bool
    var seed: UInt64

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", dim, nbits, centroidCount = "centroids"
        case modelFingerprint = "model_fingerprint", storeText = "store_text", seed
    }
}

/// Running totals, rewritten in every write transaction.
struct Counters: Codable, Equatable {
    var nextDocId: UInt32 = 0
    var documents: Int = 0
    var tokens: Int = 0
    /// Sequence number of the next cluster chunk written (compaction renumbers from 0).
    var nextChunkSeq: UInt64 = 0
    /// Index into `Schema.clusterTables` of the cluster database in use.
    var clusterTable: Int = 0
    /// Residual norm and reconstruction error sums of tokens indexed by builds and by adds.
    var builtTokens: Int = 0
    var builtResidualSum: Double = 0
    var builtErrorSum: Double = 0
    var addedTokens: Int = 0
    var addedResidualSum: Double = 0
    var addedErrorSum: Double = 0
}

/// What k-means training saw; drives the drift report.
public struct TrainingSummary: Codable, Sendable, Equatable {
    public var sampleDocuments: Int
    public var sampleTokens: Int
    public var estimatedTokens: Int
    public var iterations: Int
    /// Mean ‖v − c(v)‖ over the training sample.
    public var meanResidualNorm: Double
    public var seconds: Double

    public init(sampleDocuments: Int, sampleTokens: Int, estimatedTokens: Int, iterations: Int, meanResidualNorm: Double, seconds: Double) {
        self.sampleDocuments = sampleDocuments
        self.sampleTokens = sampleTokens
        self.estimatedTokens = estimatedTokens
        self.iterations = iterations
        self.meanResidualNorm = meanResidualNorm
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey {
        case sampleDocuments = "sample_documents", sampleTokens = "sample_tokens"
        case estimatedTokens = "estimated_tokens", iterations
        case meanResidualNorm = "mean_residual_norm", seconds
    }
}

/// Progress of a build or of an add from a file, committed with each batch.
struct FileProgress: Codable, Equatable {
    var corpus: String
    var lastLine: Int
    var complete: Bool
}

enum JSONRecord {
    static func encode<T: Encodable>(_ v: T) throws -> [UInt8] {
        let e = JSONEncoder(); e.outputFormatting = [.sortedKeys]
        return Array(try e.encode(v))
    }
    static func decode<T: Decodable>(_ type: T.Type, _ p: UnsafeRawBufferPointer, what: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: Data(p)) } catch { throw IndexError.corrupt("unreadable \(what) record") }
    }
}
