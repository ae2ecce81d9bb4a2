import FoundationEssentials
import Glibc
import HealthCore
import Logging
import PostgresProbe
import ServiceLifecycle
import StatusHTTP
import SystemdNotify

/// The composition root: builds every service from a validated configuration and runs them in
/// one `ServiceGroup` that shuts down gracefully on SIGTERM and SIGINT.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    public let store: StatusStore
    private let group: ServiceGroup
    private let notifier: SystemdNotifier

    /// Validates what only an adapter can (the connection string), binds the status socket and
    /// assembles the services. Throws `DaemonStartError` with a message fit for an operator.
    public static func make(
        configuration: DaemonConfiguration, databaseURLSource: String?, logger: Logger
    ) async throws(DaemonStartError) -> Daemon {
        var target: ConnectionTarget?
        if let url = configuration.databaseURL {
            do {
                target = try ConnectionTarget.parse(url)
            } catch {
                throw .configuration(ConfigurationError(
                    code: .invalidValue, key: ConfigKey.databaseURL.rawValue, source: databaseURLSource,
                    message: error.description
                ))
            }
        }

        let store = StatusStore(StatusSnapshot(
            configuration: configuration, target: target?.display, version: DaemonVersion.current,
            pid: getpid(), startedAt: Date(), startedInstant: .now
        ))
        let server: StatusServer
        do {
            server = try await StatusServer.bind(path: configuration.socketPath) { method, uri in
                StatusAPI.respond(method: method, uri: uri, snapshot: store.read(), clocks: StatusAPI.Clocks(wall: Date(), monotonic: .now))
            }
        } catch {
            throw .socket(error)
        }

        let notifier = SystemdNotifier()
        let probe = ProbeService(
            prober: target.map { PostgresProber(target: $0, timeout: configuration.timeout) },
            configuration: configuration, store: store, notifier: notifier, logger: logger
        )
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: StatusServerService(server: server)),
                .init(service: probe),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))

        logger.info("dreamnet-healthd \(DaemonVersion.current) started", metadata: [
            "socket": "\(configuration.socketPath)",
            "target": "\(target?.display ?? "not configured")",
            "interval": "\(HumanDuration.format(configuration.interval))",
            "timeout": "\(HumanDuration.format(configuration.timeout))",
            "fall": "\(configuration.fall)", "rise": "\(configuration.rise)",
        ])
        return Daemon(configuration: configuration, store: store, group: group, notifier: notifier)
    }

    /// Runs until SIGTERM or SIGINT; returns after a graceful shutdown.
    public func run() async throws {
        defer { notifier.stopping() }
        try await group.run()
    }
}

/// Why the daemon could not start. The description is safe to print: no secrets.
public enum DaemonStartError: Error, Sendable, CustomStringConvertible {
    case configuration(ConfigurationError)
    case socket(StatusServerError)

    public var description: String {
        switch self {
        case .configuration(let error): return "configuration error: \(error)"
        case .socket(let error): return error.description
        }
    }
}
