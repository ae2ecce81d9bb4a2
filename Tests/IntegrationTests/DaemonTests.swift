import Foundation
import HealthCore
import Testing
import TestSupport

/// The daemon binary, end to end: real server, real faults, its socket and its CLI.
@Suite(.serialized) struct DaemonTests {
    /// In fresh mode, which sees a frozen postmaster at the next probe (session mode sees it at
    /// the next fresh connection: `ProbeConnectionTests`).
    @Test func followsTheServerThroughOutagesAndFreezes() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--interval", "200ms", "--timeout", "500ms", "--connect-timeout", "500ms", "--fall", "2", "--rise", "2", "--probe-connection", "fresh"],
            environment: ["DATABASE_URL": cluster.url]
        )

        let healthy = try #require(try await daemon.waitFor(.healthy))
        #expect(healthy.target == cluster.url)
        #expect(healthy.lastProbe?.ok == true)
        #expect(try Binaries.healthctl(["--socket", daemon.socketPath, "status"]).status == 0)
        #expect(try await daemon.get("/health").status == 200)

        try await cluster.stop()
        _ = try #require(try await daemon.waitFor(.unhealthy))
        // A probe made while the server shuts down may end in a reset (network) or in 57P03; once
        // it is gone, every probe is refused.
        let refused = try #require(try await daemon.waitForStatus(timeout: .seconds(15)) { $0.lastProbe?.reason == "refused" })
        #expect(refused.state == HealthState.unhealthy.rawValue)
        #expect(try await daemon.get("/health").status == 503)
        let ctl = try Binaries.healthctl(["--socket", daemon.socketPath, "status"])
        #expect(ctl.status == 2)
        #expect(ctl.stdout.contains("refused"))

        try await cluster.start()
        _ = try #require(try await daemon.waitFor(.healthy))

        try cluster.freeze()
        let frozen = try #require(try await daemon.waitFor(.unhealthy))
        try cluster.thaw()
        #expect(frozen.lastProbe?.reason == "timeout")
        #expect((frozen.lastProbe?.latencyMs ?? 0) < 700)
        _ = try #require(try await daemon.waitFor(.healthy))

        let events = try await daemon.events()
        #expect(events.map { "\($0.from)>\($0.to)" } == [
            "unhealthy>healthy", "healthy>unhealthy", "unhealthy>healthy", "healthy>unhealthy", "unknown>healthy",
        ])
        #expect(events[1].reason == "timeout")
        #expect(["refused", "network", "starting-or-stopping"].contains(events[3].reason), "\(events[3].reason)")
        #expect(Set(events.map(\.id)).count == 5)
        let status = try await daemon.status()
        #expect(status.transitions == 5)
    }

    @Test func shutdownDuringAHungProbeIsPromptAndRemovesTheSocket() async throws {
        let listener = try BlackHoleListener()
        defer { listener.close() }
        let daemon = try RunningDaemon(
            ["--timeout", "20s", "--interval", "30s", "--database-url", "postgresql://u@127.0.0.1:\(listener.port)/db"]
        )
        try await Task.sleep(for: .milliseconds(300))
        let started = ContinuousClock.now
        let status = daemon.process.terminate(timeout: .seconds(10))
        #expect(status == 0)
        #expect(ContinuousClock.now - started < .seconds(3))
        #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
    }

    @Test func notConfiguredIsAStateNotAnError() async throws {
        let daemon = try RunningDaemon(["--interval", "200ms"])
        _ = try #require(try await daemon.waitFor(.notConfigured))
        let health = try await daemon.get("/health")
        #expect(health.status == 200)
        let document = try JSONDecoder().decode(HealthDocument.self, from: Data(health.body))
        #expect(document.database == "not-configured")
        #expect(document.ok)
        let ctl = try Binaries.healthctl(["--socket", daemon.socketPath, "status"])
        #expect(ctl.status == 1, "\(ctl.stdout)\(ctl.stderr)")

        let strict = try RunningDaemon(["--require-database"])
        _ = try #require(try await strict.waitFor(.notConfigured))
        #expect(try await strict.get("/health").status == 503)
        #expect(try Binaries.healthctl(["--socket", strict.socketPath, "status"]).status == 1)
    }

    @Test func aPasswordAppearsInNoOutput() async throws {
        let sentinel = "Sentinel-4c1d-PW"
        let cluster = try clusterWithPasswordRole("watcher", password: "the-real-one")
        defer { cluster.destroy() }
        let url = "postgresql://watcher:\(sentinel)@127.0.0.1:\(cluster.port)/postgres"
        let journal = try JournalCapture()
        let daemon = try RunningDaemon(["--interval", "200ms", "--database-url", url], launcher: journal.launcher)
        let unhealthy = try #require(try await daemon.waitFor(.unhealthy))
        #expect(unhealthy.lastProbe?.reason == "auth")
        #expect(unhealthy.lastProbe?.sqlstate == "28P01")
        // The transition is spooled (the database refuses the password) and announced.
        _ = try #require(try await daemon.waitForSpool { $0.pending == 1 && $0.lastDeliveryError != nil })
        #expect(await waitUntil(timeout: .seconds(5)) { journal.text().contains("DREAMNET_REASON=auth") })

        var outputs: [String] = []
        for uri in ["/status", "/events", "/health", "/metrics"] {
            outputs.append(String(decoding: try await daemon.get(uri).body, as: UTF8.self))
        }
        #expect(outputs[3].contains("dreamnet_healthd"), "metrics served")
        let alertLog = try String(contentsOfFile: daemon.alertLogPath, encoding: .utf8)
        #expect(alertLog.contains("\"to\":\"unhealthy\""))
        outputs += [alertLog, journal.text()]
        // The spool's own bytes, write-ahead log included.
        for file in ["spool.sqlite3", "spool.sqlite3-wal"] {
            if let data = FileManager.default.contents(atPath: daemon.stateDirectory + "/" + file) {
                outputs.append(String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self))
            }
        }
        let ctlEvents = try Binaries.healthctl(["--socket", daemon.socketPath, "events", "--json"])
        let ctlAlerts = try Binaries.healthctl(["alerts", "--alert-log", daemon.alertLogPath])
        outputs += [ctlEvents.stdout, ctlEvents.stderr, ctlAlerts.stdout, ctlAlerts.stderr]
        let ctlStatus = try Binaries.healthctl(["--socket", daemon.socketPath, "status"])
        let ctlJSON = try Binaries.healthctl(["--socket", daemon.socketPath, "status", "--json"])
        let ctlProbe = try Binaries.healthctl(["probe", "--database-url", url])
        let ctlProbeJSON = try Binaries.healthctl(["probe", "--json"], environment: ["DATABASE_URL": url])
        #expect(ctlProbe.status == 2)
        #expect(ctlProbe.stdout.contains("auth"))
        for output in [ctlStatus, ctlJSON, ctlProbe, ctlProbeJSON] {
            outputs += [output.stdout, output.stderr]
        }
        // Malformed percent escapes: libpq 15 echoes the token in its error text.
        let malformed = "postgresql://watcher:\(sentinel)%zz@127.0.0.1:\(cluster.port)/postgres"
        let rejected = try Binaries.healthd(["--socket", daemon.directory.appendingPathComponent("x.sock").path, "--state-dir", daemon.stateDirectory, "--database-url", malformed])
        #expect(rejected.status == 2)
        #expect(rejected.stderr.contains("database_url"))
        let rejectedEnv = try Binaries.healthd(["--socket", daemon.directory.appendingPathComponent("y.sock").path, "--state-dir", daemon.stateDirectory], environment: ["DATABASE_URL": malformed])
        #expect(rejectedEnv.status == 2)
        #expect(rejectedEnv.stderr.contains("DATABASE_URL"))
        let rejectedProbe = try Binaries.healthctl(["probe", "--database-url", malformed])
        #expect(rejectedProbe.status == 3)
        outputs += [rejected.stdout, rejected.stderr, rejectedEnv.stderr, rejectedProbe.stdout, rejectedProbe.stderr]

        let log = daemon.process.output()
        #expect(log.contains("auth"), "the daemon logs the failure")
        outputs.append(log)
        for output in outputs {
            #expect(!output.contains(sentinel), "secret leaked in: \(output)")
            #expect(!output.contains("Sentinel"), "secret leaked in: \(output)")
        }
    }
}

/// Timing against the detection bound. `scripts/test` runs this suite on its own before the rest,
/// so that dozens of parallel clusters and daemons do not stand between the fault and the verdict.
@Suite(.serialized) struct DetectionTimingTests {
    /// From fault to state change within the detection bound + 0.5 s, with the defaults
    /// (session mode) for a stopped server, which the kept session sees at once, and a path
    /// that goes silent (a partition: no answer on the kept session, no new connection); and for
    /// a frozen postmaster, which only a new connection sees, within fresh_every more
    /// (fresh_every shortened to 3 s here), or within the plain bound in fresh mode.
    @Test(arguments: [
        (["--no-splay"], "stop"),
        (["--no-splay", "--fresh-every", "3s"], "freeze"),
        (["--no-splay", "--probe-connection", "fresh"], "freeze"),
        (["--no-splay", "--probe-connection", "fresh"], "stop"),
        (["--no-splay"], "partition"),
        (["--no-splay", "--probe-connection", "fresh"], "partition"),
    ])
    func detectsFaultsWithinTheBoundWithDefaults(arguments: [String], fault: String) async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        // A path that goes silent: neither a kept session nor a new connection gets an answer.
        let path = try LatencyRelay(upstreamPort: cluster.port, delay: .zero)
        defer { path.close() }
        let url = fault == "partition" ? "postgresql://postgres@127.0.0.1:\(path.port)/postgres" : cluster.url
        let daemon = try RunningDaemon(arguments, environment: ["DATABASE_URL": url])
        var configuration = DaemonConfiguration.defaults
        if arguments.contains("fresh") { configuration.probeConnection = .fresh }
        if arguments.contains("3s") { configuration.freshEvery = .seconds(3) }
        let bound = (fault == "freeze" ? configuration.newConnectionDetectionBound : configuration.detectionBound)
            + .milliseconds(500)
        _ = try #require(try await daemon.waitFor(.healthy))

        // Land the fault at a random point of the probe cycle (and, in session mode, of the
        // fresh connection's cycle).
        try await Task.sleep(for: .milliseconds(Int.random(in: 0..<2_000)))
        let faultAt = ContinuousClock.now
        switch fault {
        case "stop": try await cluster.stop()
        case "freeze": try cluster.freeze()
        default: path.setPartitioned(true)
        }
        let unhealthy = try await daemon.waitFor(.unhealthy, timeout: bound + .seconds(5))
        let detection = ContinuousClock.now - faultAt
        #expect(unhealthy != nil, "\(fault) not detected")
        #expect(detection <= bound, "\(fault) detected after \(detection), bound \(bound)")
        switch fault {
        case "stop": try await cluster.start()
        case "freeze": try cluster.thaw()
        default: path.setPartitioned(false)
        }
        _ = try #require(try await daemon.waitFor(.healthy, timeout: .seconds(15)))
    }
}
