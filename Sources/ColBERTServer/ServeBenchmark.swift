import NIOCore
import NIOPosix

/// A closed-loop load generator: `clients` concurrent workers issue a fixed number of operations
/// in total, each worker one at a time; latencies are measured on the client side.
public enum ServeBenchmark {
    public struct Result: Sendable {
        public var operations: Int
        public var errors: Int
        public var seconds: Double
        /// Per-operation latencies in milliseconds, sorted.
        public var latenciesMs: [Double]
        /// The first error message seen, if any.
        public var firstError: String?

        public var qps: Double { seconds > 0 ? Double(operations) / seconds : 0 }
        public var meanMs: Double { latenciesMs.isEmpty ? 0 : latenciesMs.reduce(0, +) / Double(latenciesMs.count) }
        public func percentileMs(_ p: Double) -> Double {
            guard !latenciesMs.isEmpty else { return 0 }
            let rank = Int((p / 100 * Double(latenciesMs.count)).rounded(.up)) - 1
            return latenciesMs[min(max(rank, 0), latenciesMs.count - 1)]
        }

        public var json: JSONValue {
            func r(_ x: Double) -> JSONValue { .number((x * 1000).rounded() / 1000) }
            return .object([
                ("operations", .number(Double(operations))), ("errors", .number(Double(errors))),
                ("seconds", r(seconds)), ("qps", r(qps)), ("mean_ms", r(meanMs)),
                ("p50_ms", r(percentileMs(50))), ("p95_ms", r(percentileMs(95))), ("p99_ms", r(percentileMs(99))),
                ("max_ms", r(latenciesMs.last ?? 0)),
            ])
        }

        public var summary: String {
            func f(_ x: Double) -> String { "\((x * 1000).rounded() / 1000)" }
            var s = "\(operations) operations in \(f(seconds)) s: \(f(qps)) QPS; latency ms p50 \(f(percentileMs(50))) p95 \(f(percentileMs(95))) p99 \(f(percentileMs(99))) max \(f(latenciesMs.last ?? 0))"
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
        let counter = LockedBox(0)
        let workers = max(1, min(clients, max(total, 1)))
        let operations = try await withThrowingTaskGroup(of: ([Double], Int, String?).self) { group in
            var ops: [@Sendable (Int) async throws -> Void] = []
            // Set up every worker before the clock starts.
            for w in 0..<workers { ops.append(try await makeWorker(w)) }
            let start = ContinuousClock.now
            for op in ops {
                group.addTask {
                    var latencies: [Double] = []
                    var errors = 0
                    var firstError: String?
                    while true {
                        let i = counter.withLock { c -> Int in c += 1; return c - 1 }
                        guard i < total else { break }
                        let t0 = ContinuousClock.now
                        do { try await op(i) } catch {
                            errors += 1
                            if firstError == nil { firstError = "\(error)" }
                        }
                        let d = ContinuousClock.now - t0
                        latencies.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) * 1e-15)
                    }
                    return (latencies, errors, firstError)
                }
            }
            var all: [Double] = []
            var errors = 0
            var firstError: String?
            for try await (l, e, f) in group {
                all += l
                errors += e
                if firstError == nil { firstError = f }
            }
            let d = ContinuousClock.now - start
            return Result(operations: all.count, errors: errors,
                          seconds: Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18,
                          latenciesMs: all.sorted(), firstError: firstError)
        }
        return operations
    }

    /// `colbert bench serve`: `clients` connections send `total` `search` requests (query texts
    /// taken round-robin from `queries`) and time the responses. A response with `ok: false`
    /// counts as an error.
    public static func runSearch(
        socketPath: String, clients: Int, total: Int, queries: [String], k: Int,
        parameters: [(String, JSONValue)] = []
    ) async throws -> Result {
        precondition(!queries.isEmpty, "runSearch needs at least one query")
        let connections = LockedBox<[ServerClient]>([])
        func closeAll() async {
            for c in connections.withLock({ $0 }) { await c.close() }
        }
        let result: Result
        do {
            result = try await run(clients: clients, total: total) { _ in
            let client = try await ServerClient.connect(socketPath: socketPath)
            connections.withLock { $0.append(client) }
            return { i in
                var request: [(String, JSONValue)] = [
                    ("op", "search"), ("id", .number(Double(i))), ("query", .string(queries[i % queries.count])),
                    ("k", .number(Double(k))),
                ]
                if !parameters.isEmpty { request.append(("params", .object(parameters))) }
                let response = try await client.send(.object(request))
                guard response["ok"]?.boolValue == true else {
                    throw ClientError.badResponse(response["error"]?.serialized() ?? response.serialized())
                }
            }
        }
        } catch {
            await closeAll()
            throw error
        }
        await closeAll()
        return result
    }
}
