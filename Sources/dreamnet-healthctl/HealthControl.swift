import ArgumentParser
import FoundationEssentials
import Glibc
import HealthCore
import ProbeCommandLine
import StatusClient

/// `dreamnet-healthctl`: asks the daemon (or the database, for `probe`) and answers with the
/// exit codes monitoring expects: 0 healthy, 1 not-configured, 2 unhealthy, 3 unknown.
struct HealthControl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthctl",
        abstract: "Query dreamnet-healthd, or probe a PostgreSQL database once.",
        discussion: """
            Exit codes: 0 healthy, 1 not-configured, 2 unhealthy, 3 unknown (daemon unreachable, \
            still starting, or its last report is stale).
            """,
        version: DaemonVersion.current,
        // Each names itself (`commandName`): a name derived from the type costs a reflection
        // of it at every start.
        subcommands: [Status.self, Probe.self, Wait.self, Events.self, Alerts.self]
    )

    /// Accepted before the subcommand too: `dreamnet-healthctl --socket PATH status`.
    @Option(help: ArgumentHelp("The daemon's status socket (also accepted after the subcommand).", valueName: "path"))
    var socket: String?
}

/// Options every command that talks to the daemon shares.
struct SocketOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The daemon's status socket (default $DREAMNET_HEALTHD_SOCKET, else \(DaemonConfiguration.defaultSocketPath), else \(SocketOptions.activationSocketPath) when only that exists).",
        valueName: "path"
    ))
    var socket: String?

    /// Where the packaged `dreamnet-healthd.socket` unit listens (outside the service's
    /// runtime directory, so that it outlives the service).
    static let activationSocketPath = "/run/dreamnet-healthd.sock"

    /// The subcommand's `--socket`, else the one given before the subcommand, else the
    /// environment, else the default; when the default does not exist but the socket unit's
    /// does (socket activation), that one.
    func path(parent: HealthControl) -> String {
        if let chosen = socket ?? parent.socket ?? ProcessInfo.processInfo.environment["DREAMNET_HEALTHD_SOCKET"] {
            return chosen
        }
        let standard = DaemonConfiguration.defaultSocketPath
        if access(standard, F_OK) != 0, errno == ENOENT, access(Self.activationSocketPath, F_OK) == 0 {
            return Self.activationSocketPath
        }
        return standard
    }
}

/// The group the package creates: its members (and root) may query the status socket.
let statusGroup = "dreamnet-health"

/// Why the daemon could not be asked, with a hint when the socket refused this user: a bare
/// "Permission denied" does not tell an operator what to do.
func describe(_ error: any Error) -> String {
    guard let failure = error as? StatusClient.Failure, failure.isPermissionDenied else { return "\(error)" }
    return "\(failure): only root and members of the group '\(statusGroup)' may query dreamnet-healthd "
        + "(add this user with: usermod -aG \(statusGroup) \(userName()), then log in again)"
}

private func userName() -> String {
    guard let entry = getpwuid(getuid()), let name = entry.pointee.pw_name else { return "USER" }
    return String(cString: name)
}

@main
enum ControlMain {
    /// Synchronous from start to end: every command is one request or one probe, and starting
    /// Swift concurrency's threads would cost a call more than its work.
    static func main() {
        if CommandLine.arguments.count > 1, CommandLine.arguments[1] == Probe.configuration.commandName {
            Probe.runProbeProgram(arguments: Array(CommandLine.arguments.dropFirst(2)))
        }
        OneShotCommand.main(HealthControl.self, arguments: Array(CommandLine.arguments.dropFirst()))
    }
}

/// Sleeps the calling thread (commands are synchronous; see `ControlMain`).
func pause(for duration: Duration) {
    guard duration > .zero else { return }
    let (seconds, attoseconds) = duration.components
    var remaining = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    while true {
        var request = remaining
        guard nanosleep(&request, &remaining) != 0, errno == EINTR else { return }
    }
}

func writeError(_ text: String) {
    OneShotCommand.say(text)
}

func decodeStatus(_ body: [UInt8]) throws -> StatusDocument {
    try JSONDecoder().decode(StatusDocument.self, from: Data(body))
}
