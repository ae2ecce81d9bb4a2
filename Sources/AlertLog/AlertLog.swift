import Glibc
import Synchronization

/// The alert log operators tail: one line per event, each written with a single `write(2)` to an
/// `O_APPEND` descriptor, so concurrent readers never see half a line and `copytruncate` leaves
/// no hole. Reopened on request (SIGUSR1 after `create`-style rotation) and whenever the path
/// no longer names the open file (rotated or deleted); created if missing.
public final class AlertLog: Sendable {
    private struct State {
        var path: String
        var descriptor: Int32 = -1
        var device: UInt64 = 0
        var inode: UInt64 = 0
    }

    private let state: Mutex<State>

    public init(path: String) {
        state = Mutex(State(path: path))
    }

    public var path: String { state.withLock { $0.path } }

    /// Writes to another file from the next line on (a reload changed `alert_log`).
    public func move(to path: String) {
        state.withLock { state in
            if state.descriptor >= 0 { close(state.descriptor) }
            state = State(path: path)
        }
    }

    deinit {
        state.withLock { if $0.descriptor >= 0 { close($0.descriptor) } }
    }

    /// Appends one line; returns why it could not, if it could not. Never throws: a broken alert
    /// log must not stop monitoring.
    public func append(_ line: String) -> String? {
        state.withLock { state -> String? in
            let path = state.path
            if state.descriptor >= 0 && !Self.pathNamesOpenFile(path, state) {
                close(state.descriptor)
                state.descriptor = -1
            }
            if state.descriptor < 0, let error = Self.open(path, &state) { return error }
            let bytes = Array(line.utf8)
            var before = stat()
            fstat(state.descriptor, &before)
            let written = bytes.withUnsafeBytes { write(state.descriptor, $0.baseAddress, $0.count) }
            if written == bytes.count { return nil }
            // A partial line (disk full) would glue the next line onto it: cut it off. Safe: this
            // is the only writer, under the lock.
            if written > 0 { _ = ftruncate(state.descriptor, before.st_size) }
            let reason = written < 0 ? String(cString: strerror(errno)) : "short write (\(written) of \(bytes.count) bytes)"
            return "cannot write \(path): \(reason)"
        }
    }

    /// The last lines written (at most `bytes` of the file at the path, from its first whole
    /// line), preceded by the end of the most recently changed rotated copy (`alerts.log.1`,
    /// `alerts.log-20261201`, …; compressed ones are skipped): a rotation may have come between
    /// a line and a crash. How a restart tells which events were already announced.
    public func recentLines(bytes: Int) -> String {
        let path = path
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var newestRotated: (path: String, modified: timespec)?
        if let entries = Self.directoryEntries(directory) {
            for entry in entries where entry != name && entry.hasPrefix(name)
                && ![".gz", ".xz", ".zst", ".bz2", ".lz4"].contains(where: entry.hasSuffix) {
                let candidate = directory + "/" + entry
                var info = stat()
                guard stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                if newestRotated.map({ Self.isLater(info.st_mtim, than: $0.modified) }) ?? true {
                    newestRotated = (candidate, info.st_mtim)
                }
            }
        }
        return (newestRotated.flatMap { Self.tail(of: $0.path, bytes: bytes) } ?? "") + (Self.tail(of: path, bytes: bytes) ?? "")
    }

    private static func isLater(_ lhs: timespec, than rhs: timespec) -> Bool {
        lhs.tv_sec != rhs.tv_sec ? lhs.tv_sec > rhs.tv_sec : lhs.tv_nsec > rhs.tv_nsec
    }

    private static func directoryEntries(_ directory: String) -> [String]? {
        guard let stream = opendir(directory) else { return nil }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// At most `bytes` from the end of a file, from its first whole line; `nil` if unreadable.
    private static func tail(of path: String, bytes: Int) -> String? {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { return nil }
        let start = max(0, Int(info.st_size) - bytes)
        var buffer = [UInt8](repeating: 0, count: Int(info.st_size) - start)
        var filled = 0
        while filled < buffer.count {
            let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + filled, $0.count - filled, off_t(start + filled)) }
            guard count > 0 else { break }
            filled += count
        }
        var text = buffer.prefix(filled)
        // Starting mid-file: the first line is cut, drop it.
        if start > 0, let newline = text.firstIndex(of: UInt8(ascii: "\n")) { text = text[(newline + 1)...] }
        var result = String(decoding: text, as: UTF8.self)
        if !result.isEmpty && !result.hasSuffix("\n") { result += "\n" }
        return result
    }

    /// `nil` if `path` can be opened for appending (created if missing), else why not.
    public static func checkWritable(_ path: String) -> String? {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { return "cannot open \(path): \(String(cString: strerror(errno)))" }
        close(descriptor)
        return nil
    }

    /// Closes the file; the next line opens the path anew.
    public func reopen() {
        state.withLock { state in
            if state.descriptor >= 0 { close(state.descriptor) }
            state.descriptor = -1
        }
    }

    private static func open(_ path: String, _ state: inout State) -> String? {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { return "cannot open \(path): \(String(cString: strerror(errno)))" }
        var info = stat()
        fstat(descriptor, &info)
        state = State(path: path, descriptor: descriptor, device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        return nil
    }

    private static func pathNamesOpenFile(_ path: String, _ state: State) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        return UInt64(info.st_dev) == state.device && UInt64(info.st_ino) == state.inode
    }
}
