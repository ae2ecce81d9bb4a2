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
/// hold: a fault is seen by the `fall`-th probe after it, within
/// `DaemonConfiguration.detectionBound`. A probe that overruns the interval delays the next one;
/// none run concurrently.
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
    /// Wakes the loop when the settings change, so new settings apply at once: the task, or
    /// the thread that runs steady ticks.
    private let reloaded = WakeupSignal()
    private let reloadedOnThread = ThreadFlag()
    /// Probes started, for the fault hook that stalls the loop.
    private let probeCount = MutexBox(0)
    /// The last STATUS= line sent.
    private let lastStatus = MutexBox<(text: String, sentAt: ContinuousClock.Instant)>(("", .now))
    private let metrics: DaemonMetrics?
    /// The refusal of the startup options was logged for the current prober.
    private let saidStartupOptionsRefused = MutexBox(false)
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
            snapshot.connectTimeout = configuration.connectTimeout
            snapshot.distance = DistanceMeter(budgets: .init(answer: configuration.timeout, connect: configuration.connectTimeout))
            snapshot.fall = configuration.fall
            snapshot.rise = configuration.rise
            snapshot.requireDatabase = configuration.requireDatabase
            snapshot.probeConnection = configuration.probeConnection
            snapshot.freshEvery = configuration.freshEvery
            snapshot.target = prober?.target.display
            // The new prober tries the startup options again.
            snapshot.serverTimeouts = configuration.serverTimeouts ? nil : .off
        }
        saidStartupOptionsRefused.withLock { $0 = false }
        reloaded.signal()
        reloadedOnThread.set()
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
        if splayFirstProbe, settings.withLock({ $0.prober != nil }) {
            // Daemons started together (a fleet's restart, a boot) would otherwise probe, and
            // open connections, in step for as long as they run. (With nothing to probe, the
            // not-configured verdict is given at once.)
            let interval = settings.withLock { $0.interval }
            nextStart += .nanoseconds(Int64.random(in: 0..<max(1, interval.nanoseconds)))
            logger.debug("first probe splayed", metadata: ["in_ms": "\((nextStart - .now).milliseconds)"])
            nextStart = try await sleep(until: nextStart)
        }
        var first = true
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
                let result: ProbeResult
                let transition: Transition?
                let settled: Transition??
                if !first, canTickOnThread(prober) {
                    // Steady state: ticks that change nothing run on the probe's thread, start
                    // to end; it comes back here with the first result that needs more.
                    switch await ticksOnThread(prober: prober, generation: current.generation, from: nextStart) {
                    case .cancelled: return
                    case .reloaded:
                        // Probe at once with the new settings; the task's wake-up for the same
                        // reload is spent.
                        reloaded.consume()
                        nextStart = ContinuousClock.now
                        continue
                    case .needsRecording(let probe, let change, let settledEvent, let startedAt):
                        (result, transition, settled, nextStart) = (probe, change, settledEvent, startedAt)
                    }
                } else {
                    probeStarting()
                    // nil: shutdown cancelled the probe midway; it has no verdict to record.
                    guard let outcome = await feedingWatchdog(for: prober.longestProbe, { await prober.probe() }),
                          let probed = outcome
                    else { return }
                    // A reload changed the target or settings meanwhile: this result is about the
                    // old ones. Probe again at once.
                    guard settings.withLock({ $0.generation }) == current.generation else { continue }
                    result = probed
                    transition = machine.withLock { $0.probeFinished(probed, at: Date(), newID: UUID()) }
                    settled = nil
                }
                _ = await feedingWatchdog(for: Self.settleLimit) { [self] in
                    await settle(probe: result, transition: transition, settled: settled)
                }
            } else {
                // Nothing to probe: a state of its own, recorded once.
                let transition = machine.withLock { $0.targetUnconfigured(at: Date(), newID: UUID()) }
                _ = await feedingWatchdog(for: Self.settleLimit) { [self] in await settle(probe: nil, transition: transition) }
            }
            if first {
                first = false
                let status = statusLine()
                lastStatus.withLock { $0 = (status, .now) }
                notifier.ready(status: status)
                hasReported.withLock { $0 = true }
            } else {
                reportStatusIfChanged()
            }
            notifier.watchdog()
            nextStart = Self.start(after: nextStart, interval: current.interval)
            nextStart = try await sleep(until: nextStart)
        }
    }

    /// How a run of ticks on the probe's thread ended.
    private enum ThreadTicks: Sendable {
        case cancelled
        case reloaded
        /// A result that changes the state, or has events to record or state to save: the
        /// loop records it. `settled` is the flap detector's tick, already taken (`nil`: not
        /// taken). `startedAt` is when that probe was scheduled.
        case needsRecording(ProbeResult, Transition?, settled: Transition??, startedAt: ContinuousClock.Instant)
    }

    /// Ticks on the thread need the watchdog fed between probes only: a probe must end well
    /// within one watchdog period.
    private func canTickOnThread(_ prober: PostgresProber) -> Bool {
        notifier.watchdogPeriod.map { prober.longestProbe + .milliseconds(500) < $0 } ?? true
    }

    /// Sleeps to each probe, probes and publishes the result on one thread of its own, for as
    /// long as the results change nothing: no transition, no flap settling, no event waiting in
    /// memory, no state to save. Such a tick then costs two wake-ups of one thread (the timer
    /// and the server's answer), not a handful of hops between threads and tasks.
    private func ticksOnThread(
        prober: PostgresProber, generation: Int, from start: ContinuousClock.Instant
    ) async -> ThreadTicks {
        let cancellation = ProbeCancellation()
        let outcome = await withTaskCancellationHandler {
            await onOwnThread { [self] in
                threadTicks(prober: prober, generation: generation, from: start, cancellation: cancellation)
            }
        } onCancel: {
            cancellation.cancel()
        }
        return outcome ?? .cancelled
    }

    private func threadTicks(
        prober: PostgresProber, generation: Int, from start: ContinuousClock.Instant, cancellation: ProbeCancellation
    ) -> ThreadTicks {
        // A reload signalled before this run began is seen by the generation check below.
        reloadedOnThread.clear()
        var nextStart = start
        while true {
            guard settings.withLock({ $0.generation }) == generation else { return .reloaded }
            // To the next start, feeding the watchdog when the interval is longer.
            while ContinuousClock.now < nextStart {
                let wake = notifier.watchdogPeriod.map { min(nextStart, ContinuousClock.now + $0) } ?? nextStart
                switch ThreadFlag.sleep(until: wake, wakingOn: [cancellation.threadFlag, reloadedOnThread]) {
                case nil: notifier.watchdog()
                case let flag? where flag === reloadedOnThread:
                    return .reloaded
                case _?: return .cancelled
                }
            }
            let scheduled = nextStart
            probeStarting()
            guard let result = prober.probeBlocking(cancellation: cancellation) else { return .cancelled }
            guard settings.withLock({ $0.generation }) == generation else { return .reloaded }
            if let transition = machine.withLock({ $0.probeFinished(result, at: Date(), newID: UUID()) }) {
                return .needsRecording(result, transition, settled: nil, startedAt: scheduled)
            }
            let state = machine.withLock { $0.state }
            if let settledEvent = flaps.withLock({ $0.tick(at: Date(), state: state, newID: UUID()) }) {
                return .needsRecording(result, nil, settled: .some(settledEvent), startedAt: scheduled)
            }
            if recorder.hasWork(memory: memory) {
                return .needsRecording(result, nil, settled: .some(nil), startedAt: scheduled)
            }
            publish(probe: result, transition: nil)
            reportStatusIfChanged()
            notifier.watchdog()
            nextStart = Self.start(after: nextStart, interval: settings.withLock { $0.interval })
        }
    }

    /// The next probe's start on the fixed-rate schedule; now, when a probe overran it.
    private static func start(after previous: ContinuousClock.Instant, interval: Duration) -> ContinuousClock.Instant {
        max(previous + interval, ContinuousClock.now)
    }

    /// Counts a probe about to start; the fault hook that stalls the loop acts here.
    private func probeStarting() {
        FaultInjection.stallProbeLoop(after: probeCount.withLock { $0 })
        probeCount.withLock { $0 += 1 }
    }

    /// STATUS= when the line changed, or after a reload (whose READY=1 carried its own). A line
    /// that differs only in the last probe's latency is sent at most every `statusRefresh`:
    /// otherwise every probe would wake systemd.
    private func reportStatusIfChanged() {
        guard notifier.isConnected else { return }
        let status = statusLine()
        let now = ContinuousClock.now
        let send = lastStatus.withLock { last -> Bool in
            let changed = last.text != status
                && (Self.withoutLatency(last.text) != Self.withoutLatency(status) || now - last.sentAt >= Self.statusRefresh)
            if changed { last = (status, now) }
            return changed
        }
        let forced = forceStatus.withLock { forced in
            defer { forced = false }
            return forced
        }
        if send || forced { notifier.status(status) }
    }

    static let statusRefresh = Duration.seconds(10)

    /// The status line with the latency figure taken out.
    private static func withoutLatency(_ line: String) -> Substring {
        guard let start = line.firstRange(of: "; last probe ok in ") else { return Substring(line) }
        let rest = line[start.upperBound...]
        return line[..<start.lowerBound] + (rest.firstIndex(of: ";").map { rest[$0...] } ?? "")
    }

    /// Sleeps to the next probe, waking to feed the watchdog when the interval is longer, and
    /// at once when a reload changed the settings. Returns when the probe starts.
    private func sleep(until start: ContinuousClock.Instant) async throws -> ContinuousClock.Instant {
        var start = start
        while ContinuousClock.now < start {
            let wake = notifier.watchdogPeriod.map { min(start, ContinuousClock.now + $0) } ?? start
            if await reloaded.wait(timeout: wake - ContinuousClock.now) {
                reloadedOnThread.clear()
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
    /// `settled`: the flap detector's tick when the caller already took it.
    private func settle(probe: ProbeResult?, transition: Transition?, settled alreadySettled: Transition?? = nil) async {
        var recorded = false
        var announcements: [HealthEvent] = []
        var decision: FlapDetector.Decision?
        if let transition { decision = flaps.withLock { $0.transition(transition) } }
        let state = machine.withLock { $0.state }
        let settled = alreadySettled ?? flaps.withLock { $0.tick(at: Date(), state: state, newID: UUID()) }
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
        var distanceNotice: DistanceMeter.Notice?
        store.update { snapshot in
            snapshot.update(from: machineCopy)
            if let probe {
                snapshot.lastProbe = probe
                snapshot.lastProbeFinished = .now
                if let serverTimeouts = probe.serverTimeouts { snapshot.serverTimeouts = serverTimeouts }
                distanceNotice = snapshot.distance.record(probe)
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
        switch distanceNotice {
        case .connectNearBudget(let took, let budget)?:
            logger.warning(
                "a new connection took \(took.milliseconds) ms of its \(budget.milliseconds) ms budget: a slower moment of the network would make it a timeout; raise connect_timeout for a database this far away",
                metadata: ["connect_ms": "\(took.milliseconds)", "connect_timeout_ms": "\(budget.milliseconds)"]
            )
        case .connectWithinBudget(let took, let budget)?:
            logger.notice("new connections are well within their budget again: \(took.milliseconds) of \(budget.milliseconds) ms")
        case nil:
            break
        }
        if probe?.serverTimeouts == .setLocal, saidStartupOptionsRefused.withLock({ said in defer { said = true }; return !said }) {
            logger.warning(
                "the server refused the daemon's startup options (a pooler in front, such as PgBouncer): connecting without them until the next reload, with statement_timeout and lock_timeout set per probe by SET LOCAL",
                metadata: ["server_timeouts": "set-local"]
            )
        }
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
