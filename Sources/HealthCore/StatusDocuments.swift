/// The JSON bodies of the status socket. The daemon encodes them, `dreamnet-healthctl` decodes
/// them: one definition keeps both sides in step.

/// `GET /health`: the web app's `/health` shape.
public struct HealthDocument: Codable, Sendable, Equatable {
    public var ok: Bool
    public var service: String
    public var timestamp: String
    /// Seconds since the daemon started.
    public var uptime: Double
    /// `healthy`, `unhealthy` or `not-configured` (or `starting` before the first verdict).
    public var database: String
}

/// `GET /status`.
public struct StatusDocument: Codable, Sendable, Equatable {
    public struct LastProbe: Codable, Sendable, Equatable {
        public var at: String
        public var ok: Bool
        public var latencyMs: Double
        public var reason: String
        public var phase: String?
        public var sqlstate: String?
        public var message: String?
        /// Milliseconds since this probe finished, measured by the daemon's monotonic clock.
        public var ageMs: Int64
        public var phasesMs: [String: Double]
        /// `fresh` or `session`: the connection the probe ran on.
        public var connection: String?

        enum CodingKeys: String, CodingKey {
            case at, ok, reason, phase, sqlstate, message, connection
            case latencyMs = "latency_ms", ageMs = "age_ms", phasesMs = "phases_ms"
        }
    }

    public var state: String
    public var since: String?
    public var target: String?
    public var lastProbe: LastProbe?
    public var consecutiveFailures: Int
    public var consecutiveSuccesses: Int
    public var transitions: Int
    public var intervalMs: Int64
    /// The answer budget.
    public var timeoutMs: Int64
    /// The budget for opening a new connection.
    public var connectTimeoutMs: Int64?
    /// How far away the database is, and what the budgets leave over; `nil` before a probe succeeded.
    public var distance: Distance?
    public var fall: Int
    public var rise: Int
    public var requireDatabase: Bool
    /// Age past which a snapshot is stale: 2 × interval + timeout.
    public var staleAfterMs: Int64
    public var version: String
    public var pid: Int32
    public var startedAt: String
    public var uptimeS: Double
    public var spool: Spool?
    public var alertLog: AlertLogStatus?
    /// `fresh` or `session`: how routine probes connect.
    public var probeConnection: String?
    /// Session mode: a fresh connection is opened at least this often.
    public var freshEveryMs: Int64?
    /// `startup-options`, `set-local` (a pooler refused the startup options) or `off`: how a
    /// probe's deadline reaches the server.
    public var serverTimeouts: String?
    /// With `scale_to_zero`: whether the database sleeps, and since when.
    public var sleep: Sleep?

    public struct Sleep: Codable, Sendable, Equatable {
        /// `following` (the application uses the database: probes run), `resting` (it has gone
        /// quiet: no probes) or `asleep`.
        public var phase: String
        public var since: String?
        /// Asleep because the server ended the idle session (57P01), not presumed from the timer.
        public var seen: Bool
        public var lastLookAgeMs: Int64

        enum CodingKeys: String, CodingKey {
            case phase, since, seen
            case lastLookAgeMs = "last_look_age_ms"
        }
    }

    /// Measured from the probes: the round trip is the shortest recent `SELECT 1`, a new
    /// connection's time its phases before the query.
    public struct Distance: Codable, Sendable, Equatable {
        public var roundTripMs: Double?
        public var answerMs: Double?
        public var answerHeadroomMs: Double?
        public var connectMs: Double?
        public var connectHeadroomMs: Double?
        /// Whether the latest new connection took most of its budget (a warning was logged).
        public var connectNearBudget: Bool

        enum CodingKeys: String, CodingKey {
            case roundTripMs = "round_trip_ms", answerMs = "answer_ms", answerHeadroomMs = "answer_headroom_ms"
            case connectMs = "connect_ms", connectHeadroomMs = "connect_headroom_ms"
            case connectNearBudget = "connect_near_budget"
        }
    }

    public struct AlertLogStatus: Codable, Sendable, Equatable {
        public var path: String
        public var error: String?
    }

    /// The local spool of events on their way to `system_events`.
    public struct Spool: Codable, Sendable, Equatable {
        public var pending: Int
        public var oldestAt: String?
        public var dropped: Int
        /// True when the spool cannot store events: they are then held in memory only.
        public var degraded: Bool
        public var inMemory: Int
        public var degradedReason: String?
        public var lastDeliveryError: String?

        enum CodingKeys: String, CodingKey {
            case pending, dropped, degraded
            case oldestAt = "oldest_at", inMemory = "in_memory", degradedReason = "degraded_reason"
            case lastDeliveryError = "last_delivery_error"
        }
    }

    enum CodingKeys: String, CodingKey {
        case state, since, target, transitions, fall, rise, version, pid, spool
        case alertLog = "alert_log"
        case lastProbe = "last_probe"
        case consecutiveFailures = "consecutive_failures"
        case consecutiveSuccesses = "consecutive_successes"
        case intervalMs = "interval_ms"
        case timeoutMs = "timeout_ms"
        case connectTimeoutMs = "connect_timeout_ms"
        case distance
        case requireDatabase = "require_database"
        case staleAfterMs = "stale_after_ms"
        case startedAt = "started_at"
        case uptimeS = "uptime_s"
        case probeConnection = "probe_connection"
        case freshEveryMs = "fresh_every_ms"
        case serverTimeouts = "server_timeouts"
        case sleep
    }

    /// True when the probe loop has not reported within the staleness bound: what was last
    /// known must not be repeated as current.
    public var isStale: Bool {
        guard state == HealthState.healthy.rawValue || state == HealthState.unhealthy.rawValue else { return false }
        // A database let sleep is not probed: the loop's look at the application is the report.
        if let sleep, sleep.phase != SleepStatus.Phase.following.rawValue { return sleep.lastLookAgeMs > staleAfterMs }
        guard let lastProbe else { return true }
        return lastProbe.ageMs > staleAfterMs
    }
}

/// One transition as `GET /events` shows it.
public struct EventDocument: Codable, Sendable, Equatable {
    public var id: String
    public var from: String
    public var to: String
    public var observedAt: String
    public var reason: String
    public var phase: String?
    public var sqlstate: String?
    public var latencyMs: Double?
    /// `fresh` or `session`: the connection the deciding probe ran on.
    public var connection: String?
    public var consecutive: Int
    public var message: String
    /// pending, direct, spooled, memory or dropped; `nil` when not recorded.
    public var delivery: String?

    enum CodingKeys: String, CodingKey {
        case id, from, to, reason, phase, sqlstate, consecutive, message, delivery, connection
        case observedAt = "observed_at"
        case latencyMs = "latency_ms"
    }

    public init(_ transition: Transition, delivery: EventDelivery? = nil) {
        self.delivery = delivery?.rawValue
        id = transition.id.uuidString.lowercased()
        // As in system_events: before the first verdict there is no previous state to name.
        from = transition.from == .starting ? "unknown" : transition.from.rawValue
        to = transition.to.rawValue
        observedAt = Timestamp.format(transition.observedAt)
        reason = transition.reason
        phase = transition.phase?.rawValue
        sqlstate = transition.sqlstate
        latencyMs = transition.latency.map { ($0.fractionalMilliseconds * 1_000).rounded() / 1_000 }
        connection = transition.connection?.rawValue
        consecutive = transition.consecutive
        message = transition.message
    }
}

/// `GET /events`: newest first.
public struct EventsDocument: Codable, Sendable, Equatable {
    public var events: [EventDocument]
    /// Transitions since the daemon started (the list may be shorter).
    public var total: Int
}

/// Errors on the socket are JSON too, so scripts parse one format.
public struct ErrorDocument: Codable, Sendable, Equatable {
    public var error: String
}
