import Foundation
import HealthCore
import Testing
import TestSupport

/// `scale_to_zero` against a stand-in for a database that suspends when unused: the daemon
/// follows the application's use of it, lets it sleep, sees the sleep for what it is, wakes it
/// with the wake budget, and still reports a failed wake and an outage during use.
@Suite(.serialized) struct ScaleToZeroDaemonTests {
    static let interval = Duration.milliseconds(500)

    static func daemonArguments(suspendAfter: Duration, wakeTimeout: Duration = .seconds(5), interval: Duration = interval) -> [String] {
        [
            "--scale-to-zero", "--suspend-after", "\(suspendAfter.milliseconds)ms", "--wake-every", "off",
            "--wake-timeout", "\(wakeTimeout.milliseconds)ms", "--interval", "\(interval.milliseconds)ms",
            "--fall", "2", "--rise", "1", "--no-splay", "--flap-threshold", "1000",
        ]
    }

    /// Busy, quiet (the stand-in suspends, the daemon says asleep and stays healthy), busy again
    /// (a cold start within the wake budget, no failure), with no unhealthy verdict throughout.
    @Test func aSleepIsNoOutageAndAWakeIsNoFailure() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(3), coldStart: .milliseconds(1_500))
        defer { standIn.close() }
        let url = "postgresql://postgres@127.0.0.1:\(standIn.port)/postgres"
        // Queries closer together than the daemon's interval: in use all along.
        let application = try QueryingApplication(url: url, busyFor: .seconds(5), every: .milliseconds(200))
        defer { application.stop() }
        let daemon = try RunningDaemon(Self.daemonArguments(suspendAfter: .seconds(3)), environment: ["DATABASE_URL": url])
        _ = try #require(try await daemon.waitFor(.healthy))
        let following = try await daemon.waitForStatus(timeout: .seconds(5)) { $0.sleep?.phase == "following" }
        #expect(following != nil)

        // The application goes quiet after 5 s; the stand-in suspends 3 s after the last client
        // byte, and the daemon's probes must not have pushed that out by more than an interval.
        let suspended = await waitUntil(timeout: .seconds(20)) { !standIn.suspensions.isEmpty }
        #expect(suspended, "the stand-in never suspended: the daemon kept it awake")
        // Presumed asleep at its timer, then seen: the server ended the idle kept session.
        let asleep = try await daemon.waitForStatus(timeout: .seconds(10)) { $0.sleep?.phase == "asleep" && $0.sleep?.seen == true }
        #expect(asleep != nil, "the 57P01 on the kept session was not seen as a sleep")
        #expect(asleep?.state == "healthy")
        #expect(asleep?.isStale == false, "a sleeping database's report went stale")
        let health = try await daemon.get("/health")
        #expect(health.status == 200)
        let metrics = String(decoding: try await daemon.get("/metrics").body, as: UTF8.self)
        #expect(metrics.contains("\ndreamnet_healthd_database_asleep 1"), "\(metrics)")
        let summary = try await offPool { [socket = daemon.socketPath] in try Binaries.healthctl(["--socket", socket, "status"]) }
        #expect(summary.status == 0, "\(summary.stderr)")
        #expect(summary.stdout.contains("asleep since") && summary.stdout.contains("the server ended the idle session"), "\(summary.stdout)")
        // The sleep is an event in the alert log at once; its row waits in the spool, as its
        // delivery would wake the database.
        let asleepLine = await waitUntil(timeout: .seconds(5)) { [path = daemon.alertLogPath] in
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").contains(#""event_type":"database.health.asleep""#)
        }
        #expect(asleepLine, "no asleep event in the alert log")
        // Nothing of the daemon's wakes it while it sleeps.
        try await Task.sleep(for: .seconds(3))
        #expect(standIn.wakes.isEmpty, "woken while nobody used it: \(standIn.wakes)")
        #expect(standIn.isSuspended)

        // The application comes back: its own login wakes the stand-in; the daemon follows at
        // once, and the cold start is no failure.
        let returned = ContinuousClock.now
        let relayedBefore = standIn.counts.relayed
        let freshBefore = try await daemon.freshProbes()
        // Busy for longer than the cold start and the checks below take on a loaded machine:
        // a stretch that ended before the daemon followed would be a sleep, not this test.
        application.resume(for: .seconds(12))
        let awake = try await daemon.waitForStatus(timeout: .seconds(10)) {
            $0.sleep?.phase == "following" && $0.lastProbe?.ok == true && ($0.lastProbe?.ageMs ?? .max) < 1_000
        }
        #expect(awake != nil, "the daemon did not follow the application back")
        #expect(ContinuousClock.now - returned < .seconds(8))
        #expect(awake?.state == "healthy")
        // One login of the probes for the stretch, the wake, whose connection the probes that
        // follow keep using; beside it the application's, and the delivery's own if it found a
        // probe on the kept session when it wrote the sleep's and the wake's rows.
        try await Task.sleep(for: .seconds(2))
        #expect(try await daemon.freshProbes() - freshBefore == 1)
        let relayed = standIn.counts.relayed - relayedBefore
        #expect((2...3).contains(relayed), "\(relayed) connections for the stretch")
        let transitions = try await daemon.events().filter { $0.to == "unhealthy" }
        #expect(transitions.isEmpty, "\(transitions)")
        #expect(application.errors.isEmpty || application.errors.allSatisfy { $0.sqlstate == "57P01" }, "\(application.errors)")
        // The sleep and the wake, in order, in the alert log and, now that the database is
        // awake, in system_events.
        let alerts = try String(contentsOfFile: daemon.alertLogPath, encoding: .utf8)
        let kinds = alerts.split(separator: "\n").compactMap { line in
            ["asleep", "awake"].first { line.contains("\"event_type\":\"database.health.\($0)\"") }
        }
        #expect(kinds == ["asleep", "awake"], "\(alerts)")
        #expect(alerts.contains(#""reason":"application""#) && alerts.contains(#""seen":true"#), "\(alerts)")
        let rows = await waitUntil(timeout: .seconds(5)) {
            let types = (try? cluster.psql("SELECT string_agg(event_type, ',' ORDER BY timestamp) FROM system_events WHERE event_type LIKE 'database.health.a%'")) ?? ""
            return types.trimmingCharacters(in: .whitespacesAndNewlines) == "database.health.asleep,database.health.awake"
        }
        #expect(rows, "\(String(describing: try? cluster.psql("SELECT event_type, payload FROM system_events")))")
    }

    /// A wake that does not answer within `wake_timeout` is unhealthy at once, although `fall`
    /// is 2.
    @Test func aWakeThatDoesNotAnswerIsUnhealthyAtOnce() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(2))
        defer { standIn.close() }
        let url = "postgresql://postgres@127.0.0.1:\(standIn.port)/postgres"
        let application = try QueryingApplication(url: url, busyFor: .seconds(3))
        defer { application.stop() }
        let daemon = try RunningDaemon(
            Self.daemonArguments(suspendAfter: .seconds(2), wakeTimeout: .seconds(2)), environment: ["DATABASE_URL": url]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        // Asleep for both: the stand-in stopped its server, and the daemon saw it go.
        #expect(await waitUntil(timeout: .seconds(20)) { standIn.isSuspended })
        _ = try #require(try await daemon.waitForStatus(timeout: .seconds(10)) { $0.sleep?.phase == "asleep" && $0.sleep?.seen == true })

        // The compute never comes up: the application's connection waits, open, and so does
        // the daemon's wake.
        standIn.failWakes(.hold)
        application.resume(for: .seconds(30))
        let verdict = try await daemon.waitFor(.unhealthy, timeout: .seconds(15))
        if verdict == nil { print(daemon.process.output()) }
        let unhealthy = try #require(verdict)
        // From the application's return as the database sees it: its first connection held,
        // not the request to the application process, which looks at it once a second.
        let returned = try #require(standIn.holds.first)
        let took = ContinuousClock.now - returned
        #expect(took < .seconds(2 + 1 + 2), "unhealthy after \(took)")
        #expect(unhealthy.lastProbe?.reason == "timeout", "\(String(describing: unhealthy.lastProbe))")
        let transition = try #require(try await daemon.events().last { $0.to == "unhealthy" })
        #expect(transition.consecutive == 1, "\(transition)")
    }

    /// SIGUSR2 asks for a probe: a sleeping database is woken (a login proves that it starts),
    /// then let sleep again.
    @Test func aWakeCanBeAskedFor() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(2))
        defer { standIn.close() }
        let url = "postgresql://postgres@127.0.0.1:\(standIn.port)/postgres"
        let daemon = try RunningDaemon(Self.daemonArguments(suspendAfter: .seconds(2)), environment: ["DATABASE_URL": url])
        _ = try #require(try await daemon.waitFor(.healthy))
        #expect(await waitUntil(timeout: .seconds(15)) { standIn.isSuspended })
        let before = try #require(try await daemon.waitForStatus(timeout: .seconds(10)) { $0.sleep?.phase == "asleep" })
        #expect(standIn.wakes.isEmpty)

        daemon.process.signal(SIGUSR2)
        #expect(await waitUntil(timeout: .seconds(10)) { standIn.wakes.count == 1 }, "no wake: \(standIn.wakes)")
        let woken = try await daemon.waitForStatus(timeout: .seconds(10)) {
            $0.lastProbe?.ok == true && $0.lastProbe?.at != before.lastProbe?.at
        }
        #expect(woken?.lastProbe?.connection == "fresh", "\(String(describing: woken?.lastProbe))")
        #expect(woken?.state == "healthy")

        // And let sleep again: nothing more of the daemon's keeps it up.
        #expect(await waitUntil(timeout: .seconds(15)) { standIn.suspensions.count == 2 })
        #expect(standIn.wakes.count == 1)
    }

    /// An application that connects for each query and closes at once is followed all the
    /// same: its closed connections stay in the socket table (TIME_WAIT) with the time of their
    /// close. The daemon's own closed connections (fresh mode: one per probe) do not count, or
    /// it would follow itself and never let the database sleep.
    @Test func anApplicationThatConnectsPerQueryIsFollowedAndTheDaemonsOwnConnectionsAreNot() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(3))
        defer { standIn.close() }
        let url = "postgresql://postgres@127.0.0.1:\(standIn.port)/postgres"
        let arguments = Self.daemonArguments(suspendAfter: .seconds(3), interval: .seconds(1)) + ["--probe-connection", "fresh"]
        let daemon = try RunningDaemon(arguments, environment: ["DATABASE_URL": url])
        _ = try #require(try await daemon.waitFor(.healthy))
        // Alone, in fresh mode: let sleep, its own closed probe connections notwithstanding.
        #expect(await waitUntil(timeout: .seconds(15)) { standIn.isSuspended }, "the daemon kept it awake on its own")
        _ = try #require(try await daemon.waitForStatus(timeout: .seconds(10)) { $0.sleep?.phase == "asleep" })

        // A query every 300 ms, each on a connection of its own (psql), for 8 s.
        let application = try BackgroundProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", """
            end=$(( $(date +%s) + 8 ))
            while [ "$(date +%s)" -lt "$end" ]; do
                psql -X -q -h 127.0.0.1 -p \(standIn.port) -U postgres -d postgres -c 'SELECT 1' >/dev/null && echo query
                sleep 0.3
            done
            echo finished
            """])
        defer { application.terminate(timeout: .seconds(2)) }
        _ = try #require(try await daemon.waitForStatus(timeout: .seconds(10)) { $0.sleep?.phase == "following" }, "not followed")
        // Followed throughout: each look at the table finds a connection closed less than an
        // interval ago.
        var phases: [String] = []
        while !application.output().contains("finished"), phases.count < 40 {
            if let phase = try await daemon.status().sleep?.phase { phases.append(phase) }
            try await Task.sleep(for: .milliseconds(250))
        }
        let queries = application.output().split(separator: "\n").filter { $0 == "query" }.count
        #expect(queries >= 10, "\(application.output())")
        // The last look may fall after the application's last query.
        #expect(phases.dropLast(4).allSatisfy { $0 == "following" }, "\(phases)")
        #expect(try await daemon.status().state == "healthy")
        // And once it stops, the database is let sleep again.
        let suspensions = standIn.suspensions.count
        #expect(await waitUntil(timeout: .seconds(20)) { standIn.suspensions.count > suspensions && standIn.isSuspended })
    }

    /// While the application uses the database an outage is reported within the usual bound:
    /// a shutdown, and a postmaster killed (SIGKILL), whose backends end their sessions with
    /// the same 57P01 as a suspension; with a short `suspend_after` the daemon may find that
    /// 57P01 close to the idle mark, and must judge it by when it came (during use).
    @Test(arguments: [(false, 30), (true, 30), (true, 2)])
    func anOutageDuringUseIsReportedWithinTheUsualBound(kill killed: Bool, suspendAfter seconds: Int) async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: .seconds(30))
        defer { standIn.close() }
        let url = "postgresql://postgres@127.0.0.1:\(standIn.port)/postgres"
        let application = try QueryingApplication(url: url, busyFor: .seconds(60))
        defer { application.stop() }
        let daemon = try RunningDaemon(Self.daemonArguments(suspendAfter: .seconds(Int64(seconds))), environment: ["DATABASE_URL": url])
        _ = try #require(try await daemon.waitFor(.healthy))
        try await Task.sleep(for: .seconds(1))
        let killedAt = ContinuousClock.now
        if killed {
            let postmaster = try #require(cluster.postmasterPID)
            #expect(Glibc.kill(postmaster, SIGKILL) == 0)
        } else {
            try await cluster.stop()
        }
        _ = try #require(try await daemon.waitFor(.unhealthy, timeout: .seconds(15)))
        var configuration = DaemonConfiguration.defaults
        configuration.interval = Self.interval
        let took = ContinuousClock.now - killedAt
        #expect(took <= configuration.detectionBound + .seconds(1), "unhealthy after \(took), bound \(configuration.detectionBound)")
    }
}
