import CLibPQ
import FoundationEssentials
import Glibc
import HealthCore

/// One libpq connection, used by one thread at a time (`PGconn` is not thread-safe),
/// every wait bounded by a deadline on the monotonic clock and abandonable through a
/// `ProbeCancellation`. Closed with `PQfinish`, which does not wait for the server.
///
/// `@unchecked Sendable`: a session moves between threads (a kept session serves probes on
/// whichever thread runs them, the event writer borrows it), but one holder uses it at a time:
/// whoever holds its slot's lock, or has taken it out of the slot.
final class PGSession: @unchecked Sendable {
    /// Why a step did not complete; failures carry libpq's (scrubbed) reason.
    enum Stop: Error {
        case deadline
        case cancelled
        case failed(FailureReason, sqlstate: String?, message: String)
    }

    private let connection: OpaquePointer
    private let scrubber: SecretScrubber
    /// The current user's: a session outlives the probe that opened it (a kept session, or a
    /// connection the server had not finished with at the deadline).
    var cancellation: ProbeCancellation
    private let notices = ServerNotices()
    /// Where connecting stands: libpq's last answer, until the connection is made.
    private var polling: PostgresPollingStatusType = PGRES_POLLING_WRITING
    /// A statement was sent and its results were not read to the end: the server is still at it.
    private(set) var statementInFlight = false

    private init(connection: OpaquePointer, scrubber: SecretScrubber, cancellation: ProbeCancellation) {
        self.connection = connection
        self.scrubber = scrubber
        self.cancellation = cancellation
        // Server messages that arrive outside a statement (a FATAL sent to an idle session, a
        // NOTICE) go to this receiver, not to libpq's default one, which prints them, unscrubbed,
        // on stderr. The session owns `notices` and outlives the connection's callbacks: PQfinish
        // runs first in deinit.
        PQsetNoticeReceiver(connection, { context, result in
            guard let context, let result else { return }
            Unmanaged<ServerNotices>.fromOpaque(context).takeUnretainedValue().receive(result)
        }, Unmanaged.passUnretained(notices).toOpaque())
    }

    deinit {
        ClosedConnections.closing(PQsocket(connection))
        PQfinish(connection)
    }

    /// Resolves, connects, negotiates TLS and authenticates before `clock.deadline`, recording
    /// each phase on `clock`. Closes the connection on any failure.
    static func open(
        _ target: ConnectionTarget, clock: inout PhaseClock, resolver: HostResolver,
        environment: [String: String], cancellation: ProbeCancellation, serverTimeout: Duration? = nil
    ) -> Result<PGSession, Stop> {
        let session: PGSession
        switch start(target, clock: &clock, resolver: resolver, environment: environment,
                     cancellation: cancellation, serverTimeout: serverTimeout) {
        case .success(let started): session = started
        case .failure(let stop): return .failure(stop)
        }
        if let stop = session.connect(clock: &clock) { return .failure(stop) }
        return .success(session)
    }

    /// Resolves the host names (under the deadline) and starts a non-blocking connection;
    /// `connect(clock:)` takes it from there.
    static func start(
        _ target: ConnectionTarget, clock: inout PhaseClock, resolver: HostResolver,
        environment: [String: String], cancellation: ProbeCancellation, serverTimeout: Duration?
    ) -> Result<PGSession, Stop> {
        // Resolve host names ourselves, under the deadline, and hand libpq the addresses.
        let options: [(keyword: String, value: String)]
        switch LibPQProbe.addressedOptions(
            target, resolver: resolver, deadline: clock.deadline, environment: environment, cancellation: cancellation,
            serverTimeout: serverTimeout
        ) {
        case .success(let resolved): options = resolved
        case .failure(.timedOut): return .failure(.deadline)
        case .failure(.cancelled): return .failure(.cancelled)
        case .failure(.failed(let message)): return .failure(.failed(.dns, sqlstate: nil, message: target.scrubber.scrub(message)))
        }

        clock.enter(.connect)
        guard let connection = startConnection(options) else {
            return .failure(.failed(.other, sqlstate: nil, message: "libpq could not allocate a connection"))
        }
        let session = PGSession(connection: connection, scrubber: target.scrubber, cancellation: cancellation)
        // Verbose errors carry the server's SQLSTATE in their text: the only place libpq 15
        // exposes it during connection set-up.
        PQsetErrorVerbosity(connection, PQERRORS_VERBOSE)
        // libpq may already have failed inside PQconnectStartParams (a missing Unix socket, an
        // invalid option): report that at once.
        if PQstatus(connection) == CONNECTION_BAD { session.polling = PGRES_POLLING_FAILED }
        return .success(session)
    }

    /// Drives the connection until it is made or `clock.deadline` passes. After `.deadline` it
    /// can be called again, with a later deadline, to carry on where it stopped.
    func connect(clock: inout PhaseClock) -> Stop? {
        while true {
            let status = PQstatus(connection)
            // Forward only: libpq passes through CONNECTION_MADE again between TLS and startup.
            if status != CONNECTION_BAD, Self.phase(of: status) > clock.phase { clock.enter(Self.phase(of: status)) }
            let events: Int32
            switch polling {
            case PGRES_POLLING_OK:
                guard PQsetnonblocking(connection, 1) == 0 else { return connectionFailure() }
                return nil
            case PGRES_POLLING_READING: events = POLLIN
            case PGRES_POLLING_WRITING: events = POLLOUT
            default: return connectionFailure()
            }
            if let stop = wait(events, until: clock.deadline) { return stop }
            polling = PQconnectPoll(connection)
        }
    }

    /// The connection is made: statements can be sent.
    var isConnected: Bool { polling == PGRES_POLLING_OK }

    /// Where an unfinished session stands, as a probe phase.
    var phase: ProbePhase {
        if isConnected { return .query }
        let status = PQstatus(connection)
        return status == CONNECTION_BAD ? .connect : Self.phase(of: status)
    }

    /// Whether the server holds this connection, so that dropping it unfinished could leave a
    /// backend behind that waits on (say) a lock and does not notice its client has gone: a
    /// connection past the TCP handshake, or one with a statement still running. A connect
    /// still in its handshake holds nothing on the server.
    var serverHoldsIt: Bool {
        if statementInFlight { return true }
        if isConnected { return false }
        let status = PQstatus(connection)
        return status != CONNECTION_BAD && status != CONNECTION_STARTED
    }

    /// The rows of a statement's last result, as text (`nil` for SQL NULL).
    struct Rows {
        var values: [[String?]]
        var commandStatus: String
    }

    /// Runs one statement with text parameters, without blocking past the deadline.
    func execute(_ sql: String, parameters: [String?] = [], until deadline: ContinuousClock.Instant) -> Result<Rows, Stop> {
        let sent: Int32 = withCStrings(parameters) { values in
            PQsendQueryParams(connection, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return finish(sent: sent, until: deadline)
    }

    /// Runs several statements, without parameters, as one simple query: one round trip and
    /// one implicit transaction. The rows are those of the last statement.
    func executeScript(_ sql: String, until deadline: ContinuousClock.Instant) -> Result<Rows, Stop> {
        finish(sent: PQsendQuery(connection, sql), until: deadline)
    }

    private func finish(sent: Int32, until deadline: ContinuousClock.Instant) -> Result<Rows, Stop> {
        guard sent == 1 else { return .failure(connectionFailure()) }
        statementInFlight = true
        return finishStatement(until: deadline)
    }

    /// Sends what is left of the statement and reads every result up to its end, so the
    /// connection is ready for the next one; the first error wins. After `.deadline` it can be
    /// called again to carry on: the statement stays in flight until its end is read.
    func finishStatement(until deadline: ContinuousClock.Instant) -> Result<Rows, Stop> {
        while true {
            let flushed = PQflush(connection)
            if flushed == 0 { break }
            if flushed < 0 { return .failure(connectionFailure()) }
            if let stop = wait(POLLOUT | POLLIN, until: deadline) { return .failure(stop) }
            guard PQconsumeInput(connection) == 1 else { return .failure(connectionFailure()) }
        }

        var rows = Rows(values: [], commandStatus: "")
        var firstError: Stop?
        while true {
            while PQisBusy(connection) == 1 {
                if let stop = wait(POLLIN, until: deadline) { return .failure(stop) }
                guard PQconsumeInput(connection) == 1 else { return .failure(lostConnectionFailure()) }
            }
            guard let result = PQgetResult(connection) else { break }
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
                rows = Rows(values: Self.values(of: result), commandStatus: String(cString: PQcmdStatus(result)))
            default:
                if firstError == nil { firstError = resultFailure(result) }
            }
        }
        statementInFlight = false
        if let firstError { return .failure(firstError) }
        return .success(rows)
    }

    /// Whether an idle session is still open, found by reading what the server sent and
    /// sending nothing: a statement, even a bare Sync, would count as use to a database that
    /// sleeps when unused. A server that ends a session says why first (57P01 when it was told
    /// to end it, as a compute that suspends does).
    func checkIdle() -> IdleSessionCheck {
        var descriptor = pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0)
        guard descriptor.fd >= 0 else { return .ended(sqlstate: nil, ago: nil) }
        guard poll(&descriptor, 1, 0) > 0 else { return .open }
        // When the server's last bytes arrived, which may be long before this look: the kernel
        // keeps it for a TCP socket (`tcpi_last_data_recv`).
        let ago = Self.sinceReceived(descriptor.fd)
        let read = PQconsumeInput(connection) == 1
        // PQconsumeInput only reads; PQisBusy parses what was read, which passes a FATAL sent
        // to an idle session to the notice receiver. It comes before the end of the
        // connection, and may be read on its own.
        _ = PQisBusy(connection)
        if let fatal = notices.fatal { return .ended(sqlstate: fatal.sqlstate, ago: ago) }
        if read, PQstatus(connection) == CONNECTION_OK { return .open }
        return .ended(sqlstate: nil, ago: ago)
    }

    /// How long ago a TCP socket last received data; `nil` for another kind of socket.
    private static func sinceReceived(_ descriptor: Int32) -> Duration? {
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(descriptor, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else { return nil }
        return .milliseconds(Int64(info.tcpi_last_data_recv))
    }

    private static func values(of result: OpaquePointer) -> [[String?]] {
        (0..<PQntuples(result)).map { row in
            (0..<PQnfields(result)).map { column in
                PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
            }
        }
    }

    /// The connection broke while a statement ran. A server that ends a session says why
    /// first (57P01 terminated by an administrator, 57P02 crash, 57P03 shutting down); that
    /// message may already be parsed even though the read that followed it failed, and it says
    /// more than "server closed the connection".
    private func lostConnectionFailure() -> Stop {
        // A FATAL that arrived while the session was idle, just before the query: libpq passed
        // it to the notice receiver, not to a result.
        if let fatal = notices.fatal {
            let message = scrubber.scrub(FailureClassifier.tidy(fatal.message))
            return .failed(FailureClassifier.reason(sqlstate: fatal.sqlstate, message: message), sqlstate: fatal.sqlstate, message: message)
        }
        let generic = connectionFailure()
        guard PQisBusy(connection) == 0, let result = PQgetResult(connection) else { return generic }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_FATAL_ERROR, PQresultErrorField(result, Int32(UInt8(ascii: "C"))) != nil else {
            return generic
        }
        return resultFailure(result)
    }

    private func resultFailure(_ result: OpaquePointer) -> Stop {
        let sqlstate = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let raw = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            ?? String(cString: PQresultErrorMessage(result))
        let message = scrubber.scrub(FailureClassifier.tidy(raw))
        return .failed(FailureClassifier.reason(sqlstate: sqlstate, message: message), sqlstate: sqlstate, message: message)
    }

    private func connectionFailure() -> Stop {
        let raw = String(cString: PQerrorMessage(connection))
        let sqlstate = FailureClassifier.sqlstate(inConnectionError: raw)
        let message = scrubber.scrub(FailureClassifier.tidy(raw))
        return .failed(FailureClassifier.reason(sqlstate: sqlstate, message: message), sqlstate: sqlstate, message: message)
    }

    /// One bounded wait on libpq's socket, re-read every time: it can change between rounds.
    private func wait(_ events: Int32, until deadline: ContinuousClock.Instant) -> Stop? {
        switch cancellation.wait(PQsocket(connection), for: events, until: deadline) {
        case .ready: return nil
        case .deadline: return .deadline
        case .cancelled: return .cancelled
        }
    }

    private static func startConnection(_ options: [(keyword: String, value: String)]) -> OpaquePointer? {
        withCStrings(options.map(\.keyword)) { keywords in
            withCStrings(options.map(\.value)) { values in
                // expand_dbname = 0: the options were already parsed from the connection string.
                PQconnectStartParams(keywords, values, 0)
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

/// What the server said outside a statement; only a session-ending message is kept.
/// What reading an idle session found.
public enum IdleSessionCheck: Sendable, Equatable {
    /// No session is kept (or a probe is using it).
    case none
    case open
    /// The server ended it; with the SQLSTATE it gave, if it said why, and how long ago its
    /// last bytes arrived (nil: unknown, a Unix socket).
    case ended(sqlstate: String?, ago: Duration?)
}

private final class ServerNotices {
    private(set) var fatal: (sqlstate: String, message: String)?

    func receive(_ result: OpaquePointer) {
        let field = { (code: Character) in PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) } }
        guard let severity = field("V"), severity == "FATAL" || severity == "PANIC",
              let sqlstate = field("C"), let message = field("M")
        else { return }
        fatal = (sqlstate, message)
    }
}

/// A NULL-terminated array of C strings for the duration of `body`.
private func withCStrings<Result>(
    _ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> Result
) -> Result {
    let copies = strings.map { $0.flatMap { strdup($0) } } + [nil]
    defer { copies.forEach { free($0) } }
    return copies.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
}
