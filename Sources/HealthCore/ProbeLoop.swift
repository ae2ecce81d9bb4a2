import struct FoundationEssentials.Date
import struct FoundationEssentials.UUID

/// The probe loop's decisions: when to probe, what a result means, what to record, when to tell
/// systemd, and when to sleep to. Pure: it is handed every input, instant and id it uses, and
/// returns what to do; the adapter (`ProbeService`) does it and reports back.
///
/// The schedule is fixed-rate: probes start one `interval` apart, whatever each took, which is
/// what makes the detection bound hold (a fault is seen by the `fall`-th probe after it, within
/// `DaemonConfiguration.detectionBound`). A probe that overruns the interval delays the next
/// one, which then starts at once; none run concurrently.
///
/// Every input returns a list of actions whose last one is what the adapter waits on:
/// `.sleep` (then `wake`), `.probe` (then `probeFinished` or `probeCancelled`) or `.record`
/// (then `recorded`). The ones before it are done at once, in order.
public struct ProbeLoop: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// What a reload may change.
    public struct Settings: Sendable, Equatable {
        public var interval: Duration
        /// The longest one probe may take; `nil` when no database is configured.
        public var longestProbe: Duration?
        public var thresholds: HealthStateMachine.Thresholds
        public var flaps: FlapDetector.Settings
        /// For a database that sleeps when unused; `nil`: probe at every interval.
        public var scaleToZero: ScaleToZeroSchedule.Settings?
        /// The longest a wake probe may take: the cold start's budget, then the answer's.
        public var longestWakeProbe: Duration?

        public init(
            interval: Duration, longestProbe: Duration?, thresholds: HealthStateMachine.Thresholds, flaps: FlapDetector.Settings,
            scaleToZero: ScaleToZeroSchedule.Settings? = nil, longestWakeProbe: Duration? = nil
        ) {
            self.interval = interval
            self.longestProbe = longestProbe
            self.thresholds = thresholds
            self.flaps = flaps
            self.scaleToZero = scaleToZero
            self.longestWakeProbe = longestWakeProbe
        }

        public init(_ configuration: DaemonConfiguration, probing: Bool) {
            let sleeps = probing && configuration.scaleToZero
            self.init(
                interval: configuration.interval, longestProbe: probing ? configuration.longestProbe : nil,
                thresholds: .init(fall: configuration.fall, rise: configuration.rise),
                flaps: .init(threshold: configuration.flapThreshold, window: configuration.flapWindow),
                scaleToZero: sleeps
                    ? .init(suspendAfter: configuration.suspendAfter, interval: configuration.interval, wakeEvery: configuration.wakeEvery)
                    : nil,
                longestWakeProbe: sleeps ? configuration.wakeTimeout + configuration.timeout : nil
            )
        }
    }

    /// The moment an input happened, on both clocks: the monotonic one for the schedule, the
    /// wall clock for the records.
    public struct Now: Sendable, Equatable {
        public var monotonic: Instant
        public var wall: Date

        public init(monotonic: Instant, wall: Date) {
            self.monotonic = monotonic
            self.wall = wall
        }

        /// The wall-clock time of `instant`, read off this moment's two clocks.
        public func wall(at instant: Instant) -> Date {
            wall.addingTimeInterval(-(monotonic - instant).seconds)
        }

        /// This moment, `duration` earlier, on both clocks.
        public func earlier(by duration: Duration) -> Now {
            Now(monotonic: monotonic - duration, wall: wall.addingTimeInterval(-duration.seconds))
        }
    }

    /// What to record for one tick, decided here and done by the adapter: durably first, then
    /// published, announced, and the memory saved.
    public struct Recording: Sendable, Equatable {
        /// `nil` for a tick with nothing to probe.
        public var probe: ProbeResult?
        /// The state machine's transition, if the result changed the state.
        public var transition: Transition?
        /// What the flap detector made of `transition`.
        public var decision: FlapDetector.Decision?
        /// The flap detector's settled transition: flapping ended in a state other than the
        /// one the table last heard of.
        public var settled: Transition?
        /// Saved with the events, in the same spool transaction.
        public var memory: DaemonMemory
        /// With `scale_to_zero`: the database fell asleep or was woken, oldest first.
        public var sleep: [SleepChange] = []
    }

    /// What systemd is told about the status line.
    public enum StatusNotice: Sendable, Equatable {
        /// The first verdict: READY=1 with the line.
        case ready(String)
        case status(String)
    }

    /// The budgets a probe runs with.
    public enum Budget: Sendable, Equatable {
        case usual
        /// The first login after a sleep: `wake_timeout` to connect, the cold start included;
        /// a failure is the verdict at once.
        case wake(ScaleToZeroSchedule.WakeReason)
    }

    public enum Action: Sendable, Equatable {
        /// Start a probe now. While it runs, feed the watchdog for at most `feedWatchdogFor`
        /// (`nil`: there is no watchdog): a probe that hangs past its bound must end in a restart.
        /// A result of an older `generation` (a reload came meanwhile) is not counted.
        case probe(generation: Int, feedWatchdogFor: Duration?, budget: Budget)
        /// Record this, feeding the watchdog for at most `feedWatchdogFor`; then `recorded`.
        case record(Recording, feedWatchdogFor: Duration?)
        /// A result that changes nothing and leaves nothing to record: publish it only.
        case publish(ProbeResult)
        /// Render the status line and pass it to `statusNotice`.
        case reportStatus
        case pingWatchdog
        /// Sleep until this instant, or until a reload signals; then `wake`.
        case sleep(until: Instant)
    }

    /// Longest the recording of one result (spool fsyncs, alert log, journal) may take before
    /// the watchdog is left to fire: a stuck disk or journal must end in a restart.
    public static let settleLimit = Duration.seconds(30)

    /// A line that differs from the last one sent only in the last probe's latency is sent at
    /// most this often: otherwise every probe would wake systemd.
    public static let statusRefresh = Duration.seconds(10)

    /// How much shorter than the watchdog period a probe must be for steady ticks to run
    /// without the watchdog fed during the probe.
    public static let watchdogMargin = Duration.milliseconds(500)

    public private(set) var machine: HealthStateMachine
    public private(set) var flaps: FlapDetector
    public private(set) var settings: Settings
    /// Bumped by every reload.
    public private(set) var generation = 0
    /// The half of the watchdog's period at which it is pinged; `nil` without a watchdog.
    public let watchdogPeriod: Duration?
    /// Set once READY=1 has been asked for: a reload before that must not send READY=1 early.
    public private(set) var hasReported = false

    /// When the current or next probe is (was) due.
    private var nextStart: Instant
    private var lastPing: Instant
    /// A reload came: the next probe starts at once, whatever the loop is doing.
    private var dueNow = false
    private var lastStatus: (text: String, line: StatusLine, sentAt: Instant)?
    private var forceStatus = false
    /// When to probe a database that sleeps when unused; `nil` without `scale_to_zero`.
    public private(set) var schedule: ScaleToZeroSchedule?
    /// The budget of the probe in flight.
    private var inFlight: Budget = .usual
    /// When the sleep the records last heard of began; `nil` while they say it is awake.
    private var recordedAsleep: Date?
    /// Sleep changes noted and not yet handed to a recording.
    private var pendingSleep: [SleepChange] = []
    /// A recording of sleep changes alone is under way: once it is done the loop decides
    /// again, rather than ending a tick that never probed.
    private var recordingSleepOnly = false

    public init(
        settings: Settings, remembered: DaemonMemory?, watchdogPeriod: Duration?, at now: Instant
    ) {
        self.settings = settings
        self.watchdogPeriod = watchdogPeriod
        self.machine = HealthStateMachine(thresholds: settings.thresholds, restoring: remembered?.health)
        self.flaps = FlapDetector(settings: settings.flaps, restoring: remembered?.flaps)
        self.nextStart = now
        self.lastPing = now
        self.schedule = settings.scaleToZero.map { ScaleToZeroSchedule(settings: $0, at: now) }
    }

    /// What the spool saves with each event.
    public var memory: DaemonMemory { DaemonMemory(health: machine.memory, flaps: flaps.memory) }

    /// Whether steady ticks may run start to end without the watchdog fed during a probe: a
    /// probe must end well within one watchdog period. Not before the first verdict, which
    /// sends READY=1.
    public var mayTickWithoutFeeding: Bool {
        guard hasReported, let longest = settings.longestProbe else { return false }
        return watchdogPeriod.map { longest + Self.watchdogMargin < $0 } ?? true
    }

    // MARK: Inputs

    /// The loop starts. `splay`: start the schedule this far in (a random offset within one
    /// interval, see `DaemonConfiguration.splay`); not used when there is nothing to probe,
    /// whose verdict is given at once.
    public mutating func start(at now: Now, splay: Duration?, newID: () -> UUID) -> [Action] {
        nextStart = now.monotonic
        lastPing = now.monotonic
        if let splay, settings.longestProbe != nil, splay > .zero {
            nextStart = now.monotonic + splay
            return [sleepAction()]
        }
        return tick(at: now, newID: newID)
    }

    /// The sleep ended: its time came, or a reload signalled.
    public mutating func wake(at now: Now, newID: () -> UUID) -> [Action] {
        var actions: [Action] = []
        if watchdogDue(at: now.monotonic) { actions.append(ping(at: now.monotonic)) }
        if dueNow || now.monotonic >= nextStart { return actions + tick(at: now, newID: newID) }
        // A sleep seen between ticks (`keptSessionTerminated`) is recorded now, not at the
        // next probe, which may be an hour away.
        if let sleepOnly = recordSleepChanges() { return actions + [sleepOnly] }
        actions.append(sleepAction())
        return actions
    }

    /// A probe ended with a verdict. `recorderHasWork`: whether the recorder holds events to
    /// retry or state to save for this memory, which makes even a quiet tick a recording one.
    public mutating func probeFinished(
        _ result: ProbeResult, generation probed: Int, at now: Now, recorderHasWork: (DaemonMemory) -> Bool,
        newID: () -> UUID
    ) -> [Action] {
        // A reload changed the target or settings meanwhile: this result is about the old
        // ones. Probe again at once.
        let budget = inFlight
        inFlight = .usual
        guard probed == generation else { return tick(at: now, newID: newID) }
        if result.ok {
            schedule?.probeReached(at: now.monotonic, loggedIn: result.connection == .fresh)
        } else {
            schedule?.probeFailed()
        }
        let wakeReason: ScaleToZeroSchedule.WakeReason? = if case .wake(let reason) = budget { reason } else { nil }
        noteSleepChange(at: now, wake: (wakeReason ?? .application, result.latency))
        let transition = machine.probeFinished(result, at: now.wall, decisive: wakeReason != nil, newID: newID())
        // Until the verdict is healthy again, probes go on at the interval, application or not:
        // a wake retried after a failure gets in once, and `rise` wants more than once.
        if machine.state == .unhealthy { schedule?.probeFailed() }
        var recording = decide(probe: result, transition: transition, at: now.wall, newID: newID)
        recording.sleep = takeSleepChanges()
        if recording.transition == nil, recording.settled == nil, recording.sleep.isEmpty, !recorderHasWork(recording.memory) {
            return [.publish(result)] + tickEnded(at: now.monotonic)
        }
        return [.record(recording, feedWatchdogFor: watchdogPeriod.map { _ in Self.settleLimit })]
    }

    /// The recording asked for by `.record` is done.
    public mutating func recorded(at now: Now, newID: () -> UUID) -> [Action] {
        guard recordingSleepOnly else { return tickEnded(at: now.monotonic) }
        recordingSleepOnly = false
        return [.reportStatus] + wake(at: now, newID: newID)
    }

    /// A reload: the next probe uses these settings, at once.
    public mutating func reload(_ new: Settings, at now: Instant) {
        generation += 1
        machine.thresholds = new.thresholds
        if flaps.settings != new.flaps { flaps = FlapDetector(settings: new.flaps, restoring: flaps.memory) }
        if new.scaleToZero != settings.scaleToZero {
            // The new schedule starts awake and probes at once; it records no wake of its own.
            schedule = new.scaleToZero.map { ScaleToZeroSchedule(settings: $0, at: now) }
            recordedAsleep = nil
            pendingSleep = []
        }
        settings = new
        dueNow = true
    }

    /// With `scale_to_zero`: the latest instant the application's connections to the database
    /// carried data, read before each `wake` (nil: it has none open).
    public mutating func applicationTraffic(lastAt: Instant?) {
        schedule?.applicationTraffic(lastAt: lastAt)
    }

    /// The server ended the kept session with 57P01 while the loop was not probing. Returns
    /// whether that is the database going to sleep (`scale_to_zero`, nobody using it).
    public mutating func keptSessionTerminated(at now: Now) -> Bool {
        guard schedule != nil else { return false }
        let asleep = schedule?.sessionTerminated(at: now.monotonic) ?? false
        // Not a sleep: a probe finds out what it was, now.
        if asleep { noteSleepChange(at: now) } else { dueNow = true }
        return asleep
    }

    /// With `scale_to_zero`: whether a row written to the database now costs it no sleep
    /// (`ScaleToZeroSchedule.mayWrite`); always, without.
    public func mayWriteToDatabase(at now: Instant) -> Bool {
        schedule?.mayWrite(at: now) ?? true
    }

    /// The server ended the idle kept session otherwise than with 57P01 (a crash, a network
    /// that dropped it): a probe finds out at once, and probes go on until one succeeds.
    public mutating func keptSessionLost() {
        guard schedule != nil else { return }
        schedule?.probeFailed()
        dueNow = true
    }

    /// An operator asked for a probe: one runs at once (a wake, if the database sleeps).
    public mutating func requestProbe() {
        schedule?.requestProbe()
        dueNow = true
    }

    /// What to tell systemd about the rendered status line, if anything. `connected`: whether
    /// there is a systemd to tell (outside it, nothing is sent, and a forced line waits).
    public mutating func statusNotice(for line: StatusLine, at now: Instant, connected: Bool) -> StatusNotice? {
        guard hasReported, let last = lastStatus else {
            let text = line.text
            hasReported = true
            lastStatus = (text, line, now)
            return .ready(text)
        }
        guard connected else { return nil }
        let forced = forceStatus
        forceStatus = false
        // The line is compared before it is rendered: at every probe only its latency changes,
        // and that is sent once per `statusRefresh`, so most probes render nothing.
        let worthSending = line != last.line && (!last.line.equalsIgnoringLatency(line) || now - last.sentAt >= Self.statusRefresh)
        guard worthSending || forced else { return nil }
        let text = line.text
        let changed = worthSending && text != last.text
        if changed { lastStatus = (text, line, now) }
        return changed || forced ? .status(text) : nil
    }

    /// After a reload's READY=1 that carried its own STATUS text: the loop's line is sent again
    /// at the next report, changed or not.
    public mutating func resendStatus() {
        forceStatus = true
    }

    // MARK: Decisions

    /// One tick: a probe, or the not-configured verdict.
    private mutating func tick(at now: Now, newID: () -> UUID) -> [Action] {
        nextStart = now.monotonic
        dueNow = false
        guard let longest = settings.longestProbe else {
            // Nothing to probe: a state of its own, recorded once; every tick still records,
            // which retries what the recorder holds.
            let transition = machine.targetUnconfigured(at: now.wall, newID: newID())
            let recording = decide(probe: nil, transition: transition, at: now.wall, newID: newID)
            return [.record(recording, feedWatchdogFor: watchdogPeriod.map { _ in Self.settleLimit })]
        }
        var budget = Budget.usual
        if var schedule {
            let decision = schedule.decide(at: now.monotonic)
            self.schedule = schedule
            noteSleepChange(at: now)
            switch decision {
            case .probe:
                break
            case .wake(let reason):
                budget = .wake(reason)
            case .rest(let until):
                // Nothing sent to the database: the status, the watchdog, and a look again.
                nextStart = until
                if let sleepOnly = recordSleepChanges() { return [sleepOnly] }
                var actions: [Action] = [.reportStatus]
                if watchdogPeriod != nil { actions.append(ping(at: now.monotonic)) }
                actions.append(sleepAction())
                return actions
            }
        }
        inFlight = budget
        guard watchdogPeriod != nil else { return [.probe(generation: generation, feedWatchdogFor: nil, budget: budget)] }
        if case .wake = budget {
            // Longer than a routine probe: always fed, from a ping at its start.
            let feed = settings.longestWakeProbe ?? longest
            let fresh = lastPing == now.monotonic ? [] : [ping(at: now.monotonic)]
            return fresh + [.probe(generation: generation, feedWatchdogFor: feed, budget: budget)]
        }
        // A fed probe is fed one period after its start: pinged at the start, no gap is longer.
        let fresh = mayTickWithoutFeeding || lastPing == now.monotonic ? [] : [ping(at: now.monotonic)]
        return fresh + [.probe(generation: generation, feedWatchdogFor: longest, budget: budget)]
    }

    /// Notes a change between asleep and awake since the records last heard, for the next
    /// recording. `wake`: the probe that just finished, whose login ended a sleep.
    private mutating func noteSleepChange(at now: Now, wake: (reason: ScaleToZeroSchedule.WakeReason, took: Duration)? = nil) {
        guard let schedule else { return }
        switch (recordedAsleep, schedule.phase) {
        case (nil, .asleep(let since, let seen)):
            // A sleep presumed at the idle mark is noted one interval later, unless the server
            // ends the kept session first (as it does, a moment after the mark): then the
            // record says the sleep was seen.
            if !seen, now.monotonic < since + schedule.settings.interval { return }
            let date = now.wall(at: since)
            recordedAsleep = date
            pendingSleep.append(.asleep(since: date, seen: seen, suspendAfter: schedule.settings.suspendAfter))
        case (let since?, .following), (let since?, .resting):
            recordedAsleep = nil
            // Only a login proves it awake, and only a probe's result leaves the asleep phase.
            let (reason, took) = wake ?? (.application, .zero)
            pendingSleep.append(.awake(reason: reason, asleepSince: since, at: now.wall, took: took))
        default:
            break
        }
    }

    private mutating func takeSleepChanges() -> [SleepChange] {
        defer { pendingSleep = [] }
        return pendingSleep
    }

    /// A recording of the pending sleep changes alone, if there are any.
    private mutating func recordSleepChanges() -> Action? {
        guard !pendingSleep.isEmpty else { return nil }
        recordingSleepOnly = true
        let recording = Recording(probe: nil, transition: nil, decision: nil, settled: nil, memory: memory, sleep: takeSleepChanges())
        return .record(recording, feedWatchdogFor: watchdogPeriod.map { _ in Self.settleLimit })
    }

    private mutating func ping(at now: Instant) -> Action {
        lastPing = now
        return .pingWatchdog
    }

    /// What the flap detector makes of a transition, and its tick.
    private mutating func decide(probe: ProbeResult?, transition: Transition?, at wall: Date, newID: () -> UUID) -> Recording {
        let decision = transition.map { flaps.transition($0) }
        let settled = flaps.tick(at: wall, state: machine.state, newID: newID())
        return Recording(probe: probe, transition: transition, decision: decision, settled: settled, memory: memory)
    }

    /// The end of a tick: the status, the watchdog, and the sleep to the next probe.
    private mutating func tickEnded(at now: Instant) -> [Action] {
        var actions: [Action] = [.reportStatus]
        if watchdogPeriod != nil { actions.append(ping(at: now)) }
        // Fixed rate; at once when the probe overran the interval, or a reload came meanwhile.
        nextStart = dueNow ? now : max(nextStart + settings.interval, now)
        actions.append(sleepAction())
        return actions
    }

    /// Timers may fire a little early (a poll timeout rounds to milliseconds): within this of
    /// the ping's time counts as due, so an early wake does not sleep again for a moment.
    static let timerSlack = Duration.milliseconds(10)

    private func watchdogDue(at now: Instant) -> Bool {
        guard let period = watchdogPeriod else { return false }
        return now + Self.timerSlack >= lastPing + period
    }

    /// To the next probe, waking in time to ping the watchdog when the interval is longer.
    private func sleepAction() -> Action {
        guard let period = watchdogPeriod else { return .sleep(until: nextStart) }
        return .sleep(until: min(nextStart, lastPing + period))
    }
}
