import ArgumentParser
import FoundationEssentials
import Glibc
import HealthCore

/// `dreamnet-healthctl`: asks the daemon (or the database, for `probe`) and answers with the
/// exit codes monitoring expects: 0 healthy, 1 not-configured, 2 unhealthy, 3 unknown.
struct HealthControl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthctl",
        abstract: "Query dreamnet-healthd, or probe a PostgreSQL database once.",
        discussion: """
            Exit codes: 0 healthy, 1 not-configured, 2 unhealthy, 3 unknown (daemon unreachable, \
            still starting, or its last report is stale).
            """,
        version: "0.1.0",
        subcommands: [Status.self, Probe.self, Wait.self, Events.self, Alerts.self]
    )

    /// Accepted before the subcommand too: `dreamnet-healthctl --socket PATH status`.
    @Option(help: ArgumentHelp("The daemon's status socket (also accepted after the subcommand).", valueName: "path"))
    var socket: String?
}

/// Options every command that talks to the daemon shares.
struct SocketOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The daemon's status socket (default $DREAMNET_HEALTHD_SOCKET or \(DaemonConfiguration.defaultSocketPath)).",
        valueName: "path"
    ))
    var socket: String?

    /// The subcommand's `--socket`, else the one given before the subcommand, else the
    /// environment, else the default.
    func path(parent: HealthControl) -> String {
        socket ?? parent.socket ?? ProcessInfo.processInfo.environment["DREAMNET_HEALTHD_SOCKET"] ?? DaemonConfiguration.defaultSocketPath
    }
}

/// The exit codes, as Nagios plugins and pg_isready users expect them.
enum Verdict: Int32 {
    case healthy = 0
    case notConfigured = 1
    case unhealthy = 2
    case unknown = 3

    init(state: String, stale: Bool) {
        guard !stale else { self = .unknown; return }
        switch HealthState(rawValue: state) {
        case .healthy: self = .healthy
        case .unhealthy: self = .unhealthy
        case .notConfigured: self = .notConfigured
        case .starting, nil: self = .unknown
        }
    }
}

@main
enum ControlMain {
    static func main() async {
        do {
            var command = try HealthControl.parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = HealthControl.exitCode(for: error)
            if code == .success { HealthControl.exit(withError: error) }  // --help, --version
            if error is ExitCode { exit(code.rawValue) }
            // Usage errors quote arguments back, and an argument may be a connection string.
            // Like every failure to get an answer, they exit 3 (unknown), as monitoring expects.
            let scrubber = SecretScrubber(arguments: CommandLine.arguments)
            writeError(scrubber.scrub(HealthControl.fullMessage(for: error)))
            exit(Verdict.unknown.rawValue)
        }
    }
}

func writeError(_ text: String) {
    let line = Array("dreamnet-healthctl: \(text)\n".utf8)
    _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

func decodeStatus(_ body: [UInt8]) throws -> StatusDocument {
    try JSONDecoder().decode(StatusDocument.self, from: Data(body))
}
