import ArgumentParser
import FoundationEssentials
import HealthCore
import PostgresProbe

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Probe a database once, with the daemon's engine and deadline; no daemon needed.",
        discussion: "Exit codes: 0 ok, 1 no URL given, 2 probe failed, 3 unusable connection string."
    )

    @Option(name: .customLong("database-url"), help: ArgumentHelp("libpq URL or key=value string (default $DATABASE_URL).", valueName: "url"))
    var databaseURL: String?

    @Option(help: ArgumentHelp("Hard deadline for the answer to SELECT 1 once connected.", valueName: "duration"))
    var timeout = "1s"

    @Option(name: .customLong("connect-timeout"), help: ArgumentHelp("Hard deadline for opening the connection: DNS, TCP, TLS and authentication.", valueName: "duration"))
    var connectTimeout = "2s"

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        for (flag, text) in [("--timeout", timeout), ("--connect-timeout", connectTimeout)] {
            do {
                let deadline = try HumanDuration.parse(text)
                guard deadline >= .milliseconds(10), deadline <= .seconds(60) else {
                    throw ValidationError("\(flag) must be between 10ms and 60s")
                }
            } catch let error as HumanDuration.ParseError {
                throw ValidationError("\(flag): \(error)")
            }
        }
    }

    func run() throws {
        let url = databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"]
        guard let url, !url.isEmpty else {
            writeError("not-configured: no --database-url given and DATABASE_URL is not set")
            throw ExitCode(Verdict.notConfigured.rawValue)
        }
        let target: ConnectionTarget
        do {
            target = try ConnectionTarget.parse(url)
        } catch {
            writeError(error.description)
            throw ExitCode(Verdict.unknown.rawValue)
        }
        // On this thread: a command has nothing else to do meanwhile, and starts no other.
        let prober = PostgresProber(
            target: target, timeout: try HumanDuration.parse(timeout),
            policy: ProbePolicy(connectTimeout: try HumanDuration.parse(connectTimeout))
        )
        guard let result = prober.probeBlocking(cancellation: ProbeCancellation()) else {
            throw ExitCode(Verdict.unknown.rawValue)
        }
        let document = ProbeDocument(target: target.display, result: result)
        if json {
            print(String(decoding: StatusAPI.encode(document), as: UTF8.self), terminator: "")
        } else {
            print(Self.summary(document))
        }
        // An unusable connection string is no verdict on the database.
        let verdict: Verdict = result.ok ? .healthy : result.failure?.reason == .invalidTarget ? .unknown : .unhealthy
        throw ExitCode(verdict.rawValue)
    }

    static func summary(_ probe: ProbeDocument) -> String {
        let phases = ProbePhase.allCases.compactMap { phase in
            probe.phasesMs[phase.rawValue].map { "\(phase.rawValue) \(FixedPoint.format($0, places: 1))" }
        }.joined(separator: ", ")
        var text = probe.ok
            ? "ok: \(probe.target) answered SELECT 1 in \(FixedPoint.format(probe.latencyMs, places: 1)) ms"
            : "unhealthy: \(probe.target): \(probe.reason)"
        if let phase = probe.phase { text += " during \(phase)" }
        if let sqlstate = probe.sqlstate { text += " (SQLSTATE \(sqlstate))" }
        if !probe.ok { text += " after \(FixedPoint.format(probe.latencyMs, places: 1)) ms" }
        if let message = probe.message { text += "\n  \(message)" }
        if !phases.isEmpty { text += "\n  phases (ms): \(phases)" }
        return text
    }
}
