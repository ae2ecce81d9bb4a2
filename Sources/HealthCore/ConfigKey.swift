/// The keys of the config file; each has a matching `--flag` with `_` written as `-`.
///
/// Each key's facts live here once: what it means (the flag's help), its range, how a reload
/// treats it and how its default is described. `--help`, the reload's log, the parser's bounds
/// and the documentation tests derive from them.
public enum ConfigKey: String, Sendable, CaseIterable {
    case databaseURL = "database_url"
    case interval
    case timeout
    case connectTimeout = "connect_timeout"
    case fall
    case rise
    case socket
    case requireDatabase = "require_database"
    case logLevel = "log_level"
    case stateDirectory = "state_dir"
    case eventsDatabaseURL = "events_database_url"
    case spoolLimit = "spool_limit"
    case alertLog = "alert_log"
    case httpListen = "http_listen"
    case flapThreshold = "flap_threshold"
    case flapWindow = "flap_window"
    case probeConnection = "probe_connection"
    case freshEvery = "fresh_every"
    case splay
    case serverTimeouts = "server_timeouts"
    case scaleToZero = "scale_to_zero"
    case suspendAfter = "suspend_after"
    case wakeEvery = "wake_every"
    case wakeTimeout = "wake_timeout"

    /// The flag's name without its dashes: `database-url`.
    public var flagName: String { rawValue.replacing("_", with: "-") }
    public var flag: String { "--" + flagName }

    /// What `systemctl reload` does with a changed value.
    public enum ReloadEffect: String, Sendable {
        /// Applied at once: the next probe, delivery or alert uses it.
        case atOnce = "at once"
        /// Read at start only (a socket bound, a spool opened, a logger set up): the log names
        /// it and the running value stays until the next restart.
        case atRestart = "at restart"
    }

    public struct Setting: Sendable {
        /// What it means, one sentence for `--help` (the default is added to it).
        public var meaning: String
        /// The value's name in help (`duration`, `path`); `nil` for an on/off switch, whose
        /// flag is `--[no-]name`.
        public var valueName: String?
        public var reload: ReloadEffect
        /// The default, where it is not one value of `DaemonConfiguration.defaults` (it comes
        /// from the environment, or is the absence of a value).
        public var defaultDescription: String?
        /// A connection string: never repeated in a log or a message.
        public var isSecret = false
        /// The values a duration may take.
        public var range: ClosedRange<Duration>?
    }

    public var setting: Setting {
        switch self {
        case .databaseURL:
            Setting(meaning: "libpq URL or key=value connection string", valueName: "url", reload: .atOnce,
                    defaultDescription: "$DATABASE_URL", isSecret: true)
        case .interval:
            // Each probe can be a new backend: more than 10 a second would load the server it watches.
            Setting(meaning: "Time between probe starts", valueName: "duration", reload: .atOnce,
                    range: .milliseconds(100)...(.seconds(86_400)))
        case .timeout:
            Setting(meaning: "Hard deadline for the answer to SELECT 1 on an open connection", valueName: "duration",
                    reload: .atOnce, range: .milliseconds(10)...(.seconds(60)))
        case .connectTimeout:
            Setting(meaning: "Hard deadline for opening a new connection: DNS, TCP, TLS and authentication",
                    valueName: "duration", reload: .atOnce, range: .milliseconds(10)...(.seconds(60)))
        case .fall:
            Setting(meaning: "Consecutive failures before unhealthy", valueName: "n", reload: .atOnce)
        case .rise:
            Setting(meaning: "Consecutive successes before healthy", valueName: "n", reload: .atOnce)
        case .socket:
            Setting(meaning: "Status socket path", valueName: "path", reload: .atRestart)
        case .requireDatabase:
            Setting(meaning: "Answer /health with 503 when no database is configured", reload: .atOnce)
        case .logLevel:
            Setting(meaning: "trace, debug, info, notice, warning, error or critical", valueName: "level", reload: .atRestart)
        case .stateDirectory:
            Setting(meaning: "Spool and saved state", valueName: "path", reload: .atRestart,
                    defaultDescription: "$STATE_DIRECTORY, else \(DaemonConfiguration.defaultStateDirectory)")
        case .eventsDatabaseURL:
            Setting(meaning: "Where system_events rows go", valueName: "url", reload: .atOnce,
                    defaultDescription: "the probed database", isSecret: true)
        case .spoolLimit:
            Setting(meaning: "Most events kept while the events database is unreachable", valueName: "n", reload: .atRestart)
        case .alertLog:
            Setting(meaning: "Alert log, one JSON line per event", valueName: "path", reload: .atOnce,
                    defaultDescription: "$LOGS_DIRECTORY/alerts.log, else \(DaemonConfiguration.defaultAlertLogPath)")
        case .httpListen:
            Setting(meaning: "Also serve the read-only endpoints over TCP", valueName: "host:port", reload: .atRestart,
                    defaultDescription: "off")
        case .flapThreshold:
            Setting(meaning: "More transitions than this within the flap window is flapping", valueName: "n", reload: .atOnce)
        case .flapWindow:
            Setting(meaning: "Flap detection window, and how long the state must hold to end flapping",
                    valueName: "duration", reload: .atOnce, range: .seconds(1)...(.seconds(86_400)))
        case .probeConnection:
            Setting(meaning: "session: routine probes on a kept connection, a fresh one at least every --fresh-every; fresh: a new connection every probe",
                    valueName: "mode", reload: .atOnce)
        case .freshEvery:
            Setting(meaning: "Session mode: open a fresh connection at least this often", valueName: "duration",
                    reload: .atOnce, range: .seconds(1)...(.seconds(3_600)))
        case .splay:
            Setting(meaning: "Start the probe schedule at a random offset within one interval", reload: .atRestart)
        case .serverTimeouts:
            Setting(meaning: "Pass the answer deadline to the server as statement_timeout and lock_timeout: in the startup packet, or by SET LOCAL once a pooler refused that",
                    reload: .atOnce)
        case .scaleToZero:
            Setting(meaning: "For a database that suspends when unused: probe only while this host's application uses it, and let it sleep",
                    reload: .atOnce)
        case .suspendAfter:
            Setting(meaning: "With scale_to_zero: how long the database stays up after its last statement (its own idle timeout)",
                    valueName: "duration", reload: .atOnce, range: .seconds(1)...(.seconds(86_400)))
        case .wakeEvery:
            Setting(meaning: "With scale_to_zero: wake a sleeping database this often to prove that it still starts; off: only when the application or an operator asks",
                    valueName: "duration", reload: .atOnce, range: .seconds(60)...(.seconds(7 * 86_400)))
        case .wakeTimeout:
            Setting(meaning: "With scale_to_zero: hard deadline for the first connection after a sleep, the cold start included",
                    valueName: "duration", reload: .atOnce, range: .milliseconds(100)...(.seconds(120)))
        }
    }

    /// The default as the documentation states it: `2s`, `on`, `$DATABASE_URL`.
    public var documentedDefault: String {
        setting.defaultDescription ?? DaemonConfiguration.defaults.text(of: self) ?? "unset"
    }

    /// The flag's help: its meaning and its default.
    public var help: String { "\(setting.meaning) (default \(documentedDefault))." }
}

extension DaemonConfiguration {
    /// The value of `key` as a config file would spell it (durations as `2s`, switches as
    /// `on`/`off`); `nil` when unset. Connection strings are returned as they are: see
    /// `ConfigKey.Setting.isSecret` before showing one.
    public func text(of key: ConfigKey) -> String? {
        switch key {
        case .databaseURL: databaseURL
        case .interval: HumanDuration.format(interval)
        case .timeout: HumanDuration.format(timeout)
        case .connectTimeout: HumanDuration.format(connectTimeout)
        case .fall: "\(fall)"
        case .rise: "\(rise)"
        case .socket: socketPath
        case .requireDatabase: Self.onOff(requireDatabase)
        case .logLevel: logLevel.rawValue
        case .stateDirectory: stateDirectory
        case .eventsDatabaseURL: eventsDatabaseURL
        case .spoolLimit: "\(spoolLimit)"
        case .alertLog: alertLogPath
        case .httpListen: httpListen?.description
        case .flapThreshold: "\(flapThreshold)"
        case .flapWindow: HumanDuration.format(flapWindow)
        case .probeConnection: probeConnection.rawValue
        case .freshEvery: HumanDuration.format(freshEvery)
        case .splay: Self.onOff(splay)
        case .serverTimeouts: Self.onOff(serverTimeouts)
        case .scaleToZero: Self.onOff(scaleToZero)
        case .suspendAfter: HumanDuration.format(suspendAfter)
        case .wakeEvery: wakeEvery.map(HumanDuration.format) ?? "off"
        case .wakeTimeout: HumanDuration.format(wakeTimeout)
        }
    }

    private static func onOff(_ value: Bool) -> String { value ? "on" : "off" }

    /// The keys whose values differ between two configurations (the password credential
    /// counts as part of `database_url`).
    public func changedKeys(from old: DaemonConfiguration) -> [ConfigKey] {
        ConfigKey.allCases.filter { key in
            old.text(of: key) != text(of: key) || (key == .databaseURL && old.databasePassword != databasePassword)
        }
    }
}
