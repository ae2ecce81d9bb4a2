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
