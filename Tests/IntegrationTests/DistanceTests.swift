import Foundation
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// A database far away: TLS `verify-full` with SCRAM and channel binding through a relay that
/// delays each direction, as a database in another region is.
@Suite(.serialized) struct DistanceTests {
    /// The phases of a new connection grow with the round trip, the answer takes one round trip,
    /// and a connection that needs more than its budget is a timeout in that budget's words.
    @Test func aNewConnectionCostsAboutSevenRoundTripsAndTheAnswerOne() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.destroy() }
        let cluster = try await TestPostgres.start(tls: certificates)
        defer { cluster.destroy() }
        let relay = try LatencyRelay(upstreamPort: cluster.port, delay: .milliseconds(25))
        defer { relay.close() }
        let url = cluster.scramURL(port: relay.port)

        for delay in [25, 75] {
            relay.setDelay(.milliseconds(Int64(delay)))
            let roundTrip = Duration.milliseconds(Int64(2 * delay))
            let prober = try PostgresProber(target: ConnectionTarget.parse(url), timeout: .seconds(1))
            let result = try #require(await prober.probe())
            #expect(result.ok, "at \(roundTrip): \(String(describing: result.failure))")
            let query = try #require(result.phases.last { $0.phase == .query }?.duration)
            #expect(query >= roundTrip && query < roundTrip + .milliseconds(60), "answer \(query) at \(roundTrip)")
            let connect = result.phases.filter { $0.phase != .query }.reduce(Duration.zero) { $0 + $1.duration }
            // SSLRequest, TLS (one round trip in 1.3), startup, SASL first and final: at least five.
            #expect(connect >= roundTrip * 5 && connect < roundTrip * 8 + .milliseconds(150), "connect \(connect) at \(roundTrip)")
        }

        // 400 ms away: a new connection needs more than the default 2 s, and says which budget.
        relay.setDelay(.milliseconds(200))
        let short = try PostgresProber(target: ConnectionTarget.parse(url), timeout: .seconds(1))
        let late = try #require(await short.probe())
        #expect(late.failure?.reason == .timeout)
        #expect(late.failure?.message.contains("no connection within 2000 ms") == true, "\(String(describing: late.failure))")
        #expect(late.latency >= .seconds(2) && late.latency < .milliseconds(2_200))
        // With the budget raised, it connects.
        let patient = try PostgresProber(
            target: ConnectionTarget.parse(url), timeout: .seconds(1), policy: ProbePolicy(connectTimeout: .seconds(4))
        )
        let far = try #require(await patient.probe())
        #expect(far.ok, "\(String(describing: far.failure))")
    }

    /// 150 ms of round trip at the defaults and a 1 s interval, in both connection modes: healthy
    /// from the first verdict, no failed probe, and the distance measured in `/status`.
    @Test(arguments: [ProbeConnection.session, .fresh])
    func aDatabase150msAwayRaisesNoFalseAlarm(mode: ProbeConnection) async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.destroy() }
        let cluster = try await TestPostgres.start(tls: certificates)
        defer { cluster.destroy() }
        let relay = try LatencyRelay(upstreamPort: cluster.port, delay: .milliseconds(75))
        defer { relay.close() }
        let daemon = try RunningDaemon(
            ["--interval", "1s", "--no-splay", "--probe-connection", mode.rawValue, "--fresh-every", "3s"],
            environment: ["DATABASE_URL": cluster.scramURL(port: relay.port)]
        )
        let first = try #require(try await daemon.waitForStatus(timeout: .seconds(15)) { $0.state != "starting" })
        #expect(first.state == "healthy", "\(String(describing: first.lastProbe))")
        try await Task.sleep(for: .seconds(10))
        let status = try await daemon.status()
        #expect(status.state == "healthy")
        #expect(status.transitions == 1)
        #expect(status.consecutiveFailures == 0)
        let metrics = try await daemon.get("/metrics")
        // Every reason is there from the start, at 0: a failure is a count above it.
        let failures = String(decoding: metrics.body, as: UTF8.self).split(separator: "\n").filter {
            $0.hasPrefix("dreamnet_healthd_probe_failures_total") && !$0.hasSuffix(" 0")
        }
        #expect(failures.isEmpty, "\(failures)")
        let distance = try #require(status.distance)
        let roundTrip = try #require(distance.roundTripMs)
        #expect(roundTrip >= 150 && roundTrip < 200, "\(roundTrip)")
        let connect = try #require(distance.connectMs)
        #expect(connect > 700 && connect < 1_500, "\(connect)")
        #expect(distance.connectHeadroomMs.map { abs($0 - (2_000 - connect)) < 0.01 } == true)
        #expect(!distance.connectNearBudget)
        #expect(status.connectTimeoutMs == 2_000)
        let summary = try Binaries.healthctl(["--socket", daemon.socketPath, "status"])
        #expect(summary.stdout.contains("round trip 1"), "\(summary.stdout)")
        #expect(String(decoding: metrics.body, as: UTF8.self).contains("dreamnet_healthd_round_trip_seconds"))
    }
}
