import FoundationEssentials
import HealthCore
import Synchronization

/// How a prober connects.
public struct ProbePolicy: Sendable, Equatable {
    /// `session`: routine probes use a kept connection, with a fresh one at least every
    /// `freshEvery`; `fresh`: a new connection every probe.
    public var mode: ProbeConnection
    public var freshEvery: Duration
    /// Pass the deadline to the server as `statement_timeout` and `lock_timeout`.
    public var serverTimeouts: Bool
    /// The budget for opening a new connection; the prober's `timeout` is the answer's.
    public var connectTimeout: Duration

    public init(
        mode: ProbeConnection = .fresh, freshEvery: Duration = .seconds(30), serverTimeouts: Bool = true,
        connectTimeout: Duration = .seconds(2)
    ) {
        self.mode = mode
        self.freshEvery = freshEvery
        self.serverTimeouts = serverTimeouts
        self.connectTimeout = connectTimeout
    }

    /// The connection a probe (or a delivery borrowing the probe's session) uses now.
    func choice(keptSessionAge: Duration?) -> ConnectionChoice {
        ConnectionChoice(mode: mode, freshEvery: freshEvery, keptSessionAge: keptSessionAge)
    }
}

/// Probes one database. Each probe runs on a thread of its own, so the libpq calls and their
/// `poll()` never occupy a thread of Swift's cooperative pool nor wait behind other blocking work.
///
/// Copies share one connection slot (the kept session, or a connection the server has not
/// finished with): probes through one prober run one at a time, and it holds at most one
/// connection to the server. `close()` ends it; a prober that is replaced must be closed.
public struct PostgresProber: Sendable {
    public let target: ConnectionTarget
    public let timeout: Duration
    public let policy: ProbePolicy
    private let environment: [String: String]
    private let connections: SlotBox

    public init(
        target: ConnectionTarget, timeout: Duration, policy: ProbePolicy = ProbePolicy(),
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.init(target: target, timeout: timeout, policy: policy, environment: environment, sharing: SlotBox())
    }

    /// A prober on `connections`: the same slot, so the probe holds one connection at most.
    private init(
        target: ConnectionTarget, timeout: Duration, policy: ProbePolicy, environment: [String: String], sharing connections: SlotBox
    ) {
        self.target = target
        self.timeout = timeout
        self.policy = policy
        self.environment = environment
        self.connections = connections
    }

    /// The longest one probe takes: a new connection just within its budget, then the answer
    /// just within its own.
    public var longestProbe: Duration { policy.connectTimeout + timeout }

    /// One probe; `nil` if the calling task was cancelled before the probe reached a verdict
    /// (cancellation ends the probe's wait at once, whatever the deadline).
    public func probe() async -> ProbeResult? {
        let prober = self
        let cancellation = ProbeCancellation()
        let outcome = await withTaskCancellationHandler {
            await onOwnThread { prober.probeBlocking(cancellation: cancellation) }
        } onCancel: {
            cancellation.cancel()
        }
        // Outer nil: no thread; inner nil: cancelled.
        guard let outcome else {
            return ProbeResult(
                startedAt: Date(), latency: .zero, phases: [],
                failure: ProbeFailure(reason: .other, phase: .resolve, message: "could not start a probe thread")
            )
        }
        return outcome
    }

    /// One probe with the connection budget of a wake (`connectTimeout`, the cold start of a
    /// database that slept included) on a new connection: it proves that the database starts.
    /// In session mode the new connection is kept, so the next probe does not log in again.
    public func wakeProbe(connectTimeout: Duration) async -> ProbeResult? {
        var policy = policy
        policy.connectTimeout = connectTimeout
        // No kept session is young enough: a new connection, whatever the mode.
        policy.freshEvery = .zero
        let waking = PostgresProber(target: target, timeout: timeout, policy: policy, environment: environment, sharing: connections)
        return await waking.probe()
    }

    /// Whether the server ended the kept session while it sat idle, read without sending
    /// anything (see `PGSession.checkIdle`). `.none` while a probe or a delivery uses it.
    /// Blocks for no longer than one `poll` with no timeout and one read: call it off the pool.
    public func checkKeptSession() -> IdleSessionCheck {
        connections.slot.withLockIfAvailable { $0.checkKept() } ?? .none
    }

    /// Takes the kept session out, if there is one and no probe is using the slot: the event
    /// writer borrows it. Meanwhile a probe finds no kept session and opens a fresh one.
    func borrowKeptSession() -> (PGSession, ContinuousClock.Instant)? {
        guard policy.mode == .session else { return nil }
        return connections.slot.withLockIfAvailable { slot in
            guard policy.choice(keptSessionAge: slot.keptSessionAge) == .keptSession else { return nil }
            return slot.takeKept().map { ($0.session, $0.openedAt) }
        } ?? nil
    }

    /// Gives a borrowed session back; closes it if the slot holds another by now.
    func returnKeptSession(_ session: PGSession, openedAt: ContinuousClock.Instant) {
        connections.slot.withLock { slot in
            if slot.isEmpty { slot.keep(session, openedAt: openedAt) }
        }
    }

    /// Whether `other` is a copy of this prober, sharing its connection.
    public func sharesConnections(with other: PostgresProber) -> Bool {
        connections === other.connections
    }

    /// One probe on the calling thread, which it blocks for at most the deadline: call it from
    /// a thread of your own, never from Swift's cooperative pool. `nil` if `cancellation` fired
    /// before the probe reached a verdict. One cancellation may serve many probes in a row.
    public func probeBlocking(cancellation: ProbeCancellation) -> ProbeResult? {
        connections.slot.withLock { slot in
            LibPQProbe.run(
                target, timeout: timeout, policy: policy, slot: slot, resolver: .shared,
                environment: environment, cancellation: cancellation
            )
        }
    }

    /// Closes the kept session or unfinished connection, if any (reload, shutdown). Waits for
    /// a probe that is running: cancel it first.
    public func close() async {
        let connections = connections
        _ = await onOwnThread { connections.slot.withLock { $0.close() } }
    }
}

/// The slot behind a lock, shared by a prober's copies.
final class SlotBox: Sendable {
    let slot = Mutex(ConnectionSlot())
}
