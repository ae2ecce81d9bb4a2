import ServiceLifecycle
import StatusHTTP

/// Keeps the status socket open for the daemon's lifetime and closes it (removing the socket
/// file) on shutdown.
final class StatusServerService: Service {
    private let server: StatusServer

    init(server: StatusServer) {
        self.server = server
    }

    func run() async throws {
        try? await gracefulShutdown()
        await server.close()
    }
}
