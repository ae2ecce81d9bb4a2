import FoundationEssentials
import HealthCore
import Testing

/// The probe loop's decisions on test time: the schedule, the detection bounds, the watchdog,
/// reloads, what is recorded and what systemd is told.
@Suite struct ProbeLoopScheduleTests {
    static let configuration = DaemonConfiguration.defaults

    static func settings(
        interval: Duration = configuration.interval, fall: Int = configuration.fall, rise: Int = configuration.rise,
        longestProbe: Duration? = configuration.longestProbe
    ) -> ProbeLoop.Settings {
        ProbeLoop.Settings(
            interval: interval, longestProbe: longestProbe, thresholds: .init(fall: fall, rise: rise),
            flaps: .init(threshold: configuration.flapThreshold, window: configuration.flapWindow)
        )
    }

    @Test func probesStartOneIntervalApartWhateverEachTakes() {
        var simulator = LoopSimulator(settings: Self.settings(interval: .seconds(2))) { start in
            .ok(in: .milliseconds(Int64(start.components.seconds % 7) * 100))
        }
        simulator.start()
        simulator.run(until: .seconds(60))
        #expect(simulator.probes.count == 30)
        for (index, probe) in simulator.probes.enumerated() {
            #expect(probe.start == .seconds(2) * index, "probe \(index) started at \(probe.start)")
        }
    }

    @Test func aProbeThatOverrunsTheIntervalIsFollowedAtOnce() {
        var simulator = LoopSimulator(settings: Self.settings(interval: .seconds(2))) { start in
            start == .seconds(4) ? .failed(.timeout, in: .seconds(3)) : .ok()
        }
        simulator.start()
        simulator.run(until: .seconds(12))
        #expect(simulator.probes.map(\.start) == [.seconds(0), .seconds(2), .seconds(4), .seconds(7), .seconds(9), .seconds(11)])
    }

    @Test func aSplayedStartKeepsItsOffsetForEveryProbe() {
        var simulator = LoopSimulator(settings: Self.settings(interval: .seconds(2))) { _ in .ok() }
        simulator.start(splay: .milliseconds(1_370))
        simulator.run(until: .seconds(10))
        #expect(simulator.probes.map(\.start) == (0..<5).map { .milliseconds(1_370) + .seconds(2) * $0 })
        #expect(simulator.notices.first.map { $0.at } == .milliseconds(1_372), "READY=1 after the first verdict")
    }

    @Test func nothingToProbeIsGivenAtOnceAndRecordedOnce() {
        var simulator = LoopSimulator(settings: Self.settings(longestProbe: nil)) { _ in
            Issue.record("nothing is probed")
            return .ok()
        }
        simulator.start(splay: .seconds(1))
        simulator.run(until: .seconds(7))
        #expect(simulator.recordings.map(\.at) == [.zero, .seconds(2), .seconds(4), .seconds(6)], "a recording tick every interval, from the start")
        #expect(simulator.transitions.map(\.transition.to) == [.notConfigured])
        #expect(simulator.notices.first?.notice == .ready("database not-configured; 0 events spooled"))
    }

    /// For every moment a fault can land within an interval, and for faults that fail fast
    /// (refused) and slow (a timeout of the longest probe), the verdict is recorded within
    /// `DaemonConfiguration.detectionBound`; and a recovery within the same bound with `rise`.
    @Test(arguments: [
        (interval: Duration.seconds(2), fall: 2, rise: 2, slow: true),
        (interval: Duration.seconds(2), fall: 2, rise: 2, slow: false),
        (interval: Duration.seconds(10), fall: 3, rise: 1, slow: true),
        (interval: Duration.seconds(1), fall: 3, rise: 2, slow: true),
    ])
    func faultsAndRecoveriesAreReportedWithinTheDetectionBound(interval: Duration, fall: Int, rise: Int, slow: Bool) {
        var configuration = Self.configuration
        configuration.interval = interval
        configuration.fall = fall
        configuration.rise = rise
        let failure: LoopSimulator.Outcome = slow ? .failed(.timeout, in: configuration.longestProbe) : .failed(.refused, in: .milliseconds(1))
        var worstFault = Duration.zero
        var worstRecovery = Duration.zero
        for step in 0..<40 {
            let fault = .seconds(30) + interval * step / 40
            let recovery = fault + .seconds(60)
            var simulator = LoopSimulator(settings: Self.settings(interval: interval, fall: fall, rise: rise)) { start in
                start >= fault && start < recovery ? failure : .ok()
            }
            simulator.start()
            simulator.run(until: recovery + .seconds(60))
            let states = simulator.transitions.map(\.transition.to)
            #expect(states == [.healthy, .unhealthy, .healthy], "fault at \(fault): \(states)")
            guard states.count == 3 else { continue }
            worstFault = max(worstFault, simulator.transitions[1].at - fault)
            worstRecovery = max(worstRecovery, simulator.transitions[2].at - recovery)
        }
        var recoveryBound = configuration
        recoveryBound.fall = rise
        #expect(worstFault <= configuration.detectionBound, "a fault was reported after \(worstFault)")
        #expect(worstRecovery <= recoveryBound.detectionBound, "a recovery was reported after \(worstRecovery)")
        if slow {
            // The bound is the worst case, not slack: a fault just after a probe's start comes close.
            #expect(worstFault > configuration.detectionBound - interval - configuration.longestProbe)
        }
    }

    @Test func theWatchdogIsPingedWithinItsPeriodWhileSleepingAndFedDuringSlowProbes() {
        let period = Duration.seconds(3)
        // A 10 s interval, longer than the period; probes as slow as they may be.
        var configuration = Self.configuration
        configuration.interval = .seconds(10)
        var simulator = LoopSimulator(settings: Self.settings(interval: .seconds(10)), watchdogPeriod: period) { start in
            start.components.seconds % 30 == 0 ? .failed(.timeout, in: configuration.longestProbe) : .ok()
        }
        simulator.start()
        simulator.run(until: .seconds(300))
        #expect(simulator.longestWatchdogGap <= period, "the watchdog went \(simulator.longestWatchdogGap) without a ping")
        // No more pings than the cadence needs: one per period, plus a probe's start and end.
        #expect(simulator.pings.count <= 300 / 3 + 2 * simulator.probes.count + 1)
    }

    @Test func steadyTicksUnfedStillPingWellWithinTheWatchdogTimeout() {
        // WATCHDOG_USEC=30 s, pinged every 10 s; probes of up to 3 s need no feeding.
        let period = Duration.seconds(10)
        var simulator = LoopSimulator(settings: Self.settings(interval: .seconds(25)), watchdogPeriod: period) { start in
            start > .seconds(60) ? .failed(.timeout, in: Self.configuration.longestProbe) : .ok()
        }
        simulator.start()
        simulator.run(until: .seconds(600))
        // systemd's timeout is three periods; an unfed probe adds at most its own length.
        #expect(simulator.longestWatchdogGap <= period + Self.configuration.longestProbe)
        #expect(simulator.longestWatchdogGap < period * 3)
    }

    @Test func steadyTicksRunUnfedOnlyWhenAProbeEndsWellWithinTheWatchdogPeriod() {
        let settings = Self.settings()
        var unwatched = ProbeLoop(settings: settings, remembered: nil, watchdogPeriod: nil, at: .now)
        #expect(!unwatched.mayTickWithoutFeeding, "not before READY=1")
        _ = unwatched.statusNotice(for: StatusLine(state: .healthy, lastProbe: nil, spooled: 0, degradedInMemory: nil), at: .now, connected: true)
        #expect(unwatched.mayTickWithoutFeeding)

        for (period, expected) in [(Duration.seconds(10), true), (settings.longestProbe! + .milliseconds(500), false)] {
            var watched = ProbeLoop(settings: settings, remembered: nil, watchdogPeriod: period, at: .now)
            _ = watched.statusNotice(for: StatusLine(state: .healthy, lastProbe: nil, spooled: 0, degradedInMemory: nil), at: .now, connected: true)
            #expect(watched.mayTickWithoutFeeding == expected, "period \(period)")
        }
    }

    @Test func aProbeIsFedForItsLongestAndARecordingForTheSettleLimit() {
        var simulator = LoopSimulator(settings: Self.settings(), watchdogPeriod: .seconds(5)) { _ in .ok() }
        simulator.start()
        simulator.run(until: .seconds(1))
        let first = simulator.actions.compactMap { entry -> Duration?? in
            if case .probe(_, let feed, _) = entry.action { return feed }
            return nil
        }.first
        #expect(first == .some(Self.configuration.longestProbe))
        let recordFeed = simulator.actions.compactMap { entry -> Duration?? in
            if case .record(_, let feed) = entry.action { return feed }
            return nil
        }.first
        #expect(recordFeed == .some(ProbeLoop.settleLimit))
    }
}

@Suite struct ProbeLoopReloadTests {
    @Test func aReloadWhileAsleepProbesAtOnceWithTheNewInterval() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings(interval: .seconds(10))) { _ in .ok() }
        simulator.reloads = [(.seconds(13), ProbeLoopScheduleTests.settings(interval: .seconds(3)))]
        simulator.start()
        simulator.run(until: .seconds(20))
        #expect(simulator.probes.map(\.start) == [.seconds(0), .seconds(10), .seconds(13), .seconds(16), .seconds(19)])
        #expect(simulator.probes.map(\.generation) == [0, 0, 1, 1, 1])
    }

    @Test func aResultFromBeforeAReloadIsNotCounted() {
        // The old target fails slowly; the reload lands during that probe.
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings(fall: 1)) { start in
            start < .seconds(5) ? .ok() : start < .seconds(7) ? .failed(.timeout, in: .seconds(3)) : .ok()
        }
        simulator.reloads = [(.seconds(7), ProbeLoopScheduleTests.settings(fall: 1))]
        simulator.start()
        simulator.run(until: .seconds(12))
        #expect(simulator.transitions.map(\.transition.to) == [.healthy], "the failure under the old settings changed nothing")
        let afterReload = simulator.probes.first { $0.generation == 1 }
        #expect(afterReload?.start == .seconds(9), "probed again as soon as the stale probe ended")
    }

    @Test func aReloadAppliesNewThresholdsToTheNextProbe() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings(fall: 5)) { start in
            start >= .seconds(4) ? .failed(.refused, in: .milliseconds(1)) : .ok()
        }
        simulator.reloads = [(.seconds(5), ProbeLoopScheduleTests.settings(fall: 1))]
        simulator.start()
        simulator.run(until: .seconds(8))
        let unhealthy = simulator.transitions.first { $0.transition.to == .unhealthy }
        #expect(unhealthy.map { $0.at } == .seconds(5) + .milliseconds(1))
    }

    @Test func aReloadToNothingToProbeRecordsNotConfigured() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings()) { _ in .ok() }
        simulator.reloads = [(.seconds(3), ProbeLoopScheduleTests.settings(longestProbe: nil))]
        simulator.start()
        simulator.run(until: .seconds(6))
        #expect(simulator.transitions.map(\.transition.to) == [.healthy, .notConfigured])
        #expect(simulator.transitions.last.map { $0.at } == .seconds(3))
    }
}

@Suite struct ProbeLoopRecordingTests {
    @Test func aSteadyResultIsPublishedWithoutRecording() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings()) { _ in .ok() }
        simulator.start()
        simulator.run(until: .seconds(20))
        #expect(simulator.recordings.count == 1, "the first verdict only")
        #expect(simulator.published == simulator.probes.count - 1)
    }

    @Test func aRecorderWithWorkMakesEveryTickARecordingOne() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings()) { _ in .ok() }
        simulator.recorderHasWork = { _ in true }
        simulator.start()
        simulator.run(until: .seconds(20))
        #expect(simulator.recordings.count == simulator.probes.count)
        #expect(simulator.published == 0)
        #expect(simulator.recordings.dropFirst().allSatisfy { $0.recording.transition == nil && $0.recording.settled == nil })
    }

    @Test func theMemoryRecordedIsTheOneAfterTheResult() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings(fall: 3)) { start in
            start >= .seconds(2) ? .failed(.refused, in: .milliseconds(1)) : .ok()
        }
        var seen: [Int] = []
        simulator.recorderHasWork = { memory in
            seen.append(memory.health.consecutiveFailures)
            return false
        }
        simulator.start()
        simulator.run(until: .seconds(5))
        #expect(seen == [1, 2])
    }

    @Test func flappingGivesOneEventThenTheSettledState() {
        var configuration = DaemonConfiguration.defaults
        configuration.flapThreshold = 3
        configuration.flapWindow = .seconds(60)
        var settings = ProbeLoop.Settings(configuration, probing: true)
        settings.thresholds = .init(fall: 1, rise: 1)
        // Flips every probe for 20 s, then holds unhealthy.
        var simulator = LoopSimulator(settings: settings) { start in
            start < .seconds(20) && start.components.seconds % 4 == 0 ? .ok() : .failed(.refused, in: .milliseconds(1))
        }
        simulator.start()
        simulator.run(until: .seconds(120))
        let decisions = simulator.recordings.compactMap(\.recording.decision)
        let started = decisions.filter { if case .startFlapping = $0 { true } else { false } }
        #expect(started.count == 1)
        #expect(decisions.contains(.suppress))
        let settled = simulator.recordings.compactMap(\.recording.settled)
        #expect(settled.map(\.to) == [.unhealthy], "one settled transition, to the state that held")
    }
}

@Suite struct ProbeLoopStatusTests {
    @Test func readyCarriesTheFirstVerdictAndAStateChangeIsSentAtOnce() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings(fall: 1)) { start in
            start >= .seconds(4) ? .failed(.refused, in: .milliseconds(1)) : .ok(in: .milliseconds(2))
        }
        simulator.start()
        simulator.run(until: .seconds(5))
        #expect(simulator.notices.map(\.notice) == [
            .ready("database healthy; last probe ok in 2.0 ms; 0 events spooled"),
            .status("database unhealthy; last probe refused during connect; 0 events spooled"),
        ])
        #expect(simulator.notices.last.map { $0.at } == .seconds(4) + .milliseconds(1))
    }

    @Test func aLineThatDiffersOnlyInLatencyIsSentAtMostEveryRefresh() {
        var simulator = LoopSimulator(settings: ProbeLoopScheduleTests.settings(interval: .seconds(1))) { start in
            .ok(in: .milliseconds(1 + start.components.seconds % 5))
        }
        simulator.start()
        simulator.run(until: .seconds(60))
        let times = simulator.notices.map(\.at)
        #expect(times.count >= 5 && times.count <= 7, "\(times)")
        for (earlier, later) in zip(times, times.dropFirst()) {
            #expect(later - earlier >= ProbeLoop.statusRefresh)
        }
    }

    @Test func aResentLineGoesOutAtTheNextReportOnlyWhereSystemdListens() {
        var line = StatusLine(state: .healthy, lastProbe: .ok(latency: .milliseconds(3)), spooled: 0, degradedInMemory: nil)
        var loop = ProbeLoop(settings: ProbeLoopScheduleTests.settings(), remembered: nil, watchdogPeriod: nil, at: .now)
        #expect(loop.statusNotice(for: line, at: .now, connected: false) == .ready(line.text), "READY=1 whether or not anyone listens")
        #expect(loop.hasReported)
        #expect(loop.statusNotice(for: line, at: .now, connected: true) == nil)
        loop.resendStatus()
        #expect(loop.statusNotice(for: line, at: .now, connected: false) == nil)
        #expect(loop.statusNotice(for: line, at: .now, connected: true) == .status(line.text))
        #expect(loop.statusNotice(for: line, at: .now, connected: true) == nil)
        line.degradedInMemory = 2
        #expect(loop.statusNotice(for: line, at: .now, connected: true) == .status(line.text))
    }

    /// A database let sleep says so on the STATUS line, and the change is sent at once.
    @Test func aSleepIsOnTheLineAndSentAtOnce() {
        var line = StatusLine(state: .healthy, lastProbe: .ok(latency: .milliseconds(3)), spooled: 0, degradedInMemory: nil)
        var loop = ProbeLoop(settings: ProbeLoopScheduleTests.settings(), remembered: nil, watchdogPeriod: nil, at: .now)
        let start = ContinuousClock.now
        _ = loop.statusNotice(for: line, at: start, connected: true)
        line.asleep = true
        #expect(line.text == "database healthy; asleep; last probe ok in 3.0 ms; 0 events spooled")
        let notice = loop.statusNotice(for: line, at: start + .seconds(1), connected: true)
        #expect(notice == .status(line.text))
        line.asleep = false
        let awake = loop.statusNotice(for: line, at: start + .seconds(2), connected: true)
        #expect(awake == .status("database healthy; last probe ok in 3.0 ms; 0 events spooled"))
    }

    @Test func theLineComparesWithoutItsLatency() {
        let fast = StatusLine(state: .healthy, lastProbe: .ok(latency: .milliseconds(1)), spooled: 3, degradedInMemory: nil)
        var slow = fast
        slow.lastProbe = .ok(latency: .milliseconds(900))
        #expect(fast.equalsIgnoringLatency(slow))
        #expect(fast != slow)
        var failed = fast
        failed.lastProbe = .failed(reason: "timeout", phase: .query)
        #expect(!fast.equalsIgnoringLatency(failed))
        var spooled = fast
        spooled.spooled = 4
        #expect(!fast.equalsIgnoringLatency(spooled))
        #expect(slow.text == "database healthy; last probe ok in 900.0 ms; 3 events spooled")
    }
}
