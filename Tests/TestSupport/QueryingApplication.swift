import Foundation
import Glibc

/// An application using the database as one with a connection pool does: while busy it runs
/// `SELECT 1` every `interval` on one kept connection (connecting again when that is lost),
/// then goes quiet, keeping the connection open and idle or closing it.
///
/// It is a process of its own (tools/harness/application.py, which speaks the PostgreSQL protocol,
/// trust authentication only; scripts/bench-sleep runs it too), so its socket belongs to another
/// process than the test's, as an application's does to another process than the daemon's. What
/// it does is read back from the lines it prints (connected, sent, answered, error, lost,
/// closed: application.py's docstring says what each carries).
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
        do {
            try Self.writeControl(controlFile, busyFor: busyFor, whenQuiet: whenQuiet)
            process = try BackgroundProcess(
                URL(fileURLWithPath: "/usr/bin/python3"),
                ["-u", Self.script.path, host, String(port), user, database, controlFile.path, String(interval.timeInterval)]
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

    /// The script, found from this file as the repository holds it.
    private static let script = packageRootDirectory().appendingPathComponent("tools/harness/application.py")

    /// The control file (its format is application.py's): the wall-clock deadline of being busy
    /// and what to do when quiet, replaced whole (rename) so the script never reads half of it.
    private static func writeControl(_ file: URL, busyFor: Duration, whenQuiet: WhenQuiet) throws {
        let deadline = Date().timeIntervalSince1970 + busyFor.timeInterval
        let text = "\(deadline) \(whenQuiet == .keepOpen ? "keep" : "close")\n"
        try text.write(to: file, atomically: true, encoding: .utf8)
    }
}
