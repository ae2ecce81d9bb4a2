import Glibc
import Logging

/// Log lines for journald when stderr is connected to it (`JOURNAL_STREAM`): each line starts
/// with its syslog priority (`<3>`), which journald turns into the entry's PRIORITY, so
/// `journalctl -p warning` works. Elsewhere the plain stderr handler is used.
public struct JournalStreamLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String

    public init(label: String) {
        self.label = label
    }

    /// Whether stderr is the journal stream systemd set up (it names its device and inode).
    public static func stderrIsJournal(environment: [String: String]) -> Bool {
        guard let stream = environment["JOURNAL_STREAM"] else { return false }
        let parts = stream.split(separator: ":").compactMap { UInt64($0) }
        var info = stat()
        guard parts.count == 2, fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == parts[0] && UInt64(info.st_ino) == parts[1]
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        // One line: a newline inside would become an entry without the priority.
        let text = "\(event.message)\(fields.isEmpty ? "" : " " + fields)".map { $0.isNewline ? " " : $0 }
        let entry = Array("<\(Self.priority(event.level))>\(String(text))\n".utf8)
        _ = entry.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}
