import Foundation
import ColBERTCore

/// A value behind a lock (Foundation's, to keep the module's dependencies to the declared ones).
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Request counts, error counts and latency histograms per operation, plus admission control
/// for the global queued-request limit.
final class ServerMetrics: Sendable {
    struct State {
        var requests: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var latencies: [String: LatencyRecorder] = [:]
        var admitted = 0
        var connections = 0
        var connectionsTotal = 0
        var connectionsRejected = 0
    }

    let started = ContinuousClock.now
    private let state = LockedBox(State())
    let maxQueued: Int

    init(maxQueued: Int) { self.maxQueued = maxQueued }

    /// Takes one of the `maxQueued` processing slots, or returns false when all are taken.
    func admit() -> Bool {
        state.withLock { s in
            guard s.admitted < maxQueued else { return false }
            s.admitted += 1
            return true
        }
    }

    func release() { state.withLock { $0.admitted -= 1 } }

    var admitted: Int { state.withLock { $0.admitted } }

    /// Records one finished request; `op` is nil when the line never named a valid op.
    func record(op: String?, error: ErrorCode?, elapsed: Duration) {
        let key = op ?? "invalid"
        state.withLock { s in
            s.requests[key, default: 0] += 1
            if let error { s.errors[error.rawValue, default: 0] += 1 }
            s.latencies[key, default: LatencyRecorder()].record(elapsed)
        }
    }

    func connectionOpened() -> Int {
        state.withLock { s in
            s.connections += 1
            s.connectionsTotal += 1
            return s.connections
        }
    }

    func connectionClosed() { state.withLock { $0.connections -= 1 } }
    func connectionRejected() { state.withLock { $0.connectionsRejected += 1 } }
    var openConnections: Int { state.withLock { $0.connections } }

    var uptimeSeconds: Double { (ContinuousClock.now - started).seconds }

    /// The `server` object of a `stats` response.
    func snapshot() -> JSONValue {
        let s = state.withLock { $0 }
        func ms(_ x: Double) -> JSONValue { .number((x * 1000).rounded() / 1000) }
        let ops = s.requests.keys.sorted()
        let latency: [(String, JSONValue)] = ops.compactMap { op in
            guard let h = s.latencies[op]?.summary, h.count > 0 else { return nil }
            return (op, .object([
                ("count", .number(Double(h.count))),
                ("p50_ms", ms(h.p50)),
                ("p95_ms", ms(h.p95)),
                ("p99_ms", ms(h.p99)),
                ("max_ms", ms(h.max)),
            ]))
        }
        return .object([
            ("uptime_s", .number((uptimeSeconds * 1000).rounded() / 1000)),
            ("connections", .number(Double(s.connections))),
            ("connections_total", .number(Double(s.connectionsTotal))),
            ("connections_rejected", .number(Double(s.connectionsRejected))),
            ("queued_requests", .number(Double(s.admitted))),
            ("requests", .object(ops.map { ($0, .number(Double(s.requests[$0] ?? 0))) })),
            ("errors", .object(s.errors.keys.sorted().map { ($0, .number(Double(s.errors[$0] ?? 0))) })),
            ("latency", .object(latency)),
        ])
    }
}
