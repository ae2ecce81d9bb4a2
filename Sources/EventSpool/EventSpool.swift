import Foundation
import GRDB
import HealthCore

/// The durable local spool: every event is written here, and fsynced, before it is reported
/// anywhere else, and stays until the database has committed it. It also remembers the
/// daemon's verdict and damping counters across restarts.
///
/// SQLite in WAL mode with `synchronous=FULL`: a committed append has been fsynced, and a crash
/// at any point leaves either the whole event or none of it. All calls block (disk I/O): run
/// them on a thread pool, never on Swift's cooperative pool.
public final class EventSpool: Sendable {
    public static let fileName = "spool.sqlite3"

    public let path: String
    public let limit: Int
    private let queue: DatabaseQueue

    /// Opens (or creates) the spool in `directory`. A file that is not a readable SQLite database
    /// is moved aside (`spool.sqlite3.corrupt-<time>`), never deleted, and a new spool started;
    /// `recoveredFrom` names the moved file.
    public init(directory: String, limit: Int) throws(SpoolError) {
        path = directory + "/" + Self.fileName
        self.limit = limit
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw SpoolError(operation: "create \(directory)", underlying: error)
        }
        do {
            queue = try Self.open(path)
            recoveredFrom = nil
        } catch let error as DatabaseError where [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) {
            let aside = path + ".corrupt-" + Timestamp.format(Date()).replacing(":", with: "")
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                try? FileManager.default.moveItem(atPath: path + suffix, toPath: aside + suffix)
            }
            do {
                queue = try Self.open(path)
            } catch {
                throw SpoolError(operation: "open \(path)", underlying: error)
            }
            recoveredFrom = aside
        } catch {
            throw SpoolError(operation: "open \(path)", underlying: error)
        }
    }

    /// Set when a corrupt spool was moved aside at open.
    public let recoveredFrom: String?

    private static func open(_ path: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.label = "dreamnet-healthd.spool"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            // FULL: the WAL is fsynced at every commit, so an appended event survives power loss.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try migrator.migrate(queue)
        // Check the pages now, so that a damaged file is found at start, not at the first replay.
        let check = try queue.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
        guard check == ["ok"] else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: check.prefix(3).joined(separator: "; "))
        }
        return queue
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    kind TEXT NOT NULL,
                    severity TEXT NOT NULL,
                    observed_at TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    summary TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0
                );
                CREATE TABLE daemon_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """)
        }
        return migrator
    }

    public enum AppendOutcome: Sendable, Equatable {
        /// Durable, with its position in the spool.
        case stored(seq: Int64)
        /// The spool is full: the event was not stored; the drop is counted for an overflow event.
        case dropped
    }

    /// Appends an event, fsynced before returning. An overflow event is always stored: it is how
    /// a full spool reports itself.
    /// `memory`, if given, is saved in the same transaction: the event and the state it led to
    /// are durable together, so a restart can neither lose nor repeat the transition.
    public func append(_ event: HealthEvent, remembering memory: DaemonMemory? = nil) throws(SpoolError) -> AppendOutcome {
        try write("append an event") { db in
            if let memory { try Self.setState(db, "memory", memory) }
            let pending = try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0
            if pending >= limit && event.kind != .spoolOverflow {
                var drops = try Self.drops(db)
                drops.count += 1
                drops.first = drops.first ?? event.observedAt
                drops.last = event.observedAt
                try Self.setState(db, "drops", drops)
                return .dropped
            }
            try db.execute(
                sql: """
                    INSERT INTO events (id, kind, severity, observed_at, payload, origin, summary)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    event.id.uuidString.lowercased(), event.kind.rawValue, event.severity.rawValue,
                    Timestamp.format(event.observedAt), event.payload, try Self.json(event.origin), event.summary,
                ]
            )
            return .stored(seq: db.lastInsertedRowID)
        }
    }

    /// Events dropped while the spool was full, not yet reported.
    public struct Drops: Sendable, Codable, Equatable {
        public var count = 0
        public var first: Date?
        public var last: Date?
    }

    /// If events were dropped and there is room again, stores the overflow event `make` builds
    /// and clears the count, in one transaction.
    public func reportDrops(_ make: @Sendable (Drops) -> HealthEvent) throws(SpoolError) -> HealthEvent? {
        try write("record dropped events") { db in
            let drops = try Self.drops(db)
            let pending = try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0
            guard drops.count > 0, pending < limit else { return nil }
            let event = make(drops)
            try db.execute(
                sql: "INSERT INTO events (id, kind, severity, observed_at, payload, origin, summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    event.id.uuidString.lowercased(), event.kind.rawValue, event.severity.rawValue,
                    Timestamp.format(event.observedAt), event.payload, try Self.json(event.origin), event.summary,
                ]
            )
            try Self.setState(db, "drops", Drops())
            return event
        }
    }

    /// The oldest pending events, in the order they were appended.
    public func pending(limit: Int) throws(SpoolError) -> [SpooledEvent] {
        try read("read pending events") { db in
            try Row.fetchAll(
                db,
                sql: "SELECT seq, id, kind, severity, observed_at, payload, origin, summary, attempts FROM events ORDER BY seq LIMIT ?",
                arguments: [limit]
            ).compactMap { row -> SpooledEvent? in
                // Ids are written by the daemon itself; one that does not parse is damage, and
                // inventing a new one would defeat ON CONFLICT. Such a row is skipped (and left).
                guard let id = UUID(uuidString: row["id"]) else { return nil }
                let origin = (try? JSONDecoder().decode(HealthEvent.Origin.self, from: Data((row["origin"] as String).utf8)))
                    ?? HealthEvent.Origin(host: "unknown", pid: 0, version: "unknown")
                let event = HealthEvent(
                    id: id,
                    kind: HealthEvent.Kind(rawValue: row["kind"]) ?? .transition,
                    severity: HealthEvent.Severity(rawValue: row["severity"]) ?? .info,
                    observedAt: Timestamp.parse(row["observed_at"]) ?? Date(timeIntervalSince1970: 0),
                    payload: row["payload"], origin: origin, summary: row["summary"]
                )
                return SpooledEvent(seq: row["seq"], event: event, attempts: row["attempts"])
            }
        }
    }

    /// Counts a failed delivery attempt against every pending event: none of them can reach the
    /// table at the first attempt any more, so each is `spooled` when it does.
    public func recordFailedAttempt() throws(SpoolError) {
        try write("record a failed delivery") { db in
            try db.execute(sql: "UPDATE events SET attempts = attempts + 1 WHERE attempts = 0")
        }
    }

    /// Removes events the database has committed: the oldest, up to and including `throughSeq`
    /// (batches are always the oldest pending events).
    public func remove(throughSeq: Int64) throws(SpoolError) {
        try write("remove delivered events") { db in
            try db.execute(sql: "DELETE FROM events WHERE seq <= ?", arguments: [throughSeq])
        }
    }

    public struct Summary: Sendable, Equatable {
        public var pending: Int
        public var oldestAt: Date?
        public var dropped: Int
    }

    public func summary() throws(SpoolError) -> Summary {
        try read("summarise the spool") { db in
            let pending = try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0
            let oldest = try String.fetchOne(db, sql: "SELECT observed_at FROM events ORDER BY seq LIMIT 1")
            return Summary(pending: pending, oldestAt: oldest.flatMap(Timestamp.parse), dropped: try Self.drops(db).count)
        }
    }

    /// What `remember` (or an append) saved, if anything. A saved state that cannot be read (a
    /// file from another version, say) counts as none: the daemon then starts afresh rather than
    /// not at all.
    public func recall() throws(SpoolError) -> DaemonMemory? {
        try read("read the saved state") { db in try? Self.state(db, "memory", as: DaemonMemory.self) }
    }

    public func remember(_ memory: DaemonMemory) throws(SpoolError) {
        try write("save the state") { db in try Self.setState(db, "memory", memory) }
    }

    // MARK: - Helpers

    private func write<T>(_ operation: String, _ body: (Database) throws -> T) throws(SpoolError) -> T {
        do {
            return try queue.write(body)
        } catch {
            throw SpoolError(operation: operation, underlying: error)
        }
    }

    private func read<T>(_ operation: String, _ body: (Database) throws -> T) throws(SpoolError) -> T {
        do {
            return try queue.read(body)
        } catch {
            throw SpoolError(operation: operation, underlying: error)
        }
    }

    private static func drops(_ db: Database) throws -> Drops {
        try state(db, "drops", as: Drops.self) ?? Drops()
    }

    private static func state<T: Decodable>(_ db: Database, _ key: String, as type: T.Type) throws -> T? {
        guard let text = try String.fetchOne(db, sql: "SELECT value FROM daemon_state WHERE key = ?", arguments: [key]) else {
            return nil
        }
        return try JSONDecoder().decode(type, from: Data(text.utf8))
    }

    private static func setState(_ db: Database, _ key: String, _ value: some Encodable) throws {
        try db.execute(
            sql: "INSERT INTO daemon_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            arguments: [key, try json(value)]
        )
    }

    private static func json(_ value: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }
}

/// An event waiting in the spool.
public struct SpooledEvent: Sendable, Equatable {
    public var seq: Int64
    public var event: HealthEvent
    /// Failed delivery attempts so far.
    public var attempts: Int
}

/// A spool operation that failed: disk full, an I/O error, a damaged file. Never means an event
/// was stored.
public struct SpoolError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var detail: String

    init(operation: String, underlying: any Error) {
        self.operation = operation
        if let database = underlying as? DatabaseError {
            detail = "\(database.resultCode): \(database.message ?? "no detail")"
        } else {
            detail = "\(underlying)"
        }
    }

    public var description: String { "spool: cannot \(operation): \(detail)" }
}
