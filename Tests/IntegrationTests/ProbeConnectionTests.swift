import Foundation
import Glibc
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// The daemon's connections to the server it watches: the kept session, the fresh connections
/// that still test that new sessions start, and what the daemon leaves on a server that is slow
/// to let sessions in.
@Suite struct ProbeConnectionTests {
    /// A kept session keeps answering while the postmaster is frozen (new connections hang):
    /// the fresh connection opened every `fresh_every` sees it, within
    /// fresh_every + fall × max(interval, timeout) + timeout.
    @Test func aFrozenPostmasterIsSeenThroughFreshEvery() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--probe-connection", "session", "--fresh-every", "3s", "--interval", "500ms", "--timeout", "500ms", "--connect-timeout", "500ms",
             "--fall", "2", "--rise", "1", "--no-splay"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        // Routine probes are on the kept session.
        let routine = try await daemon.waitForStatus(timeout: .seconds(30)) { $0.lastProbe?.connection == "session" }
        let latest = try await daemon.status().lastProbe
        #expect(routine != nil, "no probe ran on the kept session: \(String(describing: latest))")

        try cluster.freeze()
        defer { try? cluster.thaw() }
        let frozenAt = ContinuousClock.now
        let unhealthy = try #require(try await daemon.waitFor(.unhealthy, timeout: .seconds(20)))
        let detection = ContinuousClock.now - frozenAt
        // The bound is 3 + 2 × 0.5 + 0.5 = 4.5 s (DetectionTimingTests holds the defaults to
        // theirs); generous here, where the suites share the machine.
        #expect(detection < .seconds(15), "frozen postmaster seen after \(detection)")
        let failure = try #require(unhealthy.lastProbe)
        #expect(failure.connection == "fresh")
        #expect(failure.reason == "timeout")
        #expect(["connect", "tls", "auth"].contains(failure.phase ?? ""), "\(failure)")

        let events = try await daemon.events()
        let down = try #require(events.first { $0.to == "unhealthy" })
        #expect(down.connection == "fresh")

        try cluster.thaw()
        _ = try #require(try await daemon.waitFor(.healthy, timeout: .seconds(15)))
    }

    /// A kept session that the server ends (pg_terminate_backend, 57P01; an idle timeout,
    /// 57P05) is followed at once by a fresh connection: with fall 1 a single false failure
    /// would show as unhealthy, and none does.
    @Test func anEndedKeptSessionIsNotReportedUnhealthy() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--probe-connection", "session", "--fresh-every", "60s", "--interval", "400ms", "--timeout", "2s", "--connect-timeout", "2s",
             "--fall", "1", "--rise", "1", "--no-splay", "--flap-threshold", "1000"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        var seen: Set<String> = []
        for _ in 0..<5 {
            let kept = try #require(try await waitForKeptBackend(cluster, excluding: seen))
            seen.insert(kept)
            #expect(try cluster.psql("SELECT pg_terminate_backend(\(kept))") == "t")
            // The next probe finds it gone, and a fresh connection becomes the kept one.
            _ = try #require(try await waitForKeptBackend(cluster, excluding: seen))
        }
        // An idle timeout shorter than the interval: every kept session is ended between probes.
        try cluster.psql("ALTER ROLE postgres SET idle_session_timeout = '250ms'")
        try await Task.sleep(for: .seconds(4))
        let status = try await daemon.status()
        let events = try await daemon.events()
        #expect(status.state == "healthy")
        #expect(status.consecutiveFailures == 0)
        #expect(status.transitions == 1, "a transition besides the first verdict: \(events)")
        #expect(events.allSatisfy { $0.to == "healthy" })
    }

    /// A restart of the server breaks the kept session: the next probe sees it and reconnects
    /// (a fresh connection), rather than go on with a dead session.
    @Test func aServerRestartIsSeenOnTheNextProbe() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--probe-connection", "session", "--fresh-every", "60s", "--interval", "1s", "--timeout", "1s", "--connect-timeout", "1s",
             "--fall", "2", "--no-splay"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        let before = try #require(try await waitForKeptBackend(cluster, excluding: []))
        _ = try #require(try await daemon.waitForStatus(timeout: .seconds(10)) { $0.lastProbe?.connection == "session" })
        let freshBefore = try await daemon.freshProbes()
        let restartBegan = Date()
        try cluster.restart()
        // A probe after the restart ran on a fresh connection, and the kept session is a new one.
        let after = try #require(try await waitForKeptBackend(cluster, excluding: [before]))
        #expect(after != before)
        let started = try cluster.psql("SELECT extract(epoch FROM backend_start) FROM pg_stat_activity WHERE pid = \(after)")
        #expect((Double(started) ?? 0) >= restartBegan.timeIntervalSince1970, "kept backend started at \(started)")
        let freshAfter = try await daemon.freshProbes()
        #expect(freshAfter > freshBefore, "no fresh connection after the restart (\(freshBefore) → \(freshAfter))")
        // Routine probes go back to the kept session.
        let routine = try await daemon.waitForStatus(timeout: .seconds(10)) {
            $0.lastProbe?.connection == "session" && $0.lastProbe?.ok == true
        }
        #expect(routine != nil)
    }

    /// Probe and delivery hold at most one connection each: while the state changes, sessions
    /// are ended and the server restarts, the daemon's backends never exceed two.
    @Test func theDaemonNeverHoldsMoreThanTwoConnections() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--probe-connection", "session", "--fresh-every", "1s", "--interval", "200ms", "--timeout", "500ms", "--connect-timeout", "500ms",
             "--fall", "1", "--rise", "1", "--no-splay", "--flap-threshold", "1000"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        let sampler = try BackendSampler(cluster: cluster)
        for round in 0..<3 {
            // A stop makes a transition to deliver; the start lets the delivery run while the
            // probe reconnects.
            try await cluster.stop()
            _ = try #require(try await daemon.waitFor(.unhealthy, timeout: .seconds(10)))
            try await cluster.start()
            _ = try #require(try await daemon.waitFor(.healthy, timeout: .seconds(10)))
            _ = try? cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dreamnet-healthd'")
            try await Task.sleep(for: .milliseconds(600 + 200 * round))
        }
        let figures = sampler.stop()
        #expect(figures.samples > 30, "sampled \(figures.samples) times")
        #expect(figures.most >= 1, "never saw the daemon's connection: the sampler cannot fail otherwise")
        #expect(figures.most <= 2, "the daemon held \(figures.most) backends at once")
        let status = try await daemon.status()
        #expect(status.spool?.pending == 0 || status.spool == nil)
    }

    /// A lock that blocks every new session's start-up (an open transaction holding ACCESS
    /// EXCLUSIVE on pg_database) for 60 s, probing every second with a fresh connection each
    /// time: unhealthy (a timeout, with the phase), at most two backends of the daemon on the
    /// server at any moment (the probe's unfinished connection and the delivery's), and none
    /// waiting within seconds of the lock's release.
    @Test func aLockThatBlocksNewSessionsPilesUpNoBackends() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--probe-connection", "fresh", "--interval", "1s", "--timeout", "1s", "--connect-timeout", "1s", "--fall", "2", "--rise", "2", "--no-splay"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        let sampler = try BackendSampler(cluster: cluster)
        // Over the Unix socket: the sampler counts TCP backends, the daemon's.
        let holder = try cluster.holdLockBlockingNewSessions(seconds: 60)
        defer { holder.terminate(timeout: .seconds(5)) }
        let unhealthy = try #require(try await daemon.waitFor(.unhealthy, timeout: .seconds(15)))
        let failure = try #require(unhealthy.lastProbe)
        #expect(failure.reason == "timeout")
        #expect(failure.phase == "auth", "\(failure)")
        // Still unhealthy, still a timeout, still no pile-up, for the rest of the minute.
        // Read twice a second; a busy machine may read less often, so what is held to a bound
        // below is the stretch of the minute the readings cover, not their number.
        var seen: [StatusDocument] = []
        var firstReading: ContinuousClock.Instant?
        var lastReading = ContinuousClock.now
        while holder.isRunning {
            seen.append(try await daemon.status())
            lastReading = ContinuousClock.now
            if firstReading == nil { firstReading = lastReading }
            try await Task.sleep(for: .milliseconds(500))
        }
        let released = ContinuousClock.now
        let during = sampler.most
        #expect(during >= 1, "never saw the daemon's backend: the sampler cannot fail otherwise")
        #expect(during <= 2, "the daemon left \(during) backends waiting on the lock")
        // The last second may already have seen the release.
        let held = seen.dropLast(2)
        let covered = lastReading - (firstReading ?? lastReading)
        #expect(held.count >= 10 && covered >= .seconds(30), "\(held.count) readings over \(covered) while the lock was held")
        #expect(held.allSatisfy { $0.state == "unhealthy" && $0.lastProbe?.reason == "timeout" })
        #expect(held.contains { $0.lastProbe?.message?.contains("still waiting") == true })
        // The delivery, shut out by the lock as well, logs a failure when it changes, not at every
        // retry (about ten in the minute): its waiting connection growing older is no change.
        let deliveryErrors = daemon.process.output().split(separator: "\n").filter {
            $0.contains("cannot deliver events to system_events")
        }
        #expect(deliveryErrors.count <= 3, "\(deliveryErrors.joined(separator: "\n"))")

        _ = try #require(try await daemon.waitFor(.healthy, timeout: .seconds(15)))
        // Nothing of the daemon waits on the server any more: at most the connection of a
        // probe in flight, briefly.
        let settled = await waitUntil(timeout: .seconds(5)) { sampler.current() == 0 }
        #expect(settled, "the daemon still had \(sampler.current()) backends \(ContinuousClock.now - released) after the release")
        let figures = sampler.stop()
        #expect(figures.most <= 2)
        // The transition to unhealthy, held while the lock kept the delivery out, is a row.
        let rows = try cluster.psql("SELECT count(*) FROM system_events WHERE payload->>'to' = 'unhealthy'")
        #expect(rows == "1")
    }

    /// In session mode, when events go to the probed database, a delivery borrows the probe's
    /// idle kept session: the daemon opens one connection, not one more per delivery.
    @Test func aDeliveryBorrowsTheKeptSession() async throws {
        let cluster = try await TestPostgres.start(extraServerOptions: ["-c", "log_connections=on"])
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--probe-connection", "session", "--fresh-every", "60s", "--interval", "1s", "--no-splay"],
            environment: ["DATABASE_URL": cluster.url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        let first = try #require(try await daemon.events().first)
        // Delivered: the row is there.
        #expect(await waitUntil(timeout: .seconds(10)) {
            (try? cluster.psql("SELECT count(*) FROM system_events WHERE id = '\(first.id)'")) == "1"
        })
        try await Task.sleep(for: .seconds(2))
        let opened = cluster.serverLog().split(separator: "\n").filter {
            $0.contains("connection authorized") && $0.contains("application_name=dreamnet-healthd")
        }
        #expect(opened.count == 1, "the daemon opened \(opened.count) connections: \(opened)")
        let status = try await daemon.status()
        #expect(status.lastProbe?.connection == "session")
        #expect(status.spool?.pending == 0)
    }

    private func waitForKeptBackend(_ cluster: TestPostgres, excluding: Set<String>) async throws -> String? {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let pids = try cluster.psql(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'dreamnet-healthd' AND state = 'idle' AND query = 'SELECT 1'"
            ).split(separator: "\n").map(String.init)
            if let pid = pids.first(where: { !excluding.contains($0) }) { return pid }
            try await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }
}

/// Counts, every 20 ms on a thread of its own, the backends of one cluster that serve a TCP
/// client: the daemon's (tests reach the server over its Unix socket). Read from the process
/// titles, so a backend still starting up, or waiting on a lock before it is in
/// pg_stat_activity, counts too.
final class BackendSampler: @unchecked Sendable {
    private let cluster: TestPostgres
    private let lock = NSLock()
    private var running = true
    private var samples = 0
    private var highest = 0
    private let finished = DispatchSemaphore(value: 0)

    /// The most backends seen at once so far.
    var most: Int { lock.withLock { highest } }

    init(cluster: TestPostgres) throws {
        guard cluster.postmasterPID != nil else { throw TestSupportError("the cluster is not running") }
        self.cluster = cluster
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                let count = current()
                lock.withLock {
                    samples += 1
                    highest = max(highest, count)
                }
                usleep(20_000)
            }
            finished.signal()
        }
    }

    /// Backends of this cluster with a TCP client, now. The postmaster is looked up each time:
    /// a restarted cluster has a new one.
    func current() -> Int {
        cluster.backendTitles.count { $0.contains("127.0.0.1(") }
    }

    /// Stops sampling.
    func stop() -> (samples: Int, most: Int) {
        lock.withLock { running = false }
        finished.wait()
        return lock.withLock { (samples, highest) }
    }
}

/// Daemons started together probe spread over one interval, not in step.
@Suite struct SplayTests {
    @Test func theFirstProbeStartsAtARandomOffsetWithinOneInterval() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let interval = 3.0
        var daemons: [RunningDaemon] = []
        for _ in 0..<6 {
            daemons.append(try RunningDaemon(["--interval", "3s", "--splay"], environment: ["DATABASE_URL": cluster.url]))
        }
        daemons.append(try RunningDaemon(["--interval", "3s", "--no-splay"], environment: ["DATABASE_URL": cluster.url]))
        // The first probe's time is that of the first verdict (the transition from `starting`),
        // taken from each daemon's own start (`started_at`), so that a slow launch on a busy
        // machine does not count.
        var offsets: [Double] = []
        for daemon in daemons {
            let status = try #require(try await daemon.waitForStatus(timeout: .seconds(20)) { $0.lastProbe != nil })
            let first = try #require(try await daemon.events().last)
            #expect(first.from == "unknown")
            let at = try #require(Timestamp.parse(first.observedAt))
            let started = try #require(Timestamp.parse(status.startedAt))
            offsets.append(at.timeIntervalSince(started))
        }
        let splayed = offsets.dropLast()
        // Within one interval of the start (plus the start-up itself, on a shared machine).
        #expect(splayed.allSatisfy { $0 >= 0 && $0 < interval + 2 }, "\(offsets)")
        // Six uniform draws over 3 s land within 0.3 s of each other with odds of about 1 in 2 000.
        #expect(splayed.max()! - splayed.min()! > 0.3, "first probes in step: \(offsets)")
        #expect(offsets.last! < 1.5, "without splay the first probe is at once: \(offsets)")
    }
}
