import CGlibcMalloc
import Glibc
import Synchronization
import HealthCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The status socket: HTTP/1.1 on a Unix stream socket (so `curl --unix-socket` works),
/// answered from the snapshot handed in as `respond`.
public final class StatusServer: Sendable {
    /// Connections idle for this long are closed.
    public static let idleTimeout = TimeAmount.seconds(30)

    public let path: String
    private let channel: Channel
    /// The socket file this process created; `nil` when systemd passed the socket.
    private let identity: FileIdentity?
    /// The accepted connections, which `close()` lets finish.
    private let connections: ConnectionLimiter

    private init(path: String, channel: Channel, identity: FileIdentity?, connections: ConnectionLimiter) {
        self.path = path
        self.channel = channel
        self.identity = identity
        self.connections = connections
    }

    /// How long `close()` waits for clients whose connections were accepted to send their
    /// request and read the reply before the open connections are asked to quiesce.
    static let drainGrace = Duration.milliseconds(250)
    /// How long `close()` then waits for replies in progress before closing what is left.
    static let drainLimit = Duration.seconds(1)

    /// Open connections at most: a flood of clients cannot use up the descriptors the probes
    /// need. A connection beyond it closes the oldest.
    public static let maximumConnections = 512

    /// Binds `path` (mode 0660), replacing a stale socket left by a process that died, but never
    /// one that another process still answers on.
    public static func bind(
        path: String,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        respond: @escaping @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply
    ) async throws(StatusServerError) -> StatusServer {
        try removeStaleSocket(at: path)
        let connections = ConnectionLimiter(maximum: maximumConnections)
        let bootstrap = makeBootstrap(group: group, connections: connections, respond: respond)
        // Bind and listen under a temporary name, set the mode, then link it into place: the
        // socket appears only once it accepts connections, never with a looser mode, and never
        // over a socket another instance placed meanwhile (link(2) does not replace).
        let temporaryPath = path + ".new"
        unlink(temporaryPath)
        let channel: Channel
        do {
            channel = try await bootstrap.bind(unixDomainSocketPath: temporaryPath).get()
        } catch {
            throw StatusServerError(code: .bindFailed, path: path, detail: "\(error)")
        }
        defer { unlink(temporaryPath) }
        var failure: StatusServerError?
        if chmod(temporaryPath, 0o660) != 0 {
            failure = StatusServerError(code: .bindFailed, path: path, detail: "chmod 0660: \(String(cString: strerror(errno)))")
        } else if link(temporaryPath, path) != 0 {
            let code: StatusServerError.Code = errno == EEXIST ? .pathInUse : .bindFailed
            failure = StatusServerError(code: code, path: path, detail: String(cString: strerror(errno)))
        }
        var info = stat()
        if failure == nil, stat(path, &info) != 0 {
            failure = StatusServerError(code: .bindFailed, path: path, detail: String(cString: strerror(errno)))
        }
        if let failure {
            try? await channel.close()
            throw failure
        }
        return StatusServer(path: path, channel: channel, identity: FileIdentity(info), connections: connections)
    }

    /// Serves the same endpoints over TCP (`--http-listen`), for Prometheus and load balancers.
    public static func bindTCP(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        respond: @escaping @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply
    ) async throws(StatusServerError) -> StatusServer {
        let label = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        do {
            let connections = ConnectionLimiter(maximum: maximumConnections)
            let channel = try await makeBootstrap(group: group, connections: connections, respond: respond)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port).get()
            return StatusServer(path: label, channel: channel, identity: nil, connections: connections)
        } catch {
            throw StatusServerError(code: .bindFailed, path: label, detail: "\(error)")
        }
    }

    /// Serves on a listening socket handed over by systemd. The socket file is systemd's: its
    /// mode is the unit's `SocketMode=`, and it is not removed at shutdown.
    public static func adopt(
        descriptor: Int32, path: String,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        respond: @escaping @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply
    ) async throws(StatusServerError) -> StatusServer {
        do {
            let connections = ConnectionLimiter(maximum: maximumConnections)
            let channel = try await makeBootstrap(group: group, connections: connections, respond: respond)
                .withBoundSocket(descriptor).get()
            return StatusServer(path: path, channel: channel, identity: nil, connections: connections)
        } catch {
            throw StatusServerError(code: .bindFailed, path: path, detail: "adopting descriptor \(descriptor): \(error)")
        }
    }

    private static func makeBootstrap(
        group: any EventLoopGroup, connections limiter: ConnectionLimiter,
        respond: @escaping @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply
    ) -> ServerBootstrap {
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionAdmissionHandler(limiter: limiter))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ReadsOnRequestHandler())
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try sync.addHandler(StatusHTTPHandler(respond: respond))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            // What one connection can make the daemon hold: a client that pipelines requests
            // and reads no reply gets one reply queued (StatusHTTPHandler) and the requests of
            // one read decoded ahead; the pipelining handler then stops reading and the rest
            // waits in the kernel. One read of at most `readBytes`, not NIO's default of up to
            // four reads of up to 64 KiB, keeps that to about fifteen of the shortest requests.
            .childChannelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: readBytes))
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(sendBufferBytes))
    }

    /// The kernel's send buffer per connection (it doubles the figure for its own accounting).
    /// The default, 208 KiB, let a client that never reads have about 190 replies to
    /// `/status` computed for it before the daemon stopped; at this size it is about 15, and
    /// 512 such clients cost 0.4 s of CPU instead of 2.4 s. A reply larger than the buffer
    /// (`/events?limit=1000`) takes more than one write.
    static let sendBufferBytes = 16_384

    /// The most one read of a connection takes in. A request to this API is under 300 bytes
    /// (a Prometheus scrape's is the longest); a larger one takes more reads.
    static let readBytes = 512

    /// Stops accepting, closes the listener and removes the socket file, unless it is no longer
    /// ours (an operator or another instance replaced it); then lets the accepted connections
    /// finish. A connection closed with its request unread is reset, and its client sees an
    /// error, not an answer: under socket activation, where systemd keeps the listener and the
    /// next instance takes the connections still queued, a restart must fail no client. So
    /// clients get `drainGrace` to send their request and read the reply, the connections left
    /// (idle keep-alive ones) are then asked to quiesce, which closes the idle ones and ends
    /// the others after the reply in progress, and after `drainLimit` the rest are closed.
    public func close() async {
        try? await channel.close()
        var info = stat()
        if let identity, stat(path, &info) == 0, FileIdentity(info) == identity {
            unlink(path)
        }
        if await connections.waitUntilAllClosed(within: Self.drainGrace) { return }
        for connection in connections.openConnections {
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        if await connections.waitUntilAllClosed(within: Self.drainLimit) { return }
        for connection in connections.openConnections {
            try? await connection.close()
        }
    }

    private static func removeStaleSocket(at path: String) throws(StatusServerError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
            if !directory.isEmpty, access(directory, F_OK) != 0 {
                throw StatusServerError(code: .bindFailed, path: path, detail: "directory \(directory) does not exist")
            }
            return
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw StatusServerError(code: .pathInUse, path: path, detail: "exists and is not a socket")
        }
        switch probeExistingSocket(path) {
        case 0, EAGAIN, EINPROGRESS:
            throw StatusServerError(code: .pathInUse, path: path, detail: "another process is listening on it")
        case ECONNREFUSED, ENOENT:
            unlink(path)
        case let error:
            throw StatusServerError(
                code: .pathInUse, path: path, detail: "exists and cannot be checked: \(String(cString: strerror(error)))"
            )
        }
    }

    /// Connects without blocking (a wedged owner with a full backlog must not hang start-up);
    /// returns 0 if something accepted, else the errno: ECONNREFUSED means nobody listens.
    private static func probeExistingSocket(_ path: String) -> Int32 {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return errno }
        defer { Glibc.close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return ENAMETOOLONG }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0 ? 0 : errno
    }
}

/// Passes on only the reads the pipeline asked for. NIO reads a connection when asked, except
/// once its peer has closed: it then reads everything left at once, to find the end, and the
/// pipelining handler would decode and hold every request a client sent and never collected
/// (1 000 of them are 2 000 buffered events, 67 KB). Such a connection is closed at the end of
/// its input anyway, with the requests it has not been answered dropped, so it is closed at the
/// first read that was not asked for, and what is left is never decoded.
final class ReadsOnRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = Never

    private var asked = false

    func read(context: ChannelHandlerContext) {
        asked = true
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard asked else {
            context.close(promise: nil)
            return
        }
        asked = false
        context.fireChannelRead(data)
    }
}

/// A file's identity, to tell "our" socket file from one that replaced it.
struct FileIdentity: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// Numbers each accepted connection in the order the listener accepted it (child channels are
/// then spread over event loops, where their order is lost) and admits it to the limiter.
private final class ConnectionAdmissionHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let limiter: ConnectionLimiter

    init(limiter: ConnectionLimiter) {
        self.limiter = limiter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        let number = limiter.admit(child)
        let eventLoop = child.eventLoop
        child.closeFuture.whenComplete { [limiter] _ in limiter.release(number, on: eventLoop) }
        context.fireChannelRead(data)
    }
}

/// Bounds the open connections. At the bound the oldest connection is closed to make room:
/// a newcomer (an operator's `dreamnet-healthctl status`) is always served, and clients that
/// open connections and sit on them cannot lock everyone else out. After a burst of
/// connections it gives the freed heap back to the system (`HeapTrimPolicy`).
final class ConnectionLimiter: Sendable {
    private struct State {
        /// Open connections by admission number: the smallest is the oldest. Numbers, not
        /// object identities, which a new channel may reuse before the old one's close is seen.
        var open: [UInt64: any Channel] = [:]
        var trim = HeapTrimPolicy()
    }

    private let state = Mutex(State())
    private let admitted = Atomic<UInt64>(0)
    private let maximum: Int

    init(maximum: Int) {
        self.maximum = maximum
    }

    /// Admits a connection; returns its number, for `release`.
    func admit(_ channel: any Channel) -> UInt64 {
        let number = admitted.wrappingAdd(1, ordering: .relaxed).oldValue
        let evicted = state.withLock { state -> (any Channel)? in
            var oldest: (any Channel)?
            if state.open.count >= maximum, let key = state.open.keys.min() {
                oldest = state.open.removeValue(forKey: key)
            }
            state.open[number] = channel
            state.trim.admitted(open: state.open.count)
            return oldest
        }
        evicted?.close(promise: nil)
        return number
    }

    /// A connection closed, on `eventLoop`, where a trim it calls for then runs.
    func release(_ number: UInt64, on eventLoop: any EventLoop) {
        let scheduleTrim = state.withLock { state in
            state.open.removeValue(forKey: number)
            return state.trim.released(open: state.open.count)
        }
        guard scheduleTrim else { return }
        eventLoop.scheduleTask(in: .nanoseconds(Int64(HeapTrimPolicy.quiet / .nanoseconds(1)))) { [self] in
            if state.withLock({ $0.trim.due(open: $0.open.count) }) {
                // A walk over glibc's arenas: about 1.5 ms after 512 connections (measured
                // under strace, which slows it), once per burst, on one event loop.
                malloc_trim(0)
            }
        }
    }

    /// The connections admitted and not yet closed.
    var openConnections: [any Channel] { state.withLock { Array($0.open.values) } }

    /// Whether every admitted connection closed within `limit`; checked every 10 ms, which is
    /// only done while shutting down.
    func waitUntilAllClosed(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while true {
            if state.withLock({ $0.open.isEmpty }) { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

public struct StatusServerError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case bindFailed
        case pathInUse
    }

    public var code: Code
    public var path: String
    public var detail: String

    public init(code: Code, path: String, detail: String) {
        self.code = code
        self.path = path
        self.detail = detail
    }

    public var description: String { "status socket \(path): \(detail)" }
}
