import FoundationEssentials
import HealthCore
import Synchronization

/// Inserts events into `system_events`, creating the table with the web app's schema if it is
/// missing, and using an existing one as it is (never altering or dropping it).
///
/// Each batch is one multi-row `INSERT … ON CONFLICT (id) DO NOTHING`: a single statement commits
/// atomically, and replaying a batch whose commit was not acknowledged inserts nothing twice.
/// Runs on NIO's blocking-work pool with the same deadline machinery as the probe.
public final class EventTableWriter: Sendable {
    public static let createTable = """
        CREATE TABLE IF NOT EXISTS system_events (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            event_type VARCHAR(100) NOT NULL,
            source VARCHAR(100) NOT NULL,
            severity VARCHAR(20) DEFAULT 'info',
            payload JSONB NOT NULL,
            timestamp TIMESTAMP DEFAULT NOW(),
            metadata JSONB DEFAULT '{}'
        )
        """

    /// Columns the daemon writes, with the type each must have.
    static let requiredColumns: [(name: String, type: String)] = [
        ("id", "uuid"), ("event_type", "character varying"), ("source", "character varying"),
        ("severity", "character varying"), ("payload", "jsonb"), ("timestamp", "timestamp without time zone"),
        ("metadata", "jsonb"),
    ]

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var reason: FailureReason
        public var sqlstate: String?
        public var message: String
        /// The attempt was abandoned (shutdown) before it reached a result.
        public var isCancellation = false
        /// Said while a connection of an earlier attempt still waits on the server ("the
        /// connection opened 12 s ago is still waiting, ..."); its figure grows at every attempt.
        public var stillWaiting: String?
        public var description: String {
            let text = stillWaiting.map { "\(message); \($0)" } ?? message
            return sqlstate.map { "\(text) (SQLSTATE \($0))" } ?? text
        }
        /// The failure without what changes from one attempt to the next: a log that reports a
        /// failure when it changes, not at every retry, compares these.
        public var kind: String {
            "\(reason.rawValue) \(sqlstate ?? "-") \(message)\(stillWaiting == nil ? "" : "; still waiting")"
        }
    }

    public let target: ConnectionTarget
    private let timeout: Duration
    private let environment: [String: String]
    /// Whether the table's existence and shape were checked on this run; cleared when an insert
    /// finds it gone.
    private let tableChecked = Mutex(false)
    /// A connection the server had not finished with when an attempt's deadline passed (its
    /// backend waiting on a lock during start-up, say): the next attempt carries on with it
    /// rather than leave one more backend waiting per retry.
    private let connections = SlotBox()
    /// The prober of the same database, whose kept session a small delivery borrows, so that a
    /// daemon in session mode holds one connection to the server, not two, while it delivers.
    private let sharing: PostgresProber?

    private let serverTimeouts: Bool

    /// `sharing`: the prober of the same database, if events go to the probed one.
    public init(
        target: ConnectionTarget, timeout: Duration = .seconds(5), serverTimeouts: Bool = true,
        environment: [String: String], sharing: PostgresProber? = nil
    ) {
        self.sharing = sharing
        self.target = target
        self.timeout = timeout
        self.serverTimeouts = serverTimeouts
        self.environment = environment
    }

    /// Inserts the rows in order, in batches; `nil` when all were committed. Cancelling the
    /// calling task abandons the attempt at once (shutdown).
    public func insert(_ rows: [EventRow]) async -> Failure? {
        guard !rows.isEmpty else { return nil }
        let cancellation = ProbeCancellation()
        // A thread of its own: an insert can wait seconds on a slow database, and must not hold
        // up spool writes or probes that share a pool.
        let outcome = await withTaskCancellationHandler {
            await onOwnThread { [self] in
                if let borrowed = insertOnKeptSession(rows, cancellation: cancellation) { return borrowed }
                return connections.slot.withLock { slot in insertBlocking(rows, slot: slot, cancellation: cancellation) }
            }
        } onCancel: {
            cancellation.cancel()
        }
        return outcome ?? Failure(reason: .other, sqlstate: nil, message: "could not start a thread for the insert")
    }

    /// Most rows a delivery sends over the probe's kept session: the kept session carries the
    /// probe's own (short) statement timeout, so a long replay takes a connection of its own.
    static let borrowedRowLimit = 100

    /// Inserts on the probe's kept session, when there is one idle and the rows are few: `nil`
    /// when it did not (nothing was borrowed, or the borrowed session failed: the caller then
    /// tries on a connection of its own, at once).
    private func insertOnKeptSession(_ rows: [EventRow], cancellation: ProbeCancellation) -> Failure?? {
        guard rows.count <= Self.borrowedRowLimit, let sharing,
              let (session, openedAt) = sharing.borrowKeptSession()
        else { return nil }
        session.cancellation = cancellation
        var clock = PhaseClock(startedAt: Date(), start: .now, timeout: timeout, connection: .session, phase: .query)
        let outcome = write(rows, on: session, clock: &clock)
        switch outcome {
        case nil:
            sharing.returnKeptSession(session, openedAt: openedAt)
            return .some(nil)
        case let failure? where failure.isCancellation:
            return .some(failure)
        case let failure? where session.statementInFlight:
            // No answer within the deadline, the insert still in the server's (or a pooler's)
            // hands: the writer carries on with this session at its next attempt instead of
            // leaving it waiting and opening another.
            connections.slot.withLock { $0.holdUnfinished(session, since: clock.start) }
            return .some(failure)
        case _?:
            // Broken, or too slow for the probe's statement timeout: dropped; the rows go over
            // a connection of the writer's own.
            return nil
        }
    }

    private func insertBlocking(_ rows: [EventRow], slot: ConnectionSlot, cancellation: ProbeCancellation) -> Failure? {
        var clock = PhaseClock(startedAt: Date(), start: .now, timeout: timeout)
        let session: PGSession
        switch slot.connection(
            target, clock: &clock, resolver: .shared, environment: environment, cancellation: cancellation,
            serverTimeout: serverTimeouts ? timeout : nil
        ) {
        case .success(let opened): session = opened
        case .failure(let stop):
            var failure = failure(stop, doing: "connecting")
            if case .deadline = stop, let note = slot.stillWaitingNote(callStartedAt: clock.start) {
                failure.message += " (during \(clock.phase.rawValue))"
                failure.stillWaiting = note
            }
            return failure
        }
        let failure = write(rows, on: session, clock: &clock)
        // An insert (or the table check) that outlived its deadline is carried on at the next
        // attempt, as a connection still starting up is: dropped, it would leave its statement
        // waiting (a pooler keeps queueing a client it no longer reads from, and runs its query
        // once a server connection frees up), and each attempt would add one.
        if failure != nil, session.statementInFlight { slot.holdUnfinished(session, since: clock.start) }
        return failure
    }

    /// The table checked (once per run), then the rows, in batches.
    private func write(_ rows: [EventRow], on session: PGSession, clock: inout PhaseClock) -> Failure? {
        if !tableChecked.withLock({ $0 }) {
            if let failure = ensureTable(session, deadline: clock.deadline) { return failure }
            tableChecked.withLock { $0 = true }
        }
        // Fresh deadline per batch: a long replay is many short statements, each bounded.
        for batch in stride(from: 0, to: rows.count, by: Self.batchSize).map({ Array(rows[$0..<min($0 + Self.batchSize, rows.count)]) }) {
            let (sql, parameters) = Self.insertStatement(batch)
            if case .failure(let stop) = session.execute(sql, parameters: parameters, until: .now + timeout) {
                if case .failed(_, let sqlstate, _) = stop, sqlstate == "42P01" {
                    tableChecked.withLock { $0 = false }
                }
                return failure(stop, doing: "inserting into system_events")
            }
        }
        return nil
    }

    /// Rows per statement: 7 parameters each, far below the protocol's 65 535.
    static let batchSize = 1_000

    static func insertStatement(_ rows: [EventRow]) -> (String, [String?]) {
        var sql = "INSERT INTO system_events (id, event_type, source, severity, payload, timestamp, metadata) VALUES "
        var parameters: [String?] = []
        parameters.reserveCapacity(rows.count * 7)
        for (index, row) in rows.enumerated() {
            let base = index * 7
            if index > 0 { sql += ", " }
            sql += "($\(base + 1)::uuid, $\(base + 2), $\(base + 3), $\(base + 4), $\(base + 5)::jsonb, "
                + "($\(base + 6)::timestamptz AT TIME ZONE 'UTC'), $\(base + 7)::jsonb)"
            parameters += [
                row.id.uuidString.lowercased(), row.eventType, EventRow.source, row.severity, row.payload,
                Timestamp.format(row.timestamp), row.metadata,
            ]
        }
        sql += " ON CONFLICT (id) DO NOTHING"
        return (sql, parameters)
    }

    /// Creates the table if it is missing; checks the shape of one that exists.
    private func ensureTable(_ session: PGSession, deadline: ContinuousClock.Instant) -> Failure? {
        let columnsQuery = """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a
            WHERE a.attrelid = to_regclass('system_events') AND a.attnum > 0 AND NOT a.attisdropped
            """
        var columns: [[String?]]
        switch session.execute(columnsQuery, until: deadline) {
        case .failure(let stop): return failure(stop, doing: "looking up system_events")
        case .success(let rows): columns = rows.values
        }
        if columns.isEmpty {
            // Checked first: CREATE … IF NOT EXISTS needs the CREATE privilege even when the
            // table exists, which a monitoring role rarely has.
            if case .failure(let stop) = session.execute(Self.createTable, until: deadline) {
                return failure(stop, doing: "creating system_events")
            }
            switch session.execute(columnsQuery, until: deadline) {
            case .failure(let stop): return failure(stop, doing: "looking up system_events")
            case .success(let rows): columns = rows.values
            }
        }
        // ON CONFLICT (id) needs a unique index on id (the schema's primary key).
        let uniqueID = """
            SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = to_regclass('system_events') AND i.indisunique AND i.indnatts = 1 AND a.attname = 'id'
            """
        switch session.execute(uniqueID, until: deadline) {
        case .failure(let stop): return failure(stop, doing: "looking up system_events")
        case .success(let rows) where rows.values.isEmpty:
            return Failure(reason: .serverError, sqlstate: nil,
                           message: "system_events has no primary key or unique index on id; the table is left as it is")
        case .success: break
        }
        let types = Dictionary(columns.compactMap { row in row[0].map { ($0, row[1] ?? "") } }, uniquingKeysWith: { first, _ in first })
        for (name, type) in Self.requiredColumns {
            guard let actual = types[name] else {
                return Failure(reason: .serverError, sqlstate: nil,
                               message: "system_events exists without a column \"\(name)\"; it is left as it is")
            }
            guard actual.hasPrefix(type) else {
                return Failure(reason: .serverError, sqlstate: nil,
                               message: "system_events column \"\(name)\" is \(actual), expected \(type); the table is left as it is")
            }
        }
        return nil
    }

    private func failure(_ stop: PGSession.Stop, doing what: String) -> Failure {
        switch stop {
        case .deadline:
            return Failure(reason: .timeout, sqlstate: nil, message: "\(what): no answer within \(timeout.milliseconds) ms")
        case .cancelled:
            return Failure(reason: .other, sqlstate: nil, message: "\(what): cancelled", isCancellation: true)
        case .failed(let reason, let sqlstate, let message):
            return Failure(reason: reason, sqlstate: sqlstate, message: "\(what): \(message)")
        }
    }
}
