import ArgumentParser
import FoundationEssentials
import HealthCore
import StatusClient

struct Wait: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Block until the daemon reports a state (exit 0), or give up at the timeout (exit 3).",
        discussion: "An unreachable daemon is retried until the timeout, so this works right after start-up."
    )

    @OptionGroup var options: SocketOptions
    @ParentCommand var parent: HealthControl

    @Option(name: .customLong("for"), help: ArgumentHelp("healthy, unhealthy or not-configured.", valueName: "state"))
    var state = "healthy"

    @Option(help: ArgumentHelp("How long to wait.", valueName: "duration"))
    var timeout = "30s"

    func validate() throws {
        guard let wanted = HealthState(rawValue: state), wanted != .starting else {
            throw ValidationError("--for must be healthy, unhealthy or not-configured")
        }
        guard (try? HumanDuration.parse(timeout)) != nil else {
            throw ValidationError("--timeout: '\(timeout)' is not a duration (e.g. 500ms, 30s, 2m)")
        }
    }

    func run() throws {
        let deadline = ContinuousClock.now + (try HumanDuration.parse(timeout))
        var lastProblem = "no answer yet"
        while ContinuousClock.now < deadline {
            let remaining = deadline - .now
            do {
                let response = try StatusClient.get("/status", socketPath: options.path(parent: parent), timeout: min(remaining, .seconds(2)))
                let status = try decodeStatus(response.body)
                if status.state == state && !status.isStale {
                    print("\(state)")
                    return
                }
                lastProblem = status.isStale ? "last report is stale" : "state is \(status.state)"
            } catch let failure as StatusClient.Failure where failure.isPermissionDenied {
                // Waiting cannot change who this user is.
                writeError(describe(failure))
                throw ExitCode(ExitVerdict.unknown.rawValue)
            } catch {
                lastProblem = "\(error)"
            }
            pause(for: min(.milliseconds(100), max(deadline - .now, .zero)))
        }
        writeError("gave up after \(timeout) waiting for \(state): \(lastProblem)")
        throw ExitCode(ExitVerdict.unknown.rawValue)
    }
}
