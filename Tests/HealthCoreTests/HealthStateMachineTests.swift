import Foundation
import Testing
@testable import HealthCore

@Suite struct HealthStateMachineTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    func ok(_ latency: Duration = .milliseconds(3)) -> ProbeResult {
        ProbeResult(startedAt: start, latency: latency, phases: [], failure: nil)
    }

    func failed(_ reason: FailureReason = .refused, phase: ProbePhase = .connect, sqlstate: String? = nil) -> ProbeResult {
        ProbeResult(
            startedAt: start, latency: .milliseconds(1), phases: [],
            failure: ProbeFailure(reason: reason, phase: phase, sqlstate: sqlstate, message: "boom")
        )
    }

    @Test func firstVerdictIsImmediate() {
        var healthy = HealthStateMachine(thresholds: .init(fall: 3, rise: 3))
        let up = healthy.probeFinished(ok(), at: start, newID: UUID())
        #expect(up?.from == .starting)
        #expect(up?.to == .healthy)
        #expect(healthy.since == start)

        var unhealthy = HealthStateMachine(thresholds: .init(fall: 3, rise: 3))
        let down = unhealthy.probeFinished(failed(.timeout, phase: .tls), at: start, newID: UUID())
        #expect(down?.to == .unhealthy)
        #expect(down?.reason == "timeout")
        #expect(down?.phase == .tls)
    }

    @Test func fallFailuresInARowAreNeededToGoUnhealthy() {
        var machine = HealthStateMachine(thresholds: .init(fall: 3, rise: 2))
        _ = machine.probeFinished(ok(), at: start, newID: UUID())
        #expect(machine.probeFinished(failed(), at: start, newID: UUID()) == nil)
        #expect(machine.probeFinished(failed(), at: start, newID: UUID()) == nil)
        // A success in between resets the streak.
        #expect(machine.probeFinished(ok(), at: start, newID: UUID()) == nil)
        #expect(machine.probeFinished(failed(), at: start, newID: UUID()) == nil)
        #expect(machine.probeFinished(failed(), at: start, newID: UUID()) == nil)
        let id = UUID()
        let later = start.addingTimeInterval(5)
        let transition = machine.probeFinished(failed(.auth, sqlstate: "28P01"), at: later, newID: id)
        #expect(transition == Transition(
            id: id, from: .healthy, to: .unhealthy, observedAt: later, reason: "auth", phase: .connect,
            sqlstate: "28P01", latency: .milliseconds(1), connection: .fresh, consecutive: 3, message: "boom"
        ))
        #expect(machine.state == .unhealthy)
        #expect(machine.since == later)
        #expect(machine.consecutiveFailures == 3)
        #expect(machine.transitionCount == 2)
    }

    @Test func riseSuccessesInARowAreNeededToRecover() {
        var machine = HealthStateMachine(thresholds: .init(fall: 1, rise: 2))
        _ = machine.probeFinished(failed(), at: start, newID: UUID())
        #expect(machine.probeFinished(ok(), at: start, newID: UUID()) == nil)
        #expect(machine.probeFinished(failed(), at: start, newID: UUID()) == nil)
        #expect(machine.probeFinished(ok(), at: start, newID: UUID()) == nil)
        let back = machine.probeFinished(ok(), at: start, newID: UUID())
        #expect(back?.from == .unhealthy)
        #expect(back?.to == .healthy)
        #expect(back?.reason == "ok")
        #expect(back?.consecutive == 2)
    }

    @Test func steadyStatesProduceNoTransitions() {
        var machine = HealthStateMachine(thresholds: .init(fall: 2, rise: 2))
        _ = machine.probeFinished(ok(), at: start, newID: UUID())
        for _ in 0..<100 {
            #expect(machine.probeFinished(ok(), at: start, newID: UUID()) == nil)
        }
        #expect(machine.transitionCount == 1)
        #expect(machine.consecutiveSuccesses == 101)
    }

    @Test func notConfiguredIsAStateOfItsOwn() {
        var machine = HealthStateMachine(thresholds: .init(fall: 2, rise: 2))
        let transition = machine.targetUnconfigured(at: start, newID: UUID())
        #expect(transition?.from == .starting)
        #expect(transition?.to == .notConfigured)
        #expect(transition?.reason == "not-configured")
        #expect(machine.targetUnconfigured(at: start, newID: UUID()) == nil)
        // Configured again later: the first result decides at once.
        #expect(machine.probeFinished(ok(), at: start, newID: UUID())?.to == .healthy)
    }
}

@Suite struct HealthStateMachineMemoryTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aRestartInAnUnchangedStateRecordsNothing() {
        var before = HealthStateMachine(thresholds: .init(fall: 2, rise: 2))
        let ok = ProbeResult(startedAt: start, latency: .milliseconds(1), phases: [], failure: nil)
        _ = before.probeFinished(ok, at: start, newID: UUID())
        for _ in 0..<10 { _ = before.probeFinished(ok, at: start, newID: UUID()) }
        #expect(before.memory.consecutiveSuccesses == 2)

        var after = HealthStateMachine(thresholds: .init(fall: 2, rise: 2), restoring: before.memory)
        #expect(after.state == .healthy)
        #expect(after.since == start)
        #expect(after.probeFinished(ok, at: start, newID: UUID()) == nil)
    }

    @Test func aStreakInProgressKeepsCounting() {
        let failed = ProbeResult(
            startedAt: start, latency: .milliseconds(1), phases: [],
            failure: ProbeFailure(reason: .refused, phase: .connect, message: "x")
        )
        var machine = HealthStateMachine(
            thresholds: .init(fall: 3, rise: 2),
            restoring: .init(state: .healthy, since: start, consecutiveFailures: 2, consecutiveSuccesses: 0)
        )
        #expect(machine.probeFinished(failed, at: start, newID: UUID())?.to == .unhealthy)
    }

    @Test func withoutMemoryTheFirstTransitionIsFromUnknown() {
        var machine = HealthStateMachine(thresholds: .init(fall: 2, rise: 2), restoring: nil)
        let ok = ProbeResult(startedAt: start, latency: .milliseconds(1), phases: [], failure: nil)
        guard let transition = machine.probeFinished(ok, at: start, newID: UUID()) else {
            Issue.record("the first verdict is a transition")
            return
        }
        let event = HealthEvent.transition(transition, origin: .init(host: "h", pid: 1, version: "v"))
        #expect(event.payload.contains(#""from":"unknown""#))
        #expect(event.severity == .info)
        #expect(event.kind == .transition)
    }
}
