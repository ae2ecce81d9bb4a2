import ArgumentParser
import FoundationEssentials
import HealthCore
import StatusClient

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the daemon's view of the database; the exit code is the verdict."
    )

    @OptionGroup var options: SocketOptions
    @ParentCommand var parent: HealthControl

    @Flag(help: "Print the daemon's JSON instead of a summary.")
    var json = false

    /// Beyond the probe's deadline: the time to record the first verdict and publish it.
    static let firstVerdictSlack = Duration.seconds(1)

    func run() throws {
        var document: StatusDocument
        var response: StatusClient.Response
        let path = options.path(parent: parent)
        do {
            response = try StatusClient.get("/status", socketPath: path)
            document = try decodeStatus(response.body)
            // A daemon that has just started (socket activation starts it for this very
            // request) has its first verdict at most one probe deadline away, or one interval
            // more when it splays its first probe: wait for it rather than answer "unknown".
            if document.state == HealthState.starting.rawValue {
                let longestProbe = Duration.milliseconds(document.timeoutMs + (document.connectTimeoutMs ?? 0))
                let deadline = ContinuousClock.now + .milliseconds(document.intervalMs) + longestProbe + Self.firstVerdictSlack
                while document.state == HealthState.starting.rawValue, ContinuousClock.now < deadline {
                    pause(for: .milliseconds(50))
                    response = try StatusClient.get("/status", socketPath: path)
                    document = try decodeStatus(response.body)
                }
            }
        } catch {
            writeError(describe(error))
            throw ExitCode(ExitVerdict.unknown.rawValue)
        }
        let verdict = ExitVerdict(state: document.state, stale: document.isStale)
        if json {
            print(String(decoding: response.body, as: UTF8.self), terminator: "")
        } else {
            print(Self.summary(document), terminator: "")
        }
        throw ExitCode(verdict.rawValue)
    }

    static func summary(_ status: StatusDocument) -> String {
        var lines: [(String, String)] = []
        var state = status.state
        if let since = status.since { state += " since \(since)" }
        if status.isStale, let probe = status.lastProbe {
            state = "unknown (last report '\(status.state)' is stale: \(probe.ageMs) ms old, limit \(status.staleAfterMs) ms)"
        } else if status.state == HealthState.starting.rawValue {
            state = "unknown (starting: no verdict yet)"
        }
        lines.append(("state", state))
        lines.append(("target", status.target ?? "not configured"))
        if let probe = status.lastProbe {
            var text = probe.ok ? "ok" : probe.reason
            if let phase = probe.phase { text += " during \(phase)" }
            if let sqlstate = probe.sqlstate { text += " (SQLSTATE \(sqlstate))" }
            text += " in \(FixedPoint.format(probe.latencyMs, places: 1)) ms, \(FixedPoint.format(Double(probe.ageMs) / 1_000, places: 1)) s ago"
            lines.append(("last probe", text))
            if let message = probe.message { lines.append(("message", message)) }
        }
        if let sleep = status.sleep {
            var text = sleep.phase
            if let since = sleep.since { text += " since \(since)" }
            if sleep.phase == SleepStatus.Phase.asleep.rawValue { text += sleep.seen ? " (the server ended the idle session)" : " (presumed from suspend_after)" }
            lines.append(("sleep", text))
        }
        lines.append(("streak", "\(status.consecutiveSuccesses) ok, \(status.consecutiveFailures) failed in a row (rise \(status.rise), fall \(status.fall))"))
        lines.append(("transitions", "\(status.transitions)"))
        if let spool = status.spool {
            var text = "\(spool.pending) pending"
            if let oldest = spool.oldestAt { text += " (oldest \(oldest))" }
            if spool.dropped > 0 { text += ", \(spool.dropped) dropped" }
            if spool.degraded { text += ", DEGRADED: \(spool.inMemory) in memory only (\(spool.degradedReason ?? "?"))" }
            lines.append(("events", text))
            if let error = spool.lastDeliveryError { lines.append(("delivery", error)) }
        }
        if let alertLog = status.alertLog {
            lines.append(("alert log", alertLog.error.map { "\(alertLog.path): \($0)" } ?? alertLog.path))
        }
        var probing = "every \(status.intervalMs) ms, answer within \(status.timeoutMs) ms"
        if let connect = status.connectTimeoutMs { probing += ", new connection within \(connect) ms" }
        if let serverTimeouts = status.serverTimeouts { probing += ", server timeouts \(serverTimeouts)" }
        lines.append(("probing", probing))
        if let distance = status.distance {
            var parts: [String] = []
            if let roundTrip = distance.roundTripMs { parts.append("round trip \(FixedPoint.format(roundTrip, places: 1)) ms") }
            if let connect = distance.connectMs, let left = distance.connectHeadroomMs {
                parts.append("new connection \(FixedPoint.format(connect, places: 1)) ms (\(FixedPoint.format(left, places: 0)) ms to spare)"
                    + (distance.connectNearBudget ? " NEAR ITS BUDGET" : ""))
            }
            if let answer = distance.answerMs, let left = distance.answerHeadroomMs {
                parts.append("answer \(FixedPoint.format(answer, places: 1)) ms (\(FixedPoint.format(left, places: 0)) ms to spare)")
            }
            lines.append(("distance", parts.joined(separator: "; ")))
        }
        lines.append(("daemon", "pid \(status.pid), version \(status.version), up \(FixedPoint.format(status.uptimeS, places: 0)) s"))
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { key, value in
            key + String(repeating: " ", count: width - key.count) + "  " + value + "\n"
        }.joined()
    }
}
