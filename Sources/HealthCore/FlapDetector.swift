import FoundationEssentials

/// Coalesces flapping: more than `threshold` transitions within `window` produce one
/// `database.health.flapping` event instead of a row per flip; flips stay suppressed until the
/// state has been stable for `window`, then one transition to the settled state is recorded.
/// No event storm in the table, and its last transition always names the state that held.
///
/// Pure: it is handed every transition and every tick's time and state.
public struct FlapDetector: Sendable {
    public struct Settings: Sendable, Equatable {
        public var threshold: Int
        public var window: Duration

        public init(threshold: Int, window: Duration) {
            self.threshold = threshold
            self.window = window
        }
    }

    /// What to record for a transition.
    public enum Decision: Sendable, Equatable {
        /// Record the transition as it is.
        case record(Transition)
        /// Flapping has begun: record this event; the transition itself is suppressed.
        case startFlapping(HealthEvent.FlapReport)
        /// Flapping goes on: record nothing.
        case suppress
    }

    public let settings: Settings
    /// Times of the transitions within the window, oldest first.
    private var recent: [Date] = []
    public private(set) var isFlapping = false
    /// The state the table last heard of, while flapping.
    private var lastRecorded: HealthState?
    private var lastChange: Date?
    private var suppressed = 0

    public init(settings: Settings) {
        self.settings = settings
    }

    /// What survives a restart: a restart while flapping must still end in the settled state.
    public struct Memory: Sendable, Equatable, Codable {
        var recent: [Date]
        var isFlapping: Bool
        var lastRecorded: HealthState?
        var lastChange: Date?
        var suppressed: Int
    }

    public var memory: Memory {
        Memory(recent: recent, isFlapping: isFlapping, lastRecorded: lastRecorded, lastChange: lastChange, suppressed: suppressed)
    }

    public init(settings: Settings, restoring memory: Memory?) {
        self.settings = settings
        guard let memory else { return }
        recent = memory.recent
        isFlapping = memory.isFlapping
        lastRecorded = memory.lastRecorded
        lastChange = memory.lastChange
        suppressed = memory.suppressed
    }

    public mutating func transition(_ transition: Transition) -> Decision {
        let now = transition.observedAt
        lastChange = now
        recent.append(now)
        recent.removeAll { now.timeIntervalSince($0) > settings.window.seconds }
        if isFlapping {
            suppressed += 1
            return .suppress
        }
        guard recent.count > settings.threshold else { return .record(transition) }
        isFlapping = true
        lastRecorded = transition.from
        suppressed = 1
        return .startFlapping(HealthEvent.FlapReport(
            transitions: recent.count, window: settings.window, firstAt: recent.first ?? now, at: now,
            state: transition.to
        ))
    }

    /// Called every probe. Once the state has held for the window, flapping ends; returns the
    /// one transition to record if the settled state differs from the last recorded one.
    public mutating func tick(at now: Date, state: HealthState, newID: @autoclosure () -> UUID) -> Transition? {
        guard isFlapping, let lastChange, now.timeIntervalSince(lastChange) >= settings.window.seconds else { return nil }
        isFlapping = false
        recent.removeAll()
        defer { suppressed = 0 }
        guard let from = lastRecorded, from != state else { return nil }
        return Transition(
            id: newID(), from: from, to: state, observedAt: now, reason: "settled",
            consecutive: 0,
            message: "state held for \(HumanDuration.format(settings.window)) after flapping (\(suppressed) transitions suppressed)"
        )
    }
}

extension Duration {
    /// Seconds as a fraction.
    public var seconds: Double { fractionalMilliseconds / 1_000 }
}

extension HealthEvent {
    /// What a flapping event reports.
    public struct FlapReport: Sendable, Equatable {
        public var transitions: Int
        public var window: Duration
        public var firstAt: Date
        public var at: Date
        public var state: HealthState
    }

    public static func flapping(_ report: FlapReport, id: UUID, origin: Origin) -> HealthEvent {
        let payload = FlappingPayload(
            transitions: report.transitions, windowS: report.window.seconds,
            firstAt: Timestamp.format(report.firstAt), observedAt: Timestamp.format(report.at),
            state: report.state.rawValue
        )
        return HealthEvent(
            id: id, kind: .flapping, severity: .warning, observedAt: report.at, payload: EventJSON.encode(payload),
            origin: origin,
            summary: "database state flapping: \(report.transitions) transitions within \(HumanDuration.format(report.window)); "
                + "further flips are not recorded until the state holds for \(HumanDuration.format(report.window))"
        )
    }
}

struct FlappingPayload: Encodable {
    var transitions: Int
    var windowS: Double
    var firstAt: String
    var observedAt: String
    var state: String

    enum CodingKeys: String, CodingKey {
        case transitions, state
        case windowS = "window_s", firstAt = "first_at", observedAt = "observed_at"
    }
}

/// Everything the daemon remembers across restarts, saved with the event that changed it.
public struct DaemonMemory: Sendable, Equatable, Codable {
    public var health: HealthStateMachine.Memory
    public var flaps: FlapDetector.Memory?

    public init(health: HealthStateMachine.Memory, flaps: FlapDetector.Memory?) {
        self.health = health
        self.flaps = flaps
    }
}
