import ArgumentParser
import Dispatch
import FoundationEssentials
import Glibc
import HealthCore
import HealthDaemon
import Logging
import ProbeCommandLine

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
        version: DaemonVersion.current,
        subcommands: [ProbeCommand.self]
    )

    @Option(help: ArgumentHelp("Config file (postgresql.conf style).", valueName: "path"))
    var config: String?

    // One option per `ConfigKey`; their help, value names and defaults come from the key.
    @Option(name: .customLong(ConfigKey.databaseURL.flagName), help: ConfigKey.databaseURL.argumentHelp)
    var databaseURL: String?
    @Option(name: .customLong(ConfigKey.interval.flagName), help: ConfigKey.interval.argumentHelp)
    var interval: String?
    @Option(name: .customLong(ConfigKey.timeout.flagName), help: ConfigKey.timeout.argumentHelp)
    var timeout: String?
    @Option(name: .customLong(ConfigKey.connectTimeout.flagName), help: ConfigKey.connectTimeout.argumentHelp)
    var connectTimeout: String?
    @Option(name: .customLong(ConfigKey.fall.flagName), help: ConfigKey.fall.argumentHelp)
    var fall: String?
    @Option(name: .customLong(ConfigKey.rise.flagName), help: ConfigKey.rise.argumentHelp)
    var rise: String?
    @Option(name: .customLong(ConfigKey.socket.flagName), help: ConfigKey.socket.argumentHelp)
    var socket: String?
    @Flag(name: .customLong(ConfigKey.requireDatabase.flagName), inversion: .prefixedNo, help: ConfigKey.requireDatabase.argumentHelp)
    var requireDatabase: Bool?
    @Option(name: .customLong(ConfigKey.stateDirectory.flagName), help: ConfigKey.stateDirectory.argumentHelp)
    var stateDirectory: String?
    @Option(name: .customLong(ConfigKey.eventsDatabaseURL.flagName), help: ConfigKey.eventsDatabaseURL.argumentHelp)
    var eventsDatabaseURL: String?
    @Option(name: .customLong(ConfigKey.spoolLimit.flagName), help: ConfigKey.spoolLimit.argumentHelp)
    var spoolLimit: String?
    @Option(name: .customLong(ConfigKey.alertLog.flagName), help: ConfigKey.alertLog.argumentHelp)
    var alertLog: String?
    @Option(name: .customLong(ConfigKey.httpListen.flagName), help: ConfigKey.httpListen.argumentHelp)
    var httpListen: String?
    @Option(name: .customLong(ConfigKey.flapThreshold.flagName), help: ConfigKey.flapThreshold.argumentHelp)
    var flapThreshold: String?
    @Option(name: .customLong(ConfigKey.flapWindow.flagName), help: ConfigKey.flapWindow.argumentHelp)
    var flapWindow: String?
    @Option(name: .customLong(ConfigKey.probeConnection.flagName), help: ConfigKey.probeConnection.argumentHelp)
    var probeConnection: String?
    @Option(name: .customLong(ConfigKey.freshEvery.flagName), help: ConfigKey.freshEvery.argumentHelp)
    var freshEvery: String?
    @Flag(name: .customLong(ConfigKey.splay.flagName), inversion: .prefixedNo, help: ConfigKey.splay.argumentHelp)
    var splay: Bool?
    @Flag(name: .customLong(ConfigKey.serverTimeouts.flagName), inversion: .prefixedNo, help: ConfigKey.serverTimeouts.argumentHelp)
    var serverTimeouts: Bool?
    @Flag(name: .customLong(ConfigKey.scaleToZero.flagName), inversion: .prefixedNo, help: ConfigKey.scaleToZero.argumentHelp)
    var scaleToZero: Bool?
    @Option(name: .customLong(ConfigKey.suspendAfter.flagName), help: ConfigKey.suspendAfter.argumentHelp)
    var suspendAfter: String?
    @Option(name: .customLong(ConfigKey.wakeEvery.flagName), help: ConfigKey.wakeEvery.argumentHelp)
    var wakeEvery: String?
    @Option(name: .customLong(ConfigKey.wakeTimeout.flagName), help: ConfigKey.wakeTimeout.argumentHelp)
    var wakeTimeout: String?
    @Option(name: .customLong(ConfigKey.logLevel.flagName), help: ConfigKey.logLevel.argumentHelp)
    var logLevel: String?

    /// The value given for `key`'s flag, as the config file would spell it. Exhaustive: a key
    /// without a flag does not compile.
    func flagValue(_ key: ConfigKey) -> String? {
        switch key {
        case .databaseURL: databaseURL
        case .interval: interval
        case .timeout: timeout
        case .connectTimeout: connectTimeout
        case .fall: fall
        case .rise: rise
        case .socket: socket
        case .requireDatabase: requireDatabase.map { $0 ? "on" : "off" }
        case .logLevel: logLevel
        case .stateDirectory: stateDirectory
        case .eventsDatabaseURL: eventsDatabaseURL
        case .spoolLimit: spoolLimit
        case .alertLog: alertLog
        case .httpListen: httpListen
        case .flapThreshold: flapThreshold
        case .flapWindow: flapWindow
        case .probeConnection: probeConnection
        case .freshEvery: freshEvery
        case .splay: splay.map { $0 ? "on" : "off" }
        case .serverTimeouts: serverTimeouts.map { $0 ? "on" : "off" }
        case .scaleToZero: scaleToZero.map { $0 ? "on" : "off" }
        case .suspendAfter: suspendAfter
        case .wakeEvery: wakeEvery
        case .wakeTimeout: wakeTimeout
        }
    }

    /// Layers defaults, the config file, the credentials, DATABASE_URL and the flags.
    func layers(environment: [String: String]) throws(ConfigurationError) -> (layers: ConfigurationLayers, credentialNotes: [String]) {
        var flags: [ConfigKey: String] = [:]
        for key in ConfigKey.allCases { flags[key] = flagValue(key) }
        return try ConfigurationSources.layers(flags: flags, configPath: config, environment: environment)
    }
}

extension ConfigKey {
    var argumentHelp: ArgumentHelp { ArgumentHelp(help, valueName: setting.valueName) }
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
        // A one-shot probe: synchronous, no services, nothing of the daemon started.
        if CommandLine.arguments.count > 1, CommandLine.arguments[1] == ProbeCommand.configuration.commandName {
            OneShotCommand.main(StandaloneProbeCommand.self, arguments: Array(CommandLine.arguments.dropFirst(2)))
        }
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
        let metrics = DaemonMetrics()
        raiseDescriptorLimit()
        // SIGHUP reloads once the services run; until then it must not terminate (its default).
        signal(SIGHUP, SIG_IGN)
        // SIGUSR1 reopens the alert log once the services run; until then it must not kill.
        signal(SIGUSR1, SIG_IGN)
        // SIGUSR2 asks for a probe once the services run.
        signal(SIGUSR2, SIG_IGN)

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
        OneShotCommand.say(message)
        exit(code)
    }
}
