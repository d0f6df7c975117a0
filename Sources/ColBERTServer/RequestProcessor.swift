import ColBERTCore
import Logging
import NIOCore
import NIOPosix

/// The operations of the protocol.
public enum Operation: String, Sendable, CaseIterable {
    case ping, search, searchBatch = "search_batch", add, delete, get, stats, encode

    /// Ops whose responses can be large (vectors, stored texts, many result lists): built and
    /// serialised on Swift's global executor, never on a connection's event loop.
    var buildsLargeResponses: Bool {
        switch self {
        case .encode, .get, .searchBatch, .add: return true
        case .ping, .search, .delete, .stats: return false
        }
    }
}

/// Turns one request line into one response line: parsing, validation, admission control,
/// dispatch to the backend on worker threads (writes on a single writer thread), metrics.
final class RequestProcessor: Sendable {
    let backend: any RetrievalBackend
    let limits: ServerLimits
    let metrics: ServerMetrics
    let logger: Logger
    private let workers: NIOThreadPool
    /// Threads a search may use inside itself when it is the only request in flight.
    private let searchThreads: Int
    private let writer: NIOThreadPool
    private let batcher: QueryEncodeBatcher

    init(backend: any RetrievalBackend, configuration: ServerConfiguration, timerLoop: any EventLoop, logger: Logger) {
        self.backend = backend
        self.limits = configuration.limits
        self.metrics = ServerMetrics(maxQueued: configuration.limits.maxQueuedRequests)
        self.logger = logger
        self.workers = NIOThreadPool(numberOfThreads: max(1, configuration.threads))
        self.searchThreads = max(1, configuration.threads)
        self.writer = NIOThreadPool(numberOfThreads: 1)
        self.batcher = QueryEncodeBatcher(
            backend: backend, pool: workers, timerLoop: timerLoop,
            windowSeconds: configuration.microBatchWindowSeconds,
            maxBatch: configuration.maxEncodeBatch, maxConcurrent: max(1, configuration.threads))
    }

    private enum PoolState { case idle, running, stopped }
    private let poolState = LockedBox(PoolState.idle)

    func start() {
        let go = poolState.withLock { s -> Bool in
            guard s == .idle else { return false }
            s = .running
            return true
        }
        guard go else { return }
        workers.start()
        writer.start()
    }

    /// Waits for queued backend work, then stops the threads (once; safe if never started).
    func shutdown() async {
        let wasRunning = poolState.withLock { s -> Bool in
            defer { s = .stopped }
            return s == .running
        }
        guard wasRunning else { return }
        try? await workers.shutdownGracefully()
        try? await writer.shutdownGracefully()
    }

    // MARK: Responses

    static func errorLine(id: JSONValue, _ error: BackendError) -> [UInt8] {
        let v: JSONValue = .object([
            ("id", id), ("ok", false),
            ("error", .object([("code", .string(error.code.rawValue)), ("message", .string(error.message))])),
        ])
        var out: [UInt8] = []
        v.write(into: &out)
        out.append(0x0A)
        return out
    }

    static func successLine(id: JSONValue, _ payload: [(String, JSONValue)]) -> [UInt8] {
        var out: [UInt8] = []
        JSONValue.object([("id", id), ("ok", true)] + payload).write(into: &out)
        out.append(0x0A)
        return out
    }

    // MARK: Handling

    /// Handles one request line (without its newline) and returns the response line (with it).
    func handle(line: [UInt8], connection: Int) async -> [UInt8] {
        let start = ContinuousClock.now
        var id: JSONValue = .null
        var op: Operation?
        let response: [UInt8]
        var failure: ErrorCode?
        do {
            let request: JSONValue
            do {
                request = try JSONValue.parse(line, maxDepth: JSONValue.defaultMaxDepth)
            } catch let e as JSONParseError {
                throw BackendError(.badJSON, "not valid JSON: \(e)")
            }
            guard case .object = request else { throw BackendError(.badJSON, "a request must be a JSON object") }
            id = request["id"] ?? .null
            guard let opValue = request["op"] else { throw BackendError(.badRequest, "missing field 'op'") }
            guard let opName = opValue.stringValue else { throw BackendError(.badRequest, "field 'op' must be a string") }
            guard let parsed = Operation(rawValue: opName) else {
                throw BackendError(.unknownOp, "unknown op '\(opName.prefix(64))'; ops: \(Operation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            op = parsed
            let fields = RequestFields(request, limits: limits)
            if parsed == .ping {
                response = Self.successLine(id: id, [("pong", true)])
            } else {
                guard metrics.admit() else {
                    throw BackendError(.overloaded, "too many queued requests (limit \(limits.maxQueuedRequests)); retry later")
                }
                defer { metrics.release() }
                // nil keeps the task's preference (its connection's event loop).
                let requestId = id
                response = try await withTaskExecutorPreference(parsed.buildsLargeResponses ? globalConcurrentExecutor : nil) {
                    Self.successLine(id: requestId, try await perform(parsed, fields))
                }
            }
        } catch {
            let be = Self.backendError(error)
            failure = be.code
            response = Self.errorLine(id: id, be)
        }
        let elapsed = ContinuousClock.now - start
        metrics.record(op: op?.rawValue, error: failure, elapsed: elapsed)
        if logger.logLevel <= .debug {
            logger.debug("request", metadata: [
                "conn": "\(connection)", "id": "\(id.serialized().prefix(64))", "op": "\(op?.rawValue ?? "-")",
                "ms": "\((elapsed.milliseconds * 1000).rounded() / 1000)", "error": "\(failure?.rawValue ?? "-")",
            ])
        }
        return response
    }

    static func backendError(_ error: any Error) -> BackendError {
        if let be = error as? BackendError { return be }
        if error is NIOThreadPoolError.ThreadPoolInactive { return BackendError(.internal, "the server is shutting down") }
        return BackendError(.internal, String(describing: error))
    }

    private func onWorkers<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await workers.runIfActive(body)
    }

    private func onWriter<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await writer.runIfActive(body)
    }

    private func perform(_ op: Operation, _ f: RequestFields) async throws -> [(String, JSONValue)] {
        let backend = self.backend
        switch op {
        case .ping:
            return [("pong", true)]

        case .search:
            let options = try f.searchOptions()
            let query = try f.query(from: f.request, dim: backend.dim, fingerprint: backend.modelFingerprint)
            // took_ms is the encoder's and the search's own time, measured on the worker thread
            // that ran them, so a client's round trip minus took_ms is everything the server adds
            // (parsing, thread hand-offs, serialising, the socket).
            let metrics = self.metrics, searchThreads = self.searchThreads
            let mean = try f.meanScores()
            let searchOnce: @Sendable (TokenEmbeddings) throws -> ([SearchHit], Double) = { embeddings in
                let started = ContinuousClock.now
                // Decided as the search starts: alone, it takes every worker's core; with other
                // requests in flight, one thread each keeps throughput.
                var options = options
                options.threads = metrics.admitted <= 1 ? searchThreads : 1
                let hits = try backend.search([embeddings], options: options)
                guard hits.count == 1 else { throw BackendError(.internal, "search returned \(hits.count) lists for 1 query") }
                let found = mean ? Self.meanScores(hits[0], queryTokens: embeddings.count) : hits[0]
                return (found, QueryEncodeBatcher.seconds(ContinuousClock.now - started))
            }
            let hits: [SearchHit], seconds: Double
            switch query {
            case .text(let t):
                (hits, seconds) = try await batcher.encodeQuery(t) { encoded in
                    let (hits, searchSeconds) = try searchOnce(encoded.embeddings)
                    return (hits, encoded.encodeSeconds + searchSeconds)
                }
            case .vectors(let e):
                (hits, seconds) = try await onWorkers { try searchOnce(e) }
            }
            return [("results", Self.hitsJSON(hits, k: options.k)), ("took_ms", Self.ms(seconds))]

        case .searchBatch:
            let options = try f.searchOptions()
            let mean = try f.meanScores()
            let items = try f.array("queries", required: true, limit: limits.maxBatch) ?? []
            guard !items.isEmpty else { throw BackendError(.badRequest, "'queries' must not be empty") }
            let queries = try items.enumerated().map { n, item -> RequestFields.Query in
                if let s = item.stringValue { return .text(try RequestFields.queryText(s, path: "queries[\(n)]")) }
                guard case .object = item else {
                    throw BackendError(.badRequest, "queries[\(n)] must be a string or an object with 'query', 'vectors' or 'vectors_b64'")
                }
                return try f.query(from: item, dim: backend.dim, fingerprint: backend.modelFingerprint, path: "queries[\(n)].")
            }
            let texts = queries.compactMap { if case .text(let t) = $0 { return t } else { return nil } }
            let (hits, seconds) = try await onWorkers { () throws -> ([[SearchHit]], Double) in
                let started = ContinuousClock.now
                let encoded = texts.isEmpty ? [] : try backend.encode(texts, kind: .query)
                guard encoded.count == texts.count else { throw BackendError(.internal, "encoder returned \(encoded.count) results for \(texts.count) texts") }
                var next = 0
                let all = queries.map { q -> TokenEmbeddings in
                    switch q {
                    case .vectors(let e): return e
                    case .text: next += 1; return encoded[next - 1]
                    }
                }
                var lists = try backend.search(all, options: options)
                if mean, lists.count == all.count {
                    lists = zip(lists, all).map { Self.meanScores($0, queryTokens: $1.count) }
                }
                return (lists, QueryEncodeBatcher.seconds(ContinuousClock.now - started))
            }
            guard hits.count == queries.count else {
                throw BackendError(.internal, "search returned \(hits.count) lists for \(queries.count) queries")
            }
            return [("results", .array(hits.map { Self.hitsJSON($0, k: options.k) })), ("took_ms", Self.ms(seconds))]

        case .add:
            let docs = try f.documents()
            let texts = docs.map(\.text)
            let embeddings = try await onWorkers { try backend.encode(texts, kind: .document) }
            guard embeddings.count == docs.count else {
                throw BackendError(.internal, "encoder returned \(embeddings.count) results for \(docs.count) texts")
            }
            let inputs = zip(docs, embeddings).map { DocumentInput(id: $0.id, text: $0.text, metadata: $0.metadata, embeddings: $1) }
            let outcome = try await onWriter { try backend.add(inputs) }
            return [("added", .number(Double(outcome.added))), ("replaced", .number(Double(outcome.replaced)))]

        case .delete:
            let ids = try f.ids("ids", required: true)
            let outcome = try await onWriter { try backend.delete(ids: ids) }
            return [("deleted", .number(Double(outcome.deleted))), ("missing", .array(outcome.missing.map { .string($0) }))]

        case .get:
            let ids = try f.ids("ids", required: true)
            let includeText = try f.bool("include_text", default: true)
            let includeMetadata = try f.bool("include_metadata", default: true)
            let missingOK = try f.bool("missing_ok", default: false)
            let docs = try await onWorkers { try backend.get(ids: ids, includeText: includeText, includeMetadata: includeMetadata) }
            guard docs.count == ids.count else { throw BackendError(.internal, "get returned \(docs.count) entries for \(ids.count) ids") }
            let missing = zip(ids, docs).filter { $0.1 == nil }.map(\.0)
            if !missing.isEmpty && !missingOK {
                let shown = missing.prefix(10).map { "'\($0)'" }.joined(separator: ", ")
                throw BackendError(.notFound, "no document with id \(shown)\(missing.count > 10 ? " and \(missing.count - 10) more" : "")")
            }
            var payload: [(String, JSONValue)] = [("documents", .array(docs.compactMap { $0.map(Self.documentJSON) }))]
            if missingOK { payload.append(("missing", .array(missing.map { .string($0) }))) }
            return payload

        case .stats:
            let index = try await onWorkers { try backend.stats() }
            return [("server", metrics.snapshot()), ("index", index)]

        case .encode:
            let texts = try f.strings("texts", required: true)
            guard !texts.isEmpty else { throw BackendError(.badRequest, "'texts' must not be empty") }
            let kindName = try f.string("kind") ?? "query"
            guard let kind = EncodeKind(rawValue: kindName) else {
                throw BackendError(.badRequest, "'kind' must be \"query\" or \"document\"")
            }
            let format = try f.string("format") ?? "json"
            guard format == "json" || format == "base64" else {
                throw BackendError(.badRequest, "'format' must be \"json\" (vectors as numbers) or \"base64\" (vectors_b64)")
            }
            let embeddings = try await onWorkers { try backend.encode(texts, kind: kind) }
            let list: [JSONValue] = embeddings.map { e in
                .object([
                    ("token_ids", .array(e.tokenIds.map { .number(Double($0)) })),
                    format == "base64" ? ("vectors_b64", .string(PackedVectors.encode(e.vectors)))
                                       : ("vectors", .matrix(e.vectors, dim: e.dim)),
                ])
            }
            return [("model", .string(backend.modelFingerprint)), ("dim", .number(Double(backend.dim))), ("embeddings", .array(list))]
        }
    }

    /// MaxSim sums as the mean over the query's tokens of each one's best similarity: in
    /// [-1, 1] (the vectors are unit length), so a threshold means the same for every query.
    static func meanScores(_ hits: [SearchHit], queryTokens: Int) -> [SearchHit] {
        guard queryTokens > 0 else { return hits }
        return hits.map { h in
            var h = h
            h.score /= Float(queryTokens)
            return h
        }
    }

    static func ms(_ seconds: Double) -> JSONValue {
        .number((seconds * 1e6).rounded() / 1000)
    }

    static func hitsJSON(_ hits: [SearchHit], k: Int) -> JSONValue {
        .array(hits.prefix(k).map { h in
            var pairs: [(String, JSONValue)] = [("id", .string(h.id)), ("score", .number(Double(h.score)))]
            if let t = h.text { pairs.append(("text", .string(t))) }
            if let m = h.metadata { pairs.append(("metadata", m)) }
            return .object(pairs)
        })
    }

    static func documentJSON(_ d: StoredDocument) -> JSONValue {
        var pairs: [(String, JSONValue)] = [("id", .string(d.id))]
        if let t = d.text { pairs.append(("text", .string(t))) }
        if let m = d.metadata { pairs.append(("metadata", m)) }
        if let n = d.tokenCount { pairs.append(("tokens", .number(Double(n)))) }
        return .object(pairs)
    }
}

/// Typed access to a request's fields; every violation is a `bad_request` (or `too_large` for
/// lists over the batch limit, `model_mismatch` for vectors of the wrong model).
struct RequestFields {
    let request: JSONValue
    let limits: ServerLimits

    init(_ request: JSONValue, limits: ServerLimits) {
        self.request = request
        self.limits = limits
    }

    enum Query {
        case text(String)
        case vectors(TokenEmbeddings)
    }

    struct Document {
        var id: String
        var text: String
        var metadata: JSONValue?
    }

    func value(_ key: String) -> JSONValue? {
        guard let v = request[key], !v.isNull else { return nil }
        return v
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw BackendError(.badRequest, "field '\(key)' must be a string") }
        return s
    }

    func bool(_ key: String, default def: Bool) throws -> Bool {
        guard let v = value(key) else { return def }
        guard let b = v.boolValue else { throw BackendError(.badRequest, "field '\(key)' must be true or false") }
        return b
    }

    func array(_ key: String, required: Bool, limit: Int) throws -> [JSONValue]? {
        guard let v = value(key) else {
            if required { throw BackendError(.badRequest, "missing field '\(key)'") }
            return nil
        }
        guard let a = v.arrayValue else { throw BackendError(.badRequest, "field '\(key)' must be an array") }
        guard a.count <= limit else { throw BackendError(.tooLarge, "'\(key)' has \(a.count) items; the limit is \(limit)") }
        return a
    }

    func strings(_ key: String, required: Bool, limit: Int? = nil) throws -> [String] {
        guard let a = try array(key, required: required, limit: limit ?? limits.maxBatch) else { return [] }
        return try a.enumerated().map { n, v in
            guard let s = v.stringValue else { throw BackendError(.badRequest, "\(key)[\(n)] must be a string") }
            return s
        }
    }

    /// A non-empty list of distinct, non-empty document ids.
    func ids(_ key: String, required: Bool) throws -> [String] {
        let ids = try strings(key, required: required)
        if required && ids.isEmpty { throw BackendError(.badRequest, "'\(key)' must not be empty") }
        try Self.checkIds(ids, key: key)
        return ids
    }

    static func checkIds(_ ids: [String], key: String) throws {
        var seen = Set<String>()
        for (n, id) in ids.enumerated() {
            guard !id.isEmpty else { throw BackendError(.badRequest, "\(key)[\(n)] is an empty id") }
            guard seen.insert(id).inserted else { throw BackendError(.badRequest, "\(key)[\(n)]: duplicate id '\(id.prefix(64))'") }
        }
    }

    func searchOptions() throws -> SearchOptions {
        var k = 10
        if let v = value("k") {
            guard let n = v.intValue else { throw BackendError(.badRequest, "field 'k' must be an integer") }
            guard n >= 1 && n <= limits.maxK else { throw BackendError(.badRequest, "'k' must be between 1 and \(limits.maxK) (got \(n))") }
            k = n
        }
        var params: [String: JSONValue] = [:]
        if let p = value("params") {
            guard let pairs = p.objectValue else { throw BackendError(.badRequest, "field 'params' must be an object") }
            for (key, v) in pairs { params[key] = v }
        }
        var restrict: Set<String>?
        if let v = value("ids") {
            guard let a = v.arrayValue else { throw BackendError(.badRequest, "field 'ids' must be an array of document ids") }
            var set = Set<String>()
            for (n, item) in a.enumerated() {
                guard let s = item.stringValue else { throw BackendError(.badRequest, "ids[\(n)] must be a string") }
                set.insert(s)
            }
            restrict = set
        }
        return SearchOptions(k: k, parameters: params,
                             includeText: try bool("include_text", default: false),
                             includeMetadata: try bool("include_metadata", default: false),
                             restrictTo: restrict)
    }

    /// `score`: "sum" (default; MaxSim as PyLate computes it) or "mean" (divided by the
    /// query's token count).
    func meanScores() throws -> Bool {
        switch try string("score") ?? "sum" {
        case "sum": return false
        case "mean": return true
        default: throw BackendError(.badRequest, "'score' must be \"sum\" (MaxSim) or \"mean\" (MaxSim / query tokens)")
        }
    }

    /// A query from `query` (text), `vectors` (pre-encoded rows) or `vectors_b64` (the same rows
    /// as base64 float32, see `PackedVectors`), in `object`.
    func query(from object: JSONValue, dim: Int, fingerprint: String, path: String = "") throws -> Query {
        let text = object["query"].flatMap { $0.isNull ? nil : $0 }
        let vectors = object["vectors"].flatMap { $0.isNull ? nil : $0 }
        let packed = object["vectors_b64"].flatMap { $0.isNull ? nil : $0 }
        let given = [text, vectors, packed].compactMap { $0 }.count
        guard given == 1 else {
            throw BackendError(.badRequest, given == 0
                ? "\(path)needs 'query' (text), 'vectors' or 'vectors_b64' (pre-encoded)"
                : "\(path)give only one of 'query', 'vectors' and 'vectors_b64'")
        }
        if let t = text {
            guard let s = t.stringValue else { throw BackendError(.badRequest, "field '\(path)query' must be a string") }
            return .text(try Self.queryText(s, path: "\(path)query"))
        }
        if let m = object["model"], !m.isNull {
            guard let ms = m.stringValue else { throw BackendError(.badRequest, "field '\(path)model' must be a string") }
            guard ms == fingerprint else {
                throw BackendError(.modelMismatch, "vectors come from model '\(ms.prefix(80))'; this server encodes with '\(fingerprint)'")
            }
        }
        if let p = packed {
            guard let s = p.stringValue else { throw BackendError(.badRequest, "field '\(path)vectors_b64' must be a string") }
            return .vectors(try PackedVectors.decode(s, dim: dim, path: path + "vectors_b64", maxRows: limits.maxQueryVectors))
        }
        return .vectors(try Self.embeddings(vectors ?? .null, dim: dim, path: path + "vectors", maxRows: limits.maxQueryVectors))
    }

    /// A pre-encoded query of `rows` rows is `too_large` past `limit`.
    static func checkQueryRows(_ rows: Int, path: String, limit: Int) throws {
        guard rows <= limit else {
            throw BackendError(.tooLarge, "'\(path)' has \(rows) rows (token vectors); the limit is \(limit)")
        }
    }

    /// Query text that has something to encode: an empty or blank one would be all [MASK]
    /// padding, which matches nothing the client meant.
    static func queryText(_ s: String, path: String) throws -> String {
        guard !s.allSatisfy(\.isWhitespace) else { throw BackendError(.badRequest, "field '\(path)' must not be empty or blank") }
        return s
    }

    static func embeddings(_ v: JSONValue, dim: Int, path: String, maxRows: Int) throws -> TokenEmbeddings {
        guard let rows = v.arrayValue, !rows.isEmpty else {
            throw BackendError(.badRequest, "'\(path)' must be a non-empty array of vectors (arrays of numbers)")
        }
        try checkQueryRows(rows.count, path: path, limit: maxRows)
        var flat: [Float] = []
        flat.reserveCapacity(rows.count * dim)
        for (r, row) in rows.enumerated() {
            guard let cols = row.arrayValue else { throw BackendError(.badRequest, "\(path)[\(r)] must be an array of numbers") }
            guard cols.count == dim else {
                throw BackendError(.modelMismatch, "\(path)[\(r)] has \(cols.count) dimensions; the served model has \(dim)")
            }
            for c in cols {
                guard let d = c.doubleValue else { throw BackendError(.badRequest, "\(path)[\(r)] must contain only numbers") }
                let f = Float(d)
                guard f.isFinite else { throw BackendError(.badRequest, "\(path)[\(r)] has a value outside the Float range") }
                flat.append(f)
            }
        }
        return TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: rows.count), vectors: flat, dim: dim)
    }

    func documents() throws -> [Document] {
        let items = try array("documents", required: true, limit: limits.maxBatch) ?? []
        guard !items.isEmpty else { throw BackendError(.badRequest, "'documents' must not be empty") }
        let docs = try items.enumerated().map { n, item -> Document in
            guard case .object = item else { throw BackendError(.badRequest, "documents[\(n)] must be an object") }
            guard let id = item["id"]?.stringValue else { throw BackendError(.badRequest, "documents[\(n)].id must be a string") }
            guard let text = item["text"]?.stringValue else { throw BackendError(.badRequest, "documents[\(n)].text must be a string") }
            let metadata = item["metadata"].flatMap { $0.isNull ? nil : $0 }
            return Document(id: id, text: text, metadata: metadata)
        }
        try Self.checkIds(docs.map(\.id), key: "documents[].id")
        return docs
    }
}
