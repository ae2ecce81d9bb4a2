import FoundationEssentials
import Testing
@testable import HealthCore

@Suite struct DistanceMeterTests {
    let budgets = DistanceMeter.Budgets(answer: .seconds(1), connect: .seconds(2))

    func probe(connect: Duration?, query: Duration, ok: Bool = true) -> ProbeResult {
        var phases: [PhaseTiming] = []
        if let connect {
            phases += [.init(phase: .resolve, duration: .milliseconds(1)), .init(phase: .connect, duration: .milliseconds(1)),
                       .init(phase: .tls, duration: connect / 2 - .milliseconds(2)), .init(phase: .auth, duration: connect / 2)]
        }
        phases.append(.init(phase: .query, duration: query))
        return ProbeResult(
            startedAt: Date(timeIntervalSince1970: 0), latency: (connect ?? .zero) + query, phases: phases,
            failure: ok ? nil : ProbeFailure(reason: .timeout, phase: .query, message: "x"), connection: connect == nil ? .session : .fresh
        )
    }

    @Test func theRoundTripIsTheShortestRecentAnswer() {
        var meter = DistanceMeter(budgets: budgets)
        #expect(meter.roundTrip == nil && meter.connectHeadroom == nil)
        for query in [180, 152, 300, 151, 160] { _ = meter.record(probe(connect: nil, query: .milliseconds(query))) }
        #expect(meter.roundTrip == .milliseconds(151))
        #expect(meter.lastAnswer == .milliseconds(160))
        #expect(meter.answerHeadroom == .milliseconds(840))
        // Failed probes measure nothing.
        _ = meter.record(probe(connect: nil, query: .milliseconds(5), ok: false))
        #expect(meter.roundTrip == .milliseconds(151))
        // The window moves on: 16 slower answers push the 151 ms one out.
        for _ in 0..<DistanceMeter.window { _ = meter.record(probe(connect: nil, query: .milliseconds(200))) }
        #expect(meter.roundTrip == .milliseconds(200))
    }

    @Test func aNewConnectionNearItsBudgetIsSaidOnceUntilItFallsBack() {
        var meter = DistanceMeter(budgets: budgets)
        #expect(meter.record(probe(connect: .milliseconds(1_000), query: .milliseconds(150))) == nil)
        #expect(meter.connectHeadroom == .milliseconds(1_000))
        #expect(meter.record(probe(connect: .milliseconds(1_600), query: .milliseconds(150)))
            == .connectNearBudget(took: .milliseconds(1_600), budget: .seconds(2)))
        #expect(meter.connectNearBudget)
        // Hovering about the line is not news; nor are kept-session probes.
        #expect(meter.record(probe(connect: .milliseconds(1_400), query: .milliseconds(150))) == nil)
        #expect(meter.record(probe(connect: .milliseconds(1_700), query: .milliseconds(150))) == nil)
        #expect(meter.record(probe(connect: nil, query: .milliseconds(150))) == nil)
        #expect(meter.record(probe(connect: .milliseconds(900), query: .milliseconds(150)))
            == .connectWithinBudget(took: .milliseconds(900), budget: .seconds(2)))
        #expect(!meter.connectNearBudget)
    }
}
