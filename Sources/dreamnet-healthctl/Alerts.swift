import ArgumentParser
import FoundationEssentials
import Glibc
import HealthCore

struct Alerts: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alerts",
        abstract: "Show the alert log; with --follow, keep printing new alerts across rotation, like tail -F."
    )

    @Option(name: .customLong("alert-log"), help: ArgumentHelp(
        "The alert log (default $DREAMNET_HEALTHD_ALERT_LOG or \(DaemonConfiguration.defaultAlertLogPath)).", valueName: "path"
    ))
    var alertLog: String?

    @Option(name: .short, help: ArgumentHelp("How many of the last alerts to show first.", valueName: "n"))
    var n = 10

    @Flag(help: "Keep following the log, across rotation and truncation.")
    var follow = false

    @Flag(help: "Print the raw JSON lines.")
    var json = false

    func validate() throws {
        guard n >= 0 else { throw ValidationError("-n must not be negative") }
    }

    var path: String {
        alertLog ?? ProcessInfo.processInfo.environment["DREAMNET_HEALTHD_ALERT_LOG"] ?? DaemonConfiguration.defaultAlertLogPath
    }

    func run() throws {
        var follower = LogFollower(path: path)
        guard let initial = follower.readAll() else {
            if !follow {
                writeError("cannot read \(path): \(String(cString: strerror(errno)))")
                throw ExitCode(ExitVerdict.unknown.rawValue)
            }
            keepFollowing(&follower)
        }
        for line in initial.suffix(n) { show(line) }
        if follow { keepFollowing(&follower) }
    }

    /// Until interrupted: SIGINT or SIGTERM ends the process.
    private func keepFollowing(_ follower: inout LogFollower) -> Never {
        while true {
            for line in follower.readNew() { show(line) }
            pause(for: .milliseconds(200))
        }
    }

    private func show(_ line: String) {
        print(json ? line : AlertLine.humanReadable(line))
        fflush(nil)
    }
}

/// Reads whole lines from a log that may be rotated (renamed and recreated), truncated
/// (copytruncate) or deleted, the way `tail -F` does: by checking, at every poll, whether the path
/// still names the open file and whether the file shrank.
struct LogFollower {
    let path: String
    private var descriptor: Int32 = -1
    private var inode: UInt64 = 0
    private var offset: Int64 = 0
    private var partial: [UInt8] = []

    init(path: String) {
        self.path = path
    }

    /// All complete lines now in the file; `nil` if it cannot be opened.
    mutating func readAll() -> [String]? {
        guard openIfNeeded() else { return nil }
        return drain()
    }

    /// Lines added since the last call, following the path to a new file when it was rotated.
    mutating func readNew() -> [String] {
        var lines: [String] = []
        if descriptor >= 0 {
            var info = stat()
            let renamed = stat(path, &info) != 0 || UInt64(info.st_ino) != inode
            // Whatever the old file received before the rename is read first.
            lines += drain()
            if renamed {
                close(descriptor)
                descriptor = -1
                partial.removeAll()
            }
        }
        if descriptor < 0 {
            guard openIfNeeded() else { return lines }
        }
        return lines + drain()
    }

    private mutating func openIfNeeded() -> Bool {
        if descriptor >= 0 { return true }
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        var info = stat()
        fstat(descriptor, &info)
        inode = UInt64(info.st_ino)
        offset = 0
        return true
    }

    /// Whether the file still has a line end (or our partial line) just before `offset`.
    private func endsLineBefore(_ offset: Int64) -> Bool {
        guard offset > 0 else { return true }
        var byte: UInt8 = 0
        guard pread(descriptor, &byte, 1, off_t(offset - 1)) == 1 else { return false }
        return partial.isEmpty ? byte == UInt8(ascii: "\n") : byte == partial.last
    }

    private mutating func drain() -> [String] {
        var info = stat()
        fstat(descriptor, &info)
        if Int64(info.st_size) < offset || !endsLineBefore(offset) {
            // Truncated in place (copytruncate), perhaps already grown back past where we were:
            // the byte before our offset is no longer the end of a line we read. Start over.
            offset = 0
            partial.removeAll()
        }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = pread(descriptor, &chunk, chunk.count, off_t(offset))
            guard count > 0 else { break }
            partial += chunk[..<count]
            offset += Int64(count)
        }
        var lines: [String] = []
        while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
            lines.append(String(decoding: partial[..<newline], as: UTF8.self))
            partial.removeSubrange(...newline)
        }
        return lines
    }
}
