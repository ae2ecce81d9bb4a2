import ArgumentParser
import FoundationEssentials
import HealthCore
import PostgresProbe
import ProbeCommandLine

/// `dreamnet-healthd probe`: one probe, printed, with the exit codes of `dreamnet-healthctl`
/// (like `nginx -t`, a one-shot mode of the program that has the engine). `dreamnet-healthctl
/// probe` runs this.
struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        try Self.probe(options)
    }

    static func probe(_ options: ProbeOptions) throws {
        let url = options.databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"]
        guard let url, !url.isEmpty else {
            Main.say("not-configured: no --database-url given and DATABASE_URL is not set")
            throw ExitCode(ExitVerdict.notConfigured.rawValue)
        }
        let target: ConnectionTarget
        do {
            target = try ConnectionTarget.parse(url)
        } catch {
            Main.say(error.description)
            throw ExitCode(ExitVerdict.unknown.rawValue)
        }
        // On this thread: a command has nothing else to do meanwhile, and starts no other.
        let (answer, connect) = options.deadlines
        let prober = PostgresProber(target: target, timeout: answer, policy: ProbePolicy(connectTimeout: connect))
        guard let result = prober.probeBlocking(cancellation: ProbeCancellation()) else {
            throw ExitCode(ExitVerdict.unknown.rawValue)
        }
        let document = ProbeDocument(target: target.display, result: result)
        if options.json {
            print(String(decoding: StatusAPI.encode(document), as: UTF8.self), terminator: "")
        } else {
            print(document.summary)
        }
        throw ExitCode(ExitVerdict(probe: result).rawValue)
    }
}

/// `probe` parsed on its own, as `main` runs it: the daemon's own options have the same names
/// (`--database-url`, `--timeout`), and under the root command they would take them.
struct StandaloneProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthd probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        try ProbeCommand.probe(options)
    }
}

/// The same, run by `dreamnet-healthctl probe` (argv[0] `dreamnet-healthctl`): its help and
/// usage errors name that command.
struct ControlProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthctl probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        try ProbeCommand.probe(options)
    }
}
