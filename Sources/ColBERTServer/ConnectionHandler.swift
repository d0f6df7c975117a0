import Logging
import NIOCore
import NIOExtras

/// One connection: request lines in, response lines out in request order.
///
/// Requests of a connection run concurrently (up to `maxInFlightPerConnection`); their responses
/// are written strictly in arrival order. Reading stops while that many are unanswered or while
/// the socket is not writable (the client is not reading): nothing is buffered without bound.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Frame {
        case line(ByteBuffer)
        /// A synthetic error response (line too long, truncated at EOF).
        case failure(ErrorCode, String)
    }

    private struct Slot {
        let seq: UInt64
        var response: [UInt8]?
    }

    private let processor: RequestProcessor
    private let connectionID: Int
    private let maxInFlight: Int
    private let maxLineBytes: Int
    private var held: [Frame] = []
    private var slots: [Slot] = []
    private var nextSeq: UInt64 = 0
    private var readSuppressed = false
    /// No more requests will be read (EOF, fatal framing error, shutdown).
    private var inputDone = false
    private var active = true
    private var loopExecutor: EventLoopTaskExecutor?
    /// Request lines up to this size are parsed on the event loop (a search line is ~100 bytes of
    /// text or ~40 KB of vectors; parsing 64 KiB takes well under a millisecond).
    static let onLoopLineBytes = 64 * 1024

    private func taskExecutor(for loop: any EventLoop) -> EventLoopTaskExecutor {
        if let e = loopExecutor, e.loop === loop { return e }
        let e = EventLoopTaskExecutor(loop: loop)
        loopExecutor = e
        return e
    }

    init(processor: RequestProcessor, connectionID: Int) {
        self.processor = processor
        self.connectionID = connectionID
        self.maxInFlight = max(1, processor.limits.maxInFlightPerConnection)
        self.maxLineBytes = processor.limits.maxLineBytes
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !inputDone else { return }
        let line = unwrapInboundIn(data)
        if line.readableBytes > maxLineBytes {
            // A whole over-long line can arrive in one read, before the decoder's buffer check.
            tooLarge(context: context)
            return
        }
        // Blank lines are not requests and get no response (keeps request/response pairing).
        if line.readableBytesView.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return }
        held.append(.line(line))
        pump(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !inputDone else { return }
        if error is ByteToMessageDecoderError.PayloadTooLargeError {
            tooLarge(context: context)
            return
        } else if let leftover = error as? NIOExtrasErrors.LeftOverBytesError {
            held.append(.failure(.badJSON, "input ended in the middle of a line (\(leftover.leftOverBytes.readableBytes) bytes without a newline); ignored"))
        } else {
            processor.logger.debug("connection error", metadata: ["conn": "\(connectionID)", "error": "\(error)"])
            inputDone = true
            context.close(promise: nil)
            return
        }
        inputDone = true
        pump(context: context)
    }

    private func tooLarge(context: ChannelHandlerContext) {
        held.append(.failure(.tooLarge, "request line longer than \(maxLineBytes) bytes; the connection will be closed"))
        inputDone = true
        pump(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            inputDone = true
            checkClose(context: context)
        case is ChannelShouldQuiesceEvent:
            // Answer what was already read, read nothing more, then close.
            inputDone = true
            checkClose(context: context)
        case let idle as IdleStateHandler.IdleStateEvent where idle == .all:
            if held.isEmpty && slots.isEmpty {
                processor.logger.debug("closing idle connection", metadata: ["conn": "\(connectionID)"])
                inputDone = true
                context.close(promise: nil)
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        held.removeAll()
        slots.removeAll()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flushReady(context: context) }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Outbound

    func read(context: ChannelHandlerContext) {
        if shouldRead(context: context) {
            context.read()
        } else {
            readSuppressed = true
        }
    }

    private func shouldRead(context: ChannelHandlerContext) -> Bool {
        !inputDone && held.isEmpty && slots.count < maxInFlight && context.channel.isWritable
    }

    // MARK: Flow

    private func pump(context: ChannelHandlerContext) {
        while active, !held.isEmpty, slots.count < maxInFlight {
            let frame = held.removeFirst()
            let seq = nextSeq
            nextSeq += 1
            switch frame {
            case .failure(let code, let message):
                processor.metrics.record(op: nil, error: code, elapsed: .microseconds(1))
                slots.append(Slot(seq: seq, response: RequestProcessor.errorLine(id: .null, BackendError(code, message))))
            case .line(var buffer):
                slots.append(Slot(seq: seq, response: nil))
                let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
                let processor = self.processor
                let conn = connectionID
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                let loop = context.eventLoop
                // A request's task prefers this connection's event loop: it starts without
                // waking a thread of the global executor, and after the encoder and search pools
                // resume it, the response is written where it already is: two thread wake-ups
                // fewer per request. Long lines (bulk adds) are parsed off the loop instead, so
                // they do not hold up the loop's other connections.
                let finish: @Sendable ([UInt8]) -> Void = { response in
                    if loop.inEventLoop {
                        let (handler, context) = bound.value
                        handler.complete(seq: seq, response: response, context: context)
                    } else {
                        loop.execute {
                            let (handler, context) = bound.value
                            handler.complete(seq: seq, response: response, context: context)
                        }
                    }
                }
                if bytes.count <= Self.onLoopLineBytes {
                    Task(executorPreference: taskExecutor(for: loop)) {
                        finish(await processor.handle(line: bytes, connection: conn))
                    }
                } else {
                    Task { finish(await processor.handle(line: bytes, connection: conn)) }
                }
            }
        }
        flushReady(context: context)
    }

    private func complete(seq: UInt64, response: [UInt8], context: ChannelHandlerContext) {
        guard active, let first = slots.first else { return }
        let index = Int(seq &- first.seq)
        guard index >= 0, index < slots.count, slots[index].seq == seq else { return }
        slots[index].response = response
        flushReady(context: context)
    }

    private func flushReady(context: ChannelHandlerContext) {
        guard active else { return }
        var wrote = false
        while let first = slots.first, let response = first.response, context.channel.isWritable {
            var buffer = context.channel.allocator.buffer(capacity: response.count)
            buffer.writeBytes(response)
            context.write(wrapOutboundOut(buffer), promise: nil)
            slots.removeFirst()
            wrote = true
        }
        if wrote { context.flush() }
        if !held.isEmpty && slots.count < maxInFlight {
            pump(context: context)
            return
        }
        if readSuppressed && shouldRead(context: context) {
            readSuppressed = false
            context.read()
        }
        checkClose(context: context)
    }

    private func checkClose(context: ChannelHandlerContext) {
        if active, inputDone, held.isEmpty, slots.isEmpty {
            active = false
            context.close(promise: nil)
        }
    }
}

/// Installed instead of `ConnectionHandler` on a connection over the limit: one `overloaded`
/// line, then close.
final class RejectConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let message: String

    init(message: String) { self.message = message }

    func channelActive(context: ChannelHandlerContext) {
        let line = RequestProcessor.errorLine(id: .null, BackendError(.overloaded, message))
        var buffer = context.channel.allocator.buffer(capacity: line.count)
        buffer.writeBytes(line)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// Runs Swift tasks on a NIO event loop, so that a request's task can start and finish on the
/// loop of its connection.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }
}
