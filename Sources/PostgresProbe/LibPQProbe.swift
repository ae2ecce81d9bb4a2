import CLibPQ
import FoundationEssentials
import Glibc
import HealthCore

/// One probe: a fresh connection and `SELECT 1`, under one monotonic deadline that covers name
/// resolution, TCP, TLS, authentication and the query together.
///
/// libpq's `connect_timeout` is whole seconds with a 2 s floor and `PQconnectPoll` ignores it, so
/// the deadline is ours: every wait is a `poll()` on libpq's socket bounded by the time left.
/// At the deadline the connection is closed with `PQfinish` (which does not block); the
/// blocking `PQcancel` is never called. This function blocks its thread for at most the
/// deadline: callers run it on a thread pool, never on the cooperative pool.
enum LibPQProbe {
    /// `nil` when the probe was cancelled before it reached a verdict.
    ///
    /// `slot` holds what outlives one probe: the kept session (session mode), or a connection
    /// the server had not finished with when an earlier probe's deadline passed. While such a
    /// connection is unfinished no other is opened: each probe waits on it again, under its own
    /// deadline, and reports a timeout until the server answers or drops it. So a server whose
    /// backends wait on a lock (which they do not leave when the client goes) gets at most one
    /// of the daemon's probes at a time, not one per tick.
    static func run(
        _ target: ConnectionTarget, timeout: Duration, policy: ProbePolicy, slot: ConnectionSlot,
        resolver: HostResolver, environment: [String: String], cancellation: ProbeCancellation
    ) -> ProbeResult? {
        var result = probe(
            target, timeout: timeout, policy: policy, slot: slot, resolver: resolver, environment: environment,
            cancellation: cancellation
        )
        result?.serverTimeouts = serverTimeouts(policy, slot)
        return result
    }

    private static func serverTimeouts(_ policy: ProbePolicy, _ slot: ConnectionSlot) -> ServerTimeouts {
        guard policy.serverTimeouts else { return .off }
        return slot.startupOptionsRefused ? .setLocal : .startupOptions
    }

    /// The probe's statement: `SELECT 1`, after the server timeouts where the startup options
    /// could not carry them. One simple query is one implicit transaction, which a pooler in
    /// transaction mode runs on one server connection, so `SET LOCAL` applies to the `SELECT`
    /// and ends with it, leaving nothing behind for the pooler's next client.
    static func statement(timeout: Duration, serverTimeouts: ServerTimeouts) -> String {
        guard serverTimeouts == .setLocal else { return "SELECT 1" }
        let milliseconds = max(1, timeout.milliseconds)
        return "SET LOCAL statement_timeout = \(milliseconds); SET LOCAL lock_timeout = \(milliseconds); SELECT 1"
    }

    private static func probe(
        _ target: ConnectionTarget, timeout: Duration, policy: ProbePolicy, slot: ConnectionSlot,
        resolver: HostResolver, environment: [String: String], cancellation: ProbeCancellation
    ) -> ProbeResult? {
        let serverTimeout = policy.serverTimeouts ? timeout : nil
        let startedAt = Date()
        let start = ContinuousClock.now
        if policy.choice(keptSessionAge: slot.keptSessionAge) == .keptSession, let kept = slot.takeKept() {
            let clock = PhaseClock(startedAt: startedAt, start: start, timeout: timeout, connection: .session, phase: .query)
            kept.session.cancellation = cancellation
            let sql = statement(timeout: timeout, serverTimeouts: serverTimeouts(policy, slot))
            switch kept.session.executeScript(sql, until: clock.deadline) {
            case .success(let rows) where rows.values == [["1"]]:
                slot.keep(kept.session, openedAt: kept.openedAt)
                return clock.succeeded()
            case .failure(.cancelled):
                return nil
            case .failure(.deadline):
                // No answer within the answer budget: that is the verdict, as it was the web
                // app's. The session is closed as this block ends (the server ends the statement
                // itself: statement_timeout); the next probe opens a new one.
                return clock.timedOut()
            default:
                // Gone (57P01, an idle timeout, a restart): a new connection decides the
                // verdict, now. The kept one is closed as this block ends, before the new one
                // opens, so the probe never holds two.
                break
            }
        } else {
            // A new connection: the kept session, past `freshEvery`, is closed first.
            slot.closeKept()
        }

        // From the probe's start, so that a kept session's failure and the new connection after
        // it stay within connect_timeout + timeout together; the phases start now.
        var clock = PhaseClock(
            startedAt: startedAt, start: start, timeout: timeout, connectTimeout: policy.connectTimeout, connection: .fresh,
            phasesFrom: .now
        )
        let session: PGSession
        switch slot.connection(
            target, clock: &clock, resolver: resolver, environment: environment, cancellation: cancellation,
            serverTimeout: serverTimeout
        ) {
        case .success(let opened): session = opened
        case .failure(.deadline):
            return clock.timedOut(note: slot.stillWaitingNote(callStartedAt: clock.start))
        case .failure(let stop): return clock.stopped(stop)
        }
        clock.beginAnswer()
        // The simple protocol: with the extended one, a session's first `SELECT 1` waits on a
        // lock on pg_namespace (VACUUM FULL pg_namespace, say), and every probe would leave one
        // more stuck backend behind it until the lock goes; with the simple protocol it does not.
        switch session.executeScript(statement(timeout: timeout, serverTimeouts: serverTimeouts(policy, slot)), until: clock.deadline) {
        case .failure(.deadline):
            slot.holdUnfinished(session, since: clock.start)
            return clock.timedOut()
        case .failure(let stop):
            return clock.stopped(stop)
        case .success(let rows) where rows.values == [["1"]]:
            if policy.mode == .session { slot.keep(session, openedAt: clock.start) }
            return clock.succeeded()
        case .success:
            return clock.failed(.other, message: "SELECT 1 returned an unexpected result")
        }
    }

    /// The options libpq gets: the target's own, plus
    /// - resolved addresses as `hostaddr`, so name resolution stays under the deadline;
    /// - `gssencmode=disable` unless asked for, since GSSAPI negotiation may talk to a Kerberos
    ///   KDC synchronously inside `PQconnectPoll`, beyond our deadline;
    /// - a default `application_name`, so operators can tell probes apart in `pg_stat_activity`.
    static func addressedOptions(
        _ target: ConnectionTarget, resolver: HostResolver, deadline: ContinuousClock.Instant,
        environment: [String: String], cancellation: ProbeCancellation, serverTimeout: Duration? = nil
    ) -> Result<[(keyword: String, value: String)], HostResolver.Failure> {
        var options = target.options
        if target.value("application_name") == nil && environment["PGAPPNAME"] == nil {
            options.append(("application_name", "dreamnet-healthd"))
        }
        if target.value("gssencmode") == nil && environment["PGGSSENCMODE"] == nil {
            options.append(("gssencmode", "disable"))
        }
        // Where libpq takes the host from: the string itself, else a service file (which it
        // reads itself, and which outranks PGHOST), else PGHOST.
        let usesService = target.value("service") != nil || environment["PGSERVICE"] != nil
        // The server ends a statement the daemon gave up on by itself: a backend waiting on a
        // lock does not notice that its client has gone. (Measured: neither setting acts while
        // a backend starts up; the unfinished-connection rule in `run` covers that.) Ours come
        // first, so that the operator's own `options` or PGOPTIONS win; a service file's
        // `options` would be replaced by an explicit one, so with a service nothing is added.
        if let serverTimeout, !usesService {
            let milliseconds = max(1, serverTimeout.milliseconds)
            var value = "-c statement_timeout=\(milliseconds) -c lock_timeout=\(milliseconds)"
            if let own = target.value("options") ?? environment["PGOPTIONS"], !own.isEmpty { value += " " + own }
            options.removeAll { $0.keyword == "options" }
            options.append(("options", value))
        }
        let explicitAddress = (target.value("hostaddr") ?? (usesService ? nil : environment["PGHOSTADDR"])) ?? ""
        guard explicitAddress.isEmpty,
              let hostList = target.value("host") ?? (usesService ? nil : environment["PGHOST"])
        else { return .success(options) }

        let hosts = hostList.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let portList = target.value("port") ?? (usesService ? nil : environment["PGPORT"])
        let ports = portList?.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        // A port list libpq cannot match to the hosts: leave it to libpq to say so.
        if let ports, ports.count != 1 && ports.count != hosts.count { return .success(options) }

        // Start every lookup at once, so one slow name does not eat the others' time.
        let needsLookup = { (host: String) in
            !(host.isEmpty || host.hasPrefix("/") || host.hasPrefix("@") || HostResolver.isNumericAddress(host))
        }
        let lookups = hosts.map { needsLookup($0) ? resolver.begin($0) : nil }

        var expandedHosts: [String] = []
        var addresses: [String] = []
        var expandedPorts: [String] = []
        var firstFailure: HostResolver.Failure?
        for (index, host) in hosts.enumerated() {
            let port = ports.map { $0.count == hosts.count ? $0[index] : $0[0] } ?? ""
            var found = [needsLookup(host) ? "" : (HostResolver.isNumericAddress(host) ? host : "")]
            if needsLookup(host) {
                switch resolver.wait(for: lookups[index], until: deadline, cancellation: cancellation) {
                case .success(let list): found = list
                case .failure(.cancelled): return .failure(.cancelled)
                case .failure(let failure):
                    // libpq skips a host it cannot resolve and tries the next: so do we.
                    firstFailure = firstFailure ?? failure
                    continue
                }
            }
            // One entry per address, as libpq would try each address a name resolves to.
            for address in found {
                expandedHosts.append(host)
                addresses.append(address)
                expandedPorts.append(port)
            }
        }
        if expandedHosts.isEmpty, let firstFailure { return .failure(firstFailure) }
        guard lookups.contains(where: { $0 != nil }) else { return .success(options) }
        options.removeAll { ["host", "hostaddr", "port"].contains($0.keyword) }
        options.append(("host", expandedHosts.joined(separator: ",")))
        options.append(("hostaddr", addresses.joined(separator: ",")))
        if ports != nil { options.append(("port", expandedPorts.joined(separator: ","))) }
        return .success(options)
    }
}

/// The probe's clock: one start, a budget for opening the connection and one for the answer,
/// each a hard deadline, and the time spent in each phase.
struct PhaseClock {
    let startedAt: Date
    let start: ContinuousClock.Instant
    /// The answer budget: `SELECT 1` on an open connection.
    let timeout: Duration
    /// The budget for opening a connection, up to the query.
    let connectTimeout: Duration
    /// The current step's deadline: the connection's, then (`beginAnswer`) the answer's.
    private(set) var deadline: ContinuousClock.Instant
    /// The kind of connection the verdict comes from.
    let connection: ProbeConnection
    private(set) var phase: ProbePhase = .resolve
    private var phaseStart: ContinuousClock.Instant
    private var timings: [PhaseTiming] = []

    /// A probe on a kept session starts at `.query`: it has nothing to resolve or connect.
    /// `connectTimeout`: `timeout` unless given (the event writer has one budget for both).
    init(
        startedAt: Date, start: ContinuousClock.Instant, timeout: Duration, connectTimeout: Duration? = nil,
        connection: ProbeConnection = .fresh, phase: ProbePhase = .resolve, phasesFrom: ContinuousClock.Instant? = nil
    ) {
        self.startedAt = startedAt
        self.start = start
        self.timeout = timeout
        self.connectTimeout = connectTimeout ?? timeout
        self.deadline = start + (phase == .query ? timeout : connectTimeout ?? timeout)
        self.phaseStart = phasesFrom ?? start
        self.connection = connection
        self.phase = phase
    }

    /// The connection is open: the answer has its own budget, from now.
    mutating func beginAnswer() {
        enter(.query)
        deadline = phaseStart + timeout
    }

    mutating func enter(_ next: ProbePhase) {
        guard next != phase else { return }
        let now = ContinuousClock.now
        timings.append(PhaseTiming(phase: phase, duration: now - phaseStart))
        phase = next
        phaseStart = now
    }

    /// `note`: what else the timeout is about (an earlier connection still waiting).
    func timedOut(note: String? = nil) -> ProbeResult {
        let what = phase == .query
            ? "no answer within \(timeout.milliseconds) ms"
            : "no connection within \(connectTimeout.milliseconds) ms (during \(phase.rawValue))"
        return failed(.timeout, message: what + (note.map { "; " + $0 } ?? ""))
    }

    func failed(_ reason: FailureReason, sqlstate: String? = nil, message: String) -> ProbeResult {
        finish(ProbeFailure(reason: reason, phase: phase, sqlstate: sqlstate, message: message))
    }

    /// `nil` for a cancelled probe: it has no verdict.
    func stopped(_ stop: PGSession.Stop) -> ProbeResult? {
        switch stop {
        case .deadline: return timedOut()
        case .cancelled: return nil
        case .failed(let reason, let sqlstate, let message): return failed(reason, sqlstate: sqlstate, message: message)
        }
    }

    func succeeded() -> ProbeResult {
        finish(nil)
    }

    private func finish(_ failure: ProbeFailure?) -> ProbeResult {
        let now = ContinuousClock.now
        return ProbeResult(
            startedAt: startedAt, latency: now - start,
            phases: timings + [PhaseTiming(phase: phase, duration: now - phaseStart)],
            failure: failure, connection: connection
        )
    }
}
