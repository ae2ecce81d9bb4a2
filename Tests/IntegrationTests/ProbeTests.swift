import Foundation
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// The probe engine against a real server and real faults.
@Suite(.serialized) struct ProbeTests {
    /// One budget for both the connection and the answer unless `connectTimeout` is given.
    func probe(_ url: String, timeout: Duration = .seconds(1), connectTimeout: Duration? = nil) async throws -> ProbeResult {
        try #require(await PostgresProber(
            target: ConnectionTarget.parse(url), timeout: timeout, policy: ProbePolicy(connectTimeout: connectTimeout ?? timeout)
        ).probe())
    }

    /// Each budget is a deadline of its own: a listener that never answers uses up the
    /// connection's, a backend that never answers the query the answer's, counted from the
    /// moment the connection was made.
    @Test func theConnectionAndTheAnswerHaveBudgetsOfTheirOwn() async throws {
        let listener = try BlackHoleListener()
        defer { listener.close() }
        let hung = try await probe("postgresql://u@127.0.0.1:\(listener.port)/db", timeout: .milliseconds(300), connectTimeout: .seconds(2))
        #expect(hung.failure?.reason == .timeout)
        #expect(hung.failure?.message.contains("no connection within 2000 ms") == true, "\(String(describing: hung.failure))")
        #expect(hung.latency >= .seconds(2) && hung.latency < .milliseconds(2_200), "\(hung.latency)")

        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let interceptor = try SessionInterceptor(upstreamPort: cluster.port) { pid in kill(pid, SIGSTOP) }
        defer { interceptor.close() }
        let stuck = try await probe(
            "postgresql://postgres@127.0.0.1:\(interceptor.port)/postgres", timeout: .milliseconds(300), connectTimeout: .seconds(2)
        )
        #expect(stuck.failure?.phase == .query)
        #expect(stuck.failure?.message.contains("no answer within 300 ms") == true, "\(String(describing: stuck.failure))")
        let query = try #require(stuck.phases.last { $0.phase == .query }?.duration)
        #expect(query >= .milliseconds(300) && query < .milliseconds(500), "\(query)")
        #expect(stuck.latency < .seconds(2))
        for backend in interceptor.backends { kill(backend, SIGCONT) }
    }

    @Test func healthyOverTCPAndTheUnixSocket() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }

        let tcp = try await probe(cluster.url)
        #expect(tcp.ok, "\(String(describing: tcp.failure))")
        #expect(tcp.phases.map(\.phase).first == .resolve)
        #expect(tcp.phases.map(\.phase).last == .query)
        #expect(tcp.latency < .seconds(1))

        let keyValue = try await probe(cluster.keyValueConninfo)
        #expect(keyValue.ok)
        let socket = try await probe("host=\(cluster.socketDirectory) port=\(cluster.port) user=postgres dbname=postgres")
        #expect(socket.ok)
        let byName = try await probe("postgresql://postgres@localhost:\(cluster.port)/postgres")
        #expect(byName.ok, "\(String(describing: byName.failure))")
    }

    @Test func stoppedServerIsRefused() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        try await cluster.stop()
        let result = try await probe(cluster.url)
        #expect(result.failure?.reason == .refused)
        #expect(result.failure?.phase == .connect)
        #expect(result.latency < .milliseconds(500))
    }

    @Test func frozenPostmasterTimesOutWithinTheDeadline() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        try cluster.freeze()
        let started = ContinuousClock.now
        let result = try await probe(cluster.url)
        let elapsed = ContinuousClock.now - started
        try cluster.thaw()
        #expect(result.failure?.reason == .timeout)
        #expect(result.latency >= .milliseconds(990))
        #expect(result.latency < .milliseconds(1_200))
        // Seen from the caller, with this test process's own scheduling in it: a sanity bound,
        // as for the listener that never answers below.
        #expect(elapsed < .seconds(10))
        // Thawed, the same server answers again: the timed-out probe left nothing behind.
        #expect(try await probe(cluster.url).ok)
    }

    @Test func listenerThatNeverAnswersTimesOutWithinTheDeadline() async throws {
        let listener = try BlackHoleListener()
        defer { listener.close() }
        for _ in 0..<3 {
            let started = ContinuousClock.now
            let result = try await probe("postgresql://u@127.0.0.1:\(listener.port)/db")
            let elapsed = ContinuousClock.now - started
            #expect(result.failure?.reason == .timeout)
            #expect(result.failure?.phase == .tls || result.failure?.phase == .auth)
            // The probe's own clock: start to verdict. The benchmark holds it to ±20 ms.
            #expect(result.latency < .milliseconds(1_200))
            #expect(result.latency >= .milliseconds(1_000))
            // Seen from the caller: includes this test process's own scheduling, which other
            // suites running in parallel (blocking on subprocesses) can delay; a sanity bound.
            #expect(elapsed < .seconds(10))
        }
        let short = try await probe("postgresql://u@127.0.0.1:\(listener.port)/db", timeout: .milliseconds(200))
        #expect(short.failure?.reason == .timeout)
        #expect(short.latency < .milliseconds(500))
    }

    @Test func unresolvableNameIsDNS() async throws {
        let result = try await probe("postgresql://u@no-such-host.invalid:5432/db")
        #expect(result.failure?.reason == .dns)
        #expect(result.failure?.phase == .resolve)
    }

    @Test func wrongPasswordIsAuthWithSQLSTATEAndNoSecret() async throws {
        let cluster = try clusterWithPasswordRole("prober", password: "right-one")
        defer { cluster.destroy() }
        let sentinel = "Sentinel-9f3b-PW"
        let result = try await probe("postgresql://prober:\(sentinel)@127.0.0.1:\(cluster.port)/postgres")
        #expect(result.failure?.reason == .auth)
        #expect(result.failure?.sqlstate == "28P01")
        #expect(result.failure?.phase == .auth)
        #expect(result.failure?.message.contains(sentinel) == false)
        #expect(try await probe("postgresql://prober:right-one@127.0.0.1:\(cluster.port)/postgres").ok)
    }

    @Test func malformedURLNeverEchoesThePassword() {
        let sentinel = "Sentinel%zz-PW"
        do {
            _ = try ConnectionTarget.parse("postgresql://u:\(sentinel)@127.0.0.1/db")
            Issue.record("a malformed percent escape must be rejected")
        } catch {
            #expect(!error.description.contains("Sentinel"))
            #expect(error.description.contains("percent-encoded"))
        }
    }

    @Test func targetIsShownWithoutItsPassword() throws {
        let target = try ConnectionTarget.parse("postgresql://app:Sentinel-PW@db.example:6432/app?sslmode=require")
        #expect(target.display == "postgresql://app@db.example:6432/app?sslmode=require")
        let keyValue = try ConnectionTarget.parse("host=db port=5433 user=app password=Sentinel-PW dbname=app")
        #expect(keyValue.display == "postgresql://app@db:5433/app")
    }
}

/// Failures that libpq reports at once must be reported at once, with libpq's reason.
@Suite(.serialized) struct ProbeFailureTests {
    func probe(_ url: String, timeout: Duration = .seconds(1)) async throws -> ProbeResult? {
        try await PostgresProber(target: ConnectionTarget.parse(url), timeout: timeout).probe()
    }

    @Test func stoppedServerOnAUnixSocketIsRefusedAtOnce() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        try await cluster.stop()
        let result = try #require(try await probe("host=\(cluster.socketDirectory) port=\(cluster.port) user=postgres"))
        #expect(result.failure?.reason == .refused)
        #expect(result.latency < .milliseconds(200))
    }

    @Test func invalidOptionsAreInvalidTargetAtOnce() async throws {
        for url in ["host=127.0.0.1 port=5432 sslmode=bogus", "host=a,b,c port=1,2"] {
            let result = try #require(try await probe(url))
            #expect(result.failure?.reason == .invalidTarget, "\(url): \(String(describing: result.failure))")
            #expect(result.latency < .milliseconds(200))
        }
    }

    @Test func oneUnresolvableHostOfSeveralIsSkipped() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let result = try #require(try await probe("host=no-such-host.invalid,localhost port=\(cluster.port) user=postgres dbname=postgres"))
        #expect(result.ok, "\(String(describing: result.failure))")
    }

    @Test func unencodedAtSignsInURLPasswordsAreRejectedWithoutTheSecret() {
        for url in ["postgresql://app:Sentinel/x@db/app", "postgresql://app:Sentinel@x@db/app"] {
            #expect {
                try ConnectionTarget.parse(url)
            } throws: { error in
                "\(error)".contains("percent-encode") && !"\(error)".contains("Sentinel")
            }
        }
    }

    @Test func cancellationEndsAHungProbeAtOnce() async throws {
        let listener = try BlackHoleListener()
        defer { listener.close() }
        let prober = try PostgresProber(target: ConnectionTarget.parse("postgresql://u@127.0.0.1:\(listener.port)/db"), timeout: .seconds(10))
        let started = ContinuousClock.now
        let task = Task { await prober.probe() }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let result = await task.value
        #expect(result == nil)
        // Far from the 10 s deadline; generous, as the caller's own scheduling is in it too.
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}
