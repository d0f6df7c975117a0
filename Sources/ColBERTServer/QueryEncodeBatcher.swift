import ColBERTCore
import NIOCore
import NIOPosix

/// Groups query texts that arrive together into one encoder call.
///
/// At most `maxConcurrent` encode batches run at once. An idle batcher encodes a lone query at
/// once (no added latency at low load); while another batch is running, new texts wait up to
/// `window` (or until `maxBatch` are pending) so they share one forward pass.
final class QueryEncodeBatcher: Sendable {
    private struct Pending {
        let text: String
        let arrival: NIODeadline
        let continuation: CheckedContinuation<TokenEmbeddings, any Error>
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

    /// Encodes one query text, possibly together with others.
    func encodeQuery(_ text: String) async throws -> TokenEmbeddings {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<TokenEmbeddings, any Error>) in
            state.withLock { $0.pending.append(Pending(text: text, arrival: .now(), continuation: c)) }
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
            let result: Result<[TokenEmbeddings], any Error>
            if case .active = workState {
                result = Result { try backend.encode(batch.map(\.text), kind: .query) }
            } else {
                result = .failure(BackendError(.internal, "the server is shutting down"))
            }
            switch result {
            case .success(let embeddings) where embeddings.count == batch.count:
                for (p, e) in zip(batch, embeddings) { p.continuation.resume(returning: e) }
            case .success(let embeddings):
                let error = BackendError(.internal, "encoder returned \(embeddings.count) results for \(batch.count) texts")
                for p in batch { p.continuation.resume(throwing: error) }
            case .failure(let error):
                for p in batch { p.continuation.resume(throwing: error) }
            }
            state.withLock { $0.running -= 1 }
            dispatchReady()
        }
    }
}
