import ColBERTCore

/// The stable error codes of the protocol (the `error.code` string of a failed response).
public enum ErrorCode: String, Sendable, CaseIterable, Codable {
    /// The line is not a JSON object (syntax, invalid UTF-8, NUL bytes, nesting too deep).
    case badJSON = "bad_json"
    /// Valid JSON, but a field is missing, has the wrong type or is out of range.
    case badRequest = "bad_request"
    /// `op` names no operation.
    case unknownOp = "unknown_op"
    /// The line (or a list in it) is over a configured limit.
    case tooLarge = "too_large"
    /// A requested document id does not exist.
    case notFound = "not_found"
    /// Pre-encoded vectors do not fit the served model (dimension or fingerprint).
    case modelMismatch = "model_mismatch"
    /// Too many connections or queued requests; retry later.
    case overloaded = "overloaded"
    /// Anything else; the message says what.
    case `internal` = "internal"
}

/// An error a backend (or the server) reports to a client with a stable code.
public struct BackendError: Error, Sendable, CustomStringConvertible, Equatable {
    public let code: ErrorCode
    public let message: String
    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code.rawValue): \(message)" }
}

/// Everything a search needs besides the query vectors.
public struct SearchOptions: Sendable {
    /// Number of results wanted (1 ... `ServerLimits.maxK`).
    public var k: Int
    /// Engine-specific parameters from the request's `params` object (e.g. `nprobe`,
    /// `mode: "exhaustive"`), passed through unvalidated; the backend throws `.badRequest` for
    /// names or values it does not accept.
    public var parameters: [String: JSONValue]
    public var includeText: Bool
    public var includeMetadata: Bool
    /// When set, only these external ids may be returned (ids that do not exist are ignored).
    public var restrictTo: Set<String>?
    /// Threads working inside each query. The server sets it per search: all its worker threads
    /// when the search is the only request in flight (a lone client gets every core), else 1.
    public var threads: Int = 1

    public init(k: Int, parameters: [String: JSONValue] = [:], includeText: Bool = false,
                includeMetadata: Bool = false, restrictTo: Set<String>? = nil) {
        self.k = k
        self.parameters = parameters
        self.includeText = includeText
        self.includeMetadata = includeMetadata
        self.restrictTo = restrictTo
    }
}

/// One ranked result.
public struct SearchHit: Sendable, Equatable {
    public var id: String
    public var score: Float
    /// Filled only when the search asked for text.
    public var text: String?
    /// Filled only when the search asked for metadata (any JSON value the document was added with).
    public var metadata: JSONValue?

    public init(id: String, score: Float, text: String? = nil, metadata: JSONValue? = nil) {
        self.id = id
        self.score = score
        self.text = text
        self.metadata = metadata
    }
}

/// A document to add, already encoded by the server (outside the single writer).
public struct DocumentInput: Sendable {
    public var id: String
    public var text: String
    public var metadata: JSONValue?
    public var embeddings: TokenEmbeddings

    public init(id: String, text: String, metadata: JSONValue?, embeddings: TokenEmbeddings) {
        self.id = id
        self.text = text
        self.metadata = metadata
        self.embeddings = embeddings
    }
}

/// A stored document as `get` returns it.
public struct StoredDocument: Sendable, Equatable {
    public var id: String
    public var text: String?
    public var metadata: JSONValue?
    /// Number of stored token vectors, when the backend knows it.
    public var tokenCount: Int?

    public init(id: String, text: String?, metadata: JSONValue?, tokenCount: Int? = nil) {
        self.id = id
        self.text = text
        self.metadata = metadata
        self.tokenCount = tokenCount
    }
}

public struct AddOutcome: Sendable, Equatable {
    /// Ids that did not exist before.
    public var added: Int
    /// Ids that existed and were replaced.
    public var replaced: Int
    public init(added: Int, replaced: Int) {
        self.added = added
        self.replaced = replaced
    }
}

public struct DeleteOutcome: Sendable, Equatable {
    public var deleted: Int
    /// Requested ids that did not exist (deleting them is not an error).
    public var missing: [String]
    public init(deleted: Int, missing: [String]) {
        self.deleted = deleted
        self.missing = missing
    }
}

/// What the server needs from the encoder + index + search engine.
///
/// Every method is synchronous and may block: the server calls it on its own worker threads
/// (`ServerConfiguration.threads` of them), never on an event loop. Concurrency contract:
/// - `encode`, `search`, `get` and `stats` may run concurrently with each other and with writes;
/// - `add` and `delete` are called by one writer at a time (the server serialises them), so the
///   backend needs no write lock of its own;
/// - one `search` call (a whole `search_batch` included) should read one consistent snapshot.
/// Throw `BackendError` for errors with a protocol code; any other error becomes `internal`.
public protocol RetrievalBackend: Sendable {
    /// Dimension of every token vector.
    var dim: Int { get }
    /// The encoder fingerprint; clients that send pre-encoded vectors may state it.
    var modelFingerprint: String { get }

    /// Encodes texts, one result per input in order (see `TokenEncoder.encode`).
    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings]
    /// Ranks documents for each query (one ranked list per query, best first, at most `k`).
    func search(_ queries: [TokenEmbeddings], options: SearchOptions) throws -> [[SearchHit]]
    /// Adds documents; an existing id is replaced. All or nothing.
    func add(_ documents: [DocumentInput]) throws -> AddOutcome
    /// Deletes documents by id.
    func delete(ids: [String]) throws -> DeleteOutcome
    /// Looks documents up; nil for ids that do not exist. One entry per id, in order.
    func get(ids: [String], includeText: Bool, includeMetadata: Bool) throws -> [StoredDocument?]
    /// Index statistics as a JSON object (documents, tokens, centroids, bytes on disk, ...).
    func stats() throws -> JSONValue
}

/// A backend assembled from a `TokenEncoder` and closures, so the CLI can wire the index and the
/// search engine without declaring a type.
public struct ComposedBackend: RetrievalBackend {
    public let encoder: any TokenEncoder
    let searchBody: @Sendable ([TokenEmbeddings], SearchOptions) throws -> [[SearchHit]]
    let addBody: @Sendable ([DocumentInput]) throws -> AddOutcome
    let deleteBody: @Sendable ([String]) throws -> DeleteOutcome
    let getBody: @Sendable ([String], Bool, Bool) throws -> [StoredDocument?]
    let statsBody: @Sendable () throws -> JSONValue

    public init(
        encoder: any TokenEncoder,
        search: @escaping @Sendable (_ queries: [TokenEmbeddings], _ options: SearchOptions) throws -> [[SearchHit]],
        add: @escaping @Sendable (_ documents: [DocumentInput]) throws -> AddOutcome,
        delete: @escaping @Sendable (_ ids: [String]) throws -> DeleteOutcome,
        get: @escaping @Sendable (_ ids: [String], _ includeText: Bool, _ includeMetadata: Bool) throws -> [StoredDocument?],
        stats: @escaping @Sendable () throws -> JSONValue
    ) {
        self.encoder = encoder
        self.searchBody = search
        self.addBody = add
        self.deleteBody = delete
        self.getBody = get
        self.statsBody = stats
    }

    public var dim: Int { encoder.dim }
    public var modelFingerprint: String { encoder.fingerprint }
    public func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        try encoder.encode(texts, kind: kind)
    }
    public func search(_ queries: [TokenEmbeddings], options: SearchOptions) throws -> [[SearchHit]] {
        try searchBody(queries, options)
    }
    public func add(_ documents: [DocumentInput]) throws -> AddOutcome { try addBody(documents) }
    public func delete(ids: [String]) throws -> DeleteOutcome { try deleteBody(ids) }
    public func get(ids: [String], includeText: Bool, includeMetadata: Bool) throws -> [StoredDocument?] {
        try getBody(ids, includeText, includeMetadata)
    }
    public func stats() throws -> JSONValue { try statsBody() }
}
