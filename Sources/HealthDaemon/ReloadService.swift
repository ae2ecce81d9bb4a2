import FoundationEssentials
import HealthCore
import Logging
import PostgresProbe
import ServiceLifecycle
import SystemdNotify
import UnixSignals
import AlertLog

/// A configuration read anew, with where its connection strings came from (for errors).
public struct LoadedConfiguration: Sendable {
    public var configuration: DaemonConfiguration
    public var databaseURLSource: String?
    public var eventsURLSource: String?

    public init(configuration: DaemonConfiguration, databaseURLSource: String?, eventsURLSource: String?) {
        self.configuration = configuration
        self.databaseURLSource = databaseURLSource
        self.eventsURLSource = eventsURLSource
    }
}

/// SIGHUP (`systemctl reload`): RELOADING=1, read the configuration again, apply it, READY=1.
/// An invalid configuration changes nothing: the daemon goes on with the one it has and says
/// why in STATUS and the log.
final class ReloadService: Service {
    private let load: @Sendable () -> Result<LoadedConfiguration, ConfigurationError>
    private let current: MutexBox<DaemonConfiguration>
    private let environment: [String: String]
    private let probe: ProbeService
    private let delivery: EventDeliveryService
    private let alertLog: AlertLog
    private let store: StatusStore
    private let notifier: SystemdNotifier
    private let logger: Logger

    init(
        load: @escaping @Sendable () -> Result<LoadedConfiguration, ConfigurationError>, initial: DaemonConfiguration,
        environment: [String: String], probe: ProbeService, delivery: EventDeliveryService, alertLog: AlertLog, store: StatusStore,
        notifier: SystemdNotifier, logger: Logger
    ) {
        self.alertLog = alertLog
        self.store = store
        self.load = load
        self.current = MutexBox(initial)
        self.environment = environment
        self.probe = probe
        self.delivery = delivery
        self.notifier = notifier
        self.logger = logger
    }

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            // Before the first READY=1, systemd is still waiting for start-up: no reload protocol.
            let started = probe.hasReported
            if started { notifier.reloading() }
            switch reload() {
            case .success(let summary):
                logger.notice("configuration reloaded", metadata: ["changes": "\(summary)"])
                if started { notifier.ready(status: probe.statusLine()) }
            case .failure(let error):
                logger.error("reload refused; the previous configuration stays in force", metadata: ["error": "\(error)"])
                if started {
                    notifier.ready(status: "reload failed, previous configuration in force: \(error)")
                    // The loop puts its own line back at the next probe.
                    probe.resendStatus()
                }
            }
        }
    }

    /// What changed, in words; or why nothing did.
    private func reload() -> Result<String, DaemonStartError> {
        let loaded: LoadedConfiguration
        switch load() {
        case .success(let value): loaded = value
        case .failure(let error): return .failure(.configuration(error))
        }
        let new = loaded.configuration
        let targets: Targets
        do {
            targets = try Targets(loaded)
        } catch {
            return .failure(error)
        }
        let target = targets.probed
        let eventsTarget = targets.events
        let old = current.withLock { $0 }
        if old.alertLogPath != new.alertLogPath, let error = AlertLog.checkWritable(new.alertLogPath) {
            return .failure(.configuration(ConfigurationError(
                code: .invalidValue, key: ConfigKey.alertLog.rawValue, source: nil, message: error
            )))
        }
        // A new prober every time: the kept session is closed on reload, whatever changed.
        let prober = target.map { PostgresProber(target: $0, configuration: new, environment: environment) }
        probe.apply(new, prober: prober)
        delivery.setWriter(eventsTarget.map {
            EventTableWriter(target: $0, configuration: new, environment: environment, prober: prober)
        })
        current.withLock { $0 = new }

        let changed = new.changedKeys(from: old)
        if changed.contains(.alertLog) {
            alertLog.move(to: new.alertLogPath)
            store.update { $0.alertLogPath = new.alertLogPath }
        }
        // Connection strings by name only: they may hold a password.
        let changes = changed.filter { $0.setting.reload == .atOnce }.map { key in
            key.setting.isSecret ? key.rawValue : "\(key.rawValue) \(new.text(of: key) ?? "unset")"
        }
        let atRestart = changed.filter { $0.setting.reload == .atRestart }.map(\.rawValue)
        if !atRestart.isEmpty {
            logger.warning("these settings take effect at the next restart", metadata: ["settings": "\(atRestart.joined(separator: ", "))"])
        }
        return .success(changes.isEmpty ? "none" : changes.joined(separator: "; "))
    }
}
