/// Everything the daemon runs with, after defaults, the config file, the environment and flags
/// have been layered. Validated: a value of this type is always usable.
public struct DaemonConfiguration: Sendable, Equatable {
    /// A libpq connection string (URL or key=value). Carries secrets: never print it.
    public var databaseURL: String?
    public var interval: Duration
    /// The answer budget: `SELECT 1` on an open connection (the web app's one second).
    public var timeout: Duration
    /// The budget for opening a new connection: name resolution, TCP, TLS and authentication,
    /// which take about seven round trips over TLS with SCRAM.
    public var connectTimeout: Duration = .seconds(2)
    public var fall: Int
    public var rise: Int
    public var socketPath: String
    public var requireDatabase: Bool
    public var logLevel: LogLevel = .info
    /// From the `database-password` credential: used for the probed database unless its
    /// connection string has a password. Never printed.
    public var databasePassword: String?
    /// Where the spool and the remembered state live.
    public var stateDirectory: String = DaemonConfiguration.defaultStateDirectory
    /// Where `system_events` rows go; `nil` means the probed database. Carries secrets.
    public var eventsDatabaseURL: String?
    /// Most events the spool holds while the events database is unreachable.
    public var spoolLimit: Int = 100_000
    /// More transitions than this within `flapWindow` is flapping.
    /// `HOST:PORT` for the optional TCP listener serving the same read-only endpoints.
    public var httpListen: ListenAddress?
    /// The alert log operators tail.
    public var alertLogPath: String = DaemonConfiguration.defaultAlertLogPath
    public static let defaultAlertLogPath = "/var/log/dreamnet-healthd/alerts.log"
    public var flapThreshold: Int = 6
    public var flapWindow: Duration = .seconds(300)
    /// How routine probes connect: a connection kept between probes (`session`), or a new one
    /// each time (`fresh`). See docs/configuration.md, "Probe connections", for the trade.
    public var probeConnection: ProbeConnection = .session
    /// In session mode, a fresh connection is opened at least this often, so that a server
    /// that answers its sessions but starts no new ones is still seen.
    public var freshEvery: Duration = .seconds(30)
    /// Start the probe schedule at a random offset within one interval, so daemons started
    /// together do not probe in step.
    public var splay: Bool = true
    /// Ask the server to end a probe's statement itself at the deadline (`statement_timeout`
    /// and `lock_timeout` in the startup packet's `options`). Off for poolers that reject
    /// startup options.
    public var serverTimeouts: Bool = true
    /// A database that suspends itself when unused (a serverless compute): probe only while the
    /// application on this host uses it (`ScaleToZeroSchedule`).
    public var scaleToZero: Bool = false
    /// The database's own idle timeout; Neon's default is 5 minutes.
    public var suspendAfter: Duration = .seconds(300)
    /// How often a sleeping database is woken to prove that it starts; `nil`: never by itself.
    public var wakeEvery: Duration? = .seconds(3_600)
    /// The connection budget of the first login after a sleep: the cold start is in it.
    public var wakeTimeout: Duration = .seconds(10)

    public static let defaultStateDirectory = "/var/lib/dreamnet-healthd"

    /// The database events are written to: the events URL, else the probed one.
    public var effectiveEventsDatabaseURL: String? { eventsDatabaseURL ?? databaseURL }

    public static let defaultSocketPath = "/run/dreamnet-healthd/status.sock"

    public static let defaults = DaemonConfiguration(
        databaseURL: nil, interval: .seconds(2), timeout: .seconds(1), fall: 2, rise: 2,
        socketPath: defaultSocketPath, requireDatabase: false
    )

    public init(
        databaseURL: String?, interval: Duration, timeout: Duration, fall: Int, rise: Int,
        socketPath: String, requireDatabase: Bool
    ) {
        self.databaseURL = databaseURL
        self.interval = interval
        self.timeout = timeout
        self.fall = fall
        self.rise = rise
        self.socketPath = socketPath
        self.requireDatabase = requireDatabase
    }

    /// The longest a probe can take: a new connection opened just within its budget, then an
    /// answer just within its own. (A kept session that fails by its deadline is the verdict; one
    /// that fails at once hands over to a new connection, so session mode is no longer.)
    public var longestProbe: Duration { connectTimeout + timeout }

    /// With these settings a fault is reported within this bound: the fault can land just after a
    /// probe started, then `fall` probes each up to `longestProbe` long. Probes start one
    /// `interval` apart, or back to back when a probe takes longer than the interval.
    public var detectionBound: Duration { max(interval, longestProbe) * fall + longestProbe }

    /// The bound for a fault only new connections see (a frozen postmaster, max_connections
    /// reached, a pg_hba.conf change) while a kept session still answers: in session mode, the
    /// next fresh connection is up to `freshEvery` away.
    public var newConnectionDetectionBound: Duration {
        probeConnection == .session ? freshEvery + detectionBound : detectionBound
    }

    /// A status snapshot older than this is stale: the probe loop has stopped reporting.
    public var stalenessBound: Duration { Self.stalenessBound(interval: interval, longestProbe: longestProbe) }

    public static func stalenessBound(interval: Duration, longestProbe: Duration) -> Duration { interval * 2 + longestProbe }
}

/// How much the daemon logs; the names are swift-log's.
public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// Where a configuration value came from, so an error can point at it.
public enum ConfigSource: Sendable, Equatable, CustomStringConvertible {
    case file(path: String, line: Int)
    case flag(String)
    case environment(String)

    public var description: String {
        switch self {
        case .file(let path, let line): return "\(path):\(line)"
        case .flag(let flag): return flag
        case .environment(let name): return "environment variable \(name)"
        }
    }
}

/// A value of some key, as written, with its origin.
public struct SourcedValue: Sendable, Equatable {
    public var text: String
    public var source: ConfigSource

    public init(_ text: String, source: ConfigSource) {
        self.text = text
        self.source = source
    }
}

/// A configuration that cannot be used. The description names the key and where it was set,
/// and never repeats a value that may hold a secret.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case syntax
        case unknownKey
        case invalidValue
        case unreadableFile
    }

    public var code: Code
    public var key: String?
    public var source: String?
    public var message: String

    public init(code: Code, key: String?, source: String?, message: String) {
        self.code = code
        self.key = key
        self.source = source
        self.message = message
    }

    /// The same error with every secret `scrubber` knows masked.
    public func scrubbed(by scrubber: SecretScrubber) -> ConfigurationError {
        ConfigurationError(code: code, key: key.map(scrubber.scrub), source: source.map(scrubber.scrub), message: scrubber.scrub(message))
    }

    /// Text from the input as an error may repeat it: at most 64 scalars, and control, format
    /// and line-separator characters written as `\u{1B}`, so that a message stays on one line
    /// and cannot drive the terminal it is printed on.
    public static func shown(_ text: some StringProtocol) -> String {
        var output = ""
        var count = 0
        for scalar in text.unicodeScalars {
            count += 1
            guard count <= 64 else {
                output += "…"
                break
            }
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator:
                output += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        return output
    }

    public var description: String {
        var parts: [String] = []
        if let key { parts.append(key) }
        if let source { parts.append("(\(source))") }
        let prefix = parts.joined(separator: " ")
        return prefix.isEmpty ? message : "\(prefix): \(message)"
    }
}

/// `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all addresses).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65_535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard !host.contains(" ") else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
