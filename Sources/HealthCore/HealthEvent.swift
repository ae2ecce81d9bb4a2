import FoundationEssentials

/// One row-to-be of `system_events`: a transition, or an event about the record-keeping itself.
/// Built from pure inputs; the payload is JSON fixed at creation, so the spool, the table and the
/// alert log carry the same bytes.
public struct HealthEvent: Sendable, Equatable, Identifiable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case transition = "database.health.transition"
        case flapping = "database.health.flapping"
        case spoolOverflow = "database.health.spool_overflow"
        case spoolDamaged = "database.health.spool_damaged"
        /// A database that sleeps when unused (`scale_to_zero`) went to sleep, or was woken.
        case asleep = "database.health.asleep"
        case awake = "database.health.awake"
    }

    public enum Severity: String, Sendable, Codable {
        case info, warning, critical
    }

    public var id: UUID
    public var kind: Kind
    public var severity: Severity
    /// When it was observed (UTC): the row's `timestamp`, not the insert time.
    public var observedAt: Date
    /// The row's `payload`, as JSON text.
    public var payload: String
    /// Who recorded it; with `delivery` and `seq` added at insert time this is the row's `metadata`.
    public var origin: Origin
    /// One line for people: the log, the journal, `dreamnet-healthctl alerts`.
    public var summary: String

    public struct Origin: Sendable, Equatable, Codable {
        public var host: String
        public var pid: Int32
        public var version: String

        public init(host: String, pid: Int32, version: String) {
            self.host = host
            self.pid = pid
            self.version = version
        }
    }

    public init(
        id: UUID, kind: Kind, severity: Severity, observedAt: Date, payload: String, origin: Origin, summary: String
    ) {
        self.id = id
        self.kind = kind
        self.severity = severity
        self.observedAt = observedAt
        self.payload = payload
        self.origin = origin
        self.summary = summary
    }

    /// The event for a transition. The first transition ever has no previous state to name:
    /// `starting` is recorded as `unknown`.
    public static func transition(_ transition: Transition, origin: Origin) -> HealthEvent {
        let from = transition.from == .starting ? "unknown" : transition.from.rawValue
        let payload = TransitionPayload(
            from: from,
            to: transition.to.rawValue,
            reason: transition.reason,
            sqlstate: transition.sqlstate,
            phase: transition.phase?.rawValue,
            latencyMs: transition.latency.map(StatusAPI.roundedMilliseconds),
            connection: transition.connection?.rawValue,
            consecutive: transition.consecutive,
            message: transition.message,
            observedAt: Timestamp.format(transition.observedAt)
        )
        let severity: Severity = switch transition.to {
        case .healthy: .info
        case .unhealthy: .critical
        case .notConfigured, .starting: .warning
        }
        return HealthEvent(
            id: transition.id, kind: .transition, severity: severity, observedAt: transition.observedAt,
            payload: EventJSON.encode(payload), origin: origin,
            summary: "database \(transition.to.rawValue) (was \(from)): \(transition.reason): \(transition.message)"
        )
    }

    /// A database that sleeps when unused fell asleep or was woken. Information only: the
    /// state stays what it was.
    public static func sleep(_ change: SleepChange, id: UUID, origin: Origin) -> HealthEvent {
        switch change {
        case .asleep(let since, let seen, let suspendAfter):
            let payload = AsleepPayload(since: Timestamp.format(since), seen: seen, suspendAfterMs: suspendAfter.milliseconds)
            let how = seen
                ? "the server ended the idle session at its idle mark (57P01)"
                : "presumed: no statement for \(HumanDuration.format(suspendAfter))"
            return HealthEvent(
                id: id, kind: .asleep, severity: .info, observedAt: since, payload: EventJSON.encode(payload), origin: origin,
                summary: "database asleep, nobody using it: \(how)"
            )
        case .awake(let reason, let asleepSince, let at, let took):
            let asleep = max(.zero, Duration.seconds(at.timeIntervalSince(asleepSince)))
            let payload = AwakePayload(
                reason: reason.rawValue, asleepSince: Timestamp.format(asleepSince), asleepMs: asleep.milliseconds,
                wakeMs: StatusAPI.roundedMilliseconds(took)
            )
            let why = switch reason {
            case .application: "the application is using it again"
            case .scheduled: "wake_every"
            case .requested: "a probe was asked for"
            case .retry: "a retry after a failed wake"
            }
            return HealthEvent(
                id: id, kind: .awake, severity: .info, observedAt: at, payload: EventJSON.encode(payload), origin: origin,
                summary: "database awake after \(HumanDuration.formatRoughly(asleep)) asleep (\(why)); the login took \(took.milliseconds) ms"
            )
        }
    }

    /// Events the spool had to drop because it was full.
    public static func spoolOverflow(
        id: UUID, dropped: Int, firstDroppedAt: Date, lastDroppedAt: Date, limit: Int, at now: Date, origin: Origin
    ) -> HealthEvent {
        let payload = OverflowPayload(
            dropped: dropped, firstDroppedAt: Timestamp.format(firstDroppedAt),
            lastDroppedAt: Timestamp.format(lastDroppedAt), limit: limit
        )
        return HealthEvent(
            id: id, kind: .spoolOverflow, severity: .critical, observedAt: now, payload: EventJSON.encode(payload),
            origin: origin, summary: "event spool was full (limit \(limit)): \(dropped) events dropped"
        )
    }

    /// The spool file was found damaged at start: how many events were kept and how many were
    /// not (`nil`: unknown, the file was unreadable as a whole).
    public static func spoolDamaged(
        id: UUID, salvaged: Int, damaged: Int?, movedAsideTo: String?, at now: Date, origin: Origin
    ) -> HealthEvent {
        let payload = DamagePayload(salvaged: salvaged, damaged: damaged, movedAsideTo: movedAsideTo)
        let lost = damaged.map { "\($0) events unreadable" } ?? "an unknown number of events unreadable"
        return HealthEvent(
            id: id, kind: .spoolDamaged, severity: .critical, observedAt: now, payload: EventJSON.encode(payload),
            origin: origin, summary: "event spool was damaged: \(salvaged) events recovered, \(lost)"
                + (movedAsideTo.map { "; the damaged file is kept at \($0)" } ?? "; damaged rows kept in damaged_events")
        )
    }

    /// The row's `metadata`, completed at insert time.
    public func metadata(delivery: Delivery, seq: Int64) -> String {
        EventJSON.encode(Metadata(host: origin.host, pid: origin.pid, version: origin.version, delivery: delivery.rawValue, seq: seq))
    }

    /// How the row reached the table: at the first attempt, or replayed from the spool.
    public enum Delivery: String, Sendable, Codable {
        case direct
        case spooled
    }

    struct Metadata: Encodable {
        var host: String
        var pid: Int32
        var version: String
        var delivery: String
        var seq: Int64
    }
}

/// `payload` of `database.health.transition`. Every key is always present (null when it does not
/// apply), so queries on the table need not guess.
struct TransitionPayload: Encodable {
    var from: String
    var to: String
    var reason: String
    var sqlstate: String?
    var phase: String?
    var latencyMs: Double?
    /// `fresh` or `session`: the connection the deciding probe ran on.
    var connection: String?
    var consecutive: Int
    var message: String
    var observedAt: String

    enum CodingKeys: String, CodingKey {
        case from, to, reason, sqlstate, phase, connection, consecutive, message
        case latencyMs = "latency_ms", observedAt = "observed_at"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(from, forKey: .from)
        try container.encode(to, forKey: .to)
        try container.encode(reason, forKey: .reason)
        try container.encode(sqlstate, forKey: .sqlstate)
        try container.encode(phase, forKey: .phase)
        try container.encode(latencyMs, forKey: .latencyMs)
        try container.encode(connection, forKey: .connection)
        try container.encode(consecutive, forKey: .consecutive)
        try container.encode(message, forKey: .message)
        try container.encode(observedAt, forKey: .observedAt)
    }
}

/// `payload` of `database.health.asleep`.
struct AsleepPayload: Encodable {
    var since: String
    /// Whether the server ended the daemon's session for the sleep (else presumed from the timer).
    var seen: Bool
    var suspendAfterMs: Int64

    enum CodingKeys: String, CodingKey {
        case since, seen
        case suspendAfterMs = "suspend_after_ms"
    }
}

/// `payload` of `database.health.awake`.
struct AwakePayload: Encodable {
    /// `application`, `scheduled`, `requested` or `retry`.
    var reason: String
    var asleepSince: String
    var asleepMs: Int64
    /// The wake probe's time, the cold start included.
    var wakeMs: Double

    enum CodingKeys: String, CodingKey {
        case reason
        case asleepSince = "asleep_since", asleepMs = "asleep_ms", wakeMs = "wake_ms"
    }
}

struct OverflowPayload: Encodable {
    var dropped: Int
    var firstDroppedAt: String
    var lastDroppedAt: String
    var limit: Int

    enum CodingKeys: String, CodingKey {
        case dropped, limit
        case firstDroppedAt = "first_dropped_at", lastDroppedAt = "last_dropped_at"
    }
}

struct DamagePayload: Encodable {
    var salvaged: Int
    var damaged: Int?
    var movedAsideTo: String?

    enum CodingKeys: String, CodingKey {
        case salvaged, damaged
        case movedAsideTo = "moved_aside_to"
    }

    // Every key present, null when unknown.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(salvaged, forKey: .salvaged)
        try container.encode(damaged, forKey: .damaged)
        try container.encode(movedAsideTo, forKey: .movedAsideTo)
    }
}

enum EventJSON {
    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Plain structs of strings and numbers: encoding cannot fail.
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
