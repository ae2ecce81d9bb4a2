import struct FoundationEssentials.Date

/// When to probe a database that suspends itself while no client uses it (a serverless compute,
/// such as Neon's, that stops after `suspendAfter` without a statement and starts again at the
/// next login): only while the application on this host uses it, and now and then to prove it
/// still wakes. Pure: the adapter reports the application's traffic (read from the kernel's
/// socket table, without touching the database), the daemon's own probes and what ended its
/// session, and performs the decisions.
///
/// Why probing stops within one interval of the application's last traffic: the database's
/// idle timer restarts at every statement, the daemon's included, so every probe after the
/// application went quiet keeps the database awake that much longer. Following the
/// application to within one interval adds at most one interval of awake time to each stretch
/// of use, and an outage during use is still seen within the usual bound.
public struct ScaleToZeroSchedule: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant

    public struct Settings: Sendable, Equatable {
        /// The database's own idle timeout: this long after its last statement it suspends
        /// (Neon's default is 5 minutes).
        public var suspendAfter: Duration
        /// The probe interval while the application uses the database.
        public var interval: Duration
        /// How often a sleeping database is woken to prove that it still starts; `nil`: only
        /// when the application or an operator asks.
        public var wakeEvery: Duration?

        public init(suspendAfter: Duration, interval: Duration, wakeEvery: Duration?) {
            self.suspendAfter = suspendAfter
            self.interval = interval
            self.wakeEvery = wakeEvery
        }
    }

    public enum Phase: Sendable, Equatable {
        /// The application uses the database: probes run at the interval.
        case following
        /// The application has gone quiet and so has the daemon; the database is awake until
        /// its own timer runs out, `suspendAfter` after the last statement.
        case resting(since: Instant)
        /// The database has suspended: `seen` when its session was ended for it (57P01), else
        /// presumed from `suspendAfter` without a statement.
        case asleep(since: Instant, seen: Bool)
    }

    public enum WakeReason: String, Sendable, Equatable {
        /// The application is using the database again (its own login woke it, or is waking it).
        case application
        /// `wakeEvery` has passed since the database last proved that it starts.
        case scheduled
        /// An operator asked for a probe.
        case requested
        /// The last probe failed: the next ones keep the wake budget until one gets in.
        case retry
    }

    public enum Decision: Sendable, Equatable {
        /// Probe now with the usual budgets.
        case probe
        /// Probe now with the cold-start budget: the database is, or may be, asleep. A wake that
        /// fails is a verdict at once, not one failure of `fall`.
        case wake(WakeReason)
        /// No probe: decide again at this instant (or when asked for a probe).
        case rest(until: Instant)
    }

    public let settings: Settings
    public private(set) var phase: Phase
    /// The last time the application's sockets to the database sent data.
    private var applicationTraffic: Instant?
    /// The last statement the database saw from this host, the application's or the daemon's:
    /// the start of its idle timer.
    private var lastStatement: Instant?
    /// The last time the database proved that it starts: a login that succeeded.
    private var lastProof: Instant?
    private var requested = false
    /// The last probe failed, or the session ended before the database's idle mark: probes run
    /// at the interval, whatever the application does, until one succeeds. A database that is
    /// down is not kept awake by them, and an outage that ends the application's connections
    /// too is still reported.
    private var checking = false

    /// A 57P01 this close to the idle mark (`suspendAfter` after the last statement) is the
    /// database going to sleep; one earlier is something else (a shutdown, an administrator).
    public static let idleMarkTolerance = Duration.seconds(1)

    /// `now`: the daemon's start. Until it has seen the application's traffic, the database
    /// is taken to have been in use just now, so the first probe runs at once.
    public init(settings: Settings, at now: Instant) {
        self.settings = settings
        phase = .following
        lastStatement = now
        applicationTraffic = now
    }

    /// The application counts as using the database while its traffic is this recent.
    public var followWindow: Duration { settings.interval }

    // MARK: Inputs

    /// The latest instant any of the application's connections to the database sent
    /// data; `nil` when it has none (which leaves the last one seen standing).
    public mutating func applicationTraffic(lastAt: Instant?) {
        guard let lastAt else { return }
        if applicationTraffic.map({ lastAt > $0 }) ?? true { applicationTraffic = lastAt }
        if lastStatement.map({ lastAt > $0 }) ?? true { lastStatement = lastAt }
    }

    /// A probe of the daemon's reached the database at `at`; `loggedIn`: it opened a new
    /// session, which proves that the database starts.
    public mutating func probeReached(at: Instant, loggedIn: Bool) {
        checking = false
        if lastStatement.map({ at > $0 }) ?? true { lastStatement = at }
        if loggedIn { lastProof = at }
        if case .asleep = phase { phase = isInUse(at: at) ? .following : .resting(since: at) }
    }

    /// A probe failed, or the server ended the idle session otherwise than by going to sleep:
    /// probes go on at the interval until one succeeds.
    public mutating func probeFailed() {
        checking = true
    }

    /// The server ended the daemon's idle session with 57P01 ("terminating connection due to
    /// administrator command"). Returns whether that is the database going to sleep: nobody
    /// uses it, and it came at the idle mark. Otherwise (a shutdown sends the same) the next
    /// decision probes, and so on until a probe succeeds.
    public mutating func sessionTerminated(at now: Instant) -> Bool {
        let idleMark = (lastStatement ?? now) + settings.suspendAfter
        guard !isInUse(at: now), now + Self.idleMarkTolerance >= idleMark else {
            checking = true
            return false
        }
        phase = .asleep(since: now, seen: true)
        return true
    }

    /// An operator asked for a probe: the next decision is one.
    public mutating func requestProbe() {
        requested = true
    }

    /// Whether a write to the database now (an event's row) costs it no sleep: it is awake and
    /// saw a statement within the last interval, so the write restarts its idle timer by no
    /// more than following the application does. Otherwise rows wait in the spool for the
    /// next time it is awake: delivering them would wake it, or keep it up, for nothing.
    public func mayWrite(at now: Instant) -> Bool {
        if case .asleep = phase { return false }
        guard let lastStatement else { return false }
        return now - lastStatement < settings.interval
    }

    // MARK: Decisions

    public mutating func decide(at now: Instant) -> Decision {
        presumeSleep(at: now)
        let mayBeAsleep: Bool
        switch phase {
        case .asleep: mayBeAsleep = true
        case .following, .resting: mayBeAsleep = false
        }
        if isInUse(at: now) {
            requested = false
            // Asleep until a login proves it awake (`probeReached`), so that a wake that fails
            // is retried as one.
            guard !mayBeAsleep else { return .wake(.application) }
            phase = .following
            return .probe
        }
        if requested {
            requested = false
            return mayBeAsleep ? .wake(.requested) : .probe
        }
        if checking {
            return mayBeAsleep ? .wake(.retry) : .probe
        }
        if case .following = phase {
            phase = .resting(since: now)
        }
        if mayBeAsleep, let wakeEvery = settings.wakeEvery, now >= (lastProof ?? lastStatement ?? now) + wakeEvery {
            return .wake(.scheduled)
        }
        return .rest(until: nextDecision(after: now))
    }

    // MARK: Internals

    private func isInUse(at now: Instant) -> Bool {
        guard let applicationTraffic else { return false }
        return now - applicationTraffic < followWindow
    }

    private mutating func presumeSleep(at now: Instant) {
        guard case .resting = phase, let lastStatement, now >= lastStatement + settings.suspendAfter else { return }
        phase = .asleep(since: lastStatement + settings.suspendAfter, seen: false)
    }

    /// Within an interval, for the application's return; sooner if the database's own timer
    /// runs out first, or a scheduled wake falls due.
    private func nextDecision(after now: Instant) -> Instant {
        var next = now + settings.interval
        if case .resting = phase, let lastStatement {
            next = min(next, max(now, lastStatement + settings.suspendAfter))
        }
        if case .asleep = phase, let wakeEvery = settings.wakeEvery {
            next = min(next, max(now, (lastProof ?? lastStatement ?? now) + wakeEvery))
        }
        return next
    }
}

/// A database that sleeps when unused fell asleep or was woken: recorded as an event. The
/// health state does not change (a sleep is not an outage, a wake not a failure).
public enum SleepChange: Sendable, Equatable {
    /// Asleep since `since`: `seen` when the server ended the daemon's idle session for it
    /// (57P01 at the idle mark), else presumed after `suspendAfter` without a statement.
    case asleep(since: Date, seen: Bool, suspendAfter: Duration)
    /// A login got in after a sleep that began at `asleepSince`; `took` is that probe's time,
    /// the cold start included.
    case awake(reason: ScaleToZeroSchedule.WakeReason, asleepSince: Date, at: Date, took: Duration)
}
