import FoundationEssentials
import HealthCore
import Testing

/// The probe loop with `scale_to_zero`, on test time: it probes while the application uses the
/// database, lets it sleep when it does not, and wakes it with the wake budget.
@Suite struct ScaleToZeroLoopTests {
    static var configuration: DaemonConfiguration {
        var configuration = DaemonConfiguration.defaults
        configuration.scaleToZero = true
        configuration.suspendAfter = .seconds(60)
        configuration.wakeEvery = nil
        return configuration
    }

    static func settings(_ configuration: DaemonConfiguration = configuration) -> ProbeLoop.Settings {
        ProbeLoop.Settings(configuration, probing: true)
    }

    /// The application's latest traffic at `now`, for one query a second over `busy`.
    static func application(busy: [Range<Int>]) -> (Duration) -> Duration? {
        { now in
            let second = Int(now.components.seconds)
            let last = busy.compactMap { range -> Int? in
                guard range.lowerBound <= second else { return nil }
                return min(second, range.upperBound - 1)
            }.max()
            return last.map { .seconds($0) }
        }
    }

    @Test func theSettingOffChangesNothing() {
        let plain = ProbeLoop.Settings(DaemonConfiguration.defaults, probing: true)
        #expect(plain.scaleToZero == nil)
        var simulator = LoopSimulator(settings: plain) { _ in .ok() }
        simulator.start()
        simulator.run(until: .seconds(600))
        #expect(simulator.probes.count == 300)
        #expect(simulator.loop.schedule == nil)
    }

    @Test func probesFollowTheApplicationAndStopWithinOneIntervalOfItsLastQuery() throws {
        var simulator = LoopSimulator(settings: Self.settings()) { _ in .ok() }
        simulator.applicationTraffic = Self.application(busy: [0..<120, 540..<600])
        simulator.start()
        simulator.run(until: .seconds(900))
        let starts = simulator.probes.map(\.start)
        // Busy for 0–120 s: every interval.
        #expect(starts.filter { $0 < .seconds(120) }.count == 60)
        // Quiet from 120 s: no probe later than one interval past the last query (119 s).
        let firstStretch = starts.filter { $0 < .seconds(500) }
        #expect(try #require(firstStretch.last) < .seconds(119 + 2), "\(firstStretch.suffix(3))")
        // The second stretch is followed too, and its first probe is a wake: the database had
        // been asleep since 60 s after the last statement.
        let second = simulator.probes.filter { $0.start >= .seconds(500) }
        #expect(second.first?.budget == .wake(.application))
        #expect(second.first.map { $0.start < .seconds(540 + 2) } == true)
        #expect(second.dropFirst().allSatisfy { $0.budget == .usual })
        #expect(try #require(second.last).start < .seconds(599 + 2))
        // Presumed asleep 60 s after the daemon's last probe of the second stretch.
        let lastProbe = try #require(second.last)
        #expect(simulator.loop.schedule?.phase == .asleep(since: simulator.origin + lastProbe.end + .seconds(60), seen: false))
        #expect(simulator.transitions.count == 1, "only the first verdict: sleeping is no transition")
    }

    /// A wake that fails is `unhealthy` at once, although `fall` is 2.
    @Test func aWakeThatFailsIsUnhealthyAtOnce() {
        var simulator = LoopSimulator(settings: Self.settings()) { start in
            start >= .seconds(200) ? .failed(.timeout, in: .seconds(10)) : .ok()
        }
        simulator.applicationTraffic = Self.application(busy: [0..<10, 200..<260])
        simulator.start()
        simulator.run(until: .seconds(230))
        let wake = simulator.probes.first { $0.start >= .seconds(200) }
        #expect(wake?.budget == .wake(.application))
        let unhealthy = simulator.transitions.first { $0.transition.to == .unhealthy }
        #expect(unhealthy != nil)
        #expect(unhealthy.map { $0.at <= .seconds(202 + 10) } == true, "\(String(describing: unhealthy?.at))")
        #expect(unhealthy?.transition.consecutive == 1)
    }

    /// `wake_every`: a sleeping database is woken at that period from its last proof of
    /// starting, and let sleep again.
    @Test func wakeEveryWakesTheSleepingDatabaseAtItsPeriod() {
        var configuration = Self.configuration
        configuration.wakeEvery = .seconds(300)
        var simulator = LoopSimulator(settings: Self.settings(configuration)) { _ in .ok() }
        simulator.applicationTraffic = Self.application(busy: [0..<10])
        simulator.start()
        simulator.run(until: .seconds(1_000))
        let wakes = simulator.probes.filter { $0.budget != .usual }
        #expect(wakes.map(\.budget) == [.wake(.scheduled), .wake(.scheduled), .wake(.scheduled)], "\(wakes)")
        // From the application's last statement (9 s: no login of the daemon's proved a start
        // before), then from each wake.
        let starts = wakes.map { Int($0.start.components.seconds) }
        #expect(starts.count == 3)
        #expect(zip(starts, starts.dropFirst()).allSatisfy { $1 - $0 >= 300 && $1 - $0 <= 302 }, "\(starts)")
    }

    /// While the database sleeps the loop still pings the watchdog and reports its status.
    @Test func aSleepingLoopKeepsTheWatchdogFed() {
        var simulator = LoopSimulator(settings: Self.settings(), watchdogPeriod: .seconds(5)) { _ in .ok() }
        simulator.applicationTraffic = Self.application(busy: [0..<10])
        simulator.start()
        simulator.run(until: .seconds(600))
        #expect(simulator.longestWatchdogGap <= .seconds(5))
        #expect(simulator.probes.count < 10)
    }

    /// A reload that turns the setting on starts following at once; one that turns it off
    /// probes every interval again.
    @Test func reloadsTurnTheModeOnAndOff() {
        var simulator = LoopSimulator(settings: ProbeLoop.Settings(DaemonConfiguration.defaults, probing: true)) { _ in .ok() }
        simulator.applicationTraffic = { _ in nil }
        simulator.reloads = [(.seconds(100), Self.settings()), (.seconds(300), ProbeLoop.Settings(DaemonConfiguration.defaults, probing: true))]
        simulator.start()
        simulator.run(until: .seconds(400))
        let starts = simulator.probes.map(\.start)
        #expect(starts.filter { $0 < .seconds(100) }.count == 50)
        // On: the first decision probes (the start counts as use), then nothing.
        #expect(starts.filter { $0 >= .seconds(104) && $0 < .seconds(300) }.isEmpty, "\(starts.filter { $0 >= .seconds(100) && $0 < .seconds(300) })")
        #expect(starts.filter { $0 >= .seconds(300) }.count == 50)
    }

    /// Falling asleep and waking are recorded as events, in order, each once; the state does
    /// not change for either.
    @Test func aSleepAndAWakeAreRecordedOnceEachAndAreNoTransition() throws {
        var simulator = LoopSimulator(settings: Self.settings()) { _ in .ok(in: .milliseconds(40)) }
        simulator.applicationTraffic = Self.application(busy: [0..<10, 200..<230])
        simulator.start()
        simulator.run(until: .seconds(400))
        let changes = simulator.sleepChanges
        #expect(changes.count == 3, "\(changes)")
        // Presumed asleep 60 s after the daemon's last probe of the first stretch, recorded then.
        let lastOfFirst = try #require(simulator.probes.last { $0.start < .seconds(100) })
        let firstSleep = simulator.wall(lastOfFirst.end + .seconds(60))
        #expect(changes.first?.change == .asleep(since: firstSleep, seen: false, suspendAfter: .seconds(60)))
        // Noted one interval after the idle mark, when no 57P01 came meanwhile.
        #expect(try #require(changes.first).at - (lastOfFirst.end + .seconds(60)) <= .seconds(3))
        // Woken by the application's return: the wake probe's own time is what is reported.
        let wake = try #require(simulator.probes.first { $0.start >= .seconds(200) })
        #expect(changes[1].change == .awake(reason: .application, asleepSince: firstSleep, at: simulator.wall(wake.end), took: .milliseconds(40)))
        #expect(changes[1].at == wake.end)
        if case .asleep = changes[2].change {} else { Issue.record("then asleep again: \(changes[2])") }
        #expect(simulator.transitions.count == 1, "only the first verdict")
    }

    /// The server ending the idle session with 57P01 at the idle mark is a sleep seen, recorded
    /// at the next look, not at the next probe; one before the mark is no sleep and is probed.
    @Test func aSleepSeenBetweenTicksIsRecordedAtOnce() throws {
        var simulator = LoopSimulator(settings: Self.settings()) { _ in .ok() }
        simulator.applicationTraffic = Self.application(busy: [0..<10])
        // The idle mark is 60 s after the last probe. A 57P01 at 30 s is early: the probe that
        // looks into it moves the mark to about 90 s, where the second one comes.
        simulator.keptSessionTerminations = [.seconds(30), .milliseconds(90_500)]
        simulator.start()
        simulator.run(until: .seconds(200))
        #expect(simulator.terminationsSeen.map(\.asleep) == [false, true], "\(simulator.terminationsSeen)")
        // The early one was looked into by a probe at once.
        let early = try #require(simulator.terminationsSeen.first)
        #expect(simulator.probes.contains { $0.start == early.at })
        let changes = simulator.sleepChanges
        #expect(changes.count == 1, "\(changes)")
        let seen = try #require(simulator.terminationsSeen.last)
        #expect(changes.first?.change == .asleep(since: simulator.wall(seen.at), seen: true, suspendAfter: .seconds(60)))
        #expect(changes.first?.at == seen.at)
        #expect(simulator.loop.schedule?.phase == .asleep(since: simulator.origin + seen.at, seen: true))
    }

    /// Rows are written to the database only while it is awake and in use: while following,
    /// and just after a probe reached it, never while it sleeps.
    @Test func rowsWaitWhileTheDatabaseSleeps() {
        var simulator = LoopSimulator(settings: Self.settings()) { _ in .ok() }
        simulator.applicationTraffic = Self.application(busy: [0..<10])
        simulator.start()
        simulator.run(until: .seconds(5))
        #expect(simulator.loop.mayWriteToDatabase(at: simulator.origin + .seconds(5)))
        simulator.run(until: .seconds(100))
        #expect(!simulator.loop.mayWriteToDatabase(at: simulator.origin + .seconds(100)))
        let plain = LoopSimulator(settings: ProbeLoop.Settings(DaemonConfiguration.defaults, probing: true)) { _ in .ok() }
        #expect(plain.loop.mayWriteToDatabase(at: plain.origin + .seconds(1_000)))
    }

    /// After a failed wake the loop probes until the verdict is healthy again (`rise` wants
    /// two successes), not only until one probe gets in, although nobody uses the database.
    @Test func afterAFailedWakeProbingGoesOnUntilHealthy() throws {
        var simulator = LoopSimulator(settings: Self.settings()) { start in
            start >= .seconds(200) && start < .seconds(212) ? .failed(.timeout, in: .seconds(10)) : .ok()
        }
        simulator.applicationTraffic = Self.application(busy: [0..<10, 200..<202])
        simulator.start()
        simulator.run(until: .seconds(400))
        let states = simulator.transitions.map(\.transition.to)
        #expect(states == [.healthy, .unhealthy, .healthy], "\(states)")
        let recovered = try #require(simulator.transitions.last).at
        #expect(recovered < .seconds(240), "healthy again at \(recovered)")
        // And then let sleep: no probe long after the recovery.
        #expect(simulator.probes.filter { $0.start > recovered + .seconds(5) }.isEmpty)
    }
}
