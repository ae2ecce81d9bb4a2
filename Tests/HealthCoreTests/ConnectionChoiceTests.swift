import HealthCore
import Testing

@Suite struct ConnectionChoiceTests {
    @Test(arguments: [
        // (mode, kept session's age in ms or nil, fresh_every in ms, choice)
        (ProbeConnection.session, Int64?.some(0), Int64(30_000), ConnectionChoice.keptSession),
        (.session, 29_999, 30_000, .keptSession),
        // At fresh_every exactly the session is due for a new connection.
        (.session, 30_000, 30_000, .newConnection),
        (.session, 90_000, 30_000, .newConnection),
        // Nothing kept: the first probe, or after a failure or a reload.
        (.session, nil, 30_000, .newConnection),
        // fresh mode never uses a kept session, however young.
        (.fresh, 0, 30_000, .newConnection),
        (.fresh, nil, 30_000, .newConnection),
    ])
    func theKeptSessionServesUntilFreshEvery(mode: ProbeConnection, ageMs: Int64?, freshEveryMs: Int64, expected: ConnectionChoice) {
        let choice = ConnectionChoice(
            mode: mode, freshEvery: .milliseconds(freshEveryMs), keptSessionAge: ageMs.map { .milliseconds($0) }
        )
        #expect(choice == expected, "\(mode) with a session \(String(describing: ageMs)) ms old, fresh_every \(freshEveryMs) ms")
    }
}
