import FoundationEssentials
import HealthCore

/// The columns an event is stored as, and a checksum over them: a row whose bytes were damaged
/// on disk fails it, and is never delivered as if it were an event.
struct StoredFields: Equatable {
    var id: String
    var kind: String
    var severity: String
    var observedAt: String
    var payload: String
    var origin: String
    var summary: String

    init(_ event: HealthEvent) throws {
        id = event.id.uuidString.lowercased()
        kind = event.kind.rawValue
        severity = event.severity.rawValue
        observedAt = Timestamp.format(event.observedAt)
        payload = event.payload
        origin = try EventSpool.json(event.origin)
        summary = event.summary
    }

    /// The fields of a row, if each is present as text. Damage can change a column's type, so
    /// nothing here assumes it.
    init?(row: SQLiteRow) {
        func text(_ column: String) -> String? { row[column]?.text }
        guard let id = text("id"), let kind = text("kind"), let severity = text("severity"),
              let observedAt = text("observed_at"), let payload = text("payload"), let origin = text("origin"),
              let summary = text("summary")
        else { return nil }
        (self.id, self.kind, self.severity, self.observedAt) = (id, kind, severity, observedAt)
        (self.payload, self.origin, self.summary) = (payload, origin, summary)
    }

    /// FNV-1a (64 bits) over the fields, separated by a byte no field contains: enough to tell
    /// a flipped or torn row from a good one, which is all it is for.
    var checksum: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for field in [id, kind, severity, observedAt, payload, origin, summary] {
            for byte in field.utf8 {
                hash ^= UInt64(byte)
                hash &*= 0x100_0000_01b3
            }
            hash ^= 0x1f
            hash &*= 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The event, if every field makes sense; `nil` for a damaged row. `checkingPayload`: parse
    /// the payload too, for a row without a checksum (a matching checksum already vouches for
    /// it, and delivery reads rows by the thousand).
    func event(checkingPayload: Bool, origins: inout OriginDecoder) -> HealthEvent? {
        guard let uuid = UUID(uuidString: id), uuid.uuidString.lowercased() == id,
              let kind = HealthEvent.Kind(rawValue: kind),
              let severity = HealthEvent.Severity(rawValue: severity),
              let observed = Timestamp.parse(observedAt),
              let origin = origins.origin(origin),
              !checkingPayload || JSONSyntax.isObject(payload)
        else { return nil }
        return HealthEvent(id: uuid, kind: kind, severity: severity, observedAt: observed, payload: payload, origin: origin, summary: summary)
    }
}

/// The `origin` fields of rows read together, decoded once per distinct text: a spool's rows
/// share a few origins (one per daemon process that wrote them), and a JSONDecoder per row was
/// a third of the CPU of replaying 10 000 events.
struct OriginDecoder {
    private var decoded: [String: HealthEvent.Origin] = [:]

    /// Bounds the memo for a spool written by many processes; past it, rows are decoded each.
    static let limit = 64

    mutating func origin(_ text: String) -> HealthEvent.Origin? {
        if let known = decoded[text] { return known }
        guard let origin = try? JSONDecoder().decode(HealthEvent.Origin.self, from: Data(text.utf8)) else { return nil }
        if decoded.count < Self.limit { decoded[text] = origin }
        return origin
    }
}

/// A row of `events`, read back and checked.
struct StoredRow {
    var seq: Int64
    var event: HealthEvent
    var attempts: Int
    var announced: Bool
    var delivered: Bool

    /// `nil` if the row is damaged: a field missing or of the wrong type, a checksum that does
    /// not match (rows written before checksums have none and are checked field by field).
    init?(_ row: SQLiteRow, origins: inout OriginDecoder) {
        func integer(_ column: String) -> Int64? { row[column]?.integer }
        guard let seq = integer("seq"), let fields = StoredFields(row: row) else { return nil }
        let checksum = row["checksum"]?.text
        if let checksum, checksum != fields.checksum { return nil }
        guard let event = fields.event(checkingPayload: checksum == nil, origins: &origins) else { return nil }
        self.seq = seq
        self.event = event
        attempts = Int(integer("attempts") ?? 0)
        announced = (integer("announced") ?? 1) != 0
        delivered = (integer("delivered") ?? 0) != 0
    }
}

extension EventSpool {
    /// What could be read from a damaged spool file.
    struct Salvage {
        var rows: [StoredRow] = []
        /// `nil`: unknown (the file could not be read as a whole).
        var damaged: Int? = 0
        var memory: DaemonMemory?
        var drops: Drops?
    }

    /// Most row lookups a salvage makes when the table cannot be scanned: a damaged
    /// `sqlite_sequence` must not turn recovery into an endless loop.
    static let salvageLookupLimit: Int64 = 1_000_000

    /// Reads every intact event from a file SQLite reports damaged, without changing it: a
    /// scan in `seq` order, and where the scan breaks off, one lookup per `seq` up to the
    /// highest ever assigned, so that rows behind a damaged page are still found.
    static func salvage(from path: String) -> Salvage {
        guard let db = try? SQLiteConnection(path: path, mode: .readOnly) else { return Salvage(damaged: nil) }
        var salvage = Salvage()
        var seen = Set<Int64>()
        var damaged = 0
        var origins = OriginDecoder()
        func take(_ row: SQLiteRow) {
            guard let stored = StoredRow(row, origins: &origins) else {
                damaged += 1
                if let seq = row["seq"]?.integer { seen.insert(seq) }
                return
            }
            if seen.insert(stored.seq).inserted { salvage.rows.append(stored) }
        }
        var scanned = true
        do {
            try db.forEachRow("SELECT * FROM events ORDER BY seq", [], take)
        } catch {
            scanned = false
        }
        if !scanned {
            let highest = [
                try? db.value("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?.integer,
                try? db.value("SELECT max(seq) FROM events")?.integer,
                seen.max(),
            ].compactMap { $0 ?? nil }.max()
            if let highest {
                let lowest = max(1, highest - salvageLookupLimit + 1)
                for seq in lowest...max(lowest, highest) where !seen.contains(seq) {
                    do {
                        try db.forEachRow("SELECT * FROM events WHERE seq = ?", [.integer(seq)], take)
                    } catch {
                        // A page on the way to this row cannot be read: an event may have
                        // been there (or one already delivered and removed). Counted as lost.
                        damaged += 1
                    }
                }
                // Exact only if every seq ever assigned was looked up.
                salvage.damaged = lowest == 1 ? damaged : nil
            } else {
                salvage.damaged = nil
            }
        } else {
            salvage.damaged = damaged
        }
        salvage.rows.sort { $0.seq < $1.seq }
        salvage.memory = try? state(db, "memory", as: DaemonMemory.self)
        salvage.drops = try? state(db, "drops", as: Drops.self)
        return salvage
    }

    /// Writes what a salvage found into the new spool, each event at its old `seq` and with its
    /// delivery and announcement as they were.
    static func restore(_ salvage: Salvage, into db: SQLiteConnection) throws {
        for row in salvage.rows {
            try insert(row.event, into: db, announced: row.announced, delivered: row.delivered, attempts: row.attempts, seq: row.seq)
        }
        if let memory = salvage.memory { try setState(db, "memory", memory) }
        if let drops = salvage.drops { try setState(db, "drops", drops) }
    }

    /// Moves rows that fail their checks to `damaged_events` (kept for inspection, never
    /// delivered); returns how many.
    static func quarantineDamagedRows(_ db: SQLiteConnection) throws -> Int {
        try db.transaction(writing: true) {
            var damaged: [Int64] = []
            var origins = OriginDecoder()
            try db.forEachRow("SELECT * FROM events") { row in
                if StoredRow(row, origins: &origins) == nil, let seq = row["seq"]?.integer { damaged.append(seq) }
            }
            for seq in damaged {
                try db.run(
                    """
                    INSERT INTO damaged_events
                    SELECT seq, id, kind, severity, observed_at, payload, origin, summary, checksum, ?
                    FROM events WHERE seq = ?
                    """,
                    .text(Timestamp.format(Date())), .integer(seq)
                )
                try db.run("DELETE FROM events WHERE seq = ?", .integer(seq))
            }
            return damaged.count
        }
    }
}
