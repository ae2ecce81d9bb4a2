import Foundation
import Glibc
import Synchronization

/// A throwaway PostgreSQL cluster: its own directory, port and server, gone after `destroy()` (or deinit).
///
/// Clusters are independent of each other, so tests may run several at once.
/// As root the server tools run as the `postgres` user through `runuser`, because `initdb` refuses root.
public final class TestPostgres: Sendable {
    /// The TCP port the server listens on (127.0.0.1 only). Stays the same across restarts.
    public let port: Int
    /// The cluster's own directory: `data/`, `sock/` and `server.log` live here.
    public let directory: URL
    /// Where `initdb`, `pg_ctl`, `postgres` and `psql` are taken from.
    public let binDirectory: URL

    /// The `postgres` role's password when TCP connections need one (`tls` clusters): SCRAM.
    public let password: String?
    /// The certificates a `tls` cluster serves; `nil` for a plain one.
    public let certificates: TestCertificates?

    private let extraServerOptions: [String]
    private let owner: ClusterOwner?
    /// Lifecycle flags. Held for the whole of a start/stop/destroy so those never interleave.
    private let state = Mutex(LifecycleState())

    private struct LifecycleState {
        var running = false
        var frozen = false
        var destroyed = false
    }

    // MARK: Creating

    /// Creates a cluster in a fresh temporary directory on a free port and starts it.
    ///
    /// `extraServerOptions` are appended to the `postgres` command line, e.g. `["-c", "max_connections=20"]`.
    ///
    /// With `tls`, the server serves that certificate and TCP connections authenticate with
    /// `scram-sha-256` (`password`); the Unix socket stays `trust`, for `psql(_:)`.
    public static func start(extraServerOptions: [String] = [], tls: TestCertificates? = nil) throws -> TestPostgres {
        let binDirectory = try postgresBinDirectory()
        let owner = try ClusterOwner.forCurrentUser()
        var attempt = 0
        while true {
            attempt += 1
            let directory = try clusterParentDirectory(runningAsOther: owner != nil)
            let cluster = TestPostgres(
                port: freeTCPPort(),
                directory: directory,
                binDirectory: binDirectory,
                extraServerOptions: extraServerOptions,
                owner: owner,
                certificates: tls
            )
            do {
                try cluster.initialise()
                try cluster.start()
                if let password = cluster.password {
                    try cluster.psql("ALTER ROLE postgres PASSWORD '\(password)'")
                }
                return cluster
            } catch {
                // Another program may grab the port between choosing it and the server binding it; try a new one.
                let portTaken = cluster.serverLog().contains("Address already in use")
                cluster.destroy()
                if portTaken && attempt < 3 {
                    continue
                }
                throw error
            }
        }
    }

    private init(
        port: Int, directory: URL, binDirectory: URL, extraServerOptions: [String], owner: ClusterOwner?,
        certificates: TestCertificates?
    ) {
        self.certificates = certificates
        // Letters and digits only: it goes into URLs and SQL unquoted.
        self.password = certificates.map { _ in "scram" + String(UInt64.random(in: 1...UInt64.max), radix: 36) }
        self.port = port
        self.directory = directory
        self.binDirectory = binDirectory
        self.extraServerOptions = extraServerOptions
        self.owner = owner
        ExitCleanup.register(self)
    }

    deinit {
        destroy()
    }

    // MARK: Addresses

    /// The directory holding the server's Unix socket.
    public var socketDirectory: String {
        directory.appendingPathComponent("sock").path
    }

    public var dataDirectory: URL {
        directory.appendingPathComponent("data", isDirectory: true)
    }

    public var logFile: URL {
        directory.appendingPathComponent("server.log")
    }

    /// A libpq URI reaching the server over TCP.
    public var url: String {
        "postgresql://postgres@127.0.0.1:\(port)/postgres"
    }

    /// The same as `url`, in libpq's key=value form.
    public var keyValueConninfo: String {
        "host=127.0.0.1 port=\(port) user=postgres dbname=postgres"
    }

    /// A URL with the password, over TCP: `sslmode` (`verify-full` checks the certificate
    /// against `rootCertificate`, the cluster's own authority unless given), and
    /// `channel_binding=require` when asked. `host` and `port` may name a relay or a pooler.
    public func scramURL(
        host: String = "127.0.0.1", port: Int? = nil, sslmode: String = "verify-full", channelBinding: Bool = true,
        rootCertificate: URL? = nil, user: String = "postgres", password: String? = nil
    ) -> String {
        var query = ["sslmode=\(sslmode)"]
        if let root = rootCertificate ?? certificates?.authorityFile { query.append("sslrootcert=\(root.path)") }
        if channelBinding { query.append("channel_binding=require") }
        return "postgresql://\(user):\(password ?? self.password ?? "")@\(host):\(port ?? self.port)/postgres?"
            + query.joined(separator: "&")
    }

    /// Whether the server was started, has not been stopped since and its postmaster is alive (it may be frozen).
    public var isRunning: Bool {
        state.withLock { $0.running } && postmasterPID != nil
    }

    /// The postmaster's process id, read from `postmaster.pid`; nil when no server is running.
    public var postmasterPID: pid_t? {
        guard let text = try? String(contentsOf: dataDirectory.appendingPathComponent("postmaster.pid"), encoding: .utf8),
              let firstLine = text.split(separator: "\n").first,
              let pid = pid_t(firstLine.trimmingCharacters(in: .whitespaces)),
              pid > 0
        else { return nil }
        // A crashed server leaves its pid file behind.
        guard kill(pid, 0) == 0 || errno == EPERM else { return nil }
        return pid
    }

    /// The whole server log so far.
    public func serverLog() -> String {
        readText(logFile)
    }

    // MARK: Lifecycle

    /// Starts the server again after `stop()`, on the same port. Does nothing if it is already running.
    public func start() throws {
        try state.withLock { state in
            guard !state.destroyed else { throw TestSupportError("TestPostgres at \(directory.path) was destroyed") }
            // A postmaster killed behind this object's back counts as stopped.
            guard !state.running || postmasterPID == nil else { return }
            try startServer()
            state.running = true
            state.frozen = false
        }
    }

    /// Stops the server (fast shutdown: open sessions are disconnected). Does nothing if it is not running.
    public func stop() throws {
        try state.withLock { state in
            guard state.running, !state.destroyed else { return }
            // A stopped postmaster cannot act on the shutdown request.
            if state.frozen {
                sendToPostmaster(SIGCONT)
                state.frozen = false
            }
            let result = try pgCtl(["-D", dataDirectory.path, "-m", "fast", "-w", "-t", "30", "stop"], timeout: .seconds(60))
            guard result.status == 0 else {
                throw TestSupportError("pg_ctl stop failed (\(result.status)): \(result.stderr)\(result.stdout)")
            }
            state.running = false
        }
    }

    /// Stops the server if it is running, then starts it again on the same port.
    public func restart() throws {
        try stop()
        try start()
    }

    /// Suspends the postmaster (SIGSTOP): new connections complete the TCP handshake and then hang.
    /// Sessions that are already open keep working, since their backends are separate processes.
    public func freeze() throws {
        try state.withLock { state in
            guard state.running, let pid = postmasterPID else {
                throw TestSupportError("freeze: no running server in \(directory.path)")
            }
            guard kill(pid, SIGSTOP) == 0 else {
                throw TestSupportError("kill -STOP \(pid) failed: \(String(cString: strerror(errno)))")
            }
            state.frozen = true
            // Signals are delivered asynchronously; return only once the process is really stopped.
            _ = waitUntil(timeout: .seconds(2), poll: .milliseconds(5)) { processState(pid) == "T" }
        }
    }

    /// Resumes a postmaster suspended by `freeze()` (SIGCONT).
    public func thaw() throws {
        try state.withLock { state in
            guard let pid = postmasterPID else {
                throw TestSupportError("thaw: no running server in \(directory.path)")
            }
            guard kill(pid, SIGCONT) == 0 else {
                throw TestSupportError("kill -CONT \(pid) failed: \(String(cString: strerror(errno)))")
            }
            state.frozen = false
            _ = waitUntil(timeout: .seconds(2), poll: .milliseconds(5)) { processState(pid) != "T" }
        }
    }

    /// Thaws and stops the server (immediate shutdown) and removes the directory. Safe to call more than once.
    public func destroy() {
        state.withLock { state in
            guard !state.destroyed else { return }
            state.destroyed = true
            state.running = false
            state.frozen = false
            if let pid = postmasterPID {
                _ = kill(pid, SIGCONT)
                let stopped = (try? pgCtl(
                    ["-D", dataDirectory.path, "-m", "immediate", "-w", "-t", "10", "stop"],
                    timeout: .seconds(20)
                ))?.status == 0
                if !stopped {
                    killCluster(postmasterPID: pid)
                }
            }
            try? FileManager.default.removeItem(at: directory)
            ExitCleanup.unregister(self)
        }
    }

    // MARK: SQL

    /// Runs `sql` with `psql` as the `postgres` superuser and returns its unaligned, tuples-only output
    /// without the trailing newline. Connects over the Unix socket unless `host` is given.
    /// Throws with psql's stderr if it fails or is still running after `timeout`.
    @discardableResult
    public func psql(_ sql: String, host: String? = nil, timeout: Duration = .seconds(30)) throws -> String {
        let result = try runTool("psql", [
            "-X", "-A", "-t",
            "-h", host ?? socketDirectory,
            "-p", String(port),
            "-U", "postgres",
            "-d", "postgres",
            "-v", "ON_ERROR_STOP=1",
            "-c", sql,
        ], timeout: timeout)
        guard result.status == 0 else {
            throw TestSupportError("psql failed (\(result.status)) for `\(sql)`: \(result.stderr)")
        }
        var output = result.stdout
        while output.hasSuffix("\n") {
            output.removeLast()
        }
        return output
    }

    /// The process titles of this cluster's server processes now ("postgres: postgres postgres
    /// 127.0.0.1(41234) SELECT"), background ones included: children of its postmaster, so a
    /// backend shows here while it starts up, before pg_stat_activity lists it.
    public var backendTitles: [String] {
        guard let postmaster = postmasterPID else { return [] }
        return children(of: postmaster).compactMap { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\0 "))
        }
    }

    /// Ends every session with a TCP client (a pooler's server connections, say); those over the
    /// Unix socket stay.
    public func terminateTCPSessions() throws {
        try psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_addr IS NOT NULL")
    }

    /// A psql over the Unix socket holding ACCESS EXCLUSIVE on pg_database in an open transaction
    /// for `seconds`: every new session's start-up waits on it until it ends (`psql(_:)`'s too).
    public func holdLockBlockingNewSessions(seconds: Int) throws -> BackgroundProcess {
        try BackgroundProcess(
            binDirectory.appendingPathComponent("psql"),
            ["-X", "-h", socketDirectory, "-p", "\(port)", "-U", "postgres",
             "-c", "BEGIN; LOCK pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(\(seconds)); COMMIT"]
        )
    }

    // MARK: Internals

    private func initialise() throws {
        let socketDirectory = directory.appendingPathComponent("sock", isDirectory: true)
        try FileManager.default.createDirectory(at: socketDirectory, withIntermediateDirectories: false)
        guard chmod(socketDirectory.path, 0o755) == 0 else {
            throw TestSupportError("chmod \(socketDirectory.path) failed: \(String(cString: strerror(errno)))")
        }
        if let owner {
            try owner.chown(directory.path)
            try owner.chown(socketDirectory.path)
        }
        let result = try runTool("initdb", [
            "-D", dataDirectory.path,
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ], timeout: .seconds(120))
        guard result.status == 0 else {
            throw TestSupportError("initdb failed (\(result.status)):\n\(result.stdout)\n\(result.stderr)")
        }
        if let certificates { try serveTLS(certificates) }
    }

    /// The server's certificate and key in the data directory (the key readable by the server
    /// alone, or it refuses it), TLS on, and SCRAM for every TCP connection.
    private func serveTLS(_ certificates: TestCertificates) throws {
        let files = FileManager.default
        for (source, name, mode) in [
            (certificates.serverCertificateFile, "server.crt", 0o644), (certificates.serverKeyFile, "server.key", 0o600),
        ] {
            let destination = dataDirectory.appendingPathComponent(name)
            try files.copyItem(at: source, to: destination)
            guard chmod(destination.path, mode_t(mode)) == 0 else {
                throw TestSupportError("chmod \(destination.path) failed: \(String(cString: strerror(errno)))")
            }
            try owner?.chown(destination.path)
        }
        let settings = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\npassword_encryption = 'scram-sha-256'\n"
        let configuration = dataDirectory.appendingPathComponent("postgresql.conf")
        try (readText(configuration) + "\n" + settings).write(to: configuration, atomically: false, encoding: .utf8)
        let rules = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        try rules.write(to: dataDirectory.appendingPathComponent("pg_hba.conf"), atomically: false, encoding: .utf8)
    }

    /// Caller holds `state`.
    private func startServer() throws {
        // pg_ctl hands -o to /bin/sh, so every piece is quoted.
        let serverOptions = [
            "-p", String(port),
            "-k", socketDirectory,
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
        ] + extraServerOptions
        let result = try pgCtl([
            "-D", dataDirectory.path,
            "-l", logFile.path,
            "-w", "-t", "30",
            "-o", serverOptions.map(shellQuoted).joined(separator: " "),
            "start",
        ], timeout: .seconds(60))
        guard result.status == 0 else {
            throw TestSupportError("""
                pg_ctl start failed (\(result.status)) on port \(port): \(result.stderr)\(result.stdout)
                server log (last lines):
                \(serverLogTail())
                """)
        }
    }

    private func serverLogTail(lines: Int = 30) -> String {
        serverLog().split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    private func pgCtl(_ arguments: [String], timeout: Duration) throws -> ProcessOutput {
        try runTool("pg_ctl", arguments, timeout: timeout)
    }

    /// Runs a PostgreSQL program, as the `postgres` user when this process is root.
    private func runTool(_ name: String, _ arguments: [String], timeout: Duration) throws -> ProcessOutput {
        let tool = binDirectory.appendingPathComponent(name)
        // Inherited PG* variables (PGDATA, PGOPTIONS, ...) would change what the tools do.
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        // Keeps the tools away from the invoking user's home (unreadable to postgres when that is root).
        environment["HOME"] = directory.path
        if let owner {
            return try runProcess(
                owner.runuser,
                ["-u", owner.name, "--", tool.path] + arguments,
                environment: environment,
                currentDirectory: directory,
                timeout: timeout
            )
        }
        return try runProcess(tool, arguments, environment: environment, currentDirectory: directory, timeout: timeout)
    }

    /// Caller holds `state`.
    private func sendToPostmaster(_ sig: Int32) {
        if let pid = postmasterPID {
            _ = kill(pid, sig)
        }
    }
}

// MARK: - Locating things

/// `PG_BINDIR` if set, else the newest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on PATH.
func postgresBinDirectory() throws -> URL {
    let fileManager = FileManager.default
    if let configured = ProcessInfo.processInfo.environment["PG_BINDIR"], !configured.isEmpty {
        return URL(fileURLWithPath: configured, isDirectory: true)
    }
    let root = "/usr/lib/postgresql"
    let versions = ((try? fileManager.contentsOfDirectory(atPath: root)) ?? [])
        .compactMap { name -> (Double, String)? in Double(name).map { ($0, name) } }
        .sorted { $0.0 > $1.0 }
    for (_, name) in versions {
        let bin = "\(root)/\(name)/bin"
        if fileManager.isExecutableFile(atPath: "\(bin)/initdb") {
            return URL(fileURLWithPath: bin, isDirectory: true)
        }
    }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for entry in path.split(separator: ":") where fileManager.isExecutableFile(atPath: "\(entry)/initdb") {
        return URL(fileURLWithPath: String(entry), isDirectory: true)
    }
    throw TestSupportError("no PostgreSQL server binaries: set PG_BINDIR or install postgresql under \(root)")
}

/// A new directory for one cluster. When the server runs as another user every ancestor must be
/// traversable by it, and the socket path must fit in sun_path (107 bytes), so /tmp is used if
/// the system temporary directory is unsuitable.
private func clusterParentDirectory(runningAsOther: Bool) throws -> URL {
    var parent = NSTemporaryDirectory()
    let socketPathLength = parent.utf8.count + "/pg-XXXXXX/sock/.s.PGSQL.65535".utf8.count
    if socketPathLength > 100 || (runningAsOther && !isTraversableByOthers(parent)) {
        parent = "/tmp"
    }
    return try temporaryDirectory(prefix: "pg-", in: parent)
}

private func isTraversableByOthers(_ path: String) -> Bool {
    var url = URL(fileURLWithPath: path).resolvingSymlinksInPath()
    while true {
        var info = stat()
        guard stat(url.path, &info) == 0, info.st_mode & S_IXOTH != 0 else { return false }
        if url.path == "/" { return true }
        url.deleteLastPathComponent()
    }
}

/// The user the server tools run as when this process is root.
struct ClusterOwner: Sendable {
    let name: String
    let uid: uid_t
    let gid: gid_t
    let runuser: URL

    /// nil when not root: then the tools simply run as the current user.
    static func forCurrentUser() throws -> ClusterOwner? {
        guard geteuid() == 0 else { return nil }
        let name = "postgres"
        var entry = passwd()
        var buffer = [CChar](repeating: 0, count: 16_384)
        var result: UnsafeMutablePointer<passwd>?
        let status = getpwnam_r(name, &entry, &buffer, buffer.count, &result)
        guard status == 0, result != nil else {
            throw TestSupportError("running as root, but there is no `\(name)` user to run PostgreSQL as")
        }
        let candidates = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        guard let runuser = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestSupportError("running as root, but runuser is missing")
        }
        return ClusterOwner(name: name, uid: entry.pw_uid, gid: entry.pw_gid, runuser: URL(fileURLWithPath: runuser))
    }

    func chown(_ path: String) throws {
        guard Glibc.chown(path, uid, gid) == 0 else {
            throw TestSupportError("chown \(name) \(path) failed: \(String(cString: strerror(errno)))")
        }
    }
}

// MARK: - Process helpers

private func shellQuoted(_ word: String) -> String {
    "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// The state letter from /proc/<pid>/stat ("T" when stopped), or nil if the process is gone.
private func processState(_ pid: pid_t) -> Character? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let endOfName = stat.lastIndex(of: ")")
    else { return nil }
    // The command name may contain spaces, so the state is found after its closing parenthesis.
    return stat[stat.index(after: endOfName)...].first { $0 != " " }
}

/// The parent pid from /proc/<pid>/stat.
private func parentPID(_ pid: pid_t) -> pid_t? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let endOfName = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: endOfName)...].split(separator: " ")
    return fields.count > 1 ? pid_t(fields[1]) : nil
}

/// The processes whose parent is `pid`.
private func children(of pid: pid_t) -> [pid_t] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [])
        .compactMap { pid_t($0) }
        .filter { parentPID($0) == pid }
}

/// Last resort when pg_ctl cannot stop a server: SIGKILL the postmaster and its children
/// (children would notice the postmaster's death on their own, but not promptly).
private func killCluster(postmasterPID pid: pid_t) {
    let children = children(of: pid)
    _ = kill(pid, SIGCONT)
    _ = kill(pid, SIGKILL)
    for child in children {
        _ = kill(child, SIGKILL)
    }
    _ = waitUntil(timeout: .seconds(5), poll: .milliseconds(20)) {
        let state = processState(pid)
        return state == nil || state == "Z"
    }
}

// MARK: - Cleanup at exit

/// Clusters not yet destroyed, so that a test run which leaks one still shuts its server down when the
/// process exits. Only signals and file removal happen then: starting subprocesses during exit is unsafe.
private enum ExitCleanup {
    private static let live = Mutex<[ObjectIdentifier: (data: String, directory: String)]>([:])
    private static let installHook: Void = {
        atexit { ExitCleanup.run() }
    }()

    static func register(_ cluster: TestPostgres) {
        _ = installHook
        live.withLock { $0[ObjectIdentifier(cluster)] = (cluster.dataDirectory.path, cluster.directory.path) }
    }

    static func unregister(_ cluster: TestPostgres) {
        live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(cluster)) }
    }

    private static func run() {
        let clusters = live.withLock { live in
            defer { live.removeAll() }
            return Array(live.values)
        }
        var pidFiles: [String] = []
        for cluster in clusters {
            let pidFile = cluster.data + "/postmaster.pid"
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
               let line = text.split(separator: "\n").first,
               let pid = pid_t(line.trimmingCharacters(in: .whitespaces)), pid > 0 {
                _ = kill(pid, SIGCONT)
                // SIGQUIT is PostgreSQL's immediate shutdown.
                _ = kill(pid, SIGQUIT)
                pidFiles.append(pidFile)
            }
        }
        // The postmaster removes its pid file on the way out; wait for that before deleting the directories.
        _ = waitUntil(timeout: .seconds(3), poll: .milliseconds(20)) {
            pidFiles.allSatisfy { !FileManager.default.fileExists(atPath: $0) }
        }
        for cluster in clusters {
            try? FileManager.default.removeItem(atPath: cluster.directory)
        }
    }
}
