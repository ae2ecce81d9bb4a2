import FoundationEssentials
import HealthCore
import HealthDaemon

/// The inputs of the hot paths, as a daemon that has run for a while sees them: a database that
/// answers, checked over a fresh connection every interval, with the default settings.
enum Fixtures {
    static let configuration: DaemonConfiguration = {
        var configuration = DaemonConfiguration.defaults
        configuration.databaseURL = "postgresql://healthcheck@db.example.net:5432/postgres"
        return configuration
    }()

    /// The status socket shows the target without its password.
    static let target = "postgresql://healthcheck@db.example.net:5432/postgres"

    static let origin = HealthEvent.Origin(host: "db-monitor-01", pid: 4242, version: DaemonVersion.current)

    /// Pinged at a third of the unit's `WatchdogSec=10s`, as `SystemdNotifier` does.
    static let watchdogPeriod = Duration.milliseconds(3_333)

    static let startedAt = Date(timeIntervalSince1970: 1_800_000_000)

    /// A healthy probe over a new connection: every phase, loopback-to-LAN times.
    static func healthyProbe(at startedAt: Date) -> ProbeResult {
        ProbeResult(
            startedAt: startedAt, latency: .microseconds(4_180),
            phases: [
                PhaseTiming(phase: .resolve, duration: .microseconds(310)),
                PhaseTiming(phase: .connect, duration: .microseconds(620)),
                PhaseTiming(phase: .tls, duration: .microseconds(1_540)),
                PhaseTiming(phase: .auth, duration: .microseconds(1_260)),
                PhaseTiming(phase: .query, duration: .microseconds(450)),
            ],
            failure: nil, connection: .fresh, serverTimeouts: .startupOptions
        )
    }

    /// A probe that ran out of its answer budget, as the probe words it.
    static func timedOutProbe(at startedAt: Date) -> ProbeResult {
        ProbeResult(
            startedAt: startedAt, latency: .microseconds(1_000_600),
            phases: [
                PhaseTiming(phase: .resolve, duration: .microseconds(290)),
                PhaseTiming(phase: .connect, duration: .microseconds(640)),
                PhaseTiming(phase: .tls, duration: .microseconds(1_610)),
                PhaseTiming(phase: .auth, duration: .microseconds(1_300)),
                PhaseTiming(phase: .query, duration: .microseconds(996_760)),
            ],
            failure: ProbeFailure(reason: .timeout, phase: .query, message: "no answer within 1000 ms"),
            connection: .fresh, serverTimeouts: .startupOptions
        )
    }

    /// The transition a fault causes: healthy to unhealthy after `fall` timeouts.
    static func transitionToUnhealthy(id: UUID, at observedAt: Date) -> Transition {
        Transition(
            id: id, from: .healthy, to: .unhealthy, observedAt: observedAt, reason: FailureReason.timeout.rawValue,
            phase: .query, sqlstate: nil, latency: .microseconds(1_000_600), connection: .fresh,
            consecutive: configuration.fall, message: "no answer within 1000 ms"
        )
    }

    /// A state machine past its first verdict and a recovered outage, healthy for a while.
    static func steadyHealthyMachine() -> HealthStateMachine {
        var machine = HealthStateMachine(thresholds: .init(fall: configuration.fall, rise: configuration.rise))
        var wall = startedAt
        let script: [Bool] = [true] + Array(repeating: false, count: configuration.fall)
            + Array(repeating: true, count: 100)
        for ok in script {
            let probe = ok ? healthyProbe(at: wall) : timedOutProbe(at: wall)
            _ = machine.probeFinished(probe, at: wall, newID: UUID())
            wall += configuration.interval.seconds
        }
        precondition(machine.state == .healthy, "the fixture must reach a steady healthy state")
        return machine
    }

    /// The probe loop as `ProbeService` drives it under systemd, past READY=1, ticking steadily.
    struct SteadyLoop {
        var loop: ProbeLoop
        var monotonic: ContinuousClock.Instant
        var wall: Date
        /// What `.reportStatus` renders the status line from.
        let store: StatusStore
        /// Every tick's result: made by the prober, not by the loop.
        let probe = healthyProbe(at: startedAt)

        init() {
            monotonic = .now
            wall = startedAt
            store = statusStore()
            loop = ProbeLoop(
                settings: .init(configuration, probing: true), remembered: nil, watchdogPeriod: watchdogPeriod,
                at: monotonic
            )
            let first = loop.start(at: now, splay: nil, newID: UUID.init)
            precondition(first.last.map(Self.isProbe) == true, "the loop probes at once without splay")
            for _ in 0..<100 { _ = tick() }
        }

        var now: ProbeLoop.Now { ProbeLoop.Now(monotonic: monotonic, wall: wall) }

        /// One tick, from the probe's result to the next probe: what the loop decides, the
        /// status line it is shown, and the wake one interval later. Returns the STATUS= notice.
        mutating func tick() -> ProbeLoop.StatusNotice? {
            var actions = loop.probeFinished(
                probe, generation: loop.generation, at: now, recorderHasWork: { _ in false },
                newID: UUID.init
            )
            // Only the first verdict is recorded; the recording itself is the spool's benchmark.
            if case .record = actions.last { actions = loop.recorded(at: now, newID: UUID.init) }
            var notice: ProbeLoop.StatusNotice?
            for action in actions where action == .reportStatus {
                notice = loop.statusNotice(for: StatusLine(store.read()), at: monotonic, connected: true)
            }
            monotonic += configuration.interval
            wall += configuration.interval.seconds
            let next = loop.wake(at: now, newID: UUID.init)
            precondition(next.last.map(Self.isProbe) == true, "a steady loop probes at every wake")
            return notice
        }

        static func isProbe(_ action: ProbeLoop.Action) -> Bool {
            if case .probe = action { return true }
            return false
        }
    }

    /// The snapshot the status socket answers from, published as `ProbeService` publishes it:
    /// the machine's verdict, the last probe, the distance from the last probes, one outage in
    /// the recent transitions.
    static func statusStore() -> StatusStore {
        let store = StatusStore(StatusSnapshot(
            configuration: configuration, target: target, version: DaemonVersion.current, pid: 4242,
            startedAt: startedAt, startedInstant: .now - .seconds(3_600)
        ))
        let machine = steadyHealthyMachine()
        let outage = transitionToUnhealthy(id: UUID(), at: startedAt + 4)
        var recovery = outage
        recovery.id = UUID()
        (recovery.from, recovery.to, recovery.reason, recovery.phase) = (.unhealthy, .healthy, "ok", nil)
        (recovery.latency, recovery.message) = (.microseconds(4_180), "SELECT 1 answered")
        store.update { snapshot in
            snapshot.update(from: machine)
            for step in 0..<DistanceMeter.window {
                _ = snapshot.distance.record(healthyProbe(at: startedAt + Double(step) * configuration.interval.seconds))
            }
            snapshot.lastProbe = healthyProbe(at: startedAt + 3_598)
            snapshot.lastProbeFinished = .now - .milliseconds(900)
            snapshot.serverTimeouts = .startupOptions
            snapshot.alertLogPath = configuration.alertLogPath
            for transition in [outage, recovery] {
                snapshot.append(transition, limit: 1_000)
                snapshot.deliveries[transition.id] = .spooled
            }
        }
        return store
    }
}
