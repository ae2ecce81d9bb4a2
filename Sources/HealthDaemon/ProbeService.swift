import FoundationEssentials
import HealthCore
import Logging
import PostgresProbe
import ServiceLifecycle
import SystemdNotify

/// The probe loop: one probe per interval on a fixed-rate schedule, each result fed through the
/// state machine, every transition logged and published to the status store.
///
/// Fixed rate (not "interval after the last probe ended") is what makes the detection bound
/// hold: a fault is seen by the `fall`-th probe after it, at most `fall × interval + timeout`
/// later. A probe that overruns the interval delays the next one; none run concurrently.
final class ProbeService: Service {
    /// What a reload may change.
    struct Settings: Sendable {
        var prober: PostgresProber?
        var interval: Duration
        /// Bumped by every reload: a probe started under older settings is not counted.
        var generation = 0
    }

    private let settings: MutexBox<Settings>
    private let store: StatusStore
    private let notifier: SystemdNotifier
    private let logger: Logger
    private let transitionHistoryLimit: Int
    private let machine: MutexBox<HealthStateMachine>
    private let recorder: EventRecorder
    private let flaps: MutexBox<FlapDetector>
    /// Wakes the loop when the settings change, so new settings apply at once.
    private let reloaded = WakeupSignal()
    private let metrics: DaemonMetrics?
    /// Set once READY=1 has been sent: a reload before that must not send READY=1 early.
    let hasReported = MutexBox(false)
    /// Start the schedule at a random offset within one interval (see `DaemonConfiguration.splay`).
    private let splayFirstProbe: Bool

    init(
        prober: PostgresProber?, configuration: DaemonConfiguration, store: StatusStore, recorder: EventRecorder,
        remembered: DaemonMemory?, notifier: SystemdNotifier, logger: Logger, metrics: DaemonMetrics? = nil,
        transitionHistoryLimit: Int = 1_000, splayFirstProbe: Bool = false
    ) {
        self.splayFirstProbe = splayFirstProbe
        self.metrics = metrics
        self.settings = MutexBox(Settings(prober: prober, interval: configuration.interval))
        self.store = store
        self.recorder = recorder
        self.notifier = notifier
        self.logger = logger
        self.transitionHistoryLimit = transitionHistoryLimit
        self.flaps = MutexBox(FlapDetector(
            settings: .init(threshold: configuration.flapThreshold, window: configuration.flapWindow), restoring: remembered?.flaps
        ))
        self.machine = MutexBox(HealthStateMachine(
            thresholds: .init(fall: configuration.fall, rise: configuration.rise), restoring: remembered?.health
        ))
    }

    /// Applies a reloaded configuration: the next probe uses it, at once.
    func apply(_ configuration: DaemonConfiguration, prober: PostgresProber?) {
        settings.withLock { $0 = Settings(prober: prober, interval: configuration.interval, generation: $0.generation + 1) }
        machine.withLock { $0.thresholds = .init(fall: configuration.fall, rise: configuration.rise) }
        flaps.withLock { detector in
            let wanted = FlapDetector.Settings(threshold: configuration.flapThreshold, window: configuration.flapWindow)
            if detector.settings != wanted { detector = FlapDetector(settings: wanted, restoring: detector.memory) }
        }
        store.update { snapshot in
            snapshot.interval = configuration.interval
            snapshot.timeout = configuration.timeout
            snapshot.fall = configuration.fall
            snapshot.rise = configuration.rise
            snapshot.requireDatabase = configuration.requireDatabase
            snapshot.probeConnection = configuration.probeConnection
            snapshot.freshEvery = configuration.freshEvery
            snapshot.target = prober?.target.display
        }
        reloaded.signal()
    }

    func run() async throws {
        // Before any new event, so that the alert log keeps the order of the spool.
        await recorder.recoverAtStart(memory: memory)
        do {
            // STOPPING=1 as soon as shutdown begins, not once it is over; the running probe is
            // cancelled at once rather than left to run out its deadline.
            try await withGracefulShutdownHandler {
                try await cancelWhenGracefulShutdown { [self] in try await probeLoop() }
            } onGracefulShutdown: { [notifier] in
                notifier.stopping()
            }
        } catch is CancellationError {
            // Graceful shutdown interrupted the sleep: the loop is done.
        }
        // The kept session is not left for the server to find closed.
        await settings.withLock { $0.prober }?.close()
        await recorder.finish(memory: memory)
    }

    private func probeLoop() async throws {
        var nextStart = ContinuousClock.now
        if splayFirstProbe {
            // Daemons started together (a fleet's restart, a boot) would otherwise probe, and
            // open connections, in step for as long as they run.
            let interval = settings.withLock { $0.interval }
            nextStart += .nanoseconds(Int64.random(in: 0..<max(1, interval.nanoseconds)))
            logger.debug("first probe splayed", metadata: ["in_ms": "\((nextStart - .now).milliseconds)"])
            nextStart = try await sleep(until: nextStart)
        }
        var first = true
        var probes = 0
        var lastStatus = ""
        var lastProber: PostgresProber?
        while !Task.isCancelled {
            let current = settings.withLock { $0 }
            // A reload replaced the prober: its kept session is closed before the new one
            // connects, so the daemon never holds two.
            if let previous = lastProber, current.prober.map({ !$0.sharesConnections(with: previous) }) ?? true {
                await previous.close()
            }
            lastProber = current.prober
            if let prober = current.prober {
                FaultInjection.stallProbeLoop(after: probes)
                probes += 1
                // nil: shutdown cancelled the probe midway; it has no verdict to record.
                guard let outcome = await feedingWatchdog(for: prober.timeout, { await prober.probe() }),
                      let result = outcome
                else { return }
                // A reload changed the target or settings meanwhile: this result is about the old
                // ones. Probe again at once.
                guard settings.withLock({ $0.generation }) == current.generation else { continue }
                let transition = machine.withLock { $0.probeFinished(result, at: Date(), newID: UUID()) }
                _ = await feedingWatchdog(for: Self.settleLimit) { [self] in await settle(probe: result, transition: transition) }
            } else {
                // Nothing to probe: a state of its own, recorded once.
                let transition = machine.withLock { $0.targetUnconfigured(at: Date(), newID: UUID()) }
                _ = await feedingWatchdog(for: Self.settleLimit) { [self] in await settle(probe: nil, transition: transition) }
            }
            let status = statusLine()
            if first {
                first = false
                notifier.ready(status: status)
                hasReported.withLock { $0 = true }
            } else if status != lastStatus || forceStatus.withLock({ $0 }) {
                forceStatus.withLock { $0 = false }
                notifier.status(status)
            }
            lastStatus = status
            notifier.watchdog()
            nextStart += current.interval
            let now = ContinuousClock.now
            if nextStart < now { nextStart = now }
            nextStart = try await sleep(until: nextStart)
        }
    }

    /// Sleeps to the next probe, waking to feed the watchdog when the interval is longer, and
    /// at once when a reload changed the settings. Returns when the probe starts.
    private func sleep(until start: ContinuousClock.Instant) async throws -> ContinuousClock.Instant {
        var start = start
        while ContinuousClock.now < start {
            let wake = notifier.watchdogPeriod.map { min(start, ContinuousClock.now + $0) } ?? start
            if await reloaded.wait(timeout: wake - ContinuousClock.now) {
                start = ContinuousClock.now
            }
            try Task.checkCancellation()
            notifier.watchdog()
        }
        return start
    }

    /// Longest the recording of one result (spool fsyncs, alert log, journal) may take before
    /// the watchdog is left to fire: a stuck disk or journal must end in a restart.
    static let settleLimit = Duration.seconds(30)

    /// Resent after a reload, whose READY=1 carried its own STATUS text.
    let forceStatus = MutexBox(false)

    /// Runs `work` while feeding the watchdog for at most `limit` (plus one period), so a long
    /// but bounded step is not mistaken for a stall, and one that hangs past its bound is.
    private func feedingWatchdog<T: Sendable>(for limit: Duration, _ work: @escaping @Sendable () async -> T) async -> T? {
        guard let period = notifier.watchdogPeriod else { return await work() }
        let notifier = notifier
        return await withTaskGroup(of: T?.self) { group in
            group.addTask { await work() }
            group.addTask {
                let until = ContinuousClock.now + limit + period
                while !Task.isCancelled, ContinuousClock.now < until {
                    try? await Task.sleep(for: period)
                    if !Task.isCancelled { notifier.watchdog() }
                }
                // Past the bound: stop feeding and wait to be cancelled.
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3_600)) }
                return nil
            }
            var result: T?
            while let next = await group.next() {
                if let next {
                    result = next
                    group.cancelAll()
                }
            }
            return result
        }
    }

    /// Records a transition durably first, then publishes the verdict and remembers it.
    /// While the state flaps, per-flip rows give way to one flapping event (see `FlapDetector`).
    private func settle(probe: ProbeResult?, transition: Transition?) async {
        var recorded = false
        var announcements: [HealthEvent] = []
        var decision: FlapDetector.Decision?
        if let transition { decision = flaps.withLock { $0.transition(transition) } }
        let state = machine.withLock { $0.state }
        let settled = flaps.withLock { $0.tick(at: Date(), state: state, newID: UUID()) }
        // Saved with the events below, in the same spool transaction.
        let memory = self.memory
        if let transition, let decision {
            switch decision {
            case .record(let transition):
                announcements += await recorder.record(recorder.event(for: transition), memory: memory)
                recorded = true
            case .startFlapping(let report):
                announcements += await recorder.record(recorder.flappingEvent(report), memory: memory)
                store.update { $0.deliveries[transition.id] = .suppressed }
                recorded = true
            case .suppress:
                store.update { $0.deliveries[transition.id] = .suppressed }
            }
        }
        if let settled {
            announcements += await recorder.record(recorder.event(for: settled), memory: memory)
            store.update { $0.append(settled, limit: transitionHistoryLimit) }
            log(settled)
            recorded = true
        }
        if !recorded { await recorder.retry(memory: memory) }
        // Durable first (above), then everywhere else: the status socket, then alert log and
        // journal.
        publish(probe: probe, transition: transition)
        for event in announcements { await recorder.announce(event) }
        await recorder.remember(memory)
    }

    private var memory: DaemonMemory {
        DaemonMemory(health: machine.withLock { $0.memory }, flaps: flaps.withLock { $0.memory })
    }

    private func publish(probe: ProbeResult?, transition: Transition?) {
        let machineCopy = machine.withLock { $0 }
        store.update { snapshot in
            snapshot.update(from: machineCopy)
            if let probe {
                snapshot.lastProbe = probe
                snapshot.lastProbeFinished = .now
            }
            if let transition { snapshot.append(transition, limit: transitionHistoryLimit) }
        }
        if let probe, !probe.ok, let failure = probe.failure {
            logger.debug("probe failed", metadata: [
                "reason": "\(failure.reason.rawValue)", "phase": "\(failure.phase.rawValue)",
                "latency_ms": "\(probe.latency.milliseconds)", "message": "\(failure.message)",
            ])
        }
        if let transition { log(transition) }
        metrics?.record(probe: probe, transition: transition, snapshot: store.read())
    }

    private func log(_ transition: Transition) {
        var metadata: Logger.Metadata = [
            "event_id": "\(transition.id.uuidString.lowercased())",
            "from": "\(transition.from.rawValue)",
            "to": "\(transition.to.rawValue)",
            "reason": "\(transition.reason)",
            "consecutive": "\(transition.consecutive)",
        ]
        if let phase = transition.phase { metadata["phase"] = "\(phase.rawValue)" }
        if let sqlstate = transition.sqlstate { metadata["sqlstate"] = "\(sqlstate)" }
        if let latency = transition.latency { metadata["latency_ms"] = "\(latency.milliseconds)" }
        let level: Logger.Level = switch transition.to {
        case .unhealthy: .error
        case .notConfigured: .warning
        default: .notice
        }
        logger.log(
            level: level,
            "database \(transition.to.rawValue) (was \(transition.from.rawValue)): \(transition.message)",
            metadata: metadata
        )
    }

    /// What `systemctl status` shows: state, reason, last latency and spool depth, on one line.
    func statusLine() -> String {
        let snapshot = store.read()
        var line = "database \(snapshot.state.rawValue)"
        if let probe = snapshot.lastProbe {
            line += probe.ok
                ? "; last probe ok in \(FixedPoint.format(probe.latency.fractionalMilliseconds, places: 1)) ms"
                : "; last probe \(probe.reasonText) during \(probe.failure?.phase.rawValue ?? "?")"
        }
        line += "; \(snapshot.spool.pending) events spooled"
        if snapshot.spool.degradedReason != nil { line += "; spool DEGRADED (\(snapshot.spool.inMemory) in memory)" }
        return line
    }
}
