import FoundationEssentials
import HealthCore

/// Runs a `ProbeLoop` against a scripted database on test time: it does what the loop asks the
/// way `ProbeService` does (probes take the time the script says, sleeps end at their instant
/// or at a scheduled reload, the watchdog is fed during probes and recordings the loop asks to
/// feed), and keeps a log of what happened when. Hours of schedule take milliseconds.
struct LoopSimulator {
    /// What the scripted database does for a probe that starts at an offset.
    struct Outcome {
        var failure: FailureReason?
        var duration: Duration

        static func ok(in duration: Duration = .milliseconds(2)) -> Outcome { Outcome(failure: nil, duration: duration) }
        static func failed(_ reason: FailureReason, in duration: Duration) -> Outcome { Outcome(failure: reason, duration: duration) }
    }

    struct Probe: Equatable {
        var start: Duration
        var end: Duration
        var generation: Int
        var ok: Bool
        var budget: ProbeLoop.Budget = .usual
    }

    /// The loop's instants are offsets from here; the wall clock runs from `wallOrigin`.
    let origin = ContinuousClock.now
    let wallOrigin = Date(timeIntervalSince1970: 1_800_000_000)
    private(set) var now: Duration = .zero
    var loop: ProbeLoop
    var script: (Duration) -> Outcome
    var recorderHasWork: (DaemonMemory) -> Bool = { _ in false }
    /// Whether systemd listens (NOTIFY_SOCKET set).
    var connected = true
    /// Reloads to apply at these offsets.
    var reloads: [(at: Duration, settings: ProbeLoop.Settings)] = []
    /// With `scale_to_zero`: the offset of the application's latest traffic at an offset
    /// (`nil`: none open), as `ProbeService` reads it from the socket table before each wake.
    var applicationTraffic: ((Duration) -> Duration?)?
    /// With `scale_to_zero`: offsets at which the server ends the idle kept session with
    /// 57P01, seen at the next wake as `ProbeService` sees them.
    var keptSessionTerminations: [Duration] = []
    /// What `keptSessionTerminated` answered for each termination seen: whether it was a sleep.
    private(set) var terminationsSeen: [(at: Duration, asleep: Bool)] = []

    private(set) var probes: [Probe] = []
    private(set) var pings: [Duration] = []
    private(set) var notices: [(at: Duration, notice: ProbeLoop.StatusNotice)] = []
    private(set) var recordings: [(at: Duration, recording: ProbeLoop.Recording)] = []
    private(set) var published = 0
    /// Every action the loop asked for, in order, with when.
    private(set) var actions: [(at: Duration, action: ProbeLoop.Action)] = []
    private var lastResult: ProbeResult?
    private let ids = IDSource()
    private var pending: [ProbeLoop.Action] = []

    init(settings: ProbeLoop.Settings, watchdogPeriod: Duration? = nil, remembered: DaemonMemory? = nil, script: @escaping (Duration) -> Outcome) {
        loop = ProbeLoop(settings: settings, remembered: remembered, watchdogPeriod: watchdogPeriod, at: origin)
        self.script = script
    }

    /// The sleep changes recorded, with the offset of the recording.
    var sleepChanges: [(at: Duration, change: SleepChange)] {
        recordings.flatMap { entry in entry.recording.sleep.map { (entry.at, $0) } }
    }

    /// The wall-clock date of an offset.
    func wall(_ offset: Duration) -> Date { wallOrigin + offset.seconds }

    /// The transitions recorded, with the offset of the recording.
    var transitions: [(at: Duration, transition: Transition)] {
        recordings.compactMap { entry in entry.recording.transition.map { (entry.at, $0) } }
    }

    /// The longest time the watchdog went without a ping, from the start to now.
    var longestWatchdogGap: Duration {
        zip([Duration.zero] + pings, pings + [now]).map { $1 - $0 }.max() ?? now
    }

    mutating func start(splay: Duration? = nil) {
        pending = loop.start(at: moment, splay: splay, newID: ids.next)
    }

    /// Does what the loop asks until test time reaches `end`.
    mutating func run(until end: Duration) {
        while now < end {
            guard let next = performImmediate() else { return }
            switch next {
            case .sleep(let until):
                let wake = min(until - origin, end)
                if let reload = reloads.first, reload.at <= wake {
                    reloads.removeFirst()
                    now = max(now, reload.at)
                    loop.reload(reload.settings, at: instant)
                } else {
                    now = max(now, wake)
                    // Out of test time, still asleep: taken up by the next run.
                    if wake == end, until - origin > end {
                        pending = [next]
                        return
                    }
                }
                if let applicationTraffic { loop.applicationTraffic(lastAt: applicationTraffic(now).map { origin + $0 }) }
                if let termination = keptSessionTerminations.first, termination <= now {
                    keptSessionTerminations.removeFirst()
                    terminationsSeen.append((now, loop.keptSessionTerminated(at: moment)))
                }
                pending = loop.wake(at: moment, newID: ids.next)

            case .probe(let generation, let feedLimit, let budget):
                let start = now
                let outcome = script(start)
                let end = start + outcome.duration
                feed(during: start, end, limit: feedLimit)
                while let reload = reloads.first, reload.at < end {
                    reloads.removeFirst()
                    now = max(now, reload.at)
                    loop.reload(reload.settings, at: instant)
                }
                now = end
                probes.append(Probe(start: start, end: end, generation: generation, ok: outcome.failure == nil, budget: budget))
                var result = ProbeResult(
                    startedAt: wallOrigin + start.seconds, latency: outcome.duration, phases: [],
                    failure: outcome.failure.map { ProbeFailure(reason: $0, phase: .connect, message: "scripted \($0.rawValue)") }
                )
                if case .wake = budget { result.connection = .fresh }
                lastResult = result
                let hasWork = recorderHasWork
                pending = loop.probeFinished(result, generation: generation, at: moment, recorderHasWork: hasWork, newID: ids.next)

            case .record(let recording, _):
                recordings.append((now, recording))
                if let probe = recording.probe { lastResult = probe }
                pending = loop.recorded(at: moment, newID: ids.next)

            case .publish, .reportStatus, .pingWatchdog:
                preconditionFailure("done by performImmediate")
            }
        }
    }

    /// The line `ProbeService` renders from the published state.
    var statusLine: StatusLine {
        StatusLine(
            state: loop.machine.state,
            lastProbe: lastResult.map { $0.ok ? .ok(latency: $0.latency) : .failed(reason: $0.reasonText, phase: $0.failure?.phase) },
            spooled: 0, degradedInMemory: nil
        )
    }

    private var instant: ContinuousClock.Instant { origin + now }
    private var moment: ProbeLoop.Now { ProbeLoop.Now(monotonic: instant, wall: wallOrigin + now.seconds) }

    /// Ids in order, so that a run is the same every time.
    final class IDSource {
        private var issued: UInt64 = 0

        func next() -> UUID {
            issued += 1
            let bytes = withUnsafeBytes(of: issued.bigEndian) { Array($0) }
            return UUID(uuid: (0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]))
        }
    }

    private mutating func performImmediate() -> ProbeLoop.Action? {
        while !pending.isEmpty {
            let action = pending.removeFirst()
            actions.append((now, action))
            switch action {
            case .publish(let result):
                published += 1
                lastResult = result
            case .reportStatus:
                if let notice = loop.statusNotice(for: statusLine, at: instant, connected: connected) {
                    notices.append((now, notice))
                }
            case .pingWatchdog:
                pings.append(now)
            case .sleep, .probe, .record:
                return action
            }
        }
        return nil
    }

    /// The adapter's feeding while a probe runs: a ping every period, for at most the limit plus
    /// one period; none for a steady tick the adapter runs unfed.
    private mutating func feed(during start: Duration, _ end: Duration, limit: Duration?) {
        guard let limit, let period = loop.watchdogPeriod, !loop.mayTickWithoutFeeding else { return }
        var at = start + period
        while at < end, at <= start + limit + period {
            pings.append(at)
            at += period
        }
    }
}
