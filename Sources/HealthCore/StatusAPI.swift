import FoundationEssentials

/// What the status socket answers to a request: pure, so every route is unit-tested.
public enum StatusAPI {
    public static let serviceName = "dreamnet-healthd"
    public static let defaultEventLimit = 50
    public static let maximumEventLimit = 1_000

    public struct Reply: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        /// Methods to list in `Allow` on a 405.
        public var allow: String?
        public var contentType: String

        /// A reply with a body of another kind (the Prometheus exposition).
        public init(status: Int, body: [UInt8], contentType: String) {
            self.status = status
            self.body = body
            self.allow = nil
            self.contentType = contentType
        }

        init(status: Int, json body: some Encodable, allow: String? = nil) {
            self.status = status
            self.body = StatusAPI.encode(body)
            self.allow = allow
            self.contentType = "application/json"
        }
    }

    /// The clocks a reply reads, handed in by the caller.
    public struct Clocks: Sendable {
        public var wall: Date
        public var monotonic: ContinuousClock.Instant

        public init(wall: Date, monotonic: ContinuousClock.Instant) {
            self.wall = wall
            self.monotonic = monotonic
        }
    }

    /// `metrics`, when given, renders `GET /metrics` (the Prometheus text format).
    public static func respond(
        method: String, uri: String, snapshot: StatusSnapshot, clocks: Clocks, metrics: (@Sendable () -> [UInt8])? = nil
    ) -> Reply {
        let (path, query) = split(uri)
        if path == "/metrics", let metrics {
            guard method == "GET" || method == "HEAD" else {
                return Reply(status: 405, json: ErrorDocument(error: "method not allowed"), allow: "GET, HEAD")
            }
            return Reply(status: 200, body: metrics(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        let routes = ["/health", "/status", "/events"]
        guard routes.contains(path) else {
            return Reply(status: 404, json: ErrorDocument(error: "not found; try /health, /status, /events or /metrics"))
        }
        guard method == "GET" || method == "HEAD" else {
            return Reply(status: 405, json: ErrorDocument(error: "method not allowed"), allow: "GET, HEAD")
        }
        switch path {
        case "/health":
            return health(snapshot, clocks)
        case "/status":
            return Reply(status: 200, json: status(snapshot, clocks))
        default:
            let limit: Int
            switch eventLimit(query) {
            case .success(let value): limit = value
            case .failure(let error): return Reply(status: 400, json: ErrorDocument(error: error.message))
            }
            let events = snapshot.recentTransitions.suffix(limit).reversed().map {
                EventDocument($0, delivery: snapshot.deliveries[$0.id])
            }
            return Reply(status: 200, json: EventsDocument(events: Array(events), total: snapshot.transitionCount))
        }
    }

    /// A JSON error body with the given status.
    public static func errorReply(status: Int, message: String) -> Reply {
        Reply(status: status, json: ErrorDocument(error: message))
    }

    static func health(_ snapshot: StatusSnapshot, _ clocks: Clocks) -> Reply {
        let unhealthy = snapshot.state == .unhealthy
            || (snapshot.state == .notConfigured && snapshot.requireDatabase)
        let document = HealthDocument(
            ok: !unhealthy,
            service: serviceName,
            timestamp: Timestamp.format(clocks.wall),
            uptime: seconds(clocks.monotonic - snapshot.startedInstant),
            database: snapshot.state.rawValue
        )
        return Reply(status: unhealthy ? 503 : 200, json: document)
    }

    public static func status(_ snapshot: StatusSnapshot, _ clocks: Clocks) -> StatusDocument {
        var lastProbe: StatusDocument.LastProbe?
        if let probe = snapshot.lastProbe, let finished = snapshot.lastProbeFinished {
            lastProbe = StatusDocument.LastProbe(
                at: Timestamp.format(probe.startedAt),
                ok: probe.ok,
                latencyMs: roundedMilliseconds(probe.latency),
                reason: probe.reasonText,
                phase: probe.failure?.phase.rawValue,
                sqlstate: probe.failure?.sqlstate,
                message: probe.failure?.message,
                ageMs: (clocks.monotonic - finished).milliseconds,
                phasesMs: Dictionary(
                    probe.phases.map { ($0.phase.rawValue, roundedMilliseconds($0.duration)) },
                    uniquingKeysWith: +
                ),
                connection: probe.connection.rawValue
            )
        }
        return StatusDocument(
            state: snapshot.state.rawValue,
            since: snapshot.since.map(Timestamp.format),
            target: snapshot.target,
            lastProbe: lastProbe,
            consecutiveFailures: snapshot.consecutiveFailures,
            consecutiveSuccesses: snapshot.consecutiveSuccesses,
            transitions: snapshot.transitionCount,
            intervalMs: snapshot.interval.milliseconds,
            timeoutMs: snapshot.timeout.milliseconds,
            connectTimeoutMs: snapshot.target == nil ? nil : snapshot.connectTimeout.milliseconds,
            distance: distance(snapshot),
            fall: snapshot.fall,
            rise: snapshot.rise,
            requireDatabase: snapshot.requireDatabase,
            staleAfterMs: snapshot.stalenessBound.milliseconds,
            version: snapshot.version,
            pid: snapshot.pid,
            startedAt: Timestamp.format(snapshot.startedAt),
            uptimeS: seconds(clocks.monotonic - snapshot.startedInstant),
            spool: StatusDocument.Spool(
                pending: snapshot.spool.pending,
                oldestAt: snapshot.spool.oldestAt.map(Timestamp.format),
                dropped: snapshot.spool.dropped,
                degraded: snapshot.spool.degradedReason != nil,
                inMemory: snapshot.spool.inMemory,
                degradedReason: snapshot.spool.degradedReason,
                lastDeliveryError: snapshot.spool.lastDeliveryError
            ),
            alertLog: snapshot.alertLogPath.map { StatusDocument.AlertLogStatus(path: $0, error: snapshot.alertLogError) },
            probeConnection: snapshot.target == nil ? nil : snapshot.probeConnection.rawValue,
            freshEveryMs: snapshot.target == nil || snapshot.probeConnection == .fresh ? nil : snapshot.freshEvery.milliseconds,
            serverTimeouts: snapshot.target == nil ? nil : snapshot.serverTimeouts?.rawValue,
            sleep: snapshot.sleep.map { sleep in
                StatusDocument.Sleep(
                    phase: sleep.phase.rawValue, since: sleep.since.map(Timestamp.format), seen: sleep.seen,
                    lastLookAgeMs: (clocks.monotonic - sleep.lookedAt).milliseconds
                )
            }
        )
    }

    static func distance(_ snapshot: StatusSnapshot) -> StatusDocument.Distance? {
        let meter = snapshot.distance
        guard snapshot.target != nil, meter.roundTrip != nil || meter.lastConnect != nil else { return nil }
        return StatusDocument.Distance(
            roundTripMs: meter.roundTrip.map(roundedMilliseconds), answerMs: meter.lastAnswer.map(roundedMilliseconds),
            answerHeadroomMs: meter.answerHeadroom.map(roundedMilliseconds), connectMs: meter.lastConnect.map(roundedMilliseconds),
            connectHeadroomMs: meter.connectHeadroom.map(roundedMilliseconds), connectNearBudget: meter.connectNearBudget
        )
    }

    static func split(_ uri: String) -> (path: String, query: Substring) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, "") }
        return (String(uri[..<mark]), uri[uri.index(after: mark)...])
    }

    static func eventLimit(_ query: Substring) -> Result<Int, LimitError> {
        var limit = defaultEventLimit
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.first == "limit" else { continue }
            guard parts.count == 2, let value = Int(parts[1]), (1...maximumEventLimit).contains(value) else {
                return .failure(LimitError("limit must be a whole number from 1 to \(maximumEventLimit)"))
            }
            limit = value
        }
        return .success(limit)
    }

    struct LimitError: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    static func seconds(_ duration: Duration) -> Double {
        (duration.fractionalMilliseconds).rounded() / 1_000
    }

    public static func roundedMilliseconds(_ duration: Duration) -> Double {
        (duration.fractionalMilliseconds * 1_000).rounded() / 1_000
    }

    public static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding these plain structs cannot fail; an empty object beats a crash if it ever did.
        var bytes = Array((try? encoder.encode(value)) ?? Data("{}".utf8))
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }
}
