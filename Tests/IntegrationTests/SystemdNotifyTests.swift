import Foundation
import HealthCore
import Synchronization
import Testing
import StatusHTTP
import TestSupport

/// The sd_notify protocol as systemd would see it: a datagram socket of the test's own.
@Suite(.serialized) struct SystemdNotifyTests {
    @Test(arguments: [false, true])
    func readyStatusWatchdogAndStopping(abstract: Bool) async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let listener = try NotifyListener(abstract: abstract)
        defer { listener.close() }
        let daemon = try RunningDaemon(
            ["--interval", "2s", "--timeout", "500ms", "--connect-timeout", "500ms", "--fall", "1", "--rise", "1", "--database-url", cluster.url],
            environment: ["NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "600000"]
        )
        #expect(await waitUntil(timeout: .seconds(10)) { listener.messages.contains { $0.text.contains("READY=1") } })
        let ready = try #require(listener.messages.first { $0.text.contains("READY=1") })
        #expect(ready.text.contains("STATUS=database healthy"))
        // READY comes after the first probe: the status socket already has a verdict.
        #expect(try await daemon.status().lastProbe != nil)

        // A 2 s interval and a 0.6 s watchdog: the loop wakes between probes to ping.
        try await Task.sleep(for: .seconds(2.5))
        let pings = listener.messages.filter { $0.text == "WATCHDOG=1" }.map(\.at)
        #expect(pings.count >= 8, "\(pings.count) pings in 2.5 s")
        // The loop pings every third of the period (200 ms); systemd acts on a gap of a whole
        // period. Three quarters of it leaves room for a tick delayed on a loaded machine and
        // still fails a loop that stops pinging between probes.
        let gaps = zip(pings.dropFirst(), pings).map { $0 - $1 }
        #expect(gaps.allSatisfy { $0 < .milliseconds(450) }, "\(gaps)")

        // A down database changes STATUS and does not stop the pings.
        try await cluster.stop()
        _ = try #require(try await daemon.waitFor(.unhealthy))
        #expect(await waitUntil(timeout: .seconds(3)) { listener.messages.contains { $0.text.contains("STATUS=database unhealthy") } })
        let before = listener.messages.filter { $0.text == "WATCHDOG=1" }.count
        try await Task.sleep(for: .seconds(1))
        #expect(listener.messages.filter { $0.text == "WATCHDOG=1" }.count >= before + 3)

        #expect(daemon.process.terminate(timeout: .seconds(5)) == 0)
        #expect(listener.messages.contains { $0.text.contains("STOPPING=1") })
    }

    @Test func aStalledProbeLoopStopsThePings() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let listener = try NotifyListener(abstract: false)
        defer { listener.close() }
        let daemon = try RunningDaemon(
            ["--interval", "200ms", "--database-url", cluster.url],
            environment: [
                "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "600000",
                "DREAMNET_HEALTHD_FAULT": "stall-probe-loop-after=5",
            ]
        )
        #expect(await waitUntil(timeout: .seconds(10)) { listener.messages.contains { $0.text.contains("READY=1") } })
        try await Task.sleep(for: .seconds(2))
        let count = listener.messages.filter { $0.text == "WATCHDOG=1" }.count
        try await Task.sleep(for: .seconds(1.5))
        #expect(listener.messages.filter { $0.text == "WATCHDOG=1" }.count == count, "pings went on after the stall")
        #expect(daemon.process.isRunning)
    }
}

/// Receives sd_notify datagrams, each with the time it arrived.
final class NotifyListener: Sendable {
    struct Message: Sendable {
        var text: String
        var at: ContinuousClock.Instant
    }

    let address: String
    private let descriptor: Int32
    private final class Inbox: Sendable {
        let list = Mutex<[Message]>([])
        let stopped = Mutex(false)
    }

    private let inbox = Inbox()
    private let directory: URL

    init(abstract: Bool) throws {
        directory = try temporaryDirectory(prefix: "healthd-notify")
        let path = abstract ? "@dreamnet-test-\(UUID().uuidString.prefix(8))" : directory.appendingPathComponent("notify.sock").path
        address = path
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw TestSupportError("bind \(path): \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let socketDescriptor = descriptor
        let inbox = inbox
        // The receiving thread closes the socket itself, once `close()` has asked it to stop: a
        // descriptor closed under a thread still reading it may be reused by another test's
        // socket before the next `recv`, which would then take that socket's bytes.
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4_096)
            while !inbox.stopped.withLock({ $0 }) {
                let count = recv(socketDescriptor, &buffer, buffer.count, 0)
                if count > 0 {
                    let message = Message(text: String(decoding: buffer[..<count], as: UTF8.self), at: .now)
                    inbox.list.withLock { $0.append(message) }
                } else if count < 0 && errno != EAGAIN && errno != EINTR {
                    // Not a reason to close early: `close()` may still shut the descriptor
                    // down, and by then its number may be another test's socket.
                    Thread.sleep(forTimeInterval: 0.01)
                }
            }
            Glibc.close(socketDescriptor)
        }
    }

    var messages: [Message] { inbox.list.withLock { $0 } }

    /// Stops receiving; the socket is closed by the receiving thread within its 100 ms timeout.
    /// Shut down before the thread is told to stop, so never after the thread has closed it.
    func close() {
        guard !inbox.stopped.withLock({ $0 }) else { return }
        shutdown(descriptor, Int32(SHUT_RDWR))
        inbox.stopped.withLock { $0 = true }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Socket activation: the daemon serves on the socket systemd passes, and refuses ones that
/// are not meant for it.
@Suite(.serialized) struct SocketActivationTests {
    @Test func servesOnThePassedSocket() async throws {
        let directory = try temporaryDirectory(prefix: "healthd-activate")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("passed.sock").path
        let state = directory.appendingPathComponent("state").path
        let activator = try BackgroundProcess(
            URL(fileURLWithPath: "/usr/bin/systemd-socket-activate"),
            ["-l", path, Binaries.daemon.path, "--socket", path, "--state-dir", state,
             "--alert-log", directory.appendingPathComponent("alerts.log").path],
            removing: ["DATABASE_URL"]
        )
        defer { activator.terminate(timeout: .seconds(5)) }
        #expect(await waitUntil(timeout: .seconds(5)) { FileManager.default.fileExists(atPath: path) })
        // The first connection starts the daemon, which answers it on the passed socket.
        // Generous: a debug build starting while the other suites run can be slow.
        let response = try await statusRequest("/health", socketPath: path, timeout: .seconds(30))
        #expect(response.status == 200)
        let health = try JSONDecoder().decode(HealthDocument.self, from: Data(response.body))
        #expect(health.service == "dreamnet-healthd")
        #expect(await waitUntil(timeout: .seconds(5)) { activator.output().contains("serving on the socket passed by systemd") })
    }

    @Test func descriptorsNotMeantForItAreRefused() throws {
        let directory = try temporaryDirectory(prefix: "healthd-activate")
        defer { try? FileManager.default.removeItem(at: directory) }
        let common = "--socket \(directory.path)/s.sock --state-dir \(directory.path)/state --alert-log \(directory.path)/a.log"
        let cases: [(String, String)] = [
            ("LISTEN_PID=1 LISTEN_FDS=1 exec \"$0\" \(common)", "not ours"),
            ("exec 3</dev/null 4</dev/null; LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" \(common)", "expected exactly one socket"),
            ("exec 3</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \(common)", "not a listening Unix stream socket"),
        ]
        for (script, message) in cases {
            let output = try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", script, Binaries.daemon.path])
            #expect(output.status == 2, "\(script): \(output.stderr)")
            #expect(output.stderr.contains(message), "\(script): \(output.stderr)")
        }
    }
}

/// SIGHUP: RELOADING=1 with MONOTONIC_USEC, the configuration applied, READY=1; a bad one
/// changes nothing.
@Suite(.serialized) struct ReloadTests {
    @Test func reloadAppliesAGoodConfigurationAndRefusesABadOne() async throws {
        let first = try await TestPostgres.start()
        let second = try await TestPostgres.start()
        defer { first.destroy(); second.destroy() }
        let listener = try NotifyListener(abstract: false)
        defer { listener.close() }
        let directory = try temporaryDirectory(prefix: "healthd-reload")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("healthd.conf")
        try "interval = 2s\nfall = 1\nrise = 1\ndatabase_url = '\(first.url)'\n".write(to: config, atomically: true, encoding: .utf8)
        let daemon = try RunningDaemon(["--config", config.path], environment: ["NOTIFY_SOCKET": listener.address])
        _ = try #require(try await daemon.waitFor(.healthy))
        #expect(await waitUntil(timeout: .seconds(5)) { listener.messages.contains { $0.text.contains("READY=1") } })

        // A new interval and a new database, applied at once.
        try await first.stop()
        try "interval = 300ms\nfall = 1\nrise = 1\ndatabase_url = '\(second.url)'\n".write(to: config, atomically: true, encoding: .utf8)
        let before = listener.messages.count
        daemon.process.signal(SIGHUP)
        #expect(await waitUntil(timeout: .seconds(5)) { listener.messages.dropFirst(before).contains { $0.text.contains("READY=1") } })
        let afterReload = Array(listener.messages.dropFirst(before))
        let reloading = try #require(afterReload.firstIndex { $0.text.contains("RELOADING=1") })
        let ready = try #require(afterReload.firstIndex { $0.text.contains("READY=1") })
        #expect(reloading < ready)
        let monotonic = afterReload[reloading].text.split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }
        #expect(monotonic.flatMap { Int64($0.dropFirst("MONOTONIC_USEC=".count)) }.map { $0 > 0 } == true)
        let status = try await daemon.status()
        #expect(status.intervalMs == 300)
        #expect(status.target == second.url)
        #expect(status.state == "healthy")

        // A bad configuration: refused, reported, the running one kept.
        try "interval = soon\n".write(to: config, atomically: true, encoding: .utf8)
        let beforeBad = listener.messages.count
        daemon.process.signal(SIGHUP)
        #expect(await waitUntil(timeout: .seconds(5)) { listener.messages.dropFirst(beforeBad).contains { $0.text.contains("READY=1") } })
        #expect(listener.messages.dropFirst(beforeBad).contains { $0.text.contains("STATUS=reload failed") && $0.text.contains("interval") })
        #expect(try await daemon.status().intervalMs == 300)
        #expect(daemon.process.isRunning)
        #expect(daemon.process.output().contains("reload refused"))
    }
}
