import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix

/// A one-request HTTP client for the status socket, used by `dreamnet-healthctl`.
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

    public static func get(_ uri: String, socketPath: String, timeout: Duration = .seconds(5)) async throws(Failure) -> Response {
        do {
            return try await withThrowingTaskGroup(of: Response?.self) { group in
                group.addTask { try await request(uri, socketPath: socketPath) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let response = first else {
                    throw Failure(socketPath: socketPath, detail: "no answer within \(timeout)")
                }
                return response
            }
        } catch let failure as Failure {
            throw failure
        } catch let error as IOError {
            throw Failure(socketPath: socketPath, detail: String(cString: strerror(error.errnoCode)), errno: error.errnoCode)
        } catch {
            throw Failure(socketPath: socketPath, detail: "\(error)")
        }
    }

    private static func request(_ uri: String, socketPath: String) async throws -> Response {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: socketPath) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel
                    )
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)
            head.headers.add(name: "Host", value: "localhost")
            head.headers.add(name: "Connection", value: "close")
            // One write: the server may answer (and close) as soon as it has the head.
            try await outbound.write(contentsOf: [.head(head), .end(nil)])

            var status = 0
            var body: [UInt8] = []
            for try await part in inbound {
                switch part {
                case .head(let responseHead): status = Int(responseHead.status.code)
                case .body(let buffer): body.append(contentsOf: buffer.readableBytesView)
                case .end: return Response(status: status, body: body)
                }
            }
            throw Failure(socketPath: socketPath, detail: "connection closed before the reply ended")
        }
    }
}
