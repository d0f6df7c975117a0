import ArgumentParser
import ColBERTServer
import Logging

/// The socket, threading and limit flags of `colbert serve` (use with `@OptionGroup`); the
/// command only has to open its backend and call `runServer`.
struct ServeOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the Unix domain socket to listen on (at most 107 bytes).")
    var socket: String

    @Option(name: .long, help: "Permission bits of the socket file, in octal.")
    var socketMode: String = "0600"

    @Option(name: .long, help: "Worker threads for encoding and search (writes use one more); a search that is the only request in flight uses all of them.")
    var threads: Int = 2

    @Option(name: .long, help: "Longest request line in bytes.")
    var maxLineBytes: Int = 1 << 20

    @Option(name: .long, help: "Largest k of a search.")
    var maxK: Int = 1000

    @Option(name: .long, help: "Most rows (token vectors) in one pre-encoded query.")
    var maxQueryVectors: Int = 512

    @Option(name: .long, help: "Most items in one request (queries, documents, ids, texts).")
    var maxBatch: Int = 256

    @Option(name: .long, help: "Most open connections.")
    var maxConnections: Int = 256

    @Option(name: .long, help: "Most requests queued or running across all connections.")
    var maxQueued: Int = 1024

    @Option(name: .long, help: "Most unanswered requests per connection before reading pauses.")
    var maxInFlight: Int = 32

    @Option(name: .long, help: "Seconds before an idle connection is closed.")
    var idleTimeout: Double = 300

    @Option(name: .long, help: "Seconds in-flight requests get to finish on SIGTERM/SIGINT.")
    var shutdownDeadline: Double = 10

    @Option(name: .long, help: "Milliseconds a query may wait to share an encoder batch (when the encoder is busy).")
    var batchWindowMs: Double = 1

    @Option(name: .long, help: "Most query texts per encoder batch.")
    var maxEncodeBatch: Int = 32

    @Option(name: .long, help: "Log level: trace, debug (one line per request), info, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        guard UInt16(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be octal permission bits such as 0600")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        for (name, value) in [("--threads", threads), ("--max-line-bytes", maxLineBytes), ("--max-k", maxK),
                              ("--max-query-vectors", maxQueryVectors), ("--max-batch", maxBatch), ("--max-connections", maxConnections),
                              ("--max-queued", maxQueued), ("--max-in-flight", maxInFlight),
                              ("--max-encode-batch", maxEncodeBatch)] where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        guard idleTimeout > 0, shutdownDeadline >= 0, batchWindowMs >= 0 else {
            throw ValidationError("--idle-timeout must be positive; --shutdown-deadline and --batch-window-ms not negative")
        }
    }

    var configuration: ServerConfiguration {
        var c = ServerConfiguration(socketPath: socket)
        c.socketMode = UInt16(socketMode, radix: 8) ?? 0o600
        c.threads = threads
        c.limits.maxLineBytes = maxLineBytes
        c.limits.maxK = maxK
        c.limits.maxQueryVectors = maxQueryVectors
        c.limits.maxBatch = maxBatch
        c.limits.maxConnections = maxConnections
        c.limits.maxQueuedRequests = maxQueued
        c.limits.maxInFlightPerConnection = maxInFlight
        c.limits.idleTimeoutSeconds = idleTimeout
        c.shutdownDeadlineSeconds = shutdownDeadline
        c.microBatchWindowSeconds = batchWindowMs / 1000
        c.maxEncodeBatch = maxEncodeBatch
        return c
    }

    var logger: Logger {
        var l = Logger(label: "colbert.serve")
        l.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return l
    }
}
