/// Bounds on everything a client can make the server hold. Every limit has a flag in
/// `colbert serve`; the defaults suit one machine serving a few local clients.
public struct ServerLimits: Sendable {
    /// Longest request line in bytes, newline excluded (default 1 MiB). A longer line is answered
    /// with `too_large` as soon as the limit is passed and the connection is closed.
    public var maxLineBytes: Int = 1 << 20
    /// Largest `k` of a search.
    public var maxK: Int = 1000
    /// Most rows in a pre-encoded query (`vectors`, `vectors_b64`). A text query has the model's
    /// query length (32 for PyLate's defaults); every row costs a row of centroid scores, e.g.
    /// 256 KB each at 65,536 centroids.
    public var maxQueryVectors: Int = 512
    /// Most items in one request: queries of `search_batch`, documents of `add`, ids of
    /// `delete`/`get`/`search` restriction, texts of `encode`.
    public var maxBatch: Int = 256
    /// Most open connections; a connection past it gets one `overloaded` line and is closed.
    public var maxConnections: Int = 256
    /// Most requests admitted for processing across all connections; past it `overloaded`.
    public var maxQueuedRequests: Int = 1024
    /// Most requests of one connection read but not yet answered; past it the server stops
    /// reading that connection until responses drain (backpressure, no unbounded buffering).
    public var maxInFlightPerConnection: Int = 32
    /// A connection with no traffic and nothing in flight for this long is closed (seconds).
    public var idleTimeoutSeconds: Double = 300

    public init() {}
}

/// How to run the server.
public struct ServerConfiguration: Sendable {
    /// Path of the Unix domain socket (at most 107 bytes).
    public var socketPath: String
    /// Permission bits of the socket file (default 0600: only the owner may connect).
    public var socketMode: UInt16 = 0o600
    /// Worker threads running backend calls (encode, search, get, stats). Writes use one more.
    public var threads: Int = 2
    /// NIO event-loop threads for socket I/O.
    public var ioThreads: Int = 1
    public var limits = ServerLimits()
    /// How long a query text may wait for others to be encoded with it, when the encoder is
    /// already busy (an idle server encodes a lone query at once, so p50 does not pay it).
    public var microBatchWindowSeconds: Double = 0.001
    /// Most query texts in one encode batch.
    public var maxEncodeBatch: Int = 32
    /// On SIGTERM/SIGINT: how long in-flight requests may take before connections are closed.
    public var shutdownDeadlineSeconds: Double = 10

    public init(socketPath: String) {
        self.socketPath = socketPath
    }
}
