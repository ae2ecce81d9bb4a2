import FoundationEssentials
import HealthCore
import Logging
import PostgresProbe
import ServiceLifecycle
import SystemdNotify

/// The probe loop's adapter: it does what `ProbeLoop` (HealthCore) decides, probing, recording,
/// publishing and telling systemd, and feeds the results back.
///
/// Ticks that change nothing run on the probe's own thread, start to end, when the watchdog
/// allows (`ProbeLoop.mayTickWithoutFeeding`): such a tick then costs two wake-ups of one
/// thread (the timer and the server's answer), not a handful of hops between threads and
/// tasks. Both runners follow the one schedule in the core; the thread hands back to the task
/// at the first action it does not do (a recording, a reload's new prober).
final class ProbeService: Service {
    /// Everything the loop changes, under one lock. Lock order: this, then the status store's
    /// and the recorder's (taken inside `probeFinished`), never the other way.
    private struct State: Sendable {
        var loop: ProbeLoop
        var prober: PostgresProber?
        /// Probes started, for the fault hook that stalls the loop.
        var probesStarted = 0
        /// The refusal of the startup options was logged for the current prober.
        var saidStartupOptionsRefused = false
        /// With `scale_to_zero`: where the application's use of the database is read.
        var traffic: ApplicationTraffic?
        /// With `scale_to_zero`: the connection budget of a wake.
        var wakeTimeout: Duration
        /// Events go to a database of their own (`events_database_url`), not the probed one,
        /// whose sleep is then no reason to hold them.
        var eventsElsewhere: Bool
    }

    private let state: MutexBox<State>
    private let store: StatusStore
    private let notifier: SystemdNotifier
    private let logger: Logger
    private let transitionHistoryLimit: Int
    private let recorder: EventRecorder
    private let metrics: DaemonMetrics?
    /// Shut while a row would wake the sleeping database, or keep it up.
    private let deliveryGate: DeliveryGate?
    /// Wakes the loop when the settings change, so new settings apply at once: the task, or
    /// the thread that runs steady ticks.
    private let reloaded = WakeupSignal()
    private let reloadedOnThread = ThreadFlag()
    /// Start the schedule at a random offset within one interval (see `DaemonConfiguration.splay`).
    private let splayFirstProbe: Bool
    private let environment: [String: String]

    init(
        prober: PostgresProber?, configuration: DaemonConfiguration, store: StatusStore, recorder: EventRecorder,
        remembered: DaemonMemory?, notifier: SystemdNotifier, logger: Logger, metrics: DaemonMetrics? = nil,
        deliveryGate: DeliveryGate? = nil, transitionHistoryLimit: Int = 1_000, splayFirstProbe: Bool = false,
        environment: [String: String] = [:]
    ) {
        self.splayFirstProbe = splayFirstProbe
        self.metrics = metrics
        self.deliveryGate = deliveryGate
        self.environment = environment
        self.state = MutexBox(State(
            loop: ProbeLoop(
                settings: .init(configuration, probing: prober != nil), remembered: remembered,
                watchdogPeriod: notifier.watchdogPeriod, at: .now
            ),
            prober: prober,
            traffic: Self.traffic(for: prober, configuration, environment: environment, logger: logger),
            wakeTimeout: configuration.wakeTimeout,
            eventsElsewhere: configuration.eventsDatabaseURL != nil
        ))
        self.store = store
        self.recorder = recorder
        self.notifier = notifier
        self.logger = logger
        self.transitionHistoryLimit = transitionHistoryLimit
    }

    /// Where the application's use of the database is read, with `scale_to_zero`.
    private static func traffic(
        for prober: PostgresProber?, _ configuration: DaemonConfiguration, environment: [String: String], logger: Logger
    ) -> ApplicationTraffic? {
        guard configuration.scaleToZero, let prober else { return nil }
        let traffic = ApplicationTraffic(target: prober.target, environment: environment, logger: logger)
        if traffic == nil {
            logger.warning("scale_to_zero needs a TCP host: the application's use of a database on a Unix socket cannot be seen, so it is probed at every interval")
        }
        return traffic
    }

    /// Applies a reloaded configuration: the next probe uses it, at once.
    func apply(_ configuration: DaemonConfiguration, prober: PostgresProber?) {
        let traffic = Self.traffic(for: prober, configuration, environment: environment, logger: logger)
        state.withLock { state in
            state.loop.reload(.init(configuration, probing: prober != nil), at: .now)
            state.prober = prober
            state.saidStartupOptionsRefused = false
            state.traffic = traffic
            state.wakeTimeout = configuration.wakeTimeout
            state.eventsElsewhere = configuration.eventsDatabaseURL != nil
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
        reloaded.signal()
        reloadedOnThread.set()
    }

    /// A probe now (SIGUSR2): a wake, if the database is let sleep.
    func requestProbe() {
        state.withLock { $0.loop.requestProbe() }
        reloaded.signal()
        reloadedOnThread.set()
    }

    /// READY=1 has been sent: a reload before that must not send READY=1 early.
    var hasReported: Bool { state.withLock { $0.loop.hasReported } }

    /// After a reload's READY=1 with a text of its own, the loop's line goes out again.
    func resendStatus() {
        state.withLock { $0.loop.resendStatus() }
    }

    /// What `systemctl status` shows.
    func statusLine() -> String {
        StatusLine(store.read()).text
    }

    func run() async throws {
        // Before any new event, so that the alert log keeps the order of the spool.
        await recorder.recoverAtStart(memory: state.withLock { $0.loop.memory })
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
        await state.withLock { $0.prober }?.close()
        await recorder.finish(memory: state.withLock { $0.loop.memory })
    }

    private static func now() -> ProbeLoop.Now {
        ProbeLoop.Now(monotonic: .now, wall: Date())
    }

    private func probeLoop() async throws {
        var splay: Duration?
        if splayFirstProbe {
            // Daemons started together (a fleet's restart, a boot) would otherwise probe, and
            // open connections, in step for as long as they run.
            let interval = state.withLock { $0.loop.settings.interval }
            splay = .nanoseconds(Int64.random(in: 0..<max(1, interval.nanoseconds)))
        }
        var actions = state.withLock { $0.loop.start(at: Self.now(), splay: splay, newID: UUID.init) }
        if let splay, case .sleep? = actions.last {
            logger.debug("first probe splayed", metadata: ["in_ms": "\(splay.milliseconds)"])
        }
        var lastProber: PostgresProber?
        while true {
            guard let next = performImmediate(&actions) else { return }
            switch next {
            case .sleep(let until):
                if until > .now { _ = await reloaded.wait(timeout: until - .now) }
                try Task.checkCancellation()
                await observeApplication()
                actions = state.withLock { $0.loop.wake(at: Self.now(), newID: UUID.init) }
                publishSleep()

            case .probe(let generation, let feed, let budget):
                // A loop that follows the application reads the socket table before each
                // decision, which the thread's steady ticks do not: the task runs them.
                let (prober, current, unfed, wakeTimeout) = state.withLock {
                    ($0.prober, $0.loop.generation, $0.loop.mayTickWithoutFeeding && $0.loop.schedule == nil, $0.wakeTimeout)
                }
                await closeIfReplaced(&lastProber, by: prober)
                guard let prober, generation == current else {
                    // A reload came between the decision and here: the loop decides again.
                    actions = state.withLock { $0.loop.wake(at: Self.now(), newID: UUID.init) }
                    continue
                }
                if unfed {
                    switch await ticksOnThread(prober: prober, generation: generation, from: next) {
                    case nil: return
                    case let handedBack?:
                        // A reload's wake-up for the task is spent by the thread's.
                        reloaded.consume()
                        actions = handedBack
                    }
                    continue
                }
                probeStarting()
                // nil: shutdown cancelled the probe midway; it has no verdict to record.
                let run: @Sendable () async -> ProbeResult? = switch budget {
                case .usual: { await prober.probe() }
                case .wake(let reason):
                    { [logger] in
                        logger.info("waking the database", metadata: ["reason": "\(reason.rawValue)", "wake_timeout_ms": "\(wakeTimeout.milliseconds)"])
                        var result = await prober.wakeProbe(connectTimeout: wakeTimeout)
                        result?.underWakeBudget = true
                        return result
                    }
                }
                guard let outcome = await feedingWatchdog(for: feed, run), let result = outcome else { return }
                actions = probeFinished(result, generation: generation)
                publishSleep()

            case .record(let recording, let feed):
                // Nothing to probe any more (a reload removed the target): its session goes.
                if state.withLock({ $0.prober == nil }) { await closeIfReplaced(&lastProber, by: nil) }
                _ = await feedingWatchdog(for: feed) { [self] in await settle(recording) }
                actions = state.withLock { $0.loop.recorded(at: Self.now(), newID: UUID.init) }
                publishSleep()

            case .publish, .reportStatus, .pingWatchdog:
                preconditionFailure("done by performImmediate")
            }
        }
    }

    /// A reload replaced the prober: its kept session is closed before the new one connects,
    /// so the daemon never holds two.
    private func closeIfReplaced(_ last: inout PostgresProber?, by current: PostgresProber?) async {
        if let previous = last, current.map({ !$0.sharesConnections(with: previous) }) ?? true {
            await previous.close()
        }
        last = current
    }

    /// Does the actions that take no waiting, in order; returns the one to wait on (`nil`:
    /// none, which the loop never asks for).
    private func performImmediate(_ actions: inout [ProbeLoop.Action]) -> ProbeLoop.Action? {
        for action in actions {
            switch action {
            case .publish(let result): publish(probe: result, transition: nil)
            case .reportStatus: reportStatus()
            case .pingWatchdog: notifier.watchdog()
            case .sleep, .probe, .record:
                actions = []
                return action
            }
        }
        actions = []
        return nil
    }

    private func probeFinished(_ result: ProbeResult, generation: Int) -> [ProbeLoop.Action] {
        let recorder = recorder
        return state.withLock {
            $0.loop.probeFinished(
                result, generation: generation, at: Self.now(), recorderHasWork: { recorder.hasWork(memory: $0) },
                newID: UUID.init
            )
        }
    }

    /// Runs the loop's actions on one thread of its own while it asks for nothing else than
    /// probing with `prober`, publishing, STATUS, the watchdog and sleeping. Returns the
    /// actions it hands back to the task; `nil` when cancelled.
    private func ticksOnThread(
        prober: PostgresProber, generation: Int, from first: ProbeLoop.Action
    ) async -> [ProbeLoop.Action]? {
        let cancellation = ProbeCancellation()
        let outcome = await withTaskCancellationHandler {
            await onOwnThread { [self] in
                threadTicks(prober: prober, generation: generation, from: first, cancellation: cancellation)
            }
        } onCancel: {
            cancellation.cancel()
        }
        return outcome ?? nil
    }

    private func threadTicks(
        prober: PostgresProber, generation: Int, from first: ProbeLoop.Action, cancellation: ProbeCancellation
    ) -> [ProbeLoop.Action]? {
        // A reload signalled before this run began shows in the generation of a later probe.
        _ = reloadedOnThread.clear()
        var actions = [first]
        while true {
            guard let next = performImmediate(&actions) else { return nil }
            switch next {
            case .sleep(let until):
                // Woken by the time, or by a reload (which the loop sees): either way, ask it.
                if let flag = ThreadFlag.sleep(until: until, wakingOn: [cancellation.threadFlag, reloadedOnThread]),
                   flag !== reloadedOnThread {
                    return nil
                }
                actions = state.withLock { $0.loop.wake(at: Self.now(), newID: UUID.init) }
            case .probe(let probed, _, .usual) where probed == generation && state.withLock({ $0.loop.mayTickWithoutFeeding && $0.loop.schedule == nil }):
                probeStarting()
                guard let result = prober.probeBlocking(cancellation: cancellation) else { return nil }
                actions = probeFinished(result, generation: generation)
            default:
                // A recording, or a probe under new settings: the task does it.
                return [next]
            }
        }
    }

    /// With `scale_to_zero`, before the loop decides: the application's latest traffic to the
    /// database, and whether the server ended the idle kept session (a compute that suspends
    /// ends its sessions with 57P01). Both are read without sending anything to the database.
    private func observeApplication() async {
        let (traffic, prober, following) = state.withLock { ($0.traffic, $0.prober, $0.loop.schedule) }
        guard let schedule = following else { return }
        let moment = Self.now()
        let now = moment.monotonic
        let observed = await onOwnThread { () -> (ContinuousClock.Instant?, IdleSessionCheck) in
            let lastAt = traffic.map { $0.lastTraffic(at: now) } ?? now
            // While probes run, they see a session's end themselves.
            let idle: IdleSessionCheck = if case .following = schedule.phase { .none } else { prober?.checkKeptSession() ?? .none }
            return (lastAt, idle)
        }
        guard let (lastAt, idle) = observed else { return }
        let asleep = state.withLock { state -> Bool in
            state.loop.applicationTraffic(lastAt: lastAt)
            guard case .ended(let sqlstate, let ago) = idle else { return false }
            // Only 57P01 can be a sleep; any other end is looked into by a probe at once.
            guard sqlstate == "57P01" else {
                state.loop.keptSessionLost()
                return false
            }
            // Judged by when it came, not when this look found it: a server killed while the
            // application was busy sends the same 57P01, and the look may come a few seconds
            // later, once the application's connections are gone.
            let arrived = ago.map { moment.earlier(by: $0) } ?? moment
            return state.loop.keptSessionTerminated(at: arrived)
        }
        if asleep {
            // The event (`database.health.asleep`) says it to the alert log and the journal.
            logger.debug("the database went to sleep: the server ended the idle session (57P01) at its idle mark, while nobody used it")
        } else if case .ended(let sqlstate, _) = idle {
            logger.info("the server ended the idle kept session before the database's idle mark: probing now", metadata: ["sqlstate": "\(sqlstate ?? "none")"])
        }
    }

    /// The sleep phase on the status socket, and whether events may be delivered now.
    private func publishSleep() {
        let moment = Self.now()
        let now = moment.monotonic
        let (phase, mayWrite) = state.withLock { ($0.loop.schedule?.phase, $0.eventsElsewhere || $0.loop.mayWriteToDatabase(at: now)) }
        deliveryGate?.set(open: mayWrite)
        let sleep: SleepStatus? = switch phase {
        case nil: nil
        case .following?: SleepStatus(phase: .following, since: nil, seen: false, lookedAt: now)
        case .resting(let since)?: SleepStatus(phase: .resting, since: moment.wall(at: since), seen: false, lookedAt: now)
        case .asleep(let since, let seen)?: SleepStatus(phase: .asleep, since: moment.wall(at: since), seen: seen, lookedAt: now)
        }
        let previous = store.read().sleep.map { ($0.phase, $0.seen) }
        store.update { $0.sleep = sleep }
        if let sleep, previous.map({ $0 != (sleep.phase, sleep.seen) }) ?? true {
            // Following and resting alternate with the application's every query; falling asleep
            // and waking are events of their own.
            logger.debug("scale_to_zero: \(sleep.phase.rawValue)", metadata: ["seen": "\(sleep.seen)"])
        }
    }

    /// Counts a probe about to start; the fault hook that stalls the loop acts here.
    private func probeStarting() {
        FaultInjection.stallProbeLoop(after: state.withLock { state in
            defer { state.probesStarted += 1 }
            return state.probesStarted
        })
    }

    /// STATUS= (or READY=1 the first time) when the loop says the line is worth sending.
    private func reportStatus() {
        let line = StatusLine(store.read())
        let connected = notifier.isConnected
        switch state.withLock({ $0.loop.statusNotice(for: line, at: .now, connected: connected) }) {
        case .ready(let text)?: notifier.ready(status: text)
        case .status(let text)?: notifier.status(text)
        case nil: break
        }
    }

    /// Runs `work` while feeding the watchdog for at most `limit` (plus one period), so a long
    /// but bounded step is not mistaken for a stall, and one that hangs past its bound is.
    /// `nil` limit: no watchdog to feed.
    private func feedingWatchdog<T: Sendable>(for limit: Duration?, _ work: @escaping @Sendable () async -> T) async -> T? {
        guard let limit, let period = notifier.watchdogPeriod else { return await work() }
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

    /// Records what the loop decided, durably first, then publishes the verdict and remembers
    /// it. While the state flaps, per-flip rows give way to one flapping event (see `FlapDetector`).
    private func settle(_ recording: ProbeLoop.Recording) async {
        var recorded = false
        var announcements: [HealthEvent] = []
        // Saved with the events below, in the same spool transaction.
        let memory = recording.memory
        if let transition = recording.transition, let decision = recording.decision {
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
        if let settled = recording.settled {
            announcements += await recorder.record(recorder.event(for: settled), memory: memory)
            store.update { $0.append(settled, limit: transitionHistoryLimit) }
            log(settled)
            recorded = true
        }
        for change in recording.sleep {
            // Stored now; the row goes once the database is awake (`DeliveryGate`).
            announcements += await recorder.record(recorder.sleepEvent(change), memory: memory)
            recorded = true
        }
        if !recorded { await recorder.retry(memory: memory) }
        // Durable first (above), then everywhere else: the status socket, then alert log and
        // journal.
        publish(probe: recording.probe, transition: recording.transition)
        for event in announcements { await recorder.announce(event) }
        await recorder.remember(memory)
    }

    private func publish(probe: ProbeResult?, transition: Transition?) {
        let machineCopy = state.withLock { $0.loop.machine }
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
        if probe?.serverTimeouts == .setLocal, state.withLock({ state in
            defer { state.saidStartupOptionsRefused = true }
            return !state.saidStartupOptionsRefused
        }) {
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
}
