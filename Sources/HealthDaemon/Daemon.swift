import FoundationEssentials
import Glibc
import HealthCore
import Logging
import PostgresProbe
import ServiceLifecycle
import StatusHTTP
import SystemdNotify
import EventSpool
import AlertLog

/// The composition root: builds every service from a validated configuration and runs them in
/// one `ServiceGroup` that shuts down gracefully on SIGTERM and SIGINT.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    public let store: StatusStore
    private let group: ServiceGroup
    private let notifier: SystemdNotifier

    /// Validates what only an adapter can (the connection string), binds the status socket and
    /// assembles the services. Throws `DaemonStartError` with a message fit for an operator.
    /// `environment`: the process's, where systemd passes a socket (`LISTEN_FDS`) and libpq
    /// finds its `PG*` defaults.
    public static func make(
        configuration: DaemonConfiguration, databaseURLSource: String?, eventsURLSource: String? = nil,
        environment: [String: String], logger: Logger, metrics: DaemonMetrics? = nil,
        reload: (@Sendable () -> Result<LoadedConfiguration, ConfigurationError>)? = nil
    ) async throws(DaemonStartError) -> Daemon {
        let targets = try Targets(LoadedConfiguration(
            configuration: configuration, databaseURLSource: databaseURLSource, eventsURLSource: eventsURLSource
        ))
        let target = targets.probed
        let eventsTarget = targets.events

        // The spool is opened before anything runs: events and state must have a home.
        let spool: EventSpool
        let remembered: DaemonMemory?
        let openResult = await runBlocking { () -> Result<(EventSpool, DaemonMemory?), SpoolError> in
            Result { () throws(SpoolError) in
                let spool = try EventSpool(directory: configuration.stateDirectory, limit: configuration.spoolLimit)
                return (spool, try spool.recall())
            }
        }
        switch openResult {
        case .success(let opened): (spool, remembered) = opened
        case .failure(let error): throw .spool(error)
        }
        if let recovery = spool.recovery {
            var metadata: Logger.Metadata = [
                "salvaged": "\(recovery.salvaged)", "damaged": "\(recovery.damaged.map(String.init) ?? "unknown")",
            ]
            if let aside = recovery.movedAsideTo { metadata["moved_to"] = "\(aside)" }
            logger.error(
                recovery.movedAsideTo == nil
                    ? "the spool held damaged rows: they were moved to its damaged_events table"
                    : "the spool was damaged and has been moved aside; its intact events were copied into a new one",
                metadata: metadata
            )
        }

        let store = StatusStore(StatusSnapshot(
            configuration: configuration, target: target?.display, version: DaemonVersion.current,
            pid: getpid(), startedAt: Date(), startedInstant: .now
        ))
        let notifier = SystemdNotifier()
        let wakeup = WakeupSignal()
        let origin = HealthEvent.Origin(host: hostName(), pid: getpid(), version: DaemonVersion.current)
        let alertLog = AlertLog(path: configuration.alertLogPath)
        store.update { $0.alertLogPath = configuration.alertLogPath }
        let recorder = EventRecorder(
            spool: spool, alertLog: alertLog, store: store, logger: logger, origin: origin, wakeup: wakeup
        )
        // Before the socket answers: a request must not see an empty spool that is not.
        if let summary = await recorder.spoolSummary() {
            store.update { $0.spool.apply(summary) }
        }
        let respond = StatusResponder.make(store: store, metrics: metrics)
        let server: StatusServer
        var activated = false
        do {
            if let passed = try SocketActivation.passedListener(environment: environment) {
                activated = true
                server = try await StatusServer.adopt(descriptor: passed, path: configuration.socketPath, respond: respond)
                logger.info("serving on the socket passed by systemd", metadata: ["descriptor": "\(passed)"])
            } else {
                server = try await StatusServer.bind(path: configuration.socketPath, respond: respond)
            }
        } catch let error as SocketActivation.Failure {
            throw .activation(error)
        } catch let error as StatusServerError {
            throw .socket(error)
        } catch {
            throw .socket(StatusServerError(code: .bindFailed, path: configuration.socketPath, detail: "\(error)"))
        }

        var tcpServer: StatusServer?
        if let address = configuration.httpListen {
            do {
                tcpServer = try await StatusServer.bindTCP(host: address.host, port: address.port, respond: respond)
            } catch {
                await server.close()
                throw .socket(error)
            }
        }

        let prober = target.map { PostgresProber(target: $0, configuration: configuration, environment: environment) }
        let gate = DeliveryGate(wakeup: wakeup)
        let delivery = EventDeliveryService(
            spool: spool,
            writer: eventsTarget.map {
                EventTableWriter(target: $0, configuration: configuration, environment: environment, prober: prober)
            },
            store: store, logger: logger, wakeup: wakeup, gate: gate
        )
        let probe = ProbeService(
            prober: prober,
            configuration: configuration, store: store, recorder: recorder, remembered: remembered,
            notifier: notifier, logger: logger, metrics: metrics, deliveryGate: gate,
            // Started on demand by a client's request: that client waits for the first verdict.
            splayFirstProbe: configuration.splay && !activated, environment: environment
        )
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: StatusServerService(server: server)),
            .init(service: delivery),
            .init(service: AlertLogReopenService(alertLog: alertLog, logger: logger)),
            .init(service: probe),
            .init(service: ProbeRequestService(probe: probe, logger: logger)),
        ]
        if let tcpServer { services.append(.init(service: StatusServerService(server: tcpServer))) }
        if let reload {
            services.append(.init(service: ReloadService(
                load: reload, initial: configuration, environment: environment, probe: probe, delivery: delivery,
                alertLog: alertLog, store: store, notifier: notifier, logger: logger
            )))
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        // Bounded: within the unit's TimeoutStopSec (10 s), whatever hangs.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(8)
        let group = ServiceGroup(configuration: groupConfiguration)

        logger.info("dreamnet-healthd \(DaemonVersion.current) started", metadata: [
            "socket": "\(configuration.socketPath)",
            "target": "\(target?.display ?? "not configured")",
            "interval": "\(HumanDuration.format(configuration.interval))",
            "timeout": "\(HumanDuration.format(configuration.timeout))",
            "connect_timeout": "\(HumanDuration.format(configuration.connectTimeout))",
            "fall": "\(configuration.fall)", "rise": "\(configuration.rise)",
            "probe_connection": "\(configuration.probeConnection.rawValue)",
        ])
        return Daemon(configuration: configuration, store: store, group: group, notifier: notifier)
    }

    /// Runs until SIGTERM or SIGINT; returns after a graceful shutdown.
    public func run() async throws {
        defer { notifier.stopping() }
        try await group.run()
    }
}

/// The databases a configuration names, parsed by libpq: the probed one, and the one events go
/// to (the probed one unless another is configured). At start and at every reload.
struct Targets {
    var probed: ConnectionTarget?
    var events: ConnectionTarget?

    init(_ loaded: LoadedConfiguration) throws(DaemonStartError) {
        let configuration = loaded.configuration
        probed = try Self.parse(
            configuration.databaseURL, key: .databaseURL, source: loaded.databaseURLSource,
            password: configuration.databasePassword
        )
        events = probed
        if let eventsURL = configuration.eventsDatabaseURL {
            events = try Self.parse(eventsURL, key: .eventsDatabaseURL, source: loaded.eventsURLSource)
        }
    }

    private static func parse(
        _ url: String?, key: ConfigKey, source: String?, password: String? = nil
    ) throws(DaemonStartError) -> ConnectionTarget? {
        guard let url else { return nil }
        do {
            return try ConnectionTarget.parse(url, password: password)
        } catch {
            throw .configuration(ConfigurationError(code: .invalidValue, key: key.rawValue, source: source, message: error.description))
        }
    }
}

extension PostgresProber {
    init(target: ConnectionTarget, configuration: DaemonConfiguration, environment: [String: String]) {
        self.init(
            target: target, timeout: configuration.timeout,
            policy: ProbePolicy(
                mode: configuration.probeConnection, freshEvery: configuration.freshEvery,
                serverTimeouts: configuration.serverTimeouts, connectTimeout: configuration.connectTimeout
            ),
            environment: environment
        )
    }
}

extension EventTableWriter {
    /// `prober`: the probed database's; its kept session is shared when events go there too.
    convenience init(
        target: ConnectionTarget, configuration: DaemonConfiguration, environment: [String: String], prober: PostgresProber?
    ) {
        self.init(
            target: target, serverTimeouts: configuration.serverTimeouts, environment: environment,
            sharing: configuration.eventsDatabaseURL == nil ? prober : nil
        )
    }
}

private func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return "unknown" }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Why the daemon could not start. The description is safe to print: no secrets.
public enum DaemonStartError: Error, Sendable, CustomStringConvertible {
    case configuration(ConfigurationError)
    case socket(StatusServerError)
    case spool(SpoolError)
    case activation(SocketActivation.Failure)

    public var description: String {
        switch self {
        case .configuration(let error): return "configuration error: \(error)"
        case .socket(let error): return error.description
        case .spool(let error): return error.description
        case .activation(let error): return "socket activation: \(error)"
        }
    }
}
