import Foundation
import Glibc
import Testing
import TestSupport

/// The stand-in for a database that suspends when unused: it relays, suspends after its idle
/// time ending sessions with 57P01, wakes for a new connection, fails wakes as the proxy does,
/// and an application's queries keep it awake.
@Suite(.serialized) struct ScaleToZeroStandInTests {
    /// `psql -c sql` through the stand-in, off the cooperative threads.
    func psql(_ sql: String, port: Int, in cluster: TestPostgres, connectTimeout: Int = 30) async throws -> ProcessOutput {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        environment["PGCONNECT_TIMEOUT"] = String(connectTimeout)
        let settings = environment
        let psql = cluster.binDirectory.appendingPathComponent("psql")
        return try await offPool {
            try runProcess(psql, ["-X", "-A", "-t", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", sql],
                           environment: settings, timeout: .seconds(60))
        }
    }

    @Test func relaysAndCountsOnlyWhatClientsSend() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(60))
        defer { standIn.close() }
        #expect(standIn.isAwake)
        #expect(standIn.lastClientBytes == nil)

        let before = ContinuousClock.now
        let result = try await psql("SELECT 40 + 2", port: standIn.port, in: cluster)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "42\n")
        // psql's Terminate may reach the relay just after psql has exited.
        try await Task.sleep(for: .milliseconds(300))
        let sent = try #require(standIn.lastClientBytes)
        #expect(sent > before)
        #expect(standIn.counts.relayed == 1)

        // A connection that sends nothing is no activity.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { _ = Glibc.close(silent) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(standIn.port).bigEndian)
        address.sin_addr = in_addr(s_addr: UInt32(0x7F00_0001).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(silent, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        #expect(await waitUntil(timeout: .seconds(5)) { standIn.counts.relayed == 2 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(standIn.lastClientBytes == sent)
        #expect(standIn.suspensions.isEmpty && standIn.wakes.isEmpty)
    }

    @Test func suspendsWhenIdleEndingSessionsWith57P01() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(3))
        defer { standIn.close() }
        // Two queries, then the connection stays open and idle.
        let application = try QueryingApplication(port: standIn.port, busyFor: .milliseconds(1_500))
        defer { application.stop() }

        #expect(await waitUntil(timeout: .seconds(10)) { !standIn.suspensions.isEmpty })
        let suspension = try #require(standIn.suspensions.first)
        let lastSent = try #require(standIn.lastClientBytes)
        let idle = lastSent.duration(to: suspension)
        #expect(idle >= .seconds(3) && idle < .seconds(5), "\(idle)")
        #expect(application.queriesAnswered >= 1, "\(application.output())")
        #expect(await waitUntil(timeout: .seconds(10)) { standIn.isSuspended })
        #expect(!cluster.isRunning && !standIn.isAwake)
        // The idle session read the server's own message, relayed, then the end.
        #expect(await waitUntil(timeout: .seconds(5)) { !application.losses.isEmpty }, "\(application.output())")
        let error = try #require(application.errors.first, "\(application.output())")
        #expect(error.sqlstate == "57P01")
        #expect(error.message == "terminating connection due to administrator command")
        #expect(application.connections == 1)
        #expect(standIn.wakes.isEmpty)
    }

    @Test func aNewConnectionWakesItOnceForAll() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let coldStart = Duration.milliseconds(700)
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(60), coldStart: coldStart)
        defer { standIn.close() }
        try await offPool { try standIn.suspendNow() }
        #expect(!cluster.isRunning && standIn.isSuspended && !standIn.isAwake)
        #expect(standIn.suspensions.count == 1)

        // Three clients at once: one wake.
        let began = ContinuousClock.now
        async let first = psql("SELECT 1", port: standIn.port, in: cluster)
        async let second = psql("SELECT 2", port: standIn.port, in: cluster)
        async let third = psql("SELECT 3", port: standIn.port, in: cluster)
        let results = try await [first, second, third]
        let took = began.duration(to: .now)
        for (index, result) in results.enumerated() {
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "\(index + 1)\n")
        }
        #expect(took >= coldStart, "\(took)")
        #expect(cluster.isRunning && standIn.isAwake)
        let wake = try #require(standIn.wakes.first)
        #expect(standIn.wakes.count == 1)
        #expect(wake.began.duration(to: wake.ready) >= coldStart)
        #expect(standIn.counts.relayed == 3)
    }

    @Test func aRefusedWakeIsTheProxysXX000() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(60))
        defer { standIn.close() }
        try await offPool { try standIn.suspendNow() }
        standIn.failWakes(.refuse)

        let refused = try await psql("SELECT 1", port: standIn.port, in: cluster)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("ERROR:  Couldn't connect to compute node"), "\(refused.stderr)")
        // The SQLSTATE, as a client reading the protocol sees it.
        let application = try QueryingApplication(port: standIn.port, busyFor: .seconds(30))
        defer { application.stop() }
        #expect(await waitUntil(timeout: .seconds(10)) { !application.errors.isEmpty })
        #expect(application.errors.first == .init(sqlstate: "XX000", message: ScaleToZeroStandIn.wakeRefusal))
        #expect(application.connections == 0)
        #expect(!cluster.isRunning && standIn.wakes.isEmpty)
        #expect(standIn.counts.refused >= 2)

        // Wakes work again; the application, retrying, gets in.
        standIn.failWakes(nil)
        #expect(await waitUntil(timeout: .seconds(15)) { application.queriesAnswered >= 1 }, "\(application.output())")
        #expect(cluster.isRunning && standIn.wakes.count == 1)
    }

    @Test func aHeldWakeTimesTheConnectionOut() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(60))
        defer { standIn.close() }
        try await offPool { try standIn.suspendNow() }
        standIn.failWakes(.hold)

        let began = ContinuousClock.now
        let held = try await psql("SELECT 1", port: standIn.port, in: cluster, connectTimeout: 2)
        let took = began.duration(to: .now)
        #expect(held.status != 0)
        #expect(held.stderr.contains("timeout expired"), "\(held.stderr)")
        #expect(took >= .seconds(2) && took < .seconds(10), "\(took)")
        #expect(!cluster.isRunning && standIn.wakes.isEmpty)

        standIn.failWakes(nil)
        let woken = try await psql("SELECT 1", port: standIn.port, in: cluster)
        #expect(woken.status == 0, "\(woken.stderr)")
        #expect(standIn.wakes.count == 1)
    }

    /// Busy, it stays awake past its idle time; quiet, it suspends after it; busy again, the
    /// application's next query wakes it; and the time awake adds up.
    @Test func theApplicationKeepsItAwakeWhileBusy() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let made = ContinuousClock.now
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(2))
        defer { standIn.close() }
        let application = try QueryingApplication(port: standIn.port, busyFor: .seconds(5), whenQuiet: .close)
        defer { application.stop() }

        try await Task.sleep(for: .seconds(4))
        #expect(standIn.suspensions.isEmpty && standIn.isAwake)
        #expect(application.queriesAnswered >= 2, "\(application.output())")
        #expect(await waitUntil(timeout: .seconds(8)) { !standIn.suspensions.isEmpty && !cluster.isRunning })
        let firstSuspension = try #require(standIn.suspensions.first)
        let quietFrom = try #require(standIn.lastClientBytes)
        let idle = quietFrom.duration(to: firstSuspension)
        #expect(idle >= .seconds(2) && idle < .seconds(4), "\(idle)")
        // It closed its connection on going quiet: nothing ended it.
        #expect(application.output().contains("closed"))
        #expect(application.errors.isEmpty, "\(application.output())")

        let answered = application.queriesAnswered
        application.resume(for: .seconds(1))
        #expect(await waitUntil(timeout: .seconds(15)) { application.queriesAnswered > answered }, "\(application.output())")
        #expect(standIn.wakes.count == 1)
        #expect(await waitUntil(timeout: .seconds(10)) { standIn.suspensions.count == 2 && standIn.isSuspended })
        let end = ContinuousClock.now
        let wake = try #require(standIn.wakes.first)
        let secondSuspension = standIn.suspensions[1]

        // Up from the start to the first suspension, and from the wake to the second, each
        // with its stop; down in between.
        let awake = standIn.awakeTime(from: made, to: end)
        let atLeast = made.duration(to: firstSuspension) + wake.began.duration(to: secondSuspension)
        #expect(awake >= atLeast && awake < atLeast + .seconds(4), "\(awake) \(atLeast)")
        #expect(standIn.awakeTime(from: wake.began, to: secondSuspension) == wake.began.duration(to: secondSuspension))
        // (`made` is a moment before the stand-in began to count.)
        #expect(standIn.awakeTime(from: made, to: firstSuspension) > made.duration(to: firstSuspension) - .milliseconds(100))
        #expect(standIn.awakeTime(from: end, to: end + .seconds(10)) == .zero)
    }
}
