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
    static func run(
        _ target: ConnectionTarget, timeout: Duration, resolver: HostResolver,
        environment: [String: String]
    ) -> ProbeResult {
        var clock = PhaseClock(startedAt: Date(), start: .now, timeout: timeout)

        // Resolve host names ourselves, under the deadline, and hand libpq the addresses.
        let options: [(keyword: String, value: String)]
        switch addressedOptions(target, resolver: resolver, deadline: clock.deadline, environment: environment) {
        case .success(let resolved): options = resolved
        case .failure(.timedOut): return clock.timedOut()
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

        // Connect, negotiate TLS, authenticate.
        var polling = PGRES_POLLING_WRITING
        while true {
            let status = PQstatus(connection)
            if status != CONNECTION_BAD { clock.enter(phase(of: status)) }
            switch polling {
            case PGRES_POLLING_OK:
                break
            case PGRES_POLLING_READING:
                guard wait(PQsocket(connection), for: POLLIN, until: clock.deadline) else { return clock.timedOut() }
                polling = PQconnectPoll(connection)
                continue
            case PGRES_POLLING_WRITING:
                guard wait(PQsocket(connection), for: POLLOUT, until: clock.deadline) else { return clock.timedOut() }
                polling = PQconnectPoll(connection)
                continue
            default:
                return connectionFailure()
            }
            break
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
            guard wait(PQsocket(connection), for: POLLOUT | POLLIN, until: clock.deadline) else { return clock.timedOut() }
            guard PQconsumeInput(connection) == 1 else { return connectionFailure() }
        }
        while PQisBusy(connection) == 1 {
            guard wait(PQsocket(connection), for: POLLIN, until: clock.deadline) else { return clock.timedOut() }
            guard PQconsumeInput(connection) == 1 else { return connectionFailure() }
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

    /// The options libpq gets: the target's own, with resolved addresses as `hostaddr` and a
    /// default `application_name`, so operators can tell probes apart in `pg_stat_activity`.
    static func addressedOptions(
        _ target: ConnectionTarget, resolver: HostResolver, deadline: ContinuousClock.Instant,
        environment: [String: String]
    ) -> Result<[(keyword: String, value: String)], HostResolver.Failure> {
        var options = target.options
        if target.value("application_name") == nil && environment["PGAPPNAME"] == nil {
            options.append(("application_name", "dreamnet-healthd"))
        }
        guard target.value("hostaddr") == nil, environment["PGHOSTADDR"] == nil,
              let hostList = target.value("host") ?? environment["PGHOST"]
        else { return .success(options) }

        let hosts = hostList.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let portList = target.value("port") ?? environment["PGPORT"]
        let ports = portList?.split(separator: ",", omittingEmptySubsequences: false).map(String.init)

        var expandedHosts: [String] = []
        var addresses: [String] = []
        var expandedPorts: [String] = []
        var resolvedAny = false
        for (index, host) in hosts.enumerated() {
            let port = ports.map { $0.count == hosts.count ? $0[index] : $0[0] } ?? ""
            let isSocket = host.isEmpty || host.hasPrefix("/") || host.hasPrefix("@")
            var found = [""]
            if !isSocket {
                if HostResolver.isNumericAddress(host) {
                    found = [host]
                } else {
                    switch resolver.resolve(host, until: deadline) {
                    case .success(let list): found = list; resolvedAny = true
                    case .failure(let failure): return .failure(failure)
                    }
                }
            }
            // One entry per address, as libpq would try each address a name resolves to.
            for address in found {
                expandedHosts.append(host)
                addresses.append(address)
                expandedPorts.append(port)
            }
        }
        guard resolvedAny else { return .success(options) }
        options.removeAll { $0.keyword == "host" || $0.keyword == "port" }
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

    /// Waits until the descriptor is ready or the deadline passes; `false` means the deadline.
    /// Errors and hang-ups count as ready: libpq reads them and reports the failure.
    private static func wait(_ descriptor: Int32, for events: Int32, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let remaining = deadline - .now
            guard remaining > .zero else { return false }
            var entry = pollfd(fd: descriptor, events: Int16(events), revents: 0)
            let milliseconds = Int32(min(remaining.fractionalMilliseconds.rounded(.up), Double(Int32.max)))
            let ready = poll(&entry, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR && errno != EAGAIN { return true }
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
