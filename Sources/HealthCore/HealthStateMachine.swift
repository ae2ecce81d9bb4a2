import struct FoundationEssentials.Date
import struct FoundationEssentials.UUID

/// Rise/fall damping over probe results. Pure: it is handed every result, time and id it uses.
///
/// - The first verdict is immediate: from `starting`, one result decides healthy or unhealthy,
///   so a daemon that has just started reports a real state after one probe.
/// - After that, `fall` consecutive failures turn a healthy database unhealthy and `rise`
///   consecutive successes turn an unhealthy one healthy.
public struct HealthStateMachine: Sendable {
    public struct Thresholds: Sendable, Equatable {
        public var fall: Int
        public var rise: Int

        public init(fall: Int, rise: Int) {
            precondition(fall >= 1 && rise >= 1, "thresholds are validated by the configuration")
            self.fall = fall
            self.rise = rise
        }
    }

    public private(set) var state: HealthState = .starting
    /// When the current state was entered; `nil` while starting.
    public private(set) var since: Date?
    public private(set) var consecutiveFailures = 0
    public private(set) var consecutiveSuccesses = 0
    public private(set) var transitionCount = 0
    public var thresholds: Thresholds

    public init(thresholds: Thresholds) {
        self.thresholds = thresholds
    }

    /// What survives a restart: the verdict and the damping counters. A daemon restarted in an
    /// unchanged state then records no transition, and a streak in progress keeps counting.
    public struct Memory: Sendable, Equatable, Codable {
        public var state: HealthState
        public var since: Date?
        public var consecutiveFailures: Int
        public var consecutiveSuccesses: Int

        public init(state: HealthState, since: Date?, consecutiveFailures: Int, consecutiveSuccesses: Int) {
            self.state = state
            self.since = since
            self.consecutiveFailures = consecutiveFailures
            self.consecutiveSuccesses = consecutiveSuccesses
        }
    }

    /// Resumes from a remembered verdict; `nil` (first start ever) begins at `starting`.
    public init(thresholds: Thresholds, restoring memory: Memory?) {
        self.thresholds = thresholds
        guard let memory, memory.state != .starting else { return }
        state = memory.state
        since = memory.since
        consecutiveFailures = memory.consecutiveFailures
        consecutiveSuccesses = memory.consecutiveSuccesses
    }

    /// The part worth remembering. Counters are capped at the larger threshold: beyond it they
    /// change nothing, and capping keeps a steady state from rewriting its memory every probe.
    public var memory: Memory {
        let cap = max(thresholds.fall, thresholds.rise)
        return Memory(
            state: state, since: since,
            consecutiveFailures: min(consecutiveFailures, cap), consecutiveSuccesses: min(consecutiveSuccesses, cap)
        )
    }

    /// Feeds one probe result; returns the transition it caused, if any. `newID` is called only
    /// for a transition: a steady state asks for no ids. `decisive`: a failure is the verdict at
    /// once, whatever `fall` says (a sleeping database that does not wake: there is no next
    /// probe soon to confirm it).
    public mutating func probeFinished(
        _ result: ProbeResult, at now: Date, decisive: Bool = false, newID: @autoclosure () -> UUID
    ) -> Transition? {
        if result.ok {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
        }

        let target: HealthState?
        switch state {
        case .starting, .notConfigured:
            target = result.ok ? .healthy : .unhealthy
        case .healthy:
            target = consecutiveFailures >= thresholds.fall || decisive && !result.ok ? .unhealthy : nil
        case .unhealthy:
            target = consecutiveSuccesses >= thresholds.rise ? .healthy : nil
        }
        guard let target, target != state else { return nil }
        return enter(
            target, at: now, id: newID(), reason: result.reasonText,
            phase: result.failure?.phase, sqlstate: result.failure?.sqlstate, latency: result.latency,
            connection: result.connection, consecutive: result.ok ? consecutiveSuccesses : consecutiveFailures,
            message: result.failure?.message ?? "SELECT 1 answered"
        )
    }

    /// No connection string is configured; returns the transition, if the state changed.
    public mutating func targetUnconfigured(at now: Date, newID: @autoclosure () -> UUID) -> Transition? {
        consecutiveFailures = 0
        consecutiveSuccesses = 0
        guard state != .notConfigured else { return nil }
        return enter(
            .notConfigured, at: now, id: newID(), reason: HealthState.notConfigured.rawValue,
            phase: nil, sqlstate: nil, latency: nil, connection: nil, consecutive: 0,
            message: "no database connection string is configured"
        )
    }

    private mutating func enter(
        _ target: HealthState, at now: Date, id: UUID, reason: String, phase: ProbePhase?,
        sqlstate: String?, latency: Duration?, connection: ProbeConnection?, consecutive: Int, message: String
    ) -> Transition {
        let transition = Transition(
            id: id, from: state, to: target, observedAt: now, reason: reason, phase: phase,
            sqlstate: sqlstate, latency: latency, connection: connection, consecutive: consecutive, message: message
        )
        state = target
        since = now
        transitionCount += 1
        return transition
    }
}
