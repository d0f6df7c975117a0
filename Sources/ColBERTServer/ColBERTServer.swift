import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle

/// The line-delimited JSON server on a Unix domain socket, as a swift-service-lifecycle `Service`.
///
/// `run()` binds the socket, serves until graceful shutdown (SIGTERM/SIGINT through a
/// `ServiceGroup`) or task cancellation, then drains: it stops accepting, lets every connection
/// answer the requests it has read (up to `shutdownDeadlineSeconds`), closes the rest, and
/// removes the socket file.
public final class ColBERTServer: Service, Sendable {
    public let configuration: ServerConfiguration
    let processor: RequestProcessor
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger

    private struct State {
        var serverChannel: (any Channel)?
        var children: [ObjectIdentifier: any Channel] = [:]
        var nextConnectionID = 0
        var socketIdentity: SocketFile.Identity?
        var stopping = false
        var started = false
    }

    private let state = LockedBox(State())
    private let stopped: EventLoopPromise<Void>

    public init(backend: some RetrievalBackend, configuration: ServerConfiguration, logger: Logger = Logger(label: "colbert.server")) {
        self.configuration = configuration
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.ioThreads))
        self.processor = RequestProcessor(backend: backend, configuration: configuration, timerLoop: group.next(), logger: logger)
        self.stopped = group.next().makePromise(of: Void.self)
    }

    /// Binds the socket and starts accepting. Throws `ServerStartError` for an unusable path.
    public func start() async throws {
        let path = configuration.socketPath
        try SocketFile.prepare(path)
        processor.start()
        let limits = configuration.limits
        let processor = self.processor
        let idle = TimeAmount.nanoseconds(Int64(max(0.001, limits.idleTimeoutSeconds) * 1e9))
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)  // capped by net.core.somaxconn
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
            .childChannelInitializer { [self] channel in
                let opened = processor.metrics.connectionOpened()
                let id = state.withLock { s -> Int in
                    s.nextConnectionID += 1
                    s.children[ObjectIdentifier(channel)] = channel
                    return s.nextConnectionID
                }
                channel.closeFuture.whenComplete { [self] _ in
                    processor.metrics.connectionClosed()
                    state.withLock { _ = $0.children.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                if opened > limits.maxConnections {
                    processor.metrics.connectionRejected()
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RejectConnectionHandler(
                            message: "too many connections (limit \(limits.maxConnections)); retry later"))
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: limits.maxLineBytes))
                    try sync.addHandler(IdleStateHandler(allTimeout: idle))
                    try sync.addHandler(ConnectionHandler(processor: processor, connectionID: id))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
        } catch {
            await processor.shutdown()
            throw ServerStartError("cannot listen on \(path): \(error)")
        }
        do {
            try SocketFile.setMode(path, configuration.socketMode)
        } catch {
            try? await channel.close()
            await processor.shutdown()
            throw error
        }
        state.withLock {
            $0.serverChannel = channel
            $0.socketIdentity = SocketFile.identity(path)
            $0.started = true
        }
        logger.info("listening", metadata: [
            "socket": "\(path)", "mode": "\(String(configuration.socketMode, radix: 8))",
            "threads": "\(configuration.threads)",
        ])
    }

    /// Starts the drain once; `run()` returns when it has finished.
    public func initiateShutdown() {
        let go = state.withLock { s -> Bool in
            guard !s.stopping else { return false }
            s.stopping = true
            return true
        }
        guard go else { return }
        Task { await self.drain() }
    }

    private func drain() async {
        let (server, started) = state.withLock { ($0.serverChannel, $0.started) }
        logger.info("shutting down: draining connections", metadata: ["open": "\(processor.metrics.openConnections)"])
        try? await server?.close()
        let children = state.withLock { Array($0.children.values) }
        for child in children {
            child.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = ContinuousClock.now + .milliseconds(Int64(configuration.shutdownDeadlineSeconds * 1000))
        while ContinuousClock.now < deadline {
            if state.withLock({ $0.children.isEmpty }) { break }
            try? await Task.sleep(for: .milliseconds(5))
        }
        let remaining = state.withLock { Array($0.children.values) }
        if !remaining.isEmpty {
            logger.warning("shutdown deadline passed: closing connections", metadata: ["count": "\(remaining.count)"])
            for child in remaining { child.close(promise: nil) }
        }
        await processor.shutdown()
        if started {
            SocketFile.remove(configuration.socketPath, ifIdentity: state.withLock { $0.socketIdentity })
        }
        logger.info("stopped")
        stopped.succeed(())
    }

    /// Waits until a started shutdown has finished.
    public func waitUntilStopped() async {
        try? await stopped.futureResult.get()
    }

    /// Serves until graceful shutdown or cancellation, then drains and returns.
    public func run() async throws {
        do {
            try await start()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        await withTaskCancellationOrGracefulShutdownHandler {
            await self.waitUntilStopped()
        } onCancelOrGracefulShutdown: {
            self.initiateShutdown()
        }
        await waitUntilStopped()
        try? await group.shutdownGracefully()
    }

    /// Stops a server started with `start()` (tests, embedding): drain, then release threads.
    public func stop() async {
        initiateShutdown()
        await waitUntilStopped()
        try? await group.shutdownGracefully()
    }

    /// The `server` object of `stats` (uptime, connections, requests and latency per op).
    public func serverStats() -> JSONValue { processor.metrics.snapshot() }
}

/// Runs the server until SIGTERM or SIGINT, then drains and returns (the caller exits 0).
/// This is all `colbert serve` needs once it has opened its backend.
public func runServer(backend: some RetrievalBackend, configuration: ServerConfiguration, logger: Logger) async throws {
    let server = ColBERTServer(backend: backend, configuration: configuration, logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [server], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger))
    try await group.run()
}
