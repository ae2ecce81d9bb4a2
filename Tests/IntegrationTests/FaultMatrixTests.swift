import Foundation
import Glibc
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// Rows of the fault matrix that no other suite covers: each a real fault, placed where it must
/// be. The README maps every row to its test.
@Suite(.serialized) struct FaultMatrixProbeTests {
    func probe(_ url: String, timeout: Duration = .seconds(1)) async throws -> ProbeResult {
        try #require(try await PostgresProber(target: ConnectionTarget.parse(url), timeout: timeout).probe())
    }

    /// Row 4: the backend stops after authentication, before the query arrives: the probe ends
    /// at its deadline, in phase `query`; and it closed its connection (the backend, resumed,
    /// finds the client gone and exits).
    @Test func hungQueryOnAStoppedBackendEndsAtTheDeadline() async throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        let interceptor = try SessionInterceptor(upstreamPort: cluster.port) { pid in kill(pid, SIGSTOP) }
        defer { interceptor.close() }
        let result = try await probe("postgresql://postgres@127.0.0.1:\(interceptor.port)/postgres")
        #expect(result.failure?.reason == .timeout)
        #expect(result.failure?.phase == .query)
        #expect(result.latency >= .milliseconds(990) && result.latency < .milliseconds(1_500), "\(result.latency)")
        let backend = try #require(interceptor.backends.first)
        kill(backend, SIGCONT)
        #expect(waitUntil(timeout: .seconds(10)) { kill(backend, 0) != 0 }, "backend \(backend) still running")
    }

    /// Row 4: a lock held on a catalog the first statement of a session could wait on
    /// (pg_namespace, as VACUUM FULL takes it): the probe does not wait on it.
    @Test func aCatalogLockDoesNotStopTheProbe() async throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        let holder = try BackgroundProcess(
            cluster.binDirectory.appendingPathComponent("psql"),
            ["-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", "postgres",
             "-c", "BEGIN; LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30)"]
        )
        defer { holder.terminate(timeout: .seconds(5)) }
        // Running pg_sleep means the lock is held. Seen in the backend's process title: a
        // query to the server could itself wait on the lock.
        #expect(waitUntil(timeout: .seconds(10)) { backendTitles().contains { $0.hasSuffix(" SELECT") } })
        for _ in 0..<3 {
            let result = try await probe(cluster.url)
            #expect(result.ok, "\(String(describing: result.failure))")
        }
    }

    /// Row 5: the backend is terminated (pg_terminate_backend) between connecting and the
    /// query: unhealthy with SQLSTATE 57P01, at once.
    @Test func terminatedBackendIs57P01() async throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        let interceptor = try SessionInterceptor(upstreamPort: cluster.port) { pid in
            _ = try? cluster.psql("SELECT pg_terminate_backend(\(pid))")
            _ = waitUntil(timeout: .seconds(5)) { kill(pid, 0) != 0 }
        }
        defer { interceptor.close() }
        let result = try await probe("postgresql://postgres@127.0.0.1:\(interceptor.port)/postgres")
        #expect(result.failure?.sqlstate == "57P01", "\(String(describing: result.failure))")
        #expect(result.failure?.reason == .serverError)
        #expect(result.failure?.phase == .query)
        #expect(result.latency < .milliseconds(900))
    }

    /// Row 23: the role's connection limit is reached (53300).
    @Test func tooManyConnectionsIs53300() async throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        try cluster.psql("CREATE ROLE limited LOGIN CONNECTION LIMIT 0")
        let result = try await probe("postgresql://limited@127.0.0.1:\(cluster.port)/postgres")
        #expect(result.failure?.reason == .tooManyConnections, "\(String(describing: result.failure))")
        #expect(result.failure?.sqlstate == "53300")
    }

    /// Row 23: the server is shutting down (smart shutdown waits for a session) (57P03).
    @Test func shuttingDownIs57P03() async throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        let session = try BackgroundProcess(
            cluster.binDirectory.appendingPathComponent("psql"),
            ["-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", "postgres", "-c", "SELECT pg_sleep(60)"]
        )
        defer { session.terminate(timeout: .seconds(5)) }
        #expect(waitUntil(timeout: .seconds(10)) {
            (try? cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")) == "1"
        })
        let postmaster = try #require(cluster.postmasterPID)
        kill(postmaster, SIGTERM)
        // The signal is asynchronous: probe until the postmaster has seen it.
        var result = try await probe("postgresql://postgres@127.0.0.1:\(cluster.port)/postgres")
        let deadline = ContinuousClock.now + .seconds(10)
        while result.failure?.sqlstate != "57P03", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            result = try await probe("postgresql://postgres@127.0.0.1:\(cluster.port)/postgres")
        }
        #expect(result.failure?.sqlstate == "57P03", "\(String(describing: result.failure))")
        #expect(result.failure?.reason == .startingOrStopping)
    }
}

/// The process titles of PostgreSQL backends on this machine (`postgres: USER DB HOST STATE`).
func backendTitles() -> [String] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.filter { $0.allSatisfy(\.isNumber) }.compactMap { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
        let title = String(decoding: data, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\0 "))
        return title.hasPrefix("postgres: ") ? title : nil
    }
}

/// Matrix rows that need the whole daemon.
@Suite(.serialized) struct FaultMatrixDaemonTests {
    let fast = ["--interval", "200ms", "--timeout", "500ms", "--fall", "1", "--rise", "1", "--flap-threshold", "1000"]

    func tableIDs(_ cluster: TestPostgres) throws -> [String] {
        try cluster.psql("SELECT id FROM system_events ORDER BY timestamp, (metadata->>'seq')::bigint")
            .split(separator: "\n").map(String.init)
    }

    func alertIDs(_ daemon: RunningDaemon) throws -> [String] {
        try String(contentsOfFile: daemon.alertLogPath, encoding: .utf8).split(separator: "\n").compactMap { AlertLine.id(of: String($0)) }
    }

    /// Row 14: fsync fails with EIO (injected into the running daemon with strace): the spool
    /// reports itself degraded and holds the events in memory; once fsync works again they are
    /// stored and delivered, each once, and the alert log matches the table.
    @Test func fsyncErrorsDegradeTheSpoolAndLoseNothing() async throws {
        let probed = try TestPostgres.start()
        let events = try TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try events.stop()
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        let strace = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/strace"), [
            "-f", "-p", "\(daemon.process.pid)", "-o", "/dev/null", "-e", "trace=fsync,fdatasync",
            "-e", "inject=fsync,fdatasync:error=EIO",
        ])
        defer { strace.terminate(timeout: .seconds(5)) }
        // strace announces nothing once attached: the first failed fsync is the sign.
        try await Task.sleep(for: .seconds(1))
        try await daemon.flap(probed)
        let degraded = try #require(try await daemon.waitForSpool { $0.degraded })
        #expect(degraded.degradedReason?.contains("I/O") == true || degraded.degradedReason?.contains("IOERR") == true,
                "\(degraded.degradedReason ?? "-")")
        #expect(degraded.inMemory == 2)
        #expect(strace.terminate(timeout: .seconds(5)) != nil)

        try events.start()
        _ = try #require(try await daemon.waitForSpool(timeout: .seconds(60)) { $0.pending == 0 && !$0.degraded && $0.inMemory == 0 })
        let table = try tableIDs(events)
        #expect(table.count == 3)
        #expect(try alertIDs(daemon) == table)
        #expect(Set(try await daemon.events().map(\.id)) == Set(table))
    }

    /// Row 24: the events database is another server. The probed one down, the events one up:
    /// transitions go straight in. The events one down, the probed one up: spooled, then replayed.
    @Test func eventsDatabaseAndProbedDatabaseFailApart() async throws {
        let probed = try TestPostgres.start()
        let events = try TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })

        try probed.stop()
        _ = try #require(try await daemon.waitFor(.unhealthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let direct = try events.psql("SELECT metadata->>'delivery' FROM system_events ORDER BY timestamp")
        #expect(direct.split(separator: "\n") == ["direct", "direct"])
        #expect(try await daemon.status().state == "unhealthy")

        try events.stop()
        try probed.start()
        _ = try #require(try await daemon.waitFor(.healthy))
        #expect(try await daemon.waitForSpool { $0.pending == 1 && $0.lastDeliveryError != nil } != nil)
        try events.start()
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let deliveries = try events.psql("SELECT metadata->>'delivery' || ':' || (payload->>'to') FROM system_events ORDER BY timestamp")
        #expect(deliveries.split(separator: "\n") == ["direct:healthy", "direct:unhealthy", "spooled:healthy"])
        #expect(try alertIDs(daemon) == tableIDs(events))
    }

    /// Row 10: an outage of hours with flaps in it, compressed in time: 100 ms probes, the
    /// events database down the whole time, 30 flaps of the probed one. Every transition is
    /// spooled, replayed once and in order, and the alert log matches the table.
    @Test func aLongOutageWithFlapsLosesNothing() async throws {
        let probed = try TestPostgres.start()
        let events = try TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try events.stop()
        let daemon = try RunningDaemon([
            "--interval", "100ms", "--timeout", "300ms", "--fall", "1", "--rise", "1", "--flap-threshold", "1000",
            "--database-url", probed.url, "--events-database-url", events.url,
        ])
        _ = try #require(try await daemon.waitFor(.healthy))
        for _ in 0..<30 { try await daemon.flap(probed) }
        let spool = try #require(try await daemon.status().spool)
        #expect(spool.pending == 61)
        #expect(spool.dropped == 0)

        try events.start()
        _ = try #require(try await daemon.waitForSpool(timeout: .seconds(60)) { $0.pending == 0 })
        let table = try tableIDs(events)
        #expect(table.count == 61)
        #expect(Set(table).count == 61)
        #expect(try alertIDs(daemon) == table)
        let transitions = try events.psql("SELECT (payload->>'from') || '>' || (payload->>'to') FROM system_events ORDER BY timestamp")
            .split(separator: "\n")
        #expect(transitions.first == "unknown>healthy")
        for (previous, next) in zip(transitions, transitions.dropFirst()) {
            #expect(previous.split(separator: ">").last == next.split(separator: ">").first, "\(previous) then \(next)")
        }
    }

    /// Row 18: NOTIFY_SOCKET unset, naming nothing, or not a socket path at all: notifying is a
    /// no-op and the daemon runs as usual.
    @Test(arguments: [nil, "/nonexistent/notify.sock", "not-a-path", "@"])
    func aMissingOrBogusNotifySocketIsHarmless(notifySocket: String?) async throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--interval", "200ms", "--database-url", cluster.url],
            environment: notifySocket.map { ["NOTIFY_SOCKET": $0, "WATCHDOG_USEC": "600000"] } ?? [:]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        try cluster.stop()
        _ = try #require(try await daemon.waitFor(.unhealthy))
        #expect(daemon.process.isRunning)
        #expect(daemon.process.terminate(timeout: .seconds(10)) == 0)
    }
}
