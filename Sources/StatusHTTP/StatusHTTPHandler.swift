import HealthCore
import NIOCore
import NIOHTTP1

/// Answers one HTTP/1.1 connection from the in-memory snapshot. Runs on the event loop and
/// never waits on anything: a reply is a lock, a copy and an encode.
///
/// A reply is written only once the one before it has been taken by the kernel. A client that
/// pipelines requests and never reads would otherwise have every reply queued in the daemon's
/// heap (1 000 replies to `/status` are over 1 MiB); this way at most one waits per connection,
/// the pipelining handler holds the requests already decoded and stops reading, and the rest of
/// what the client sent stays in the kernel's socket buffer.
final class StatusHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests to this API have no body; anything larger than this is refused.
    static let maximumBodyBytes = 4_096

    private let respond: @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    private var refused = false
    /// A reply has been written and the kernel has not taken all of it yet.
    private var replyInFlight = false
    /// The request whose reply waits for the one in flight (the pipelining handler passes on
    /// one request at a time, so there is never more than one).
    private var waiting: HTTPRequestHead?

    init(respond: @escaping @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            bodyBytes = 0
            refused = false
        case .body(let chunk):
            bodyBytes += chunk.readableBytes
            if bodyBytes > Self.maximumBodyBytes, !refused, let head {
                refused = true
                let reply = StatusAPI.Reply.error(status: 413, message: "request body too large")
                write(reply, for: head, keepAlive: false, context: context)
            }
        case .end:
            guard let head, !refused else { return }
            self.head = nil
            if replyInFlight {
                waiting = head
            } else {
                answer(head, context: context)
            }
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let reply = respond(head.method.rawValue, head.uri)
        write(reply, for: head, keepAlive: head.isKeepAlive && !Self.stopsParsing(head), context: context)
    }

    /// The reply in flight has reached the socket (or the connection failed). The next one is
    /// answered from a new event-loop task, not from inside this callback: writes that complete
    /// at once would otherwise nest one reply inside another for every request pipelined.
    private func replyWritten(context: ChannelHandlerContext) {
        replyInFlight = false
        guard waiting != nil else { return }
        context.eventLoop.assumeIsolated().execute {
            guard !self.replyInFlight, let next = self.waiting, context.channel.isActive else { return }
            self.waiting = nil
            self.answer(next, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        waiting = nil
        context.fireChannelInactive()
    }

    /// After a CONNECT or a request to upgrade the protocol the decoder reads no further
    /// requests on the connection, and NIO sends the reply to a CONNECT without a length. The
    /// connection is closed after the reply, or a client would wait for an answer (or the end
    /// of the body) until the idle timeout; `curl --http2` asks to upgrade to h2c.
    static func stopsParsing(_ head: HTTPRequestHead) -> Bool {
        head.method == .CONNECT || head.headers.contains(name: "upgrade")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Idle connections are closed so that slow or stuck clients cannot pile up.
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func write(_ reply: StatusAPI.Reply, for request: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(4)
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if let allow = reply.allow { headers.add(name: "Allow", value: allow) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }

        let responseHead = HTTPResponseHead(
            version: request.version, status: HTTPResponseStatus(statusCode: reply.status), headers: headers
        )
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: reply.body)))), promise: nil)
        }
        // Set before the write: a write the kernel takes at once completes inside it.
        replyInFlight = true
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated()
        if keepAlive {
            written.whenComplete { _ in self.replyWritten(context: context) }
        } else {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

extension StatusAPI.Reply {
    static func error(status: Int, message: String) -> StatusAPI.Reply {
        StatusAPI.errorReply(status: status, message: message)
    }
}
