import NIOCore
import NIOExtras
import NIOPosix

/// Errors of `ServerClient`.
public enum ClientError: Error, CustomStringConvertible, Sendable {
    case connectionClosed
    case badResponse(String)
    case cannotConnect(String, String)

    public var description: String {
        switch self {
        case .connectionClosed: return "the server closed the connection"
        case .badResponse(let m): return "unreadable response from the server: \(m)"
        case .cannotConnect(let path, let why): return "cannot connect to \(path): \(why)"
        }
    }
}

/// A small client of the protocol: one connection, requests may be pipelined (responses are
/// matched to requests by order, which the server guarantees).
public final class ServerClient: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<ClientLineHandler>

    private init(channel: any Channel, handler: NIOLoopBound<ClientLineHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects to the server's socket. `maxResponseBytes` bounds one response line.
    public static func connect(
        socketPath: String,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        maxResponseBytes: Int = 1 << 30
    ) async throws -> ServerClient {
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: maxResponseBytes))
                    try channel.pipeline.syncOperations.addHandler(ClientLineHandler())
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(unixDomainSocketPath: socketPath).get()
        } catch {
            throw ClientError.cannotConnect(socketPath, "\(error)")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientLineHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return ServerClient(channel: channel, handler: handler)
    }

    /// Sends raw bytes (a newline is NOT added) and returns the next `responses` lines.
    public func sendRaw(_ bytes: [UInt8], responses: Int) async throws -> [String] {
        let handler = self.handler
        let channel = self.channel
        let futures = try await channel.eventLoop.submit { () -> [EventLoopFuture<String>] in
            let fs = (0..<responses).map { _ in handler.value.nextLine(on: channel.eventLoop) }
            if !bytes.isEmpty {
                var buffer = channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                channel.writeAndFlush(buffer, promise: nil)
            }
            return fs
        }.get()
        var lines: [String] = []
        for f in futures { lines.append(try await f.get()) }
        return lines
    }

    /// Sends one line (newline added) and returns the response line.
    public func sendLine(_ line: String) async throws -> String {
        try await sendRaw(Array(line.utf8) + [0x0A], responses: 1)[0]
    }

    /// Sends one request object and returns the parsed response object.
    public func send(_ request: JSONValue) async throws -> JSONValue {
        var bytes: [UInt8] = []
        request.write(into: &bytes)
        bytes.append(0x0A)
        let line = try await sendRaw(bytes, responses: 1)[0]
        do {
            return try JSONValue.parse(line, maxDepth: 1024)
        } catch {
            throw ClientError.badResponse("\(error)")
        }
    }

    /// Sends several requests at once (pipelined) and returns their responses in order.
    public func sendPipelined(_ requests: [JSONValue]) async throws -> [JSONValue] {
        var bytes: [UInt8] = []
        for r in requests { r.write(into: &bytes); bytes.append(0x0A) }
        return try await sendRaw(bytes, responses: requests.count).map {
            do { return try JSONValue.parse($0, maxDepth: 1024) } catch { throw ClientError.badResponse("\(error)") }
        }
    }

    /// Closes the sending side; the server answers what it has and closes.
    public func finishSending() async throws {
        try await channel.close(mode: .output)
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Matches response lines to waiting requests in order; lines nobody waits for yet are kept
/// (a few) for the next request, e.g. the `overloaded` line of a rejected connection.
final class ClientLineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var waiting: [EventLoopPromise<String>] = []
    private var early: [String] = []
    private var closed = false

    func nextLine(on loop: any EventLoop) -> EventLoopFuture<String> {
        if !early.isEmpty { return loop.makeSucceededFuture(early.removeFirst()) }
        if closed { return loop.makeFailedFuture(ClientError.connectionClosed) }
        let p = loop.makePromise(of: String.self)
        waiting.append(p)
        return p.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        let line = buffer.readString(length: buffer.readableBytes) ?? ""
        if waiting.isEmpty {
            if early.count < 64 { early.append(line) }
        } else {
            waiting.removeFirst().succeed(line)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error is NIOExtrasErrors.LeftOverBytesError ? ClientError.connectionClosed : error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            failAll(ClientError.connectionClosed)
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func failAll(_ error: any Error) {
        closed = true
        let w = waiting
        waiting.removeAll()
        for p in w { p.fail(error) }
    }
}
