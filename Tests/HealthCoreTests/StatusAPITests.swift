import Foundation
import Testing
@testable import HealthCore

@Suite struct StatusAPITests {
    let wall = Date(timeIntervalSince1970: 1_800_000_000)
    let started = ContinuousClock.now

    func snapshot(_ state: HealthState, requireDatabase: Bool = false) -> StatusSnapshot {
        var configuration = DaemonConfiguration.defaults
        configuration.requireDatabase = requireDatabase
        var snapshot = StatusSnapshot(
            configuration: configuration, target: "postgresql://app@db:5432/app", version: "1.2.3", pid: 42,
            startedAt: wall, startedInstant: started
        )
        snapshot.state = state
        return snapshot
    }

    var clocks: StatusAPI.Clocks { .init(wall: wall.addingTimeInterval(10), monotonic: started + .seconds(10)) }

    func decode<T: Decodable>(_ type: T.Type, _ reply: StatusAPI.Reply) throws -> T {
        try JSONDecoder().decode(type, from: Data(reply.body))
    }

    @Test(arguments: [
        (HealthState.healthy, false, 200), (.unhealthy, false, 503), (.notConfigured, false, 200),
        (.notConfigured, true, 503), (.starting, false, 200), (.healthy, true, 200),
    ])
    func healthCodes(state: HealthState, requireDatabase: Bool, status: Int) throws {
        let reply = StatusAPI.respond(method: "GET", uri: "/health", snapshot: snapshot(state, requireDatabase: requireDatabase), clocks: clocks)
        #expect(reply.status == status)
        let document = try decode(HealthDocument.self, reply)
        #expect(document.ok == (status == 200))
        #expect(document.service == "dreamnet-healthd")
        #expect(document.database == state.rawValue)
        #expect(document.uptime == 10)
        #expect(document.timestamp == "2027-01-15T08:00:10.000Z")
    }

    @Test func statusCarriesTheLastProbeAndItsAge() throws {
        var state = snapshot(.unhealthy)
        state.lastProbe = ProbeResult(
            startedAt: wall, latency: .microseconds(1_000_400),
            phases: [.init(phase: .connect, duration: .milliseconds(1)), .init(phase: .tls, duration: .microseconds(999_400))],
            failure: ProbeFailure(reason: .timeout, phase: .tls, message: "no answer")
        )
        state.lastProbeFinished = started + .seconds(7)
        state.consecutiveFailures = 3
        let document = try decode(StatusDocument.self, StatusAPI.respond(method: "GET", uri: "/status", snapshot: state, clocks: clocks))
        #expect(document.state == "unhealthy")
        #expect(document.target == "postgresql://app@db:5432/app")
        #expect(document.lastProbe?.ok == false)
        #expect(document.lastProbe?.reason == "timeout")
        #expect(document.lastProbe?.phase == "tls")
        #expect(document.lastProbe?.latencyMs == 1000.4)
        #expect(document.lastProbe?.ageMs == 3_000)
        #expect(document.lastProbe?.phasesMs == ["connect": 1, "tls": 999.4])
        #expect(document.consecutiveFailures == 3)
        #expect(document.intervalMs == 2_000)
        #expect(document.timeoutMs == 1_000)
        // Two intervals and the longest probe (a new connection's budget and the answer's).
        #expect(document.staleAfterMs == 7_000)
        #expect(document.connectTimeoutMs == 2_000)
        #expect(document.pid == 42)
        #expect(!document.isStale)
    }

    @Test func staleness() throws {
        var state = snapshot(.healthy)
        state.lastProbe = ProbeResult(startedAt: wall, latency: .milliseconds(2), phases: [], failure: nil)
        state.lastProbeFinished = started + .seconds(6)
        #expect(try !decode(StatusDocument.self, StatusAPI.respond(method: "GET", uri: "/status", snapshot: state, clocks: clocks)).isStale)
        state.lastProbeFinished = started + .milliseconds(2_999)
        #expect(try decode(StatusDocument.self, StatusAPI.respond(method: "GET", uri: "/status", snapshot: state, clocks: clocks)).isStale)
    }

    @Test func eventsNewestFirstWithALimit() throws {
        var state = snapshot(.healthy)
        for index in 0..<5 {
            state.append(
                Transition(id: UUID(), from: .healthy, to: .unhealthy, observedAt: wall.addingTimeInterval(Double(index)), reason: "r\(index)", consecutive: 1, message: "m"),
                limit: 3
            )
        }
        state.transitionCount = 5
        let all = try decode(EventsDocument.self, StatusAPI.respond(method: "GET", uri: "/events", snapshot: state, clocks: clocks))
        #expect(all.events.map(\.reason) == ["r4", "r3", "r2"])
        #expect(all.total == 5)
        let two = try decode(EventsDocument.self, StatusAPI.respond(method: "GET", uri: "/events?limit=2", snapshot: state, clocks: clocks))
        #expect(two.events.map(\.reason) == ["r4", "r3"])
        for bad in ["/events?limit=0", "/events?limit=x", "/events?limit=1001", "/events?limit"] {
            #expect(StatusAPI.respond(method: "GET", uri: bad, snapshot: state, clocks: clocks).status == 400)
        }
    }

    @Test func unknownPathsAndMethods() {
        let state = snapshot(.healthy)
        #expect(StatusAPI.respond(method: "GET", uri: "/nope", snapshot: state, clocks: clocks).status == 404)
        let post = StatusAPI.respond(method: "POST", uri: "/status", snapshot: state, clocks: clocks)
        #expect(post.status == 405)
        #expect(post.allow == "GET, HEAD")
        #expect(StatusAPI.respond(method: "HEAD", uri: "/health", snapshot: state, clocks: clocks).status == 200)
    }
}

@Suite struct TimestampTests {
    @Test func formatParseFormatIsStable() {
        for milliseconds in stride(from: 1_700_000_000_000.0, to: 1_700_000_000_000.0 + 2_000, by: 1) {
            let text = Timestamp.format(Date(timeIntervalSince1970: milliseconds / 1_000))
            let again = Timestamp.parse(text).map(Timestamp.format)
            #expect(again == text)
            if again != text { break }
        }
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1.2344)) == "1970-01-01T00:00:01.234Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1.2346)) == "1970-01-01T00:00:01.235Z")
    }
}

@Suite struct ProcessStatisticsTests {
    /// A command name with spaces and parentheses of its own: fields count from the last `)`.
    @Test func procSelfStatIsReadFromAfterTheCommandName() throws {
        let stat = "4242 (dreamnet (x) d) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 9 0 123400 663252992 8571 18446744073709551615 1 1 0 0 0 0 0 4096 17922 0 0 0 17 1 0 0 0 0 0\n"
        let figures = try #require(ProcessStatistics.parse(stat: stat, bootTime: 1_700_000_000, clockTicks: 100, pageSize: 4_096))
        #expect(figures.cpuSeconds == 3)
        #expect(figures.virtualBytes == 663_252_992)
        #expect(figures.residentBytes == 8_571 * 4_096)
        #expect(figures.startTime == 1_700_001_234)
        #expect(ProcessStatistics.parse(stat: "4242 (short) S 1 2", bootTime: 0, clockTicks: 100, pageSize: 4_096) == nil)
        #expect(ProcessStatistics.parse(stat: "", bootTime: 0, clockTicks: 100, pageSize: 4_096) == nil)
    }

    @Test func bootTimeIsTheBtimeLine() {
        #expect(ProcessStatistics.bootTime(procStat: "cpu  1 2 3\nintr 5\nbtime 1764800000\nprocesses 9\n") == 1_764_800_000)
        #expect(ProcessStatistics.bootTime(procStat: "cpu 1\n") == nil)
    }
}
