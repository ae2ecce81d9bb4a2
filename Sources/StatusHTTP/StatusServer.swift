import Glibc
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

    private init(path: String, channel: Channel) {
        self.path = path
        self.channel = channel
    }

    /// Binds `path` (mode 0660), replacing a stale socket left by a process that died, but never
    /// one that another process still answers on.
    public static func bind(
        path: String,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        respond: @escaping @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply
    ) async throws(StatusServerError) -> StatusServer {
        try removeStaleSocket(at: path)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try sync.addHandler(StatusHTTPHandler(respond: respond))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: false)
        // Bind and listen under a temporary name, set the mode, then rename into place: the
        // socket appears only once it accepts connections, and never with a looser mode.
        let temporaryPath = path + ".\(getpid()).tmp"
        unlink(temporaryPath)
        let channel: Channel
        do {
            channel = try await bootstrap.bind(unixDomainSocketPath: temporaryPath).get()
        } catch {
            throw StatusServerError(code: .bindFailed, path: path, detail: "\(error)")
        }
        let failedStep = chmod(temporaryPath, 0o660) != 0 ? "chmod 0660" : rename(temporaryPath, path) != 0 ? "rename" : nil
        if let step = failedStep {
            let detail = String(cString: strerror(errno))
            try? await channel.close()
            unlink(temporaryPath)
            throw StatusServerError(code: .bindFailed, path: path, detail: "\(step): \(detail)")
        }
        return StatusServer(path: path, channel: channel)
    }

    /// Stops accepting, closes the listener and removes the socket file.
    public func close() async {
        try? await channel.close()
        unlink(path)
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
        if StatusClient.isAnswering(socketPath: path) {
            throw StatusServerError(code: .pathInUse, path: path, detail: "another process is listening on it")
        }
        unlink(path)
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

    public var description: String { "status socket \(path): \(detail)" }
}
