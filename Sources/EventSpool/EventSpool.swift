import FoundationEssentials
import Glibc
import HealthCore
import Synchronization

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
    private let lock = Mutex(())
    /// Used only while `lock` is held: one call at a time, on whichever thread makes it.
    nonisolated(unsafe) private let connection: SQLiteConnection

    /// Opens (or creates) the spool in `directory`.
    ///
    /// A file SQLite cannot read as a whole is moved aside (`spool.sqlite3.corrupt-<time>`, never
    /// deleted nor altered), a new spool is started, and every event that can still be read
    /// intact from the old file is copied into it. Rows that fail their checksum are moved to
    /// `damaged_events`. `recovery` says what was found.
    public init(directory: String, limit: Int) throws(SpoolError) {
        path = directory + "/" + Self.fileName
        self.limit = limit
        if let failure = FileSystem.makeDirectories(directory) {
            throw SpoolError(operation: "create \(directory)", detail: failure)
        }
        (connection, recovery) = try Self.openRecovering(path)
    }

    private static func openRecovering(_ path: String) throws(SpoolError) -> (SQLiteConnection, Recovery?) {
        // SQLite takes an empty file for a new database; but every spool this daemon opened has
        // its header written at once (the migrations), so an empty one was truncated, and how
        // much it held is unknown.
        do {
            if FileSystem.size(of: path) == 0 { throw SQLiteError.notADatabase("empty file") }
            let connection = try open(path)
            let quarantined = try quarantineDamagedRows(connection)
            return (connection, quarantined > 0 ? Recovery(movedAsideTo: nil, salvaged: 0, damaged: quarantined) : nil)
        } catch let error as SQLiteError where error.isDamagedFile {
            let aside = path + ".corrupt-" + Timestamp.format(Date()).filter { $0 != ":" }
            for suffix in ["", "-wal", "-shm"] where FileSystem.exists(path + suffix) {
                // Never deleted, never altered: only renamed.
                rename(path + suffix, aside + suffix)
            }
            let salvage = salvage(from: aside)
            do {
                let connection = try open(path)
                try connection.transaction(writing: true) { try restore(salvage, into: connection) }
                return (connection, Recovery(movedAsideTo: aside, salvaged: salvage.rows.count, damaged: salvage.damaged))
            } catch {
                throw SpoolError(operation: "open \(path)", underlying: error)
            }
        } catch {
            throw SpoolError(operation: "open \(path)", underlying: error)
        }
    }

    /// What opening the spool found damaged, if anything.
    public let recovery: Recovery?

    public struct Recovery: Sendable, Equatable {
        /// Where a file SQLite could not read was moved, if one was.
        public var movedAsideTo: String?
        /// Events read back intact from that file into the new spool.
        public var salvaged: Int
        /// Events that could not be read intact (a row that fails its checksum, a page that
        /// cannot be read); `nil` when the file was unreadable as a whole, so the number is
        /// unknown.
        public var damaged: Int?
    }

    private static func open(_ path: String) throws(SQLiteError) -> SQLiteConnection {
        let connection = try SQLiteConnection(path: path, mode: .readWriteCreate)
        try connection.execute("PRAGMA journal_mode = WAL")
        // FULL: the WAL is fsynced at every commit, so an appended event survives power loss.
        try connection.execute("PRAGMA synchronous = FULL")
        try migrate(connection)
        // Check the pages now, so that a damaged file is found at start, not at the first replay.
        let check = try connection.values("PRAGMA quick_check").map { $0.text ?? "?" }
        guard check == ["ok"] else {
            throw SQLiteError.corrupt(check.prefix(3).joined(separator: "; "))
        }
        return connection
    }

    /// Brings the schema up to date, one version at a time, each in its own transaction.
    /// The applied versions are listed in `grdb_migrations`, the table (and identifiers) of the
    /// migrator that wrote the first spools: files written by earlier versions open unchanged.
    private static func migrate(_ connection: SQLiteConnection) throws(SQLiteError) {
        try connection.execute("CREATE TABLE IF NOT EXISTS grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
        let applied = Set(try connection.values("SELECT identifier FROM grdb_migrations").compactMap(\.text))
        for (identifier, sql) in migrations where !applied.contains(identifier) {
            do {
                try connection.transaction(writing: true) {
                    try connection.execute(sql)
                    try connection.run("INSERT INTO grdb_migrations (identifier) VALUES (?)", .text(identifier))
                }
            } catch let error as SQLiteError {
                throw error
            } catch {
                throw SQLiteError.other("\(error)")
            }
        }
    }

    /// The schema's versions, in order. Never change one that has shipped: add the next.
    static let migrations: [(identifier: String, sql: String)] = [
        ("v1", """
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
            """),
        // An event leaves the spool once it is both in the database and announced (alert log,
        // journal): a crash between storing an event and announcing it must not lose the alert
        // line, even if delivery was quicker than the announcement. Rows of v1 were announced
        // right after they were stored, hence the default. Each row carries a checksum of its
        // content, so that a damaged row is never delivered as if it were an event.
        ("v2", """
            ALTER TABLE events ADD COLUMN announced INTEGER NOT NULL DEFAULT 1;
            ALTER TABLE events ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE events ADD COLUMN checksum TEXT;
            CREATE TABLE damaged_events (
                seq INTEGER, id, kind, severity, observed_at, payload, origin, summary, checksum,
                found_at TEXT NOT NULL
            );
            """),
    ]

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
    ///
    /// Appending an event that is already stored changes nothing: a commit whose fsync failed
    /// may still have reached the file, and the caller, told it failed, appends it again.
    /// `announced`: its alert-log line was written while it waited in memory.
    public func append(
        _ event: HealthEvent, remembering memory: DaemonMemory? = nil, announced: Bool = false
    ) throws(SpoolError) -> AppendOutcome {
        try write("append an event") { db in
            if let memory { try Self.setState(db, "memory", memory) }
            let id = event.id.uuidString.lowercased()
            if let seq = try db.value("SELECT seq FROM events WHERE id = ?", .text(id))?.integer {
                if announced { try db.run("UPDATE events SET announced = 1 WHERE id = ?", .text(id)) }
                return .stored(seq: seq)
            }
            if try Self.pendingCount(db) >= limit && event.kind != .spoolOverflow {
                var drops = try Self.drops(db)
                drops.count += 1
                drops.first = drops.first ?? event.observedAt
                drops.last = event.observedAt
                try Self.setState(db, "drops", drops)
                return .dropped
            }
            try Self.insert(event, into: db, announced: announced)
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
            guard drops.count > 0, try Self.pendingCount(db) < limit else { return nil }
            let event = make(drops)
            try Self.insert(event, into: db)
            try Self.setState(db, "drops", Drops())
            return event
        }
    }

    /// The oldest events not yet in the database, in the order they were appended.
    public func pending(limit: Int) throws(SpoolError) -> [SpooledEvent] {
        try read("read pending events") { db in
            try Self.events(db, where: "delivered = 0", limit: limit)
        }
    }

    /// Events stored but not yet announced (a crash came between), oldest first.
    public func unannounced() throws(SpoolError) -> [SpooledEvent] {
        try read("read unannounced events") { db in
            try Self.events(db, where: "announced = 0", limit: Int.max)
        }
    }

    /// The event's alert-log line and journal entry were written: once it is also in the
    /// database, its row can go.
    public func markAnnounced(_ id: UUID) throws(SpoolError) {
        try write("mark an event announced") { db in
            let key = SQLiteValue.text(id.uuidString.lowercased())
            try db.run("DELETE FROM events WHERE id = ? AND delivered = 1", key)
            try db.run("UPDATE events SET announced = 1 WHERE id = ?", key)
        }
    }

    private static func events(_ db: SQLiteConnection, where condition: String, limit: Int) throws -> [SpooledEvent] {
        // Damaged rows were moved out at open; one that fails its checks now (the file changed
        // under the daemon) is skipped and left where it is, never delivered.
        var origins = OriginDecoder()
        return try db.rows("SELECT * FROM events WHERE \(condition) ORDER BY seq LIMIT ?", SQLiteValue(limit))
            .compactMap { StoredRow($0, origins: &origins) }
            .map { SpooledEvent(seq: $0.seq, event: $0.event, attempts: $0.attempts) }
    }

    /// Counts a failed delivery attempt against every pending event: none of them can reach the
    /// table at the first attempt any more, so each is `spooled` when it does.
    public func recordFailedAttempt() throws(SpoolError) {
        try write("record a failed delivery") { db in
            try db.run("UPDATE events SET attempts = attempts + 1 WHERE attempts = 0 AND delivered = 0")
        }
    }

    /// Marks events the database has committed: the oldest pending, up to and including
    /// `throughSeq` (batches are always the oldest pending events). Announced ones are removed;
    /// the others stay, delivered, until they are announced.
    public func markDelivered(throughSeq: Int64) throws(SpoolError) {
        try write("mark delivered events") { db in
            try db.run("DELETE FROM events WHERE seq <= ? AND announced = 1", .integer(throughSeq))
            try db.run("UPDATE events SET delivered = 1 WHERE seq <= ?", .integer(throughSeq))
        }
    }

    public struct Summary: Sendable, Equatable {
        public var pending: Int
        public var oldestAt: Date?
        public var dropped: Int
    }

    public func summary() throws(SpoolError) -> Summary {
        try read("summarise the spool") { db in
            let pending = try Self.pendingCount(db)
            let oldest = try db.value("SELECT observed_at FROM events WHERE delivered = 0 ORDER BY seq LIMIT 1")?.text
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

    /// Stores an event with its checksum: not yet announced, not yet delivered.
    /// `seq`: where a salvaged event was; a new one gets the next.
    static func insert(
        _ event: HealthEvent, into db: SQLiteConnection, announced: Bool = false, delivered: Bool = false, attempts: Int = 0,
        seq: Int64? = nil
    ) throws {
        let fields = try StoredFields(event)
        try db.run(
            """
            INSERT INTO events (seq, id, kind, severity, observed_at, payload, origin, summary, checksum, announced, delivered, attempts)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            SQLiteValue(seq), .text(fields.id), .text(fields.kind), .text(fields.severity), .text(fields.observedAt),
            .text(fields.payload), .text(fields.origin), .text(fields.summary), .text(fields.checksum),
            SQLiteValue(announced), SQLiteValue(delivered), SQLiteValue(attempts)
        )
    }

    static func pendingCount(_ db: SQLiteConnection) throws(SQLiteError) -> Int {
        Int(try db.value("SELECT count(*) FROM events WHERE delivered = 0")?.integer ?? 0)
    }

    /// Runs `body` in a write transaction, committed (and fsynced) before this returns.
    private func write<T: Sendable>(_ operation: String, _ body: (SQLiteConnection) throws -> T) throws(SpoolError) -> T {
        do {
            return try lock.withLock { _ in try connection.transaction(writing: true) { try body(connection) } }
        } catch {
            throw SpoolError(operation: operation, underlying: error)
        }
    }

    /// Runs `body` in a read transaction: one consistent view of the file.
    private func read<T: Sendable>(_ operation: String, _ body: (SQLiteConnection) throws -> T) throws(SpoolError) -> T {
        do {
            return try lock.withLock { _ in try connection.transaction(writing: false) { try body(connection) } }
        } catch {
            throw SpoolError(operation: operation, underlying: error)
        }
    }

    static func drops(_ db: SQLiteConnection) throws -> Drops {
        try state(db, "drops", as: Drops.self) ?? Drops()
    }

    static func state<T: Decodable>(_ db: SQLiteConnection, _ key: String, as type: T.Type) throws -> T? {
        guard let text = try db.value("SELECT value FROM daemon_state WHERE key = ?", .text(key))?.text else {
            return nil
        }
        return try JSONDecoder().decode(type, from: Data(text.utf8))
    }

    static func setState(_ db: SQLiteConnection, _ key: String, _ value: some Encodable) throws {
        try db.run(
            "INSERT INTO daemon_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            .text(key), .text(try json(value))
        )
    }

    static func json(_ value: some Encodable) throws -> String {
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
        self.init(operation: operation, detail: "\(underlying)")
    }

    init(operation: String, detail: String) {
        self.operation = operation
        self.detail = detail
    }

    public var description: String { "spool: cannot \(operation): \(detail)" }
}

/// The few file operations the spool makes, on the system calls themselves.
enum FileSystem {
    /// Creates `path` and any missing parent, as `mkdir -p` does; what failed, if anything.
    static func makeDirectories(_ path: String) -> String? {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o777) != 0 {
                let error = errno
                if error != EEXIST { return "\(prefix): \(String(cString: strerror(error)))" }
            }
        }
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR ? nil : "\(path): not a directory"
    }

    /// The file's size, or `nil` if it does not exist (or cannot be examined).
    static func size(of path: String) -> Int? {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : nil
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }
}
