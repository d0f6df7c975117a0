import ColBERTCore
import Foundation
import Logging
@testable import ColBERTServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An in-memory backend: words hash to fixed random unit vectors, search is exhaustive MaxSim.
/// Request `params` steer it: `delay_ms` (sleep in search), `fail` (throw a plain error).
final class FakeBackend: RetrievalBackend, @unchecked Sendable {
    struct Doc { var text: String; var metadata: JSONValue?; var embeddings: TokenEmbeddings }

    let dim = 8
    let modelFingerprint = "fake-model-1"
    private let lock = NSLock()
    private var docs: [String: Doc] = [:]
    private(set) var encodeBatchSizes: [Int] = []
    private var activeWriters = 0
    private(set) var maxConcurrentWriters = 0
    var writeDelay: Double = 0
    var encodeDelay: Double = 0

    func locked<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock(); defer { lock.unlock() }
        return try body()
    }

    var documentCount: Int { locked { docs.count } }
    var batchSizes: [Int] { locked { encodeBatchSizes } }

    static func wordVector(_ word: String, dim: Int) -> [Float] {
        var h: UInt64 = 0xcbf29ce484222325
        for b in word.lowercased().utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        var rng = SplitMix64(seed: h)
        var v = (0..<dim).map { _ in Float(rng.nextGaussian()) }
        VectorMath.normalizeRows(&v, dim: dim)
        return v
    }

    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        locked { encodeBatchSizes.append(texts.count) }
        if encodeDelay > 0 { Thread.sleep(forTimeInterval: encodeDelay) }
        return texts.map { text in
            var words = text.split(whereSeparator: { !$0.isLetter && !$0.isNumber }).map(String.init)
            if words.isEmpty { words = ["[empty]"] }
            let vectors = words.prefix(32).flatMap { Self.wordVector($0, dim: dim) }
            return TokenEmbeddings(tokenIds: words.prefix(32).map { Int32($0.count) }, vectors: vectors, dim: dim)
        }
    }

    func search(_ queries: [TokenEmbeddings], options: SearchOptions) throws -> [[SearchHit]] {
        if let d = options.parameters["delay_ms"]?.doubleValue { Thread.sleep(forTimeInterval: d / 1000) }
        if options.parameters["fail"] != nil { throw NSError(domain: "fake", code: 7) }
        for key in options.parameters.keys where !["delay_ms", "fail"].contains(key) {
            throw BackendError(.badRequest, "unknown search parameter '\(key)'")
        }
        let snapshot = locked { docs }
        return queries.map { q in
            var hits: [SearchHit] = []
            for (id, doc) in snapshot {
                if let r = options.restrictTo, !r.contains(id) { continue }
                var score: Float = 0
                for i in 0..<q.count {
                    var best = -Float.infinity
                    for j in 0..<doc.embeddings.count {
                        var s: Float = 0
                        for d in 0..<dim { s += q.vectors[i * dim + d] * doc.embeddings.vectors[j * dim + d] }
                        best = max(best, s)
                    }
                    score += best
                }
                hits.append(SearchHit(id: id, score: score,
                                      text: options.includeText ? doc.text : nil,
                                      metadata: options.includeMetadata ? doc.metadata : nil))
            }
            hits.sort { $0.score != $1.score ? $0.score > $1.score : $0.id < $1.id }
            return Array(hits.prefix(options.k))
        }
    }

    private func writing<R>(_ body: () throws -> R) rethrows -> R {
        locked { activeWriters += 1; maxConcurrentWriters = max(maxConcurrentWriters, activeWriters) }
        if writeDelay > 0 { Thread.sleep(forTimeInterval: writeDelay) }
        defer { locked { activeWriters -= 1 } }
        return try body()
    }

    func add(_ documents: [DocumentInput]) throws -> AddOutcome {
        try writing {
            try locked {
                var added = 0, replaced = 0
                for d in documents {
                    if d.text == "poison" { throw BackendError(.internal, "refusing poison") }
                }
                for d in documents {
                    if docs[d.id] == nil { added += 1 } else { replaced += 1 }
                    docs[d.id] = Doc(text: d.text, metadata: d.metadata, embeddings: d.embeddings)
                }
                return AddOutcome(added: added, replaced: replaced)
            }
        }
    }

    func delete(ids: [String]) throws -> DeleteOutcome {
        writing {
            locked {
                var deleted = 0
                var missing: [String] = []
                for id in ids {
                    if docs.removeValue(forKey: id) != nil { deleted += 1 } else { missing.append(id) }
                }
                return DeleteOutcome(deleted: deleted, missing: missing)
            }
        }
    }

    func get(ids: [String], includeText: Bool, includeMetadata: Bool) throws -> [StoredDocument?] {
        locked {
            ids.map { id in
                docs[id].map {
                    StoredDocument(id: id, text: includeText ? $0.text : nil,
                                   metadata: includeMetadata ? $0.metadata : nil, tokenCount: $0.embeddings.count)
                }
            }
        }
    }

    func stats() throws -> JSONValue {
        locked { .object([("documents", .number(Double(docs.count)))]) }
    }
}

/// A short socket path in a fresh temporary directory (sun_path holds 107 bytes).
/// Calls `body` (bind or connect) with `path` as a Unix socket address and its length.
func withUnixAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}

func makeSocketPath(_ name: String = "s.sock") -> String {
    let dir = "/tmp/cbs-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir + "/" + name
}

func removeSocketDirectory(_ socketPath: String) {
    try? FileManager.default.removeItem(atPath: (socketPath as NSString).deletingLastPathComponent)
}

func quietLogger() -> Logger {
    var l = Logger(label: "test.server")
    l.logLevel = .error
    return l
}

/// Starts a server with a fake backend, runs `body`, stops the server and removes the temp dir.
func withServer<R>(
    backend: FakeBackend = FakeBackend(),
    configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (ColBERTServer, String, FakeBackend) async throws -> R
) async throws -> R {
    let path = makeSocketPath()
    defer { removeSocketDirectory(path) }
    var config = ServerConfiguration(socketPath: path)
    config.shutdownDeadlineSeconds = 5
    configure(&config)
    let server = ColBERTServer(backend: backend, configuration: config, logger: quietLogger())
    try await server.start()
    do {
        let r = try await body(server, path, backend)
        await server.stop()
        return r
    } catch {
        await server.stop()
        throw error
    }
}

/// A blocking POSIX client socket for byte-level fault tests.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    init(path: String, receiveTimeout: Double = 10, sendTimeout: Double = 10) throws {
        #if canImport(Darwin)
        fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #else
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #endif
        guard fd >= 0 else { throw RawSocketError.failed("socket", errno) }
        let rc = withUnixAddress(path) { connect(fd, $0, $1) }
        guard rc == 0 else { let e = errno; close(fd); throw RawSocketError.failed("connect", e) }
        setTimeout(SO_RCVTIMEO, receiveTimeout)
        setTimeout(SO_SNDTIMEO, sendTimeout)
    }

    func setTimeout(_ option: Int32, _ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: .init((seconds - Double(Int(seconds))) * 1e6))
        _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends everything or stops at the first error; returns bytes sent and the errno (0 if all).
    @discardableResult
    func sendSync(_ bytes: [UInt8]) -> (sent: Int, error: Int32) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                #if canImport(Darwin)
                Darwin.send(fd, raw.baseAddress! + sent, raw.count - sent, 0)
                #else
                Glibc.send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                #endif
            }
            if n < 0 {
                if errno == EINTR { continue }
                return (sent, errno)
            }
            sent += n
        }
        return (sent, 0)
    }

    private var buffer: [UInt8] = []

    /// The next line (without newline), or nil on EOF / timeout / error.
    func readLineSync() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeFirst(nl + 1)
                return String(decoding: line, as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[..<n])
        }
    }

    /// Reads lines until EOF (or error) and reports whether EOF came.
    func readUntilClosedSync(maxLines: Int = 1000) -> (lines: [String], closed: Bool) {
        var lines: [String] = []
        while lines.count < maxLines {
            guard let l = readLineSync() else { return (lines, true) }
            lines.append(l)
        }
        return (lines, false)
    }

    // Blocking calls run on their own thread so they never stall Swift's cooperative pool.
    @discardableResult
    func send(_ bytes: [UInt8]) async -> (sent: Int, error: Int32) { await offPool { self.sendSync(bytes) } }
    func readLine() async -> String? { await offPool { self.readLineSync() } }
    func readUntilClosed(maxLines: Int = 1000) async -> (lines: [String], closed: Bool) {
        await offPool { self.readUntilClosedSync(maxLines: maxLines) }
    }

    func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }

    deinit { close(fd) }
}

/// Runs blocking work on a fresh thread.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { c in
        let t = Thread { c.resume(returning: body()) }
        t.stackSize = 1 << 20
        t.start()
    }
}

enum RawSocketError: Error { case failed(String, Int32) }

func parse(_ line: String?) -> JSONValue? {
    guard let line else { return nil }
    return try? JSONValue.parse(line)
}

func errorCode(_ v: JSONValue?) -> String? { v?["error"]?["code"]?.stringValue }
