import Foundation
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// The files under examples/ work: the SQL runs against a table the daemon wrote and answers
/// what its comment says, and the Prometheus rules name metrics the daemon serves. (promtool
/// checks and unit-tests the rules themselves: scripts/check-examples.)
/// The files under examples/, for the tests that use them.
enum Examples {
    static func text(_ path: String) throws -> String {
        try String(contentsOf: packageRootDirectory().appendingPathComponent("examples/" + path), encoding: .utf8)
    }

    /// The web app's `system_events` table, as an operator would create it.
    static func systemEventsSchema() throws -> String { try text("sql/system_events.sql") }
}

@Suite(.serialized) struct ExamplesTests {
    func example(_ path: String) throws -> String { try Examples.text(path) }

    /// The statement without comments, its final semicolon and its layout.
    static func statement(_ sql: String) -> String {
        sql.split(separator: "\n").filter { !$0.hasPrefix("--") }.joined(separator: " ")
            .split(whereSeparator: \.isWhitespace).joined(separator: " ")
            .trimmingCharacters(in: CharacterSet(charactersIn: "; "))
    }

    /// The schema operators read is the one the daemon creates when the table is missing.
    @Test func theSchemaIsTheOneTheDaemonCreates() throws {
        #expect(Self.statement(try Examples.systemEventsSchema()) == Self.statement(EventTableWriter.createTable))
    }

    /// A transition as a daemon on `host` records it, `minutesAgo` before now.
    static func row(host: String, to state: HealthState, minutesAgo: Int) -> EventRow {
        let transition = Transition(
            id: UUID(), from: state == .unhealthy ? .healthy : .unhealthy, to: state,
            observedAt: Date().addingTimeInterval(-Double(minutesAgo) * 60), reason: state == .unhealthy ? "timeout" : "ok",
            consecutive: 2, message: "example"
        )
        let event = HealthEvent.transition(transition, origin: .init(host: host, pid: 4_242, version: DaemonVersion.current))
        return EventRow(event, delivery: .direct, seq: 1)
    }

    @Test func theFleetQueriesTellADatabaseIncidentFromAHosts() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        // The table as the example creates it: the daemon writes to it as it is.
        try cluster.psql(example("sql/system_events.sql"))
        let writer = try EventTableWriter(target: ConnectionTarget.parse(cluster.url), environment: [:])
        // Three hosts lose the database in the same minute, 10 minutes ago; one of them again
        // 2 hours ago; one recovery.
        let rows = ["app-1", "app-2", "app-3"].map { Self.row(host: $0, to: .unhealthy, minutesAgo: 10) }
            + [Self.row(host: "app-1", to: .unhealthy, minutesAgo: 120), Self.row(host: "app-2", to: .healthy, minutesAgo: 5)]
        let failure = await writer.insert(rows)
        #expect(failure == nil, "\(String(describing: failure))")
        #expect(try cluster.psql("SELECT count(*) FROM system_events WHERE source = 'dreamnet-healthd'") == "5")

        let hosts = try cluster.psql(example("sql/unhealthy-hosts.sql")).split(separator: "\n").map { $0.split(separator: "|") }
        #expect(hosts.map { String($0[0]) }.sorted() == ["app-1", "app-2", "app-3"], "the last hour only: \(hosts)")
        #expect(hosts.allSatisfy { $0.last == "1" }, "one transition each within the hour: \(hosts)")

        let perMinute = try cluster.psql(example("sql/unhealthy-hosts-per-minute.sql")).split(separator: "\n").map { $0.split(separator: "|") }
        // Ten minutes ago all three in one minute (or two, when the rows straddle a minute's
        // end); two hours ago one.
        #expect(perMinute.map { Int($0[1]) ?? 0 }.reduce(0, +) == 4, "\(perMinute)")
        #expect(perMinute.last.map { $0[1] } == "1", "the oldest minute, two hours ago, one host: \(perMinute)")
    }

    @Test func theRulesNameMetricsTheDaemonServes() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--interval", "200ms", "--fall", "1", "--no-splay", "--probe-connection", "fresh"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try await daemon.waitForStatus(timeout: .seconds(20)) { $0.state == "healthy" }
        // A failed probe, so that the failure counter has a series.
        try await cluster.stop()
        _ = try await daemon.waitForStatus(timeout: .seconds(20)) { $0.state == "unhealthy" }
        let exposition = String(decoding: try await daemon.get("/metrics").body, as: UTF8.self)
        let served = Set(exposition.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap {
            $0.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
        })

        var named: Set<String> = []
        for file in ["prometheus/recording-rules.yml", "prometheus/alerting-rules.yml"] {
            // Metric names as PromQL writes them; recorded series (level:metric:operation) are the rules' own.
            let text = try example(file)
            let tokens = text.split { !($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
            named.formUnion(tokens.filter { $0.hasPrefix("dreamnet_healthd_") && !$0.contains(":") }.map(String.init))
        }
        #expect(!named.isEmpty)
        for name in named.sorted() {
            #expect(served.contains(name), "the rules use \(name), which /metrics does not serve: \(served.sorted())")
        }
    }
}
