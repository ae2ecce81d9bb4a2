import ArgumentParser
import FoundationEssentials
import HealthCore
import PostgresProbe
import ProbeCommandLine

/// One probe with the daemon's engine, printed, its exit code the verdict: `dreamnet-healthd
/// probe`, and the probe program that `dreamnet-healthctl probe` runs.
public enum OneShotProbe {
    public static func run(_ options: ProbeOptions) throws {
        let url = options.databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"]
        guard let url, !url.isEmpty else {
            OneShotCommand.say("not-configured: no --database-url given and DATABASE_URL is not set")
            throw ExitCode(ExitVerdict.notConfigured.rawValue)
        }
        let target: ConnectionTarget
        do {
            target = try ConnectionTarget.parse(url)
        } catch {
            OneShotCommand.say(error.description)
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
