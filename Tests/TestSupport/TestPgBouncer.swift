import Foundation
import Glibc

/// Debian's PgBouncer (`/usr/sbin/pgbouncer`) in front of a `TestPostgres`, on a port of its own,
/// started by the test and as the cluster's owner when this process is root (PgBouncer refuses
/// to run as root). Its packaged service is never used.
///
/// Clients log in as `postgres` with the cluster's password (SCRAM, when the cluster has one),
/// and PgBouncer logs in to the server the same way. The admin console (`admin(_:)`) answers
/// `SHOW CLIENTS`, `SHOW SERVERS` and the like.
public final class TestPgBouncer: Sendable {
    public let port: Int
    public let directory: URL
    public let upstream: TestPostgres
    private let process: BackgroundProcess

    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: executable.path) }
    static let executable = URL(fileURLWithPath: "/usr/sbin/pgbouncer")

    /// `poolMode`: `transaction` (what serverless providers run), `session` or `statement`.
    /// `settings`: more `[pgbouncer]` lines, e.g. `["server_lifetime = 5"]`. With `tls`, PgBouncer
    /// serves that certificate to clients (`client_tls_sslmode = allow`).
    public static func start(
        in front: TestPostgres, poolMode: String = "transaction", tls: TestCertificates? = nil, settings: [String] = []
    ) throws -> TestPgBouncer {
        guard isInstalled else { throw TestSupportError("PgBouncer is not installed (apt-get install pgbouncer)") }
        let directory = try temporaryDirectory(prefix: "pgbouncer-", in: "/tmp")
        let port = freeTCPPort()
        let authType = front.password == nil ? "trust" : "scram-sha-256"
        var lines = [
            "[databases]",
            "postgres = host=127.0.0.1 port=\(front.port) dbname=postgres",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            "listen_port = \(port)",
            "unix_socket_dir =",
            "auth_type = \(authType)",
            "auth_file = \(directory.path)/userlist.txt",
            "admin_users = postgres",
            "pool_mode = \(poolMode)",
            "pidfile = \(directory.path)/pgbouncer.pid",
            "logfile = \(directory.path)/pgbouncer.log",
            "default_pool_size = 5",
        ]
        if let tls {
            lines += [
                "client_tls_sslmode = allow",
                "client_tls_cert_file = \(tls.serverCertificateFile.path)",
                "client_tls_key_file = \(tls.serverKeyFile.path)",
            ]
        }
        lines += settings
        try (lines.joined(separator: "\n") + "\n").write(
            to: directory.appendingPathComponent("pgbouncer.ini"), atomically: false, encoding: .utf8
        )
        try "\"postgres\" \"\(front.password ?? "")\"\n".write(
            to: directory.appendingPathComponent("userlist.txt"), atomically: false, encoding: .utf8
        )
        var command = (executable, [directory.appendingPathComponent("pgbouncer.ini").path])
        if let owner = try ClusterOwner.forCurrentUser() {
            // As the cluster's owner: its files and the certificate must be readable by it.
            for path in [directory.path, directory.appendingPathComponent("pgbouncer.ini").path,
                         directory.appendingPathComponent("userlist.txt").path] {
                try owner.chown(path)
            }
            if let tls {
                for file in [tls.serverCertificateFile, tls.serverKeyFile] { try owner.chown(file.path) }
                _ = chmod(tls.directory.path, 0o755)
            }
            command = (owner.runuser, ["-u", owner.name, "--", executable.path] + command.1)
        }
        let process = try BackgroundProcess(command.0, command.1, currentDirectory: directory)
        let bouncer = TestPgBouncer(port: port, directory: directory, upstream: front, process: process)
        let up = waitUntil(timeout: .seconds(10), poll: .milliseconds(50)) {
            (try? bouncer.admin("SHOW VERSION")) != nil || !process.isRunning
        }
        guard up, process.isRunning else {
            let log = readText(directory.appendingPathComponent("pgbouncer.log"))
            bouncer.stop()
            throw TestSupportError("PgBouncer did not start on port \(port): \(process.output()) \(log)")
        }
        return bouncer
    }

    private init(port: Int, directory: URL, upstream: TestPostgres, process: BackgroundProcess) {
        self.port = port
        self.directory = directory
        self.upstream = upstream
        self.process = process
    }

    deinit { stop() }

    /// PgBouncer's pid (runuser's child when started as root).
    public var pid: pid_t? {
        let text = readText(directory.appendingPathComponent("pgbouncer.pid")).trimmingCharacters(in: .whitespacesAndNewlines)
        return pid_t(text)
    }

    public var log: String { readText(directory.appendingPathComponent("pgbouncer.log")) }

    public func stop() {
        process.terminate(timeout: .seconds(5))
        try? FileManager.default.removeItem(at: directory)
    }

    /// A URL for PgBouncer: `upstream.scramURL` with this port (TLS options included only when
    /// asked: PgBouncer's certificate is the cluster's own when started with `tls`).
    public func url(sslmode: String = "disable", channelBinding: Bool = false) -> String {
        if upstream.password == nil {
            return "postgresql://postgres@127.0.0.1:\(port)/postgres?sslmode=\(sslmode)"
        }
        return upstream.scramURL(port: port, sslmode: sslmode, channelBinding: channelBinding)
    }

    /// A command on the admin console (`pgbouncer` database), its rows unaligned with `|`.
    @discardableResult
    public func admin(_ command: String) throws -> String {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        if let password = upstream.password { environment["PGPASSWORD"] = password }
        environment["PGSSLMODE"] = "disable"
        let result = try runProcess(
            upstream.binDirectory.appendingPathComponent("psql"),
            ["-X", "-A", "-t", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "pgbouncer", "-c", command],
            environment: environment, timeout: .seconds(10)
        )
        guard result.status == 0 else { throw TestSupportError("pgbouncer admin `\(command)` failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .newlines)
    }

    /// Client connections PgBouncer holds for the `postgres` database (the admin console's own
    /// is to the `pgbouncer` one): `SHOW CLIENTS` is type|user|database|state|…
    public func clientCount() throws -> Int {
        try admin("SHOW CLIENTS").split(separator: "\n").count { line in
            let fields = line.split(separator: "|", omittingEmptySubsequences: false)
            return fields.count > 3 && fields[2] == "postgres"
        }
    }
}
