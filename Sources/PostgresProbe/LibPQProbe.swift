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
    static func run(
        _ target: ConnectionTarget, timeout: Duration, resolver: HostResolver,
        environment: [String: String], cancellation: ProbeCancellation
    ) -> ProbeResult? {
        var clock = PhaseClock(startedAt: Date(), start: .now, timeout: timeout)

        // Resolve host names ourselves, under the deadline, and hand libpq the addresses.
        let options: [(keyword: String, value: String)]
        switch addressedOptions(target, resolver: resolver, deadline: clock.deadline, environment: environment, cancellation: cancellation) {
        case .success(let resolved): options = resolved
        case .failure(.timedOut): return clock.timedOut()
        case .failure(.cancelled): return nil
        case .failure(.failed(let message)):
            return clock.failed(.dns, message: target.scrubber.scrub(message))
        }

        clock.enter(.connect)
        guard let connection = startConnection(options) else {
            return clock.failed(.other, message: "libpq could not allocate a connection")
        }
        // PQfinish closes the socket without waiting for the server; safe at any point.
        defer { PQfinish(connection) }
        // Verbose errors carry the server's SQLSTATE in their text: the only place libpq 15
        // exposes it during connection set-up.
        PQsetErrorVerbosity(connection, PQERRORS_VERBOSE)

        func connectionFailure() -> ProbeResult {
            let raw = String(cString: PQerrorMessage(connection))
            let sqlstate = FailureClassifier.sqlstate(inConnectionError: raw)
            let message = target.scrubber.scrub(FailureClassifier.tidy(raw))
            return clock.failed(FailureClassifier.reason(sqlstate: sqlstate, message: message), sqlstate: sqlstate, message: message)
        }

        /// One bounded wait on libpq's socket, re-read every time: it can change between rounds.
        func waitOnSocket(_ events: Int32) -> WaitOutcome {
            cancellation.wait(PQsocket(connection), for: events, until: clock.deadline)
        }

        // Connect, negotiate TLS, authenticate. libpq may already have failed inside
        // PQconnectStartParams (a missing Unix socket, an invalid option): report that at once.
        var polling = PQstatus(connection) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING
        connecting: while true {
            let status = PQstatus(connection)
            if status != CONNECTION_BAD { clock.enter(phase(of: status)) }
            let events: Int32
            switch polling {
            case PGRES_POLLING_OK: break connecting
            case PGRES_POLLING_READING: events = POLLIN
            case PGRES_POLLING_WRITING: events = POLLOUT
            default: return connectionFailure()
            }
            switch waitOnSocket(events) {
            case .deadline: return clock.timedOut()
            case .cancelled: return nil
            case .ready: polling = PQconnectPoll(connection)
            }
        }

        // SELECT 1, without blocking.
        clock.enter(.query)
        guard PQsetnonblocking(connection, 1) == 0, PQsendQuery(connection, "SELECT 1") == 1 else {
            return connectionFailure()
        }
        while true {
            let flushed = PQflush(connection)
            if flushed == 0 { break }
            if flushed < 0 { return connectionFailure() }
            switch waitOnSocket(POLLOUT | POLLIN) {
            case .deadline: return clock.timedOut()
            case .cancelled: return nil
            case .ready: guard PQconsumeInput(connection) == 1 else { return connectionFailure() }
            }
        }
        while PQisBusy(connection) == 1 {
            switch waitOnSocket(POLLIN) {
            case .deadline: return clock.timedOut()
            case .cancelled: return nil
            case .ready: guard PQconsumeInput(connection) == 1 else { return connectionFailure() }
            }
        }
        guard let result = PQgetResult(connection) else { return connectionFailure() }
        defer { PQclear(result) }

        guard PQresultStatus(result) == PGRES_TUPLES_OK else {
            let sqlstate = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let raw = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
                ?? String(cString: PQresultErrorMessage(result))
            let message = target.scrubber.scrub(FailureClassifier.tidy(raw))
            return clock.failed(FailureClassifier.reason(sqlstate: sqlstate, message: message), sqlstate: sqlstate, message: message)
        }
        guard PQntuples(result) == 1, PQnfields(result) == 1, String(cString: PQgetvalue(result, 0, 0)) == "1" else {
            return clock.failed(.other, message: "SELECT 1 returned an unexpected result")
        }
        return clock.succeeded()
    }

    /// The options libpq gets: the target's own, plus
    /// - resolved addresses as `hostaddr`, so name resolution stays under the deadline;
    /// - `gssencmode=disable` unless asked for, since GSSAPI negotiation may talk to a Kerberos
    ///   KDC synchronously inside `PQconnectPoll`, beyond our deadline;
    /// - a default `application_name`, so operators can tell probes apart in `pg_stat_activity`.
    static func addressedOptions(
        _ target: ConnectionTarget, resolver: HostResolver, deadline: ContinuousClock.Instant,
        environment: [String: String], cancellation: ProbeCancellation
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

    private static func startConnection(_ options: [(keyword: String, value: String)]) -> OpaquePointer? {
        let keywords = options.map { strdup($0.keyword) } + [nil]
        let values = options.map { strdup($0.value) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        return keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { keywordPointers in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { valuePointers in
                // expand_dbname = 0: the options were already parsed from the connection string.
                PQconnectStartParams(keywordPointers.baseAddress, valuePointers.baseAddress, 0)
            }
        }
    }

    private static func phase(of status: ConnStatusType) -> ProbePhase {
        switch status {
        case CONNECTION_SSL_STARTUP, CONNECTION_GSS_STARTUP: return .tls
        case CONNECTION_AWAITING_RESPONSE, CONNECTION_AUTH_OK, CONNECTION_SETENV, CONNECTION_CHECK_WRITABLE,
             CONNECTION_CONSUME, CONNECTION_CHECK_TARGET, CONNECTION_CHECK_STANDBY:
            return .auth
        default: return .connect
        }
    }
}

/// The probe's clock: one start, one deadline, and the time spent in each phase.
struct PhaseClock {
    let startedAt: Date
    let start: ContinuousClock.Instant
    let timeout: Duration
    let deadline: ContinuousClock.Instant
    private(set) var phase: ProbePhase = .resolve
    private var phaseStart: ContinuousClock.Instant
    private var timings: [PhaseTiming] = []

    init(startedAt: Date, start: ContinuousClock.Instant, timeout: Duration) {
        self.startedAt = startedAt
        self.start = start
        self.timeout = timeout
        self.deadline = start + timeout
        self.phaseStart = start
    }

    mutating func enter(_ next: ProbePhase) {
        guard next != phase else { return }
        let now = ContinuousClock.now
        timings.append(PhaseTiming(phase: phase, duration: now - phaseStart))
        phase = next
        phaseStart = now
    }

    func timedOut() -> ProbeResult {
        failed(.timeout, message: "no answer within \(timeout.milliseconds) ms (during \(phase.rawValue))")
    }

    func failed(_ reason: FailureReason, sqlstate: String? = nil, message: String) -> ProbeResult {
        finish(ProbeFailure(reason: reason, phase: phase, sqlstate: sqlstate, message: message))
    }

    func succeeded() -> ProbeResult {
        finish(nil)
    }

    private func finish(_ failure: ProbeFailure?) -> ProbeResult {
        let now = ContinuousClock.now
        return ProbeResult(
            startedAt: startedAt, latency: now - start,
            phases: timings + [PhaseTiming(phase: phase, duration: now - phaseStart)],
            failure: failure
        )
    }
}
