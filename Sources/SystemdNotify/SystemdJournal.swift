import CSystemd
import Glibc

/// Structured entries in the journal (`sd_journal_sendv`; the variadic `sd_journal_send` cannot
/// be called from Swift). Outside systemd the call fails quietly and nothing else changes.
public enum SystemdJournal {
    /// Every transition carries this MESSAGE_ID: `journalctl MESSAGE_ID=<id> -f` follows them.
    public static let transitionMessageID = "5f1c0e7a9b2d4c3e8a6f0d1b2c3e4f5a"
    /// Flapping and spool overflow events.
    public static let recordKeepingMessageID = "8e2d4b6a1c3f4e5d9a7b0c2e4f6a8b1d"
    /// A database that sleeps when unused went to sleep or was woken (`scale_to_zero`).
    public static let sleepMessageID = "e75a143b14094d06a0ea97ec6da827f5"

    public enum Priority: Int, Sendable {
        case critical = 2
        case warning = 4
        case info = 6
    }

    /// Sends one entry; `fields` are journal field names (upper case) and values.
    public static func send(message: String, priority: Priority, messageID: String, fields: [(String, String)]) {
        let entries = [("MESSAGE", message), ("PRIORITY", String(priority.rawValue)), ("MESSAGE_ID", messageID),
                       ("SYSLOG_IDENTIFIER", "dreamnet-healthd")] + fields
        let buffers = entries.map { Array("\($0.0)=\($0.1)".utf8) }
        var pointers: [UnsafeMutableRawPointer?] = []
        defer { pointers.forEach { $0?.deallocate() } }
        var vectors: [iovec] = []
        for buffer in buffers {
            let memory = UnsafeMutableRawPointer.allocate(byteCount: max(buffer.count, 1), alignment: 1)
            buffer.withUnsafeBytes { memory.copyMemory(from: $0.baseAddress!, byteCount: buffer.count) }
            pointers.append(memory)
            vectors.append(iovec(iov_base: memory, iov_len: buffer.count))
        }
        _ = vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
    }
}
