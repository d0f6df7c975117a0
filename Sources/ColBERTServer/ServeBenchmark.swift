import ColBERTCore
import NIOCore
import NIOPosix

/// A closed-loop load generator: `clients` concurrent workers issue a fixed number of operations
/// in total, each worker one at a time; latencies are measured on the client side.
public enum ServeBenchmark {
    public struct Result: Sendable {
        public var operations: Int
        public var errors: Int
        public var seconds: Double
        /// Client-side round-trip latency.
        public var latency: LatencySummary
        /// Time the server reports spending on the request (`took_ms`: encoding and search),
        /// when the operations report it.
        public var server: LatencySummary?
        /// Round trip minus the server's own time, per request: what the socket, JSON framing
        /// and scheduling add over calling the search in process.
        public var overhead: LatencySummary?
        /// The first error message seen, if any.
        public var firstError: String?

        public var qps: Double { seconds > 0 ? Double(operations) / seconds : 0 }

        public var json: JSONValue {
            func r(_ x: Double) -> JSONValue { .number((x * 1000).rounded() / 1000) }
            var pairs: [(String, JSONValue)] = [
                ("operations", .number(Double(operations))), ("errors", .number(Double(errors))),
                ("seconds", r(seconds)), ("qps", r(qps)), ("mean_ms", r(latency.mean)),
                ("p50_ms", r(latency.p50)), ("p95_ms", r(latency.p95)), ("p99_ms", r(latency.p99)),
                ("max_ms", r(latency.max)),
            ]
            if let server {
                pairs += [("server_p50_ms", r(server.p50)), ("server_p95_ms", r(server.p95))]
            }
            if let overhead {
                pairs += [("overhead_p50_ms", r(overhead.p50)), ("overhead_p95_ms", r(overhead.p95)),
                          ("overhead_p99_ms", r(overhead.p99))]
            }
            return .object(pairs)
        }

        public var summary: String {
            func f(_ x: Double) -> String { "\((x * 1000).rounded() / 1000)" }
            var s = "\(operations) operations in \(f(seconds)) s: \(f(qps)) QPS; latency ms p50 \(f(latency.p50)) p95 \(f(latency.p95)) p99 \(f(latency.p99)) max \(f(latency.max))"
            if let server { s += "; server-side (took_ms) p50 \(f(server.p50))" }
            if let overhead { s += "; overhead (round trip - took_ms) p50 \(f(overhead.p50)) p95 \(f(overhead.p95)) p99 \(f(overhead.p99))" }
            if errors > 0 { s += "; \(errors) errors (first: \(firstError ?? "?"))" }
            return s
        }
    }

    /// Runs `operation(i)` for i in 0..<total across `clients` workers. `makeWorker` creates one
    /// worker's state (e.g. a connection) and returns the per-operation closure; an operation
    /// that throws counts as an error. Use it to compare the server with in-process search.
    public static func run(
        clients: Int, total: Int,
        makeWorker: @escaping @Sendable (_ worker: Int) async throws -> @Sendable (_ index: Int) async throws -> Void
    ) async throws -> Result {
        try await runReporting(clients: clients, total: total) { w in
            let op = try await makeWorker(w)
            return { i in try await op(i); return nil }
        }
    }

    /// `run` whose operations may return the milliseconds the server says it spent on them.
    static func runReporting(
        clients: Int, total: Int,
        makeWorker: @escaping @Sendable (_ worker: Int) async throws -> @Sendable (_ index: Int) async throws -> Double?
    ) async throws -> Result {
        let counter = LockedBox(0)
        let workers = max(1, min(clients, max(total, 1)))
        let operations = try await withThrowingTaskGroup(of: ([Double], [Double], [Double], Int, String?).self) { group in
            var ops: [@Sendable (Int) async throws -> Double?] = []
            // Set up every worker before the clock starts.
            for w in 0..<workers { ops.append(try await makeWorker(w)) }
            let start = ContinuousClock.now
            for op in ops {
                group.addTask {
                    var latencies: [Double] = []
                    var overheads: [Double] = []
                    var servers: [Double] = []
                    var errors = 0
                    var firstError: String?
                    while true {
                        let i = counter.withLock { c -> Int in c += 1; return c - 1 }
                        guard i < total else { break }
                        let t0 = ContinuousClock.now
                        var serverMs: Double?
                        do { serverMs = try await op(i) } catch {
                            errors += 1
                            if firstError == nil { firstError = "\(error)" }
                        }
                        let ms = (ContinuousClock.now - t0).milliseconds
                        latencies.append(ms)
                        if let serverMs {
                            servers.append(serverMs)
                            overheads.append(max(0, ms - serverMs))
                        }
                    }
                    return (latencies, servers, overheads, errors, firstError)
                }
            }
            var all = LatencyRecorder(), server = LatencyRecorder(), overhead = LatencyRecorder()
            var errors = 0
            var firstError: String?
            for try await (l, sv, o, e, f) in group {
                for x in l { all.record(milliseconds: x) }
                for x in sv { server.record(milliseconds: x) }
                for x in o { overhead.record(milliseconds: x) }
                errors += e
                if firstError == nil { firstError = f }
            }
            return Result(operations: all.count, errors: errors, seconds: (ContinuousClock.now - start).seconds,
                          latency: all.summary, server: server.count > 0 ? server.summary : nil,
                          overhead: overhead.count > 0 ? overhead.summary : nil, firstError: firstError)
        }
        return operations
    }

    /// The query of one `search` request: its `query` field, or its `vectors_b64` and `model`.
    public typealias QueryFields = [(String, JSONValue)]

    /// Query texts as `query` fields.
    public static func textQueries(_ texts: [String]) -> [QueryFields] {
        texts.map { [("query", .string($0))] }
    }

    /// `runSearch` over query texts. With `preEncoded`, the texts are first encoded by the
    /// server's own `encode` op (untimed, `encodedQueries`) and every search sends its query's
    /// vectors as `vectors_b64`, so `took_ms` is the search alone and the overhead is the
    /// server's over an in-process search.
    public static func runSearch(
        socketPath: String, clients: Int, total: Int, queries: [String], k: Int,
        parameters: [(String, JSONValue)] = [], preEncoded: Bool = false
    ) async throws -> Result {
        let forms = preEncoded ? try await encodedQueries(socketPath: socketPath, queries: queries) : textQueries(queries)
        return try await runSearch(socketPath: socketPath, clients: clients, total: total, queries: forms, k: k,
                                   parameters: parameters)
    }

    /// `colbert bench serve`: `clients` connections send `total` `search` requests (queries
    /// taken round-robin from `queries`) and time the responses. A response with `ok: false`
    /// counts as an error.
    public static func runSearch(
        socketPath: String, clients: Int, total: Int, queries forms: [QueryFields], k: Int,
        parameters: [(String, JSONValue)] = []
    ) async throws -> Result {
        precondition(!forms.isEmpty, "runSearch needs at least one query")
        let connections = LockedBox<[ServerClient]>([])
        func closeAll() async {
            for c in connections.withLock({ $0 }) { await c.close() }
        }
        let result: Result
        do {
            result = try await runReporting(clients: clients, total: total) { _ in
            let client = try await ServerClient.connect(socketPath: socketPath)
            connections.withLock { $0.append(client) }
            return { i in
                var request: [(String, JSONValue)] = [("op", "search"), ("id", .number(Double(i)))]
                request += forms[i % forms.count]
                request.append(("k", .number(Double(k))))
                if !parameters.isEmpty { request.append(("params", .object(parameters))) }
                let response = try await client.send(.object(request))
                guard response["ok"]?.boolValue == true else {
                    throw ClientError.badResponse(response["error"]?.serialized() ?? response.serialized())
                }
                return response["took_ms"]?.doubleValue
            }
        }
        } catch {
            await closeAll()
            throw error
        }
        await closeAll()
        return result
    }

    /// Each query text as the fields of a pre-encoded search (`vectors_b64` and `model`), from
    /// the server's `encode` op, 32 texts per request.
    public static func encodedQueries(socketPath: String, queries: [String]) async throws -> [QueryFields] {
        let client = try await ServerClient.connect(socketPath: socketPath)
        var forms: [QueryFields] = []
        do {
            var start = 0
            while start < queries.count {
                let texts = queries[start..<min(queries.count, start + 32)]
                let response = try await client.send([
                    "op": "encode", "kind": "query", "format": "base64", "texts": .array(texts.map { .string($0) }),
                ])
                guard response["ok"]?.boolValue == true, let model = response["model"],
                      let list = response["embeddings"]?.arrayValue, list.count == texts.count else {
                    throw ClientError.badResponse(response["error"]?.serialized() ?? response.serialized())
                }
                for e in list {
                    guard let packed = e["vectors_b64"] else { throw ClientError.badResponse(e.serialized()) }
                    forms.append([("vectors_b64", packed), ("model", model)])
                }
                start += texts.count
            }
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        return forms
    }
}
