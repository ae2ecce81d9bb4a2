import Foundation
import Glibc

/// An application using the database as one with a connection pool does: while busy it runs
/// `SELECT 1` every `interval` on one kept connection (connecting again when that is lost),
/// then goes quiet, keeping the connection open and idle or closing it.
///
/// It is a process of its own (a Python 3 script speaking the PostgreSQL protocol, trust
/// authentication only), so its socket belongs to another process than the test's, as an
/// application's does to another process than the daemon's. What it does is read back from the
/// lines it prints:
///
///     connected <backend pid>
///     sent <n>
///     answered <n>
///     error <SQLSTATE> <message>     an ErrorResponse, in a query, at startup or while idle
///     lost <reason>                  the connection ended or could not be made
///     closed                         it closed the connection on going quiet
public final class QueryingApplication: Sendable {
    /// What the application does with its connection once it is no longer busy.
    public enum WhenQuiet: Sendable {
        /// Keeps it open and idle, watching it: a session ended meanwhile is reported.
        case keepOpen
        /// Ends it (Terminate, then close), and connects again when busy again.
        case close
    }

    /// An ErrorResponse the application received.
    public struct ServerError: Sendable, Equatable, CustomStringConvertible {
        public let sqlstate: String
        public let message: String
        public var description: String { "\(sqlstate) \(message)" }

        public init(sqlstate: String, message: String) {
            self.sqlstate = sqlstate
            self.message = message
        }
    }

    public let whenQuiet: WhenQuiet
    private let process: BackgroundProcess
    private let scratch: URL
    private let controlFile: URL

    /// Starts the application, busy for `busyFor` from now, against `host`:`port` (a stand-in's).
    public init(
        host: String = "127.0.0.1", port: Int, user: String = "postgres", database: String = "postgres",
        busyFor: Duration, every interval: Duration = .seconds(1), whenQuiet: WhenQuiet = .keepOpen
    ) throws {
        self.whenQuiet = whenQuiet
        scratch = try temporaryDirectory(prefix: "app-")
        controlFile = scratch.appendingPathComponent("control")
        let script = scratch.appendingPathComponent("application.py")
        do {
            try Self.script.write(to: script, atomically: true, encoding: .utf8)
            try Self.writeControl(controlFile, busyFor: busyFor, whenQuiet: whenQuiet)
            process = try BackgroundProcess(
                URL(fileURLWithPath: "/usr/bin/python3"),
                ["-u", script.path, host, String(port), user, database, controlFile.path, String(interval.timeInterval)]
            )
        } catch {
            try? FileManager.default.removeItem(at: scratch)
            throw error
        }
    }

    /// `url`: postgresql://user@host:port/database.
    public convenience init(
        url: String, busyFor: Duration, every interval: Duration = .seconds(1), whenQuiet: WhenQuiet = .keepOpen
    ) throws {
        guard let parts = URLComponents(string: url), let host = parts.host, let port = parts.port else {
            throw TestSupportError("QueryingApplication: not a postgresql://user@host:port/database URL: \(url)")
        }
        let database = parts.path.isEmpty ? "postgres" : String(parts.path.dropFirst())
        try self.init(host: host, port: port, user: parts.user ?? "postgres", database: database,
                      busyFor: busyFor, every: interval, whenQuiet: whenQuiet)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Makes it busy again, for `duration` from now (the first query at once).
    public func resume(for duration: Duration) {
        try? Self.writeControl(controlFile, busyFor: duration, whenQuiet: whenQuiet)
    }

    /// Makes it quiet from now on, as when its time runs out.
    public func quiet() {
        try? Self.writeControl(controlFile, busyFor: .zero, whenQuiet: whenQuiet)
    }

    /// Ends the process (its connection is closed by the kernel, without a Terminate).
    public func stop() {
        process.terminate(timeout: .seconds(2))
    }

    public var pid: pid_t { process.pid }
    public var isRunning: Bool { process.isRunning }

    /// Everything the application has printed so far.
    public func output() -> String { process.output() }

    public var queriesSent: Int { lines("sent").count }
    public var queriesAnswered: Int { lines("answered").count }
    /// Connections made (startups that reached ReadyForQuery).
    public var connections: Int { lines("connected").count }
    /// Backend pids of the connections made, oldest first.
    public var backends: [pid_t] { lines("connected").compactMap { pid_t($0) } }
    /// Connections lost or not made, with the reason.
    public var losses: [String] { lines("lost") }
    public var errors: [ServerError] {
        lines("error").map { rest in
            let parts = rest.split(separator: " ", maxSplits: 1)
            return ServerError(sqlstate: parts.first.map(String.init) ?? "", message: parts.count > 1 ? String(parts[1]) : "")
        }
    }

    /// The rest of each line that starts with `word`.
    private func lines(_ word: String) -> [String] {
        output().split(separator: "\n").compactMap { line in
            if line == word { return "" }
            guard line.hasPrefix(word + " ") else { return nil }
            return String(line.dropFirst(word.count + 1))
        }
    }

    /// The control file: the wall-clock deadline of being busy and what to do when quiet,
    /// replaced whole (rename) so the script never reads half of it.
    private static func writeControl(_ file: URL, busyFor: Duration, whenQuiet: WhenQuiet) throws {
        let deadline = Date().timeIntervalSince1970 + busyFor.timeInterval
        let text = "\(deadline) \(whenQuiet == .keepOpen ? "keep" : "close")\n"
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    private static let script = #"""
        import select, socket, struct, sys, time

        host, port, user, database, control = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        interval = float(sys.argv[6])


        def say(*words):
            print(" ".join(str(word) for word in words), flush=True)


        def settings():
            try:
                with open(control) as f:
                    deadline, quiet = f.read().split()
                return float(deadline), quiet
            except (OSError, ValueError):
                return 0.0, "keep"


        class Lost(Exception):
            pass


        def read_exactly(s, n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk:
                    raise Lost("end of connection")
                data += chunk
            return data


        def message(s):
            kind = read_exactly(s, 1)
            (length,) = struct.unpack("!I", read_exactly(s, 4))
            return kind, read_exactly(s, length - 4)


        def report(body):
            fields = {}
            for part in body.split(b"\0"):
                if part:
                    fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
            say("error", fields.get("C", "?????"), fields.get("M", "").replace("\n", " "))


        def connect():
            s = socket.create_connection((host, port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            parameters = b""
            for name, value in (("user", user), ("database", database), ("application_name", "querying-application")):
                parameters += name.encode() + b"\0" + value.encode() + b"\0"
            body = struct.pack("!I", 196608) + parameters + b"\0"
            s.sendall(struct.pack("!I", len(body) + 4) + body)
            backend = None
            try:
                while True:
                    kind, body = message(s)
                    if kind == b"R":
                        (code,) = struct.unpack("!I", body[:4])
                        if code != 0:
                            raise Lost("authentication method %d is not supported" % code)
                    elif kind == b"K":
                        (backend,) = struct.unpack("!I", body[:4])
                    elif kind == b"E":
                        report(body)
                    elif kind == b"Z":
                        say("connected", backend)
                        return s
            except BaseException:
                s.close()
                raise


        def query(s, number):
            s.sendall(b"Q" + struct.pack("!I", 4 + 9) + b"SELECT 1\0")
            say("sent", number)
            failed = False
            while True:
                kind, body = message(s)
                if kind == b"E":
                    report(body)
                    failed = True
                elif kind == b"Z":
                    break
            if not failed:
                say("answered", number)


        connection = None
        sent = 0
        next_query = 0.0
        while True:
            deadline, quiet = settings()
            now = time.time()
            try:
                if now < deadline:
                    if now >= next_query:
                        next_query = now + interval
                        if connection is None:
                            connection = connect()
                        sent += 1
                        query(connection, sent)
                elif connection is not None and quiet == "close":
                    try:
                        connection.sendall(b"X\0\0\0\4")
                    finally:
                        connection.close()
                        connection = None
                        say("closed")
                    next_query = 0.0
                if connection is None:
                    time.sleep(0.05)
                elif select.select([connection], [], [], 0.05)[0]:
                    # Between queries the server speaks only to end the session (or to notify).
                    kind, body = message(connection)
                    if kind == b"E":
                        report(body)
            except (OSError, Lost) as problem:
                say("lost", problem if str(problem) else type(problem).__name__)
                if connection is not None:
                    connection.close()
                    connection = None
                time.sleep(0.05)
        """#
}
