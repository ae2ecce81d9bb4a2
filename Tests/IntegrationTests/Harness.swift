import Foundation
import HealthCore
import PostgresProbe
import StatusClient
import StatusHTTP
import TestSupport

/// Runs the built binaries the way operators and scripts do.
enum Binaries {
    static var daemon: URL { productsDirectory().appendingPathComponent("dreamnet-healthd") }
    static var control: URL { productsDirectory().appendingPathComponent("dreamnet-healthctl") }
    static var probe: URL { productsDirectory().appendingPathComponent("dreamnet-probe") }

    /// `dreamnet-healthctl ARGS`, without a DATABASE_URL of the test process leaking in.
    static func healthctl(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessOutput {
        var env = ProcessInfo.processInfo.environment
        env["DATABASE_URL"] = nil
        env["DREAMNET_PROBE"] = nil  // the build's own, beside the CLI
        env.merge(environment) { $1 }
        return try runProcess(control, arguments, environment: env, timeout: .seconds(30))
    }

    static func healthd(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessOutput {
        var env = ProcessInfo.processInfo.environment
        env["DATABASE_URL"] = nil
        env.merge(environment) { $1 }
        return try runProcess(daemon, arguments, environment: env, timeout: .seconds(30))
    }
}

/// `GET uri` with the CLI's blocking client, on a thread of its own (the daemon's
/// `onOwnThread`): never on the two cooperative threads the suites share, which a daemon slow
/// to answer would hold.
func statusRequest(_ uri: String, socketPath: String, timeout: Duration) async throws -> StatusClient.Response {
    try await offPool { try StatusClient.get(uri, socketPath: socketPath, timeout: timeout) }
}

/// Blocking work (a psql, a PgBouncer console command) on a thread of its own, so that a test
/// polling in a loop does not hold one of the two cooperative threads the suites share.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    let outcome = await onOwnThread { Result { try body() } }
    guard let outcome else { throw TestSupportError("could not start a thread") }
    return try outcome.get()
}

/// `TestSupport.waitUntil` for async tests: between checks it sleeps the task, not the thread,
/// so a test waiting seconds for a condition leaves the two cooperative threads to the suites
/// running beside it. Conditions are quick reads (a file, a pid, a listener's messages).
func waitUntil(
    timeout: Duration,
    poll: Duration = .milliseconds(50),
    _ condition: () throws -> Bool
) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if try condition() {
            return true
        }
        let now = clock.now
        if now >= deadline {
            return false
        }
        try? await Task.sleep(for: min(poll, now.duration(to: deadline)))
    }
}

/// The cluster's life cycle for async tests, each step on a thread of its own: `initdb` and a
/// server's start or stop take a second or more on a busy machine, and would hold one of the
/// two cooperative threads the suites share for as long.
extension TestPostgres {
    static func start(extraServerOptions: [String] = [], tls: TestCertificates? = nil) async throws -> TestPostgres {
        try await offPool { try TestPostgres.start(extraServerOptions: extraServerOptions, tls: tls) }
    }

    func start() async throws {
        try await offPool { try self.start() }
    }

    func stop() async throws {
        try await offPool { try self.stop() }
    }
}

/// A daemon running in the background on its own socket, stopped when the test ends.
final class RunningDaemon {
    let process: BackgroundProcess
    let socketPath: String
    let directory: URL
    let stateDirectory: String
    private let ownsStateDirectory: Bool

    /// `stateDirectory`: reuse one across daemons (restarts); by default a fresh one.
    /// `launcher`: a command the daemon is started through (it must exec the daemon, keeping the pid).
    init(
        _ arguments: [String], environment: [String: String] = [:], stateDirectory: String? = nil,
        launcher: [String] = []
    ) throws {
        directory = try temporaryDirectory(prefix: "healthd-test")
        socketPath = directory.appendingPathComponent("status.sock").path
        self.stateDirectory = stateDirectory ?? directory.appendingPathComponent("state").path
        ownsStateDirectory = stateDirectory == nil
        let daemonArguments = ["--socket", socketPath, "--log-level", "debug", "--state-dir", self.stateDirectory,
                               "--alert-log", directory.appendingPathComponent("alerts.log").path] + arguments
        process = try BackgroundProcess(
            launcher.isEmpty ? Binaries.daemon : URL(fileURLWithPath: launcher[0]),
            launcher.isEmpty ? daemonArguments : Array(launcher.dropFirst()) + [Binaries.daemon.path] + daemonArguments,
            environment: environment, removing: environment["DATABASE_URL"] == nil ? ["DATABASE_URL"] : []
        )
        let up = waitUntil(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: socketPath) || !process.isRunning }
        guard up, process.isRunning else {
            throw TestSupportError("daemon did not start: \(process.output())")
        }
    }

    deinit {
        process.terminate(timeout: .seconds(5))
        try? FileManager.default.removeItem(at: directory)
    }

    var alertLogPath: String { directory.appendingPathComponent("alerts.log").path }

    func get(_ uri: String) async throws -> StatusClient.Response {
        // 30 s, not the client's 5: a debug-build daemon on a machine the suites keep busy
        // (clusters starting and stopping) can be slow to answer. How fast the daemon answers
        // is the benchmark's business (scripts/bench).
        try await statusRequest(uri, socketPath: socketPath, timeout: .seconds(30))
    }

    func status() async throws -> StatusDocument {
        try JSONDecoder().decode(StatusDocument.self, from: Data(try await get("/status").body))
    }

    /// Polls `/status` until `condition` holds; returns the document, or `nil` at the timeout.
    ///
    /// The timeout counts the requests asked, not the answers read: a request runs at once on
    /// a thread of its own, but its answer is read only when a cooperative thread is free, and
    /// while other suites hold both (pg_ctl, initdb) that can be tens of seconds later. An
    /// answer read after the deadline is then stale, so one more request is asked before
    /// giving up.
    func waitForStatus(timeout: Duration, _ condition: (StatusDocument) -> Bool) async throws -> StatusDocument? {
        let deadline = ContinuousClock.now + timeout
        while true {
            let asked = ContinuousClock.now
            let document = try await status()
            if condition(document) { return document }
            guard asked < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    /// Polls `/status` until the state is `state`; returns the document, or `nil` at the timeout.
    func waitFor(_ state: HealthState, timeout: Duration = .seconds(15)) async throws -> StatusDocument? {
        try await waitForStatus(timeout: timeout) { $0.state == state.rawValue }
    }

    /// Takes the probed cluster down until the daemon says unhealthy, then up until healthy.
    func flap(_ cluster: TestPostgres) async throws {
        try await cluster.stop()
        guard try await waitFor(.unhealthy) != nil else { throw TestSupportError("no unhealthy verdict") }
        try await cluster.start()
        guard try await waitFor(.healthy) != nil else { throw TestSupportError("no healthy verdict") }
    }

    /// Polls `/status` until the spool meets `condition`; `nil` at the timeout.
    func waitForSpool(
        timeout: Duration = .seconds(30), _ condition: (StatusDocument.Spool) -> Bool
    ) async throws -> StatusDocument.Spool? {
        try await waitForStatus(timeout: timeout) { $0.spool.map(condition) ?? false }?.spool
    }

    /// Event ids of the alert log's lines, in file order.
    func alertIDs() throws -> [String] {
        try String(contentsOfFile: alertLogPath, encoding: .utf8).split(separator: "\n").compactMap { AlertLine.id(of: String($0)) }
    }

    func events() async throws -> [EventDocument] {
        try JSONDecoder().decode(EventsDocument.self, from: Data(try await get("/events?limit=1000").body)).events
    }

    /// Probes that logged in (`dreamnet_healthd_probe_connections_total{connection="fresh"}`).
    func freshProbes() async throws -> Int {
        let metrics = String(decoding: try await get("/metrics").body, as: UTF8.self)
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("dreamnet_healthd_probe_connections_total{connection=\"fresh\"}") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
    }
}

/// Ids of the rows of system_events, in the order the daemon recorded them.
func systemEventIDs(_ cluster: TestPostgres) throws -> [String] {
    try cluster.psql("SELECT id FROM system_events ORDER BY timestamp, (metadata->>'seq')::bigint")
        .split(separator: "\n").map(String.init)
}

/// A cluster with a password-protected role, for auth failures and secrets.
func clusterWithPasswordRole(_ role: String, password: String) throws -> TestPostgres {
    let cluster = try TestPostgres.start()
    let hba = cluster.dataDirectory.appendingPathComponent("pg_hba.conf")
    let existing = try String(contentsOf: hba, encoding: .utf8)
    try ("host all \(role) 127.0.0.1/32 scram-sha-256\n" + existing).write(to: hba, atomically: false, encoding: .utf8)
    try cluster.psql("select pg_reload_conf()")
    try cluster.psql("create role \(role) login password '\(password)'")
    return cluster
}

/// A stand-in journald: a daemon started through `launcher` runs in a private mount namespace
/// whose /run/systemd/journal/socket is a listener that keeps every datagram it receives.
final class JournalCapture {
    let directory: URL
    let launcher: [String]
    private let datagrams: String

    init() throws {
        directory = try temporaryDirectory(prefix: "healthd-journal")
        datagrams = directory.appendingPathComponent("journal.bin").path
        // Receives what sd_journal_sendv sends, appending each datagram and a separator.
        let listener = """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind("/run/systemd/journal/socket")
            s.settimeout(0.5)
            open(sys.argv[1] + ".ready", "w").close()
            daemon = int(sys.argv[2])
            with open(sys.argv[1], "ab", buffering=0) as out:
                while True:
                    try:
                        out.write(s.recv(1 << 20) + b"\\n--END--\\n")
                    except socket.timeout:
                        try:
                            os.kill(daemon, 0)  # exits with the daemon
                        except ProcessLookupError:
                            break
            """
        let script = directory.appendingPathComponent("journal.py").path
        try listener.write(toFile: script, atomically: true, encoding: .utf8)
        launcher = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                    "mkdir -p /run/systemd/journal && mount -t tmpfs tmpfs /run/systemd/journal && "
                    + "(python3 \"$0\" \"$1\" $$ &) && while [ ! -e \"$1.ready\" ]; do sleep 0.05; done && shift && exec \"$@\"",
                    script, datagrams]
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// Every entry so far, fields as sent, entries separated by `--END--` lines.
    func text() -> String {
        (try? String(contentsOfFile: datagrams, encoding: .utf8)) ?? ""
    }
}
