import FoundationEssentials
import HealthCore
import Testing

@Suite struct ScaleToZeroScheduleTests {
    typealias Schedule = ScaleToZeroSchedule
    let start = ContinuousClock.now

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .milliseconds(Int64(seconds * 1_000)) }

    func schedule(suspendAfter: Duration = .seconds(60), interval: Duration = .seconds(2), wakeEvery: Duration? = nil) -> Schedule {
        Schedule(settings: .init(suspendAfter: suspendAfter, interval: interval, wakeEvery: wakeEvery), at: start)
    }

    @Test func theFirstDecisionProbes() {
        var schedule = schedule()
        #expect(schedule.decide(at: start) == .probe)
        #expect(schedule.phase == .following)
    }

    @Test func whileTheApplicationIsBusyEveryDecisionProbes() {
        var schedule = schedule()
        for second in stride(from: 0.0, to: 120, by: 2) {
            schedule.applicationTraffic(lastAt: at(second - 0.7))
            let decision1 = schedule.decide(at: at(second))
            #expect(decision1 == .probe, "at \(second) s")
            schedule.probeReached(at: at(second), loggedIn: false)
        }
    }

    /// The daemon's last probe of a stretch of use is within one interval of the application's
    /// last traffic: the database's idle timer starts at most one interval late.
    @Test(arguments: [0.1, 0.9, 1.5, 1.99])
    func probingStopsWithinOneIntervalOfTheApplicationsLastTraffic(offset: Double) {
        var schedule = schedule()
        let lastTraffic = 100.0
        schedule.applicationTraffic(lastAt: at(lastTraffic))
        var lastProbe: Double?
        for tick in 0..<10 {
            let now = lastTraffic + offset + Double(tick) * 2
            switch schedule.decide(at: at(now)) {
            case .probe:
                lastProbe = now
                schedule.probeReached(at: at(now), loggedIn: false)
            case .rest(let until):
                #expect(until <= at(now + 2), "the next look is within an interval")
            case .wake(let reason):
                Issue.record("woke (\(reason)) at \(now) s")
            }
        }
        let extra = (lastProbe ?? lastTraffic) - lastTraffic
        #expect(extra < 2, "probed \(extra) s after the application's last traffic")
        #expect(schedule.phase == .resting(since: at(lastTraffic + offset + 2)))
    }

    /// Quiet for `suspendAfter` after the last statement (the daemon's last probe counts):
    /// presumed asleep, at that mark.
    @Test func aQuietDatabaseIsPresumedAsleepAtItsOwnTimer() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(9))
        let decision2 = schedule.decide(at: at(10))
        #expect(decision2 == .probe)
        schedule.probeReached(at: at(10), loggedIn: false)
        let decision3 = schedule.decide(at: at(12))
        #expect(decision3 == .rest(until: at(14)))
        // The look just before the timer runs out is brought forward to it.
        let decision4 = schedule.decide(at: at(69))
        #expect(decision4 == .rest(until: at(70)))
        #expect(schedule.phase == .resting(since: at(12)))
        _ = schedule.decide(at: at(70))
        #expect(schedule.phase == .asleep(since: at(70), seen: false))
    }

    @Test func aSessionEndedWhileNobodyUsesTheDatabaseIsItGoingToSleep() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(5))
        let wentToSleep = schedule.sessionTerminated(at: at(61))
        #expect(wentToSleep)
        #expect(schedule.phase == .asleep(since: at(61), seen: true))
    }

    @Test func aSessionEndedWhileTheApplicationIsBusyIsNoSleep() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(30.5))
        let wentToSleep = schedule.sessionTerminated(at: at(31))
        #expect(!wentToSleep)
        #expect(schedule.phase == .following)
    }

    @Test func theApplicationsReturnWakesASleepingDatabaseWithTheWakeBudget() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(3))
        let wentToSleep = schedule.sessionTerminated(at: at(60))
        #expect(wentToSleep)
        let decision5 = schedule.decide(at: at(100))
        #expect(decision5 == .rest(until: at(102)))
        schedule.applicationTraffic(lastAt: at(101))
        let decision6 = schedule.decide(at: at(102))
        #expect(decision6 == .wake(.application))
        // The application is still at it when the wake's login gets in.
        schedule.applicationTraffic(lastAt: at(102.5))
        schedule.probeReached(at: at(103), loggedIn: true)
        #expect(schedule.phase == .following)
        schedule.applicationTraffic(lastAt: at(103.5))
        let decision7 = schedule.decide(at: at(104))
        #expect(decision7 == .probe)
    }

    @Test func theApplicationsReturnBeforeTheTimerIsAPlainProbe() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(5))
        schedule.applicationTraffic(lastAt: at(30))
        let decision8 = schedule.decide(at: at(31))
        #expect(decision8 == .probe)
    }

    @Test func withoutWakeEveryASleepingDatabaseIsLeftAlone() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(0))
        var now = 2.0
        for _ in 0..<2_000 {
            guard case .rest(let until) = schedule.decide(at: at(now)) else {
                Issue.record("probed at \(now) s")
                return
            }
            #expect(until > at(now) || until == at(now) && schedule.phase != .following)
            now += 2
        }
        #expect(schedule.phase == .asleep(since: at(60), seen: false))
    }

    /// A wake at `wakeEvery` after the last proof that the database starts; the proof moves
    /// the next one on, and the database is let sleep again meanwhile.
    @Test func wakeEveryWakesASleepingDatabaseAtItsPeriod() {
        var schedule = schedule(wakeEvery: .seconds(300))
        schedule.applicationTraffic(lastAt: at(0))
        let decision9 = schedule.decide(at: at(1))
        #expect(decision9 == .probe)
        schedule.probeReached(at: at(1), loggedIn: true)
        var wakes: [Double] = []
        var now = 3.0
        while now < 1_000 {
            switch schedule.decide(at: at(now)) {
            case .wake(let reason):
                #expect(reason == .scheduled)
                wakes.append(now)
                schedule.probeReached(at: at(now), loggedIn: true)
            case .probe:
                Issue.record("probed at \(now) s")
            case .rest:
                break
            }
            now += 2
        }
        #expect(wakes == [301, 601, 901])
    }

    @Test func aWakeThatFailsIsTriedAgainAtTheNextDecision() {
        var schedule = schedule(wakeEvery: .seconds(300))
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(2))
        let decision10 = schedule.decide(at: at(300))
        #expect(decision10 == .wake(.scheduled))
        // No login: nothing reached the database.
        let decision11 = schedule.decide(at: at(302))
        #expect(decision11 == .wake(.scheduled))
    }

    @Test func anOperatorsRequestProbesAndWakesWhenAsleep() {
        var schedule = schedule()
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(2))
        schedule.requestProbe()
        let decision12 = schedule.decide(at: at(10))
        #expect(decision12 == .probe)
        schedule.probeReached(at: at(10), loggedIn: true)
        let decision13 = schedule.decide(at: at(12))
        #expect(decision13 == .rest(until: at(14)))
        _ = schedule.decide(at: at(70))
        #expect(schedule.phase == .asleep(since: at(70), seen: false))
        schedule.requestProbe()
        let decision14 = schedule.decide(at: at(80))
        #expect(decision14 == .wake(.requested))
        // Once.
        let decision15 = schedule.decide(at: at(82))
        #expect(decision15 == .rest(until: at(84)))
    }

    /// The issue's pattern on the core alone: busy for the first 2 minutes and for minute 9 of
    /// 15, queries every second, the database suspending 60 s after its last statement. The
    /// daemon adds at most one interval of awake time to each stretch of use.
    @Test func aQuarterHourOfUseAddsAtMostOneIntervalPerStretch() {
        var schedule = schedule(suspendAfter: .seconds(60), interval: .seconds(2))
        let busy: [ClosedRange<Double>] = [0...120, 540...600]
        func applicationQuery(_ second: Double) -> Bool { busy.contains { $0.contains(second) } }
        var lastApplication: Double?
        var lastDaemon: Double?
        var daemonAfterStretch: [Double] = []
        // Half a second out of step with the application, as a real schedule is.
        var next = 0.5
        for tenth in 0..<9_000 {
            let now = Double(tenth) / 10
            if tenth % 10 == 0, applicationQuery(now) { lastApplication = now }
            schedule.applicationTraffic(lastAt: lastApplication.map(at))
            guard now >= next else { continue }
            switch schedule.decide(at: at(now)) {
            case .probe, .wake:
                lastDaemon = now
                schedule.probeReached(at: at(now), loggedIn: false)
                next = now + 2
            case .rest(let until):
                next = Double((until - start) / .milliseconds(1)) / 1_000
            }
            if let lastDaemon, let lastApplication, lastDaemon > lastApplication {
                daemonAfterStretch.append(lastDaemon - lastApplication)
            }
        }
        #expect(!daemonAfterStretch.isEmpty)
        #expect(daemonAfterStretch.allSatisfy { $0 < 2 }, "\(daemonAfterStretch.max() ?? 0) s past the application")
    }
}

@Suite struct ScaleToZeroScheduleCheckTests {
    let start = ContinuousClock.now

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .milliseconds(Int64(seconds * 1_000)) }

    var schedule: ScaleToZeroSchedule {
        ScaleToZeroSchedule(settings: .init(suspendAfter: .seconds(60), interval: .seconds(2), wakeEvery: nil), at: start)
    }

    /// A shutdown ends sessions with the same 57P01 as a suspension: before the idle mark it is
    /// no sleep, and the loop probes until a probe gets in.
    @Test func a57P01BeforeTheIdleMarkIsLookedInto() {
        var schedule = schedule
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(5))
        let wentToSleep = schedule.sessionTerminated(at: at(20))
        #expect(!wentToSleep)
        #expect(schedule.phase == .resting(since: at(5)))
        let first = schedule.decide(at: at(20))
        #expect(first == .probe)
        schedule.probeFailed()
        let second = schedule.decide(at: at(22))
        #expect(second == .probe)
        schedule.probeReached(at: at(24), loggedIn: true)
        let settled = schedule.decide(at: at(26))
        #expect(settled == .rest(until: at(28)))
    }

    /// An outage that ends the application's connections leaves no traffic to follow: after a
    /// failed probe the loop probes on at the interval, to a verdict and after it.
    @Test func aFailedProbeKeepsTheLoopProbingWithoutTheApplication() {
        var schedule = schedule
        schedule.applicationTraffic(lastAt: at(0))
        let first = schedule.decide(at: at(1))
        #expect(first == .probe)
        schedule.probeFailed()
        for second in stride(from: 3.0, through: 301, by: 2) {
            let decision = schedule.decide(at: at(second))
            #expect(decision == .probe, "at \(second) s")
            schedule.probeFailed()
        }
    }

    /// A wake that failed is retried with the wake budget.
    @Test func aFailedWakeIsRetriedAsAWake() {
        var schedule = schedule
        schedule.applicationTraffic(lastAt: at(0))
        _ = schedule.decide(at: at(2))
        _ = schedule.decide(at: at(70))
        schedule.applicationTraffic(lastAt: at(99))
        let wake = schedule.decide(at: at(100))
        #expect(wake == .wake(.application))
        schedule.probeFailed()
        // The application gave up too: no traffic, and the database still asleep for all the
        // daemon knows.
        let retry = schedule.decide(at: at(110))
        #expect(retry == .wake(.retry))
    }

    /// A row is written only while the database is awake and saw a statement within the last
    /// interval: never to a sleeping one, which it would wake.
    @Test func rowsAreWrittenOnlyWhileTheDatabaseIsAwakeAndInUse() {
        var schedule = self.schedule
        schedule.applicationTraffic(lastAt: at(10))
        #expect(schedule.mayWrite(at: at(11)))
        #expect(!schedule.mayWrite(at: at(13)), "quiet for more than an interval: the write would keep it up")
        _ = schedule.decide(at: at(13))
        _ = schedule.decide(at: at(71))
        #expect(schedule.phase == .asleep(since: at(70), seen: false))
        #expect(!schedule.mayWrite(at: at(71)))
        // A wake gets in: the rows go with it.
        #expect(schedule.decide(at: at(100)) == .rest(until: at(102)))
        schedule.requestProbe()
        #expect(schedule.decide(at: at(101)) == .wake(.requested))
        schedule.probeReached(at: at(104), loggedIn: true)
        #expect(schedule.mayWrite(at: at(105)))
        #expect(!schedule.mayWrite(at: at(107)))
    }

    /// The events: information, every key present, and a summary people can read.
    @Test func sleepEventsSayWhatHappened() throws {
        let origin = HealthEvent.Origin(host: "h", pid: 1, version: "v")
        let since = Date(timeIntervalSince1970: 1_800_000_000)
        let asleep = HealthEvent.sleep(.asleep(since: since, seen: true, suspendAfter: .seconds(300)), id: UUID(), origin: origin)
        #expect(asleep.kind == .asleep)
        #expect(asleep.kind.rawValue == "database.health.asleep")
        #expect(asleep.severity == .info)
        #expect(asleep.observedAt == since)
        #expect(asleep.payload == #"{"seen":true,"since":"2027-01-15T08:00:00.000Z","suspend_after_ms":300000}"#)
        #expect(asleep.summary == "database asleep, nobody using it: the server ended the idle session at its idle mark (57P01)")
        let presumed = HealthEvent.sleep(.asleep(since: since, seen: false, suspendAfter: .seconds(300)), id: UUID(), origin: origin)
        #expect(presumed.summary.hasSuffix("presumed: no statement for 5m"))

        let woken = since.addingTimeInterval(754)
        let awake = HealthEvent.sleep(
            .awake(reason: .scheduled, asleepSince: since, at: woken, took: .milliseconds(3_210)), id: UUID(), origin: origin
        )
        #expect(awake.kind.rawValue == "database.health.awake")
        #expect(awake.observedAt == woken)
        #expect(awake.payload == #"{"asleep_ms":754000,"asleep_since":"2027-01-15T08:00:00.000Z","reason":"scheduled","wake_ms":3210}"#)
        #expect(awake.summary == "database awake after 12m 34s asleep (wake_every); the login took 3210 ms")
    }
}
