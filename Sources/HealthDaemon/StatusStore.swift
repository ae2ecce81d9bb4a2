import EventSpool
import HealthCore

/// The one place the probe loop publishes to and the status socket reads from. A reply takes
/// the lock only to copy the snapshot; probes never wait on readers.
public final class StatusStore: Sendable {
    private let snapshot: MutexBox<StatusSnapshot>

    public init(_ initial: StatusSnapshot) {
        snapshot = MutexBox(initial)
    }

    public func read() -> StatusSnapshot {
        snapshot.withLock { $0 }
    }

    public func update(_ change: (inout StatusSnapshot) -> Void) {
        snapshot.withLock { change(&$0) }
    }
}

extension SpoolStatus {
    /// The spool's own counts, as last read from it.
    mutating func apply(_ summary: EventSpool.Summary) {
        pending = summary.pending
        oldestAt = summary.oldestAt
        dropped = summary.dropped
    }
}
