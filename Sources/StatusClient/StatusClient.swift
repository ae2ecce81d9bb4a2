import Glibc
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// A one-request HTTP client for the status socket, used by `dreamnet-healthctl`.
///
/// It blocks the calling thread and starts none: a command run from cron or a Nagios check pays
/// for every thread and event loop it starts, and one request needs neither. The socket is
/// driven with `poll(2)` against one deadline; SwiftNIO's HTTP/1.1 encoder and decoder, in an
/// embedded channel, write the request and read the reply.
public enum StatusClient {
    public struct Response: Sendable {
        public var status: Int
        public var body: [UInt8]
    }

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var socketPath: String
        public var detail: String
        /// The system error behind the failure, when there was one (`EACCES`, `ECONNREFUSED`, ...).
        public var errno: Int32?
        public var description: String { "cannot reach dreamnet-healthd at \(socketPath): \(detail)" }

        public init(socketPath: String, detail: String, errno: Int32? = nil) {
            self.socketPath = socketPath
            self.detail = detail
            self.errno = errno
        }

        /// The socket, or a directory on its way, refused this user.
        public var isPermissionDenied: Bool { errno == EACCES || errno == EPERM }
    }

    /// `GET uri` on the socket at `socketPath`; connecting, sending and the whole reply within
    /// `timeout`. Blocks the calling thread: call it from a thread that may block.
    public static func get(_ uri: String, socketPath: String, timeout: Duration = .seconds(5)) throws(Failure) -> Response {
        let connection = try Connection(socketPath: socketPath, timeout: timeout)
        defer { Glibc.close(connection.descriptor) }
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        do {
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)
            head.headers.add(name: "Host", value: "localhost")
            head.headers.add(name: "Connection", value: "close")
            try channel.writeOutbound(HTTPClientRequestPart.head(head))
            try channel.writeOutbound(HTTPClientRequestPart.end(nil))
            var request: [UInt8] = []
            while let bytes = try channel.readOutbound(as: ByteBuffer.self) { request += bytes.readableBytesView }
            try connection.send(request)

            var status = 0
            var body: [UInt8] = []
            while true {
                let received = try connection.receive()
                if received.isEmpty {
                    // The end of a reply without a length is the end of the connection.
                    channel.pipeline.fireChannelInactive()
                } else {
                    try channel.writeInbound(channel.allocator.buffer(bytes: received))
                }
                while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
                    switch part {
                    case .head(let responseHead): status = Int(responseHead.status.code)
                    case .body(let bytes): body += bytes.readableBytesView
                    case .end: return Response(status: status, body: body)
                    }
                }
                if received.isEmpty {
                    throw Failure(socketPath: socketPath, detail: "connection closed before the reply ended")
                }
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(socketPath: socketPath, detail: "unreadable reply: \(error)")
        }
    }

    /// One Unix stream socket, connected and then non-blocking, every call bounded by one
    /// deadline: `timeout` from the connection's start.
    private struct Connection {
        let descriptor: Int32
        let socketPath: String
        let timeout: Duration
        let deadline: ContinuousClock.Instant

        init(socketPath: String, timeout: Duration) throws(Failure) {
            self.socketPath = socketPath
            self.timeout = timeout
            deadline = .now + timeout
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let path = Array(socketPath.utf8)
            guard path.count < MemoryLayout.size(ofValue: address.sun_path) else {
                throw Failure(socketPath: socketPath, detail: "the path is longer than a socket address holds", errno: ENAMETOOLONG)
            }
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
            descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard descriptor >= 0 else { throw Failure(socketPath: socketPath, detail: String(cString: strerror(errno)), errno: errno) }
            // A Unix socket connects at once, or waits while the listener's backlog is full. A
            // non-blocking connect does not go on in the background as a TCP one does (EAGAIN:
            // nothing happened), so the connect blocks, for at most the time left.
            let left = max(deadline - .now, .milliseconds(1)).components
            var limit = timeval(tv_sec: Int(left.seconds), tv_usec: max(Int(left.attoseconds / 1_000_000_000_000), 1))
            setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            var code: Int32 = 0
            repeat {
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
                code = connected == 0 ? 0 : errno
            } while code == EINTR
            guard code == 0 || code == EISCONN else {
                Glibc.close(descriptor)
                let detail = code == EAGAIN ? "no answer within \(timeout) (its backlog is full)" : String(cString: strerror(code))
                throw Failure(socketPath: socketPath, detail: detail, errno: code)
            }
            // The exchange itself waits in poll(2), against the same deadline.
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        }

        func send(_ bytes: [UInt8]) throws(Failure) {
            var offset = 0
            while offset < bytes.count {
                let sent = bytes[offset...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent >= 0 {
                    offset += sent
                } else if errno == EAGAIN {
                    try wait(for: Int16(POLLOUT))
                } else if errno != EINTR {
                    throw Failure(socketPath: socketPath, detail: "sending the request: \(String(cString: strerror(errno)))", errno: errno)
                }
            }
        }

        /// What arrived next; empty at the end of the connection.
        func receive() throws(Failure) -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
                if count >= 0 { return Array(buffer[..<count]) }
                if errno == EAGAIN {
                    try wait(for: Int16(POLLIN))
                } else if errno != EINTR {
                    throw Failure(socketPath: socketPath, detail: "reading the reply: \(String(cString: strerror(errno)))", errno: errno)
                }
            }
        }

        private func wait(for events: Int16) throws(Failure) {
            while true {
                let remaining = deadline - .now
                guard remaining > .zero else { throw Failure(socketPath: socketPath, detail: "no answer within \(timeout)") }
                var descriptorEvents = pollfd(fd: descriptor, events: events, revents: 0)
                let milliseconds = Int32(min((remaining / .milliseconds(1)).rounded(.up), Double(Int32.max)))
                let ready = poll(&descriptorEvents, 1, milliseconds)
                if ready > 0 { return }
                if ready < 0 && errno != EINTR {
                    throw Failure(socketPath: socketPath, detail: String(cString: strerror(errno)), errno: errno)
                }
            }
        }
    }
}
