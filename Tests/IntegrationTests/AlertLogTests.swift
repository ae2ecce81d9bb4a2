import Foundation
import AlertLog
import HealthCore
import Testing
import TestSupport

/// Where operators look: the alert log (rotated underneath a follower), and a spool on a full disk.
@Suite(.serialized) struct AlertLogTests {
    let fast = ["--interval", "200ms", "--timeout", "500ms", "--connect-timeout", "500ms", "--fall", "1", "--rise", "1", "--flap-threshold", "1000"]

    /// Must-show 6: logrotate with `create` + SIGUSR1, then with `copytruncate`, while
    /// `dreamnet-healthctl alerts --follow` runs: no line lost or split; ids match the table.
    @Test func rotationUnderAFollowerLosesNoLine() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        let follower = try BackgroundProcess(Binaries.control, ["alerts", "--follow", "--json", "-n", "1000", "--alert-log", daemon.alertLogPath])
        defer { follower.terminate(timeout: .seconds(2)) }

        let rotate = daemon.directory.appendingPathComponent("logrotate")
        try FileManager.default.createDirectory(at: rotate, withIntermediateDirectories: true)
        let create = rotate.appendingPathComponent("create.conf")
        try """
            \(daemon.alertLogPath) {
                rotate 5
                create 0640
                postrotate
                    kill -USR1 \(daemon.process.pid)
                endscript
            }
            """.write(to: create, atomically: true, encoding: .utf8)
        let copytruncate = rotate.appendingPathComponent("copytruncate.conf")
        try """
            \(daemon.alertLogPath) {
                rotate 5
                copytruncate
            }
            """.write(to: copytruncate, atomically: true, encoding: .utf8)
        let logrotateState = rotate.appendingPathComponent("state").path

        try await daemon.flap(probed)
        _ = try await daemon.waitForSpool { $0.pending == 0 }
        try await Task.sleep(for: .milliseconds(500))
        let rotated = try runProcess(URL(fileURLWithPath: "/usr/sbin/logrotate"), ["-f", "-s", logrotateState, create.path])
        #expect(rotated.status == 0, "\(rotated.stderr)")
        try await daemon.flap(probed)
        _ = try await daemon.waitForSpool { $0.pending == 0 }
        try await Task.sleep(for: .milliseconds(500))
        let truncated = try runProcess(URL(fileURLWithPath: "/usr/sbin/logrotate"), ["-f", "-s", logrotateState, copytruncate.path])
        #expect(truncated.status == 0, "\(truncated.stderr)")
        try await daemon.flap(probed)
        _ = try await daemon.waitForSpool { $0.pending == 0 }
        try await Task.sleep(for: .milliseconds(800))

        let lines = follower.output().split(separator: "\n").map(String.init)
        let ids = lines.compactMap(AlertLine.id(of:))
        #expect(ids.count == lines.count, "every line is a whole alert: \(lines)")
        #expect(ids.count == 7)
        #expect(Set(ids).count == ids.count)
        #expect(ids == (try systemEventIDs(events)))
        // The live file was recreated by rotation and holds only what came after it.
        let live = try String(contentsOfFile: daemon.alertLogPath, encoding: .utf8).split(separator: "\n")
        #expect(live.count == 2)
        #expect(FileManager.default.fileExists(atPath: daemon.alertLogPath + ".1"))
    }

    @Test func anUnwritableAlertLogIsReportedAndMonitoringGoesOn() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(fast + ["--database-url", cluster.url, "--alert-log", "/proc/no-such-dir/alerts.log"])
        _ = try #require(try await daemon.waitFor(.healthy))
        let alertLog = try await daemon.waitForStatus(timeout: .seconds(5)) { $0.alertLog?.error != nil }?.alertLog
        #expect(alertLog?.error?.contains("/proc/no-such-dir/alerts.log") == true)
        _ = try await daemon.waitForSpool { $0.pending == 0 }
        #expect(try systemEventIDs(cluster).count == 1)
    }

    /// Must-show 5: the spool on a tiny full filesystem: degraded reported, no crash, nothing
    /// falsely called durable; once there is room, everything is stored and delivered.
    @Test func aFullDiskDegradesTheSpoolAndLosesNothing() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let state = try temporaryDirectory(prefix: "healthd-full").path
        // A private mount namespace with a 1 MiB tmpfs as the state directory.
        let daemon = try RunningDaemon(
            fast + ["--database-url", probed.url, "--events-database-url", events.url],
            stateDirectory: state,
            launcher: ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                       "mount -t tmpfs -o size=1m tmpfs \"$0\" && exec \"$@\"", state]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        #expect(try await daemon.status().spool?.pending == 1)

        // Fill what is left of it, from outside, through the daemon's view of the file system.
        let filler = "/proc/\(daemon.process.pid)/root\(state)/filler"
        let fill = try runProcess(URL(fileURLWithPath: "/bin/dd"), ["if=/dev/zero", "of=\(filler)", "bs=4k"])
        #expect(fill.stderr.contains("No space left"), "\(fill.stderr)")

        try await daemon.flap(probed)
        let degraded = try #require(try await daemon.status().spool)
        #expect(degraded.degraded)
        #expect(degraded.inMemory == 2)
        #expect(degraded.degradedReason?.contains("spool") == true)
        #expect(try await daemon.events().prefix(2).allSatisfy { $0.delivery == "memory" })
        #expect(daemon.process.isRunning)

        // Room again: the held events are stored (in order) and delivered.
        try FileManager.default.removeItem(atPath: filler)
        try await events.start()
        let spool = try await daemon.waitForSpool { $0.pending == 0 && !$0.degraded }
        #expect(spool?.degraded == false)
        #expect(spool?.inMemory == 0)
        let recorded = try await daemon.events().map(\.id)
        #expect(Set(try systemEventIDs(events)) == Set(recorded))
        #expect(try systemEventIDs(events).count == 3)
    }
}

/// The journal entries, captured by a stand-in journald socket in a private mount namespace.
@Suite(.serialized) struct JournalTests {
    /// With stderr connected to journald (JOURNAL_STREAM names it), log lines carry their syslog
    /// priority.
    @Test func logLinesCarrySyslogPrioritiesUnderJournald() throws {
        let directory = try temporaryDirectory(prefix: "healthd-journal-stream")
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("stderr.log").path
        #expect(FileManager.default.createFile(atPath: log, contents: nil))
        // The shell opens stderr on the file, then names that file in JOURNAL_STREAM.
        let script = """
            exec 2>>"$1"; stream=$(stat -c '%d:%i' "$1"); JOURNAL_STREAM=$stream exec timeout -s INT 1 "$0" \
              --socket "$2/s.sock" --state-dir "$2/state" --alert-log "$2/alerts.log"
            """
        _ = try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", script, Binaries.daemon.path, log, directory.path], environment: ProcessInfo.processInfo.environment.filter { $0.key != "DATABASE_URL" })
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>dreamnet-healthd ") && $0.contains("started") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("<4>database not-configured") }, "\(lines)")
        #expect(lines.allSatisfy { $0.first == "<" }, "\(lines)")
    }

    @Test func everyTransitionReachesTheJournalWithItsFields() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let journal = try JournalCapture()
        let daemon = try RunningDaemon(["--interval", "200ms", "--database-url", cluster.url], launcher: journal.launcher)
        let healthy = try #require(try await daemon.waitFor(.healthy))
        #expect(healthy.state == "healthy")
        let id = try #require(try await daemon.events().first?.id)
        var text = ""
        let deadline = ContinuousClock.now + .seconds(5)
        while !text.contains(id), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            text = journal.text()
        }
        let entry = try #require(text.components(separatedBy: "\n--END--\n").first { $0.contains(id) })
        #expect(entry.contains("MESSAGE_ID=5f1c0e7a9b2d4c3e8a6f0d1b2c3e4f5a"))
        #expect(entry.contains("PRIORITY=6"))
        #expect(entry.contains("DREAMNET_EVENT_ID=\(id)"))
        #expect(entry.contains("DREAMNET_FROM=unknown"))
        #expect(entry.contains("DREAMNET_TO=healthy"))
        #expect(entry.contains("DREAMNET_REASON=ok"))
        #expect(entry.contains("MESSAGE=database healthy"))
        daemon.process.signal(SIGTERM)
    }
}

@Suite struct AlertLogWriterTests {
    @Test func linesAreWholeAndFollowTheFileAcrossRotationDeletionAndAMove() throws {
        let directory = try temporaryDirectory(prefix: "healthd-alertlog")
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = directory.appendingPathComponent("a.log").path
        let second = directory.appendingPathComponent("b.log").path
        let log = AlertLog(path: first)
        #expect(log.append("one\n") == nil)
        // Rotated away (create-style, no signal): the next line goes to a new file at the path.
        try FileManager.default.moveItem(atPath: first, toPath: first + ".1")
        #expect(log.append("two\n") == nil)
        // Deleted: recreated.
        try FileManager.default.removeItem(atPath: first)
        #expect(log.append("three\n") == nil)
        // Moved by a reload.
        log.move(to: second)
        #expect(log.append("four\n") == nil)
        #expect(try String(contentsOfFile: first + ".1", encoding: .utf8) == "one\n")
        #expect(try String(contentsOfFile: first, encoding: .utf8) == "three\n")
        #expect(try String(contentsOfFile: second, encoding: .utf8) == "four\n")
        let mode = try FileManager.default.attributesOfItem(atPath: second)[.posixPermissions] as? Int
        #expect(mode.map { $0 & 0o007 } == 0)
        // An unwritable place: an error, not a crash.
        log.move(to: "/proc/no-such-dir/alerts.log")
        #expect(log.append("five\n")?.contains("cannot open") == true)
    }
}
