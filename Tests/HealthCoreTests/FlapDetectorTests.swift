import Foundation
import Testing
@testable import HealthCore

@Suite struct FlapDetectorTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    func flip(_ index: Int, at seconds: Double) -> Transition {
        let up = index % 2 == 0
        return Transition(
            id: UUID(), from: up ? .unhealthy : .healthy, to: up ? .healthy : .unhealthy,
            observedAt: start.addingTimeInterval(seconds), reason: up ? "ok" : "refused", consecutive: 1, message: "m"
        )
    }

    @Test func aFewTransitionsAreRecorded() {
        var detector = FlapDetector(settings: .init(threshold: 4, window: .seconds(60)))
        for index in 0..<4 {
            guard case .record = detector.transition(flip(index, at: Double(index))) else {
                Issue.record("transition \(index) should be recorded")
                return
            }
        }
        #expect(!detector.isFlapping)
    }

    @Test func aStormBecomesOneFlappingEventThenOneSettledTransition() {
        var detector = FlapDetector(settings: .init(threshold: 4, window: .seconds(60)))
        var recorded = 0
        var flappingEvents: [HealthEvent.FlapReport] = []
        for index in 0..<51 {
            switch detector.transition(flip(index, at: Double(index))) {
            case .record: recorded += 1
            case .startFlapping(let report): flappingEvents.append(report)
            case .suppress: break
            }
            #expect(detector.tick(at: start.addingTimeInterval(Double(index)), state: index % 2 == 0 ? .healthy : .unhealthy, newID: UUID()) == nil)
        }
        #expect(recorded == 4)
        #expect(flappingEvents.count == 1)
        #expect(flappingEvents.first?.transitions == 5)
        // The last flip (50) left it healthy; the table last heard "unhealthy" (flip 3).
        #expect(detector.tick(at: start.addingTimeInterval(50 + 59), state: .healthy, newID: UUID()) == nil)
        let settled = detector.tick(at: start.addingTimeInterval(50 + 60), state: .healthy, newID: UUID())
        #expect(settled?.from == .unhealthy)
        #expect(settled?.to == .healthy)
        #expect(settled?.reason == "settled")
        #expect(!detector.isFlapping)
    }

    @Test func settlingInTheLastRecordedStateRecordsNothing() {
        var detector = FlapDetector(settings: .init(threshold: 2, window: .seconds(10)))
        for index in 0..<6 { _ = detector.transition(flip(index, at: Double(index))) }
        // Flip 2 started the flapping; its "from" (unhealthy, flip 1's "to") is what was recorded last.
        #expect(detector.tick(at: start.addingTimeInterval(20), state: .unhealthy, newID: UUID()) == nil)
        #expect(!detector.isFlapping)
    }

    @Test func transitionsOutsideTheWindowDoNotCount() {
        var detector = FlapDetector(settings: .init(threshold: 2, window: .seconds(10)))
        for index in 0..<10 {
            guard case .record = detector.transition(flip(index, at: Double(index) * 6)) else {
                Issue.record("flip \(index) every 6 s with 2 per 10 s allowed is not flapping")
                return
            }
        }
    }
}

@Suite struct FlapDetectorMemoryTests {
    @Test func aRestartWhileFlappingStillSettles() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var detector = FlapDetector(settings: .init(threshold: 2, window: .seconds(10)))
        for index in 0..<7 {
            let up = index % 2 == 0
            _ = detector.transition(Transition(
                id: UUID(), from: up ? .unhealthy : .healthy, to: up ? .healthy : .unhealthy,
                observedAt: start.addingTimeInterval(Double(index)), reason: "r", consecutive: 1, message: "m"
            ))
        }
        #expect(detector.isFlapping)
        let saved = try JSONDecoder().decode(
            DaemonMemory.self,
            from: JSONEncoder().encode(DaemonMemory(
                health: .init(state: .healthy, since: start, consecutiveFailures: 0, consecutiveSuccesses: 1),
                flaps: detector.memory
            ))
        )
        var restored = FlapDetector(settings: detector.settings, restoring: saved.flaps)
        #expect(restored.isFlapping)
        // The table last heard "unhealthy" (flip 1); the state settled healthy (flip 6).
        let settled = restored.tick(at: start.addingTimeInterval(20), state: .healthy, newID: UUID())
        #expect(settled?.from == .unhealthy)
        #expect(settled?.to == .healthy)
    }
}
