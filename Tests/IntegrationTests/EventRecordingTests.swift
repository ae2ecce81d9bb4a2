import Foundation
import HealthCore
import Testing
import TestSupport

/// Every transition reaches system_events exactly once, through the spool, whatever fails.
@Suite(.serialized) struct EventRecordingTests {
    /// Rows of system_events as `id|from|to|delivery|timestamp`, oldest first.
    func rows(_ cluster: TestPostgres) throws -> [[String]] {
        let output = try cluster.psql("""
            SELECT id, payload->>'from', payload->>'to', metadata->>'delivery',
                   to_char(timestamp, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), event_type, source, severity
            FROM system_events ORDER BY timestamp, (metadata->>'seq')::bigint
            """)
        return output.split(separator: "\n").filter { !$0.isEmpty }.map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
    }

    func tableExists(_ cluster: TestPostgres) throws -> Bool {
        try cluster.psql("SELECT to_regclass('system_events') IS NOT NULL") == "t"
    }

    let quick = ["--interval", "200ms", "--timeout", "500ms", "--connect-timeout", "500ms", "--fall", "1", "--rise", "1"]
    /// Quick probes, and no flap coalescing: these tests count every transition.
    var fast: [String] { quick + ["--flap-threshold", "1000"] }

    /// Must-show 1: outage and flaps while the events database is down; every row appears once,
    /// in order, with its original timestamp and delivery = spooled.
    @Test func eventsSpooledDuringAnOutageAreReplayedInOrderOnce() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        for _ in 0..<3 { try await daemon.flap(probed) }

        let recorded = try await daemon.events()
        #expect(recorded.count == 7)
        #expect(recorded.allSatisfy { $0.delivery == "pending" }, "\(recorded.map { $0.delivery ?? "-" })")
        let spool = try #require(try await daemon.status().spool)
        #expect(spool.pending == 7)
        #expect(spool.lastDeliveryError != nil)

        try await events.start()
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let table = try rows(events)
        let expected = recorded.reversed()
        #expect(table.map { $0[0] } == expected.map(\.id))
        #expect(table.map { "\($0[1])>\($0[2])" } == expected.map { "\($0.from)>\($0.to)" })
        #expect(table.allSatisfy { $0[3] == "spooled" })
        #expect(table.map { $0[4] } == expected.map(\.observedAt))
        #expect(table.allSatisfy { $0[5] == "database.health.transition" && $0[6] == "dreamnet-healthd" })
        #expect(table.map { $0[7] } == expected.map { $0.to == "healthy" ? "info" : "critical" })
        #expect(table.first?[1] == "unknown")
        #expect(try await daemon.events().allSatisfy { $0.delivery == "spooled" })
    }

    /// Must-show 2: kill -9 while events are spooled and the database is down; restart; every
    /// event exactly once.
    @Test func killNineWithASpoolLosesNothing() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let state = try temporaryDirectory(prefix: "healthd-state").path
        var first: RunningDaemon? = try RunningDaemon(
            fast + ["--database-url", probed.url, "--events-database-url", events.url], stateDirectory: state
        )
        _ = try #require(try await first?.waitFor(.healthy))
        try await first!.flap(probed)
        let spooled = try #require(try await first?.events()).map(\.id)
        #expect(spooled.count == 3)
        first?.process.signal(SIGKILL)
        _ = first?.process.waitForExit(timeout: .seconds(5))
        first = nil

        let second = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url], stateDirectory: state)
        _ = try #require(try await second.waitFor(.healthy))
        #expect(try await second.status().spool?.pending == 3)
        try await events.start()
        _ = try #require(try await second.waitForSpool { $0.pending == 0 })
        let ids = try rows(events).map { $0[0] }
        #expect(Set(ids) == Set(spooled))
        #expect(ids.count == spooled.count)
        // Restarted in the state it was killed in: no new transition.
        #expect(try await second.status().transitions == 0)
    }

    /// Must-show 3: the daemon dies after the database committed a batch but before the spool
    /// forgot it; the replay inserts nothing twice.
    @Test func aKillBetweenCommitAndSpoolRemovalLeavesOneRowEach() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let state = try temporaryDirectory(prefix: "healthd-state").path
        let arguments = fast + ["--database-url", probed.url, "--events-database-url", events.url]
        var first: RunningDaemon? = try RunningDaemon(arguments, environment: ["DREAMNET_HEALTHD_FAULT": "exit-after-commit"], stateDirectory: state)
        _ = try #require(try await first?.waitFor(.healthy))
        try await first!.flap(probed)
        let spooled = try #require(try await first?.events()).map(\.id)
        try await events.start()
        // The first delivery commits, then the daemon dies before removing the batch.
        #expect(first?.process.waitForExit(timeout: .seconds(30)) == 86)
        first = nil
        #expect(Set(try rows(events).map { $0[0] }) == Set(spooled))

        let second = try RunningDaemon(arguments, stateDirectory: state)
        _ = try #require(try await second.waitForSpool { $0.pending == 0 })
        let ids = try rows(events).map { $0[0] }
        #expect(ids.count == spooled.count)
        #expect(Set(ids) == Set(spooled))
    }

    /// A crash between storing an event and writing its alert-log line (the line is written at
    /// the restart), and one right after the line (it is not written again): the alert log and
    /// the table each hold the event once.
    /// With `rotated`, the alert log is also rotated (renamed) before the restart: the line the
    /// crashed daemon wrote is then in the rotated copy.
    @Test(arguments: [("exit-before-announce", Int32(87), false), ("exit-after-alert-line", Int32(88), false),
                      ("exit-after-alert-line", Int32(88), true)])
    func aCrashAroundTheAlertLineLosesAndRepeatsNothing(fault: String, status: Int32, rotated: Bool) async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let directory = try temporaryDirectory(prefix: "healthd-announce")
        defer { try? FileManager.default.removeItem(at: directory) }
        let state = directory.appendingPathComponent("state").path
        let alertLog = directory.appendingPathComponent("alerts.log").path
        let arguments = fast + ["--database-url", cluster.url, "--alert-log", alertLog]
        let crashing = try BackgroundProcess(Binaries.daemon, [
            "--socket", directory.appendingPathComponent("first.sock").path, "--state-dir", state,
        ] + arguments, environment: ["DREAMNET_HEALTHD_FAULT": fault], removing: ["DATABASE_URL"])
        #expect(crashing.waitForExit(timeout: .seconds(30)) == status, "\(crashing.output())")
        let linesBefore = (try? String(contentsOfFile: alertLog, encoding: .utf8))?.split(separator: "\n") ?? []
        #expect(linesBefore.count == (fault == "exit-before-announce" ? 0 : 1))
        if rotated { try FileManager.default.moveItem(atPath: alertLog, toPath: alertLog + ".1") }

        let daemon = try RunningDaemon(arguments, stateDirectory: state)
        _ = try #require(try await daemon.waitFor(.healthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let ids = try rows(cluster).map { $0[0] }
        #expect(ids.count == 1)
        let files = rotated ? [alertLog + ".1", alertLog] : [alertLog]
        // The restart may have had nothing to write: the new file need not exist.
        let lines = files.flatMap { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }
        #expect(lines.compactMap(AlertLine.id(of:)) == ids)
        // Restored in the state it was stored with: the restart itself is no transition.
        #expect(try await daemon.status().transitions == 0)
    }

    /// A role that may write system_events, and a daemon that records through it.
    func writerSetUp() throws -> (probed: TestPostgres, events: TestPostgres, writerURL: String) {
        let probed = try TestPostgres.start()
        let events = try TestPostgres.start()
        try events.psql("CREATE ROLE writer LOGIN")
        try events.psql(Examples.systemEventsSchema())
        try events.psql("GRANT SELECT, INSERT ON system_events TO writer")
        return (probed, events, "postgresql://writer@127.0.0.1:\(events.port)/postgres")
    }

    /// Matrix row 6: no INSERT privilege (42501): events stay spooled with a clear error and are
    /// delivered after the grant.
    @Test func revokedInsertKeepsEventsSpooled() async throws {
        let (probed, events, writerURL) = try writerSetUp()
        defer { probed.destroy(); events.destroy() }
        try events.psql("REVOKE INSERT ON system_events FROM writer")
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", writerURL])
        _ = try #require(try await daemon.waitFor(.healthy))
        let denied = try #require(try await daemon.waitForSpool { $0.lastDeliveryError != nil })
        #expect(denied.lastDeliveryError?.contains("permission denied") == true)
        #expect(denied.lastDeliveryError?.contains("42501") == true)
        #expect(denied.pending == 1)
        try events.psql("GRANT INSERT ON system_events TO writer")
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 && $0.lastDeliveryError == nil })
        #expect(try rows(events).count == 1)
    }

    /// Matrix row 7: read-only transactions (25006).
    @Test func readOnlyTransactionsKeepEventsSpooled() async throws {
        let (probed, events, writerURL) = try writerSetUp()
        defer { probed.destroy(); events.destroy() }
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", writerURL])
        _ = try #require(try await daemon.waitFor(.healthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        try events.psql("ALTER ROLE writer SET default_transaction_read_only = on")
        try await daemon.flap(probed)
        let readOnly = try #require(try await daemon.waitForSpool { $0.pending == 2 && $0.lastDeliveryError != nil })
        #expect(readOnly.lastDeliveryError?.contains("25006") == true)
        try events.psql("ALTER ROLE writer RESET default_transaction_read_only")
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        #expect(try rows(events).count == 3)
    }

    /// Matrix row 8: the table dropped (42P01), and the role may not create it (no CREATE on
    /// schema public).
    @Test func aDroppedTableKeepsEventsSpooled() async throws {
        let (probed, events, writerURL) = try writerSetUp()
        defer { probed.destroy(); events.destroy() }
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", writerURL])
        _ = try #require(try await daemon.waitFor(.healthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        try events.psql("DROP TABLE system_events")
        try await daemon.flap(probed)
        let dropped = try #require(try await daemon.waitForSpool { $0.pending == 2 && $0.lastDeliveryError != nil })
        #expect(dropped.lastDeliveryError?.contains("system_events") == true)
        try events.psql(Examples.systemEventsSchema())
        try events.psql("GRANT SELECT, INSERT ON system_events TO writer")
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        #expect(try rows(events).map { "\($0[1])>\($0[2])" } == ["healthy>unhealthy", "unhealthy>healthy"])
    }

    /// Matrix row 11: kill -9 in the middle of a spool write (SIGKILL delivered by strace at the
    /// fsync of the commit): after the restart each transition is in the table once, the alert
    /// log matches, and the chain of states is unbroken.
    @Test func killNineMidSpoolWriteLosesNothing() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let directory = try temporaryDirectory(prefix: "healthd-midwrite")
        defer { try? FileManager.default.removeItem(at: directory) }
        let state = directory.appendingPathComponent("state").path
        let alertLog = directory.appendingPathComponent("alerts.log").path
        let arguments = fast + ["--database-url", probed.url, "--events-database-url", events.url, "--alert-log", alertLog]
        var first: RunningDaemon? = try RunningDaemon(arguments, stateDirectory: state)
        _ = try #require(try await first?.waitFor(.healthy))
        let pid = try #require(first?.process.pid)
        let strace = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/strace"), [
            "-f", "-p", "\(pid)", "-o", "/dev/null", "-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:signal=SIGKILL",
        ])
        defer { strace.terminate(timeout: .seconds(5)) }
        try await Task.sleep(for: .seconds(1))
        try await probed.stop()
        #expect(first?.process.waitForExit(timeout: .seconds(15)) == 128 + SIGKILL)
        first = nil

        let second = try RunningDaemon(arguments, stateDirectory: state)
        _ = try #require(try await second.waitFor(.unhealthy))
        try await probed.start()
        _ = try #require(try await second.waitFor(.healthy))
        try await events.start()
        _ = try #require(try await second.waitForSpool { $0.pending == 0 })
        let table = try rows(events)
        #expect(Set(table.map { $0[0] }).count == table.count)
        let lines = try String(contentsOfFile: alertLog, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.compactMap(AlertLine.id(of:)) == table.map { $0[0] })
        #expect(table.map { "\($0[1])>\($0[2])" } == ["unknown>healthy", "healthy>unhealthy", "unhealthy>healthy"])
    }

    /// Must-show 8, and the first start ever: `unknown → healthy` once; a restart in the same
    /// state adds no row.
    @Test func aRestartInAnUnchangedStateAddsNoRow() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let state = try temporaryDirectory(prefix: "healthd-state").path
        var first: RunningDaemon? = try RunningDaemon(["--interval", "200ms", "--database-url", cluster.url], stateDirectory: state)
        _ = try #require(try await first?.waitFor(.healthy))
        _ = try #require(try await first!.waitForSpool { $0.pending == 0 })
        let before = try rows(cluster)
        #expect(before.count == 1)
        #expect(before.first?[1] == "unknown")
        #expect(before.first?[3] == "direct")
        #expect(first?.process.terminate(timeout: .seconds(5)) == 0)
        first = nil

        let second = try RunningDaemon(["--interval", "200ms", "--database-url", cluster.url], stateDirectory: state)
        _ = try #require(try await second.waitFor(.healthy))
        try await Task.sleep(for: .seconds(1))
        #expect(try rows(cluster).count == 1)
        #expect(try await second.status().transitions == 0)
    }

    /// Must-show 7: a flap storm gives a bounded number of rows, one flapping event, and the
    /// right final state.
    @Test func aFlapStormIsCoalesced() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        let daemon = try RunningDaemon(quick + [
            "--database-url", probed.url, "--events-database-url", events.url,
            "--flap-threshold", "4", "--flap-window", "4s",
        ])
        _ = try #require(try await daemon.waitFor(.healthy))
        var toggles = 0
        for _ in 0..<25 {
            try await probed.stop()
            try await Task.sleep(for: .milliseconds(450))
            try await probed.start()
            try await Task.sleep(for: .milliseconds(450))
            toggles += 2
        }
        #expect(toggles == 50)
        let seen = try await daemon.status().transitions
        #expect(seen >= 20, "the daemon saw \(seen) transitions")

        // Stable for the window: flapping ends with one transition to the settled state.
        _ = try #require(try await daemon.waitFor(.healthy))
        try await Task.sleep(for: .seconds(5))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let table = try events.psql("SELECT event_type || ':' || coalesce(payload->>'to', payload->>'state') FROM system_events ORDER BY timestamp")
            .split(separator: "\n").map(String.init)
        let flapping = table.filter { $0.hasPrefix("database.health.flapping") }
        #expect(flapping.count == 1, "\(table)")
        #expect(table.count <= 4 + 1 + 1 + 1, "\(table)")
        #expect(table.last == "database.health.transition:healthy", "\(table)")
        let suppressed = try await daemon.events().filter { $0.delivery == "suppressed" }
        #expect(suppressed.count >= 10)
    }

    /// A full spool drops events, never silently: /status counts them, and once there is room a
    /// spool_overflow event records how many.
    @Test func aFullSpoolReportsItsDrops() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url, "--spool-limit", "2"])
        _ = try #require(try await daemon.waitFor(.healthy))
        try await daemon.flap(probed)
        try await daemon.flap(probed)
        let full = try #require(try await daemon.status().spool)
        #expect(full.pending == 2)
        #expect(full.dropped == 3)
        #expect(try await daemon.events().filter { $0.delivery == "dropped" }.count == 3)

        try await events.start()
        let spool = try #require(try await daemon.waitForSpool { $0.pending == 0 && $0.dropped == 0 })
        #expect(spool.dropped == 0)
        let overflow = try events.psql("SELECT payload->>'dropped' FROM system_events WHERE event_type = 'database.health.spool_overflow'")
        #expect(overflow == "3")
        #expect(try rows(events).count == 3)
        let alerts = try String(contentsOfFile: daemon.alertLogPath, encoding: .utf8)
        #expect(alerts.contains("database.health.spool_overflow"))
    }

    /// A damaged spool file is moved aside, never deleted, and the daemon carries on.
    @Test func aCorruptSpoolIsMovedAsideAndTheDaemonRuns() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let state = try temporaryDirectory(prefix: "healthd-corrupt").path
        let garbage = Data((0..<65_536).map { _ in UInt8.random(in: 0...255) })
        try garbage.write(to: URL(fileURLWithPath: state + "/spool.sqlite3"))
        let daemon = try RunningDaemon(["--interval", "200ms", "--database-url", cluster.url], stateDirectory: state)
        _ = try #require(try await daemon.waitFor(.healthy))
        let moved = try FileManager.default.contentsOfDirectory(atPath: state).filter { $0.hasPrefix("spool.sqlite3.corrupt-") }
        #expect(moved.count == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: state + "/" + moved[0])) == garbage)
        #expect(daemon.process.output().contains("moved aside"))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        // The damage is on record, before the first transition.
        let types = try cluster.psql("SELECT event_type || ':' || coalesce(payload->>'damaged', '-') FROM system_events ORDER BY timestamp")
        #expect(types.split(separator: "\n") == ["database.health.spool_damaged:-", "database.health.transition:-"])
        let alerts = try String(contentsOfFile: daemon.alertLogPath, encoding: .utf8)
        #expect(alerts.contains("event spool was damaged: 0 events recovered, an unknown number of events unreadable"))
    }

    /// SIGTERM with events spooled and the database back: one last delivery before exit 0.
    @Test func shutdownDeliversWhatTheDatabaseWillTake() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        try await daemon.flap(probed)
        // Let the retry backoff grow, so that only the shutdown delivery can be in time.
        try await Task.sleep(for: .seconds(4))
        #expect(try await daemon.status().spool?.pending == 3)
        try await events.start()
        #expect(daemon.process.terminate(timeout: .seconds(10)) == 0)
        #expect(try rows(events).count == 3)
    }

    /// An existing table of another shape is used as it is never: a clear error, nothing altered.
    @Test func aTableOfAnotherShapeIsLeftAlone() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        try cluster.psql("CREATE TABLE system_events (id uuid PRIMARY KEY, event_type text)")
        let daemon = try RunningDaemon(["--interval", "200ms", "--database-url", cluster.url])
        let spool = try #require(try await daemon.waitForSpool { $0.lastDeliveryError != nil })
        #expect(spool.lastDeliveryError?.contains("left as it is") == true)
        #expect(spool.pending == 1)
        #expect(try cluster.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'system_events'") == "2")
    }
}
