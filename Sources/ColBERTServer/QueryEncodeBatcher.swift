import ColBERTCore
import NIOCore
import NIOPosix

/// Groups query texts that arrive together into one encoder call.
///
/// At most `maxConcurrent` encode batches run at once. An idle batcher encodes a lone query at
/// once (no added latency at low load); while another batch is running, new texts wait up to
/// `window` (or until `maxBatch` are pending) so they share one forward pass.
///
/// What follows the encoding (`encodeQuery(_:then:)`, e.g. the search) runs on a worker thread
/// right after the batch's forward pass: the first query of a batch continues on the thread that
/// encoded it, the others are handed to the pool so they run in parallel. A request therefore
/// crosses threads twice (event loop → worker → event loop) instead of four times, and every
/// crossing is a thread wake-up that costs tens of microseconds on a VM.
final class QueryEncodeBatcher: Sendable {
    /// The encoding, and how long the forward pass of its batch took.
    struct Encoded: Sendable {
        let embeddings: TokenEmbeddings
        let encodeSeconds: Double
    }

    private struct Pending {
        let text: String
        let arrival: NIODeadline
        /// Called once, on a worker thread, with the encoding or the error.
        let deliver: @Sendable (Result<Encoded, any Error>) -> Void
    }

    private struct State {
        var pending: [Pending] = []
        var running = 0
        var timerArmed = false
    }

    private let state = LockedBox(State())
    private let backend: any RetrievalBackend
    private let pool: NIOThreadPool
    private let timerLoop: any EventLoop
    private let window: TimeAmount
    private let maxBatch: Int
    private let maxConcurrent: Int

    init(backend: any RetrievalBackend, pool: NIOThreadPool, timerLoop: any EventLoop,
         windowSeconds: Double, maxBatch: Int, maxConcurrent: Int) {
        self.backend = backend
        self.pool = pool
        self.timerLoop = timerLoop
        self.window = .nanoseconds(Int64(max(0, windowSeconds) * 1e9))
        self.maxBatch = max(1, maxBatch)
        self.maxConcurrent = max(1, maxConcurrent)
    }

    /// Encodes one query text, possibly together with others, then runs `body` on the worker
    /// thread with the result and returns what `body` returns.
    func encodeQuery<T: Sendable>(_ text: String,
                                  then body: @escaping @Sendable (Encoded) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            let deliver: @Sendable (Result<Encoded, any Error>) -> Void = { encoded in
                c.resume(with: Result { try body(encoded.get()) })
            }
            state.withLock { $0.pending.append(Pending(text: text, arrival: .now(), deliver: deliver)) }
            dispatchReady()
        }
    }

    private func dispatchReady() {
        var batches: [[Pending]] = []
        var armAt: NIODeadline?
        state.withLock { s in
            while s.running < maxConcurrent, !s.pending.isEmpty {
                let full = s.pending.count >= maxBatch
                let due = s.pending[0].arrival + window
                if !full, s.running > 0, window > .zero, due > .now() {
                    if !s.timerArmed { s.timerArmed = true; armAt = due }
                    break
                }
                let n = min(maxBatch, s.pending.count)
                batches.append(Array(s.pending.prefix(n)))
                s.pending.removeFirst(n)
                s.running += 1
            }
        }
        if let armAt {
            timerLoop.scheduleTask(deadline: armAt) { [self] in
                state.withLock { $0.timerArmed = false }
                dispatchReady()
            }
        }
        for batch in batches { run(batch) }
    }

    private func run(_ batch: [Pending]) {
        let backend = self.backend
        pool.submit { [self] workState in
            var results: [Result<Encoded, any Error>]
            if case .active = workState {
                let started = ContinuousClock.now
                do {
                    let embeddings = try backend.encode(batch.map(\.text), kind: .query)
                    let seconds = Self.seconds(ContinuousClock.now - started)
                    if embeddings.count == batch.count {
                        results = embeddings.map { .success(Encoded(embeddings: $0, encodeSeconds: seconds)) }
                    } else {
                        let error = BackendError(.internal, "encoder returned \(embeddings.count) results for \(batch.count) texts")
                        results = Array(repeating: .failure(error), count: batch.count)
                    }
                } catch {
                    results = Array(repeating: .failure(error), count: batch.count)
                }
            } else {
                results = Array(repeating: .failure(BackendError(.internal, "the server is shutting down")), count: batch.count)
            }
            // The encoder slot is free before the follow-up work starts, so the next batch can
            // form while this one is searched.
            state.withLock { $0.running -= 1 }
            dispatchReady()
            for (p, r) in zip(batch, results).dropFirst() {
                pool.submit { workState in
                    if case .active = workState {
                        p.deliver(r)
                    } else {
                        p.deliver(.failure(BackendError(.internal, "the server is shutting down")))
                    }
                }
            }
            if let first = batch.first, let r = results.first { first.deliver(r) }
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
