import struct FoundationEssentials.Date
import struct FoundationEssentials.UUID

/// Where an event is on its way to `system_events`.
public enum EventDelivery: String, Sendable, Codable {
    /// In the spool (durable), not yet in the table.
    case pending
    /// In the table, inserted at the first attempt.
    case direct
    /// In the table, replayed from the spool after failed attempts.
    case spooled
    /// Only in memory: the spool could not store it (disk full, I/O error).
    case memory
    /// Not stored: the spool was full. Counted in an overflow event.
    case dropped
    /// Not recorded: the state was flapping (one flapping event stands for these).
    case suppressed
}

/// The spool as `/status` shows it.
public struct SpoolStatus: Sendable, Equatable {
    public var pending = 0
    public var oldestAt: Date?
    public var dropped = 0
    /// Events held only in memory because the spool cannot store them.
    public var inMemory = 0
    /// Why the spool is degraded (cannot store), if it is.
    public var degradedReason: String?
    /// The last delivery failure, cleared by a successful delivery.
    public var lastDeliveryError: String?

    public init() {}
}

/// With `scale_to_zero`: where the database's sleep stands (`ScaleToZeroSchedule.Phase`), as
/// the status socket shows it.
public struct SleepStatus: Sendable, Equatable {
    public enum Phase: String, Sendable {
        /// The application uses the database; probes run at the interval.
        case following
        /// The application has gone quiet; no probes, the database not yet asleep.
        case resting
        case asleep
    }

    public var phase: Phase
    public var since: Date?
    /// Asleep because its session was ended for it (57P01), not presumed from its timer.
    public var seen: Bool
    /// The loop's last look at the application's traffic: while it does not probe, what keeps
    /// the report from going stale.
    public var lookedAt: ContinuousClock.Instant

    public init(phase: Phase, since: Date?, seen: Bool, lookedAt: ContinuousClock.Instant) {
        self.phase = phase
        self.since = since
        self.seen = seen
        self.lookedAt = lookedAt
    }
}

/// Everything the status socket answers from: a copy taken under a lock, so answering never
/// touches the database or waits for a probe.
public struct StatusSnapshot: Sendable {
    public var state: HealthState
    public var since: Date?
    /// The probed database without its password, or `nil` when not configured.
    public var target: String?
    public var lastProbe: ProbeResult?
    /// Monotonic reading when `lastProbe` finished, to compute its age immune to clock jumps.
    public var lastProbeFinished: ContinuousClock.Instant?
    /// With `scale_to_zero`; `nil` otherwise.
    public var sleep: SleepStatus?
    public var consecutiveFailures: Int
    public var consecutiveSuccesses: Int
    public var transitionCount: Int
    /// Newest last; bounded by the daemon.
    public var recentTransitions: [Transition]
    public var interval: Duration
    public var timeout: Duration
    public var connectTimeout: Duration
    /// The round trip and the budgets' headroom, from the probes.
    public var distance: DistanceMeter
    public var fall: Int
    public var rise: Int
    public var requireDatabase: Bool
    public var probeConnection: ProbeConnection
    public var freshEvery: Duration
    /// How the latest probe passed its deadline to the server; `set-local` once a pooler
    /// refused the startup options.
    public var serverTimeouts: ServerTimeouts?
    public var version: String
    public var pid: Int32
    public var startedAt: Date
    public var startedInstant: ContinuousClock.Instant
    public var spool = SpoolStatus()
    public var alertLogPath: String?
    /// Why the last alert line could not be written; cleared by the next success.
    public var alertLogError: String?
    /// Where each recent event is on its way to `system_events`, by id.
    public var deliveries: [UUID: EventDelivery] = [:]

    public init(
        configuration: DaemonConfiguration, target: String?, version: String, pid: Int32,
        startedAt: Date, startedInstant: ContinuousClock.Instant
    ) {
        state = .starting
        since = nil
        self.target = target
        lastProbe = nil
        lastProbeFinished = nil
        consecutiveFailures = 0
        consecutiveSuccesses = 0
        transitionCount = 0
        recentTransitions = []
        interval = configuration.interval
        timeout = configuration.timeout
        connectTimeout = configuration.connectTimeout
        distance = DistanceMeter(budgets: .init(answer: configuration.timeout, connect: configuration.connectTimeout))
        fall = configuration.fall
        rise = configuration.rise
        requireDatabase = configuration.requireDatabase
        probeConnection = configuration.probeConnection
        freshEvery = configuration.freshEvery
        serverTimeouts = configuration.serverTimeouts ? nil : .off
        self.version = version
        self.pid = pid
        self.startedAt = startedAt
        self.startedInstant = startedInstant
    }

    /// Copies the verdict-bearing fields of the state machine.
    public mutating func update(from machine: HealthStateMachine) {
        state = machine.state
        since = machine.since
        consecutiveFailures = machine.consecutiveFailures
        consecutiveSuccesses = machine.consecutiveSuccesses
        transitionCount = machine.transitionCount
    }

    /// Past this age the snapshot is stale: two intervals and the longest probe.
    public var stalenessBound: Duration {
        DaemonConfiguration.stalenessBound(interval: interval, longestProbe: connectTimeout + timeout)
    }

    /// Keeps the newest `limit` transitions.
    public mutating func append(_ transition: Transition, limit: Int) {
        recentTransitions.append(transition)
        if recentTransitions.count > limit {
            for old in recentTransitions.prefix(recentTransitions.count - limit) { deliveries[old.id] = nil }
            recentTransitions.removeFirst(recentTransitions.count - limit)
        }
    }
}
