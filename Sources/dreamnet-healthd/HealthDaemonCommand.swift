import ArgumentParser
import Dispatch
import FoundationEssentials
import Glibc
import HealthCore
import HealthDaemon
import Logging

/// `dreamnet-healthd`: flags, then the composition root. Nothing else lives here.
struct HealthDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthd",
        abstract: "Probe a PostgreSQL database under a hard deadline and serve its health on a Unix socket.",
        discussion: """
            Every option can also be set in the config file (same name, '-' written '_'). Flags \
            override the file; the file overrides defaults. DATABASE_URL is used when no URL is \
            given otherwise. Durations take ms, s or m (250ms, 1s, 2m).
            """,
        version: DaemonVersion.current
    )

    @Option(help: ArgumentHelp("Config file (postgresql.conf style).", valueName: "path"))
    var config: String?

    @Option(name: .customLong("database-url"), help: ArgumentHelp("libpq URL or key=value connection string.", valueName: "url"))
    var databaseURL: String?

    @Option(help: ArgumentHelp("Time between probe starts (default 2s).", valueName: "duration"))
    var interval: String?

    @Option(help: ArgumentHelp("Hard deadline for the answer to SELECT 1 on an open connection (default 1s).", valueName: "duration"))
    var timeout: String?

    @Option(help: ArgumentHelp("Consecutive failures before unhealthy (default 2).", valueName: "n"))
    var fall: String?

    @Option(help: ArgumentHelp("Consecutive successes before healthy (default 2).", valueName: "n"))
    var rise: String?

    @Option(help: ArgumentHelp("Status socket path (default \(DaemonConfiguration.defaultSocketPath)).", valueName: "path"))
    var socket: String?

    @Flag(inversion: .prefixedNo, help: "Answer /health with 503 when no database is configured.")
    var requireDatabase: Bool?

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Spool and saved state (default $STATE_DIRECTORY or \(DaemonConfiguration.defaultStateDirectory)).", valueName: "path"))
    var stateDirectory: String?

    @Option(name: .customLong("events-database-url"), help: ArgumentHelp("Where system_events rows go (default: the probed database).", valueName: "url"))
    var eventsDatabaseURL: String?

    @Option(name: .customLong("spool-limit"), help: ArgumentHelp("Most events kept while the events database is unreachable (default 100000).", valueName: "n"))
    var spoolLimit: String?

    @Option(name: .customLong("alert-log"), help: ArgumentHelp("Alert log, one JSON line per event (default $LOGS_DIRECTORY/alerts.log or \(DaemonConfiguration.defaultAlertLogPath)).", valueName: "path"))
    var alertLog: String?

    @Option(name: .customLong("http-listen"), help: ArgumentHelp("Also serve the read-only endpoints over TCP (off by default).", valueName: "host:port"))
    var httpListen: String?

    @Option(name: .customLong("flap-threshold"), help: ArgumentHelp("More transitions than this within the flap window is flapping (default 6).", valueName: "n"))
    var flapThreshold: String?

    @Option(name: .customLong("flap-window"), help: ArgumentHelp("Flap detection window, and how long the state must hold to end flapping (default 5m).", valueName: "duration"))
    var flapWindow: String?

    @Option(name: .customLong("probe-connection"), help: ArgumentHelp("session: routine probes on a kept connection, a fresh one at least every --fresh-every; fresh: a new connection every probe (default session).", valueName: "mode"))
    var probeConnection: String?

    @Option(name: .customLong("connect-timeout"), help: ArgumentHelp("Hard deadline for opening a new connection: DNS, TCP, TLS and authentication (default 2s).", valueName: "duration"))
    var connectTimeout: String?

    @Option(name: .customLong("fresh-every"), help: ArgumentHelp("Session mode: open a fresh connection at least this often (default 30s).", valueName: "duration"))
    var freshEvery: String?

    @Flag(inversion: .prefixedNo, help: "Start the probe schedule at a random offset within one interval (default on).")
    var splay: Bool?

    @Flag(name: .customLong("server-timeouts"), inversion: .prefixedNo, help: "Pass the answer deadline to the server as statement_timeout and lock_timeout: in the startup packet, or by SET LOCAL once a pooler refused that (default on).")
    var serverTimeouts: Bool?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default info).", valueName: "level"))
    var logLevel: String?

    /// Layers defaults, the config file, DATABASE_URL and the flags; with them, the notes of
    /// credentials systemd could not load, for the log ("credential database-url: absent:
    /// /etc/dreamnet-healthd/database-url does not exist").
    func layers(environment: [String: String]) throws(ConfigurationError) -> (layers: ConfigurationLayers, credentialNotes: [String]) {
        var layers = ConfigurationLayers(environment: environment)
        var credentialNotes: [String] = []
        // systemd writes credentials 0440 with an ACL; libpq would refuse such a file as a
        // passfile, so the daemon reads them itself.
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            for name in ConfigurationLayers.credentialNames {
                let path = directory + "/" + name
                guard access(path, F_OK) == 0 else { continue }
                switch Self.readTextFile(path) {
                case .success(let text):
                    // Credential files often end in a newline the secret does not contain.
                    let value = String(text.trimmingSuffix(while: { $0 == "\n" || $0 == "\r" }))
                    // The unit's fallback for a missing file (see credentialNote): unset.
                    if let note = Self.credentialNote(name: name, value: value) {
                        credentialNotes.append("credential \(name): \(note)")
                        continue
                    }
                    layers.credentials[name] = value
                case .failure(let reason):
                    throw ConfigurationError(
                        code: .unreadableFile, key: nil, source: "credential \(name)",
                        message: "cannot read \(path): \(reason.reason)"
                    )
                }
            }
        }
        // Flags first: a config file error is scrubbed of the passwords they hold.
        layers.setFlag(.databaseURL, databaseURL)
        layers.setFlag(.interval, interval)
        layers.setFlag(.timeout, timeout)
        layers.setFlag(.fall, fall)
        layers.setFlag(.rise, rise)
        layers.setFlag(.socket, socket)
        layers.setFlag(.requireDatabase, requireDatabase.map { $0 ? "true" : "false" })
        layers.setFlag(.logLevel, logLevel)
        layers.setFlag(.stateDirectory, stateDirectory)
        layers.setFlag(.eventsDatabaseURL, eventsDatabaseURL)
        layers.setFlag(.spoolLimit, spoolLimit)
        layers.setFlag(.alertLog, alertLog)
        layers.setFlag(.httpListen, httpListen)
        layers.setFlag(.flapThreshold, flapThreshold)
        layers.setFlag(.flapWindow, flapWindow)
        layers.setFlag(.probeConnection, probeConnection)
        layers.setFlag(.freshEvery, freshEvery)
        layers.setFlag(.connectTimeout, connectTimeout)
        layers.setFlag(.splay, splay.map { $0 ? "true" : "false" })
        layers.setFlag(.serverTimeouts, serverTimeouts.map { $0 ? "true" : "false" })
        if let config {
            let text: String
            switch Self.readTextFile(config) {
            case .success(let contents): text = contents
            case .failure(let reason):
                throw ConfigurationError(
                    code: .unreadableFile, key: nil, source: "--config", message: "cannot read \(config): \(reason.reason)"
                )
            }
            try layers.parseFile(text, path: config)
        }
        return (layers, credentialNotes)
    }

    /// A connection-string credential that starts with `#` is a note, not a value: the unit
    /// sets one with `SetCredential=` as the fallback systemd uses when the file named by
    /// `LoadCredential=` is absent (without a fallback the service would not start at all).
    /// No connection string starts with `#`; a password may, so passwords are never notes.
    static func credentialNote(name: String, value: String) -> String? {
        guard name != "database-password", value.hasPrefix("#") else { return nil }
        let note = value.drop(while: { $0 == "#" || $0 == " " })
        return note.isEmpty ? "absent" : String(note)
    }

    /// The whole file as UTF-8, or the reason it cannot be read (strerror's words).
    private static func readTextFile(_ path: String) -> Result<String, ReadFailure> {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return .failure(ReadFailure(String(cString: strerror(errno)))) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = read(descriptor, &chunk, chunk.count)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(ReadFailure(String(cString: strerror(errno))))
            }
            bytes.append(contentsOf: chunk[..<count])
            guard bytes.count <= 1 << 20 else { return .failure(ReadFailure("larger than 1 MiB")) }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(ReadFailure("not valid UTF-8"))
        }
        return .success(text)
    }

    struct ReadFailure: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }
}

@main
enum Main {
    /// A synchronous entry point on purpose. libdispatch's event thread (timers, signal
    /// sources) asks for the nice value of its QoS, -4; an unprivileged process may not lower
    /// its nice value, and libdispatch then logs "Failed to set thread priority for worker
    /// thread: ... errno=13" (to the journal, under systemd) at every start. The unit starts the
    /// daemon at `Nice=-4`: the main thread then has the first dispatch worker started (at the
    /// same QoS), which starts the event thread, both keeping -4, before any other work; the
    /// workers of the default QoS that run the daemon set themselves back to 0, and threads
    /// they start inherit 0. An async main would start on a user-initiated worker of its own,
    /// and its work would run there.
    static func main() {
        if getpriority(Int32(PRIO_PROCESS.rawValue), 0) <= -4 {
            startDispatchEventThread()
        }
        let finished = DispatchSemaphore(value: 0)
        Task.detached(priority: .medium) {
            await run()
            finished.signal()
        }
        finished.wait()
    }

    /// Activating a read source registers it with epoll on the calling thread, and the first
    /// registration starts libdispatch's event thread from that thread, with its nice value.
    static func startDispatchEventThread() {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return }
        let source = DispatchSource.makeReadSource(fileDescriptor: ends[0], queue: .global())
        // libdispatch reports a source activated without a handler as a deprecated use.
        source.setEventHandler {}
        source.setCancelHandler {
            close(ends[0])
            close(ends[1])
        }
        source.activate()
        source.cancel()
    }

    static func run() async {
        let command: HealthDaemonCommand
        do {
            command = try HealthDaemonCommand.parse()
        } catch {
            // Help and --version exit 0; usage errors share exit code 2 with configuration errors.
            if HealthDaemonCommand.exitCode(for: error) == .success { HealthDaemonCommand.exit(withError: error) }
            // Usage errors quote arguments back, and an argument may be a connection string.
            let scrubber = SecretScrubber(arguments: CommandLine.arguments)
            fail(scrubber.scrub(HealthDaemonCommand.message(for: error)) + "\n" + HealthDaemonCommand.usageString(), code: 2)
        }

        let environment = ProcessInfo.processInfo.environment
        let layers: ConfigurationLayers
        let credentialNotes: [String]
        let configuration: DaemonConfiguration
        do {
            (layers, credentialNotes) = try command.layers(environment: environment)
            configuration = try layers.resolve()
        } catch {
            fail("configuration error: \(error)", code: 2)
        }

        let level = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
        let toJournal = JournalStreamLogHandler.stderrIsJournal(environment: environment)
        LoggingSystem.bootstrap { label in
            if toJournal {
                var handler = JournalStreamLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "dreamnet-healthd")
        for note in credentialNotes {
            let source = layers.source(of: .databaseURL) ?? "none: not-configured"
            logger.notice("\(note); the database URL comes from \(source)")
        }
        let metrics = DaemonMetrics.bootstrap()
        raiseDescriptorLimit()
        // SIGHUP reloads once the services run; until then it must not terminate (its default).
        signal(SIGHUP, SIG_IGN)
        // SIGUSR1 reopens the alert log once the services run; until then it must not kill.
        signal(SIGUSR1, SIG_IGN)

        do {
            let daemon = try await Daemon.make(
                configuration: configuration, databaseURLSource: layers.source(of: .databaseURL),
                eventsURLSource: layers.source(of: .eventsDatabaseURL), environment: environment,
                logger: logger, metrics: metrics,
                reload: {
                    // The same flags, the config file and environment read anew.
                    Result { () throws(ConfigurationError) in
                        let layers = try command.layers(environment: ProcessInfo.processInfo.environment).layers
                        return LoadedConfiguration(
                            configuration: try layers.resolve(), databaseURLSource: layers.source(of: .databaseURL),
                            eventsURLSource: layers.source(of: .eventsDatabaseURL)
                        )
                    }
                }
            )
            try await daemon.run()
        } catch let error as DaemonStartError {
            switch error {
            case .configuration, .activation: fail(error.description, code: 2)
            default: break
            }
            fail(error.description, code: 1)
        } catch {
            fail("\(error)", code: 1)
        }
    }

    /// Each probe needs descriptors even while many clients hold status connections: take the
    /// hard limit systemd grants (the soft default of 1024 is a relic of select(2)).
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = min(limit.rlim_max, 65_536)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    static func fail(_ message: String, code: Int32) -> Never {
        let line = Array("dreamnet-healthd: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        exit(code)
    }
}

extension StringProtocol {
    /// Without the trailing characters that match.
    func trimmingSuffix(while matches: (Character) -> Bool) -> SubSequence {
        var end = endIndex
        while end > startIndex, matches(self[index(before: end)]) { end = index(before: end) }
        return self[..<end]
    }
}
