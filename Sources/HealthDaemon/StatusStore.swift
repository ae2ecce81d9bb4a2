import HealthCore
import Synchronization

/// The one place the probe loop publishes to and the status socket reads from. A reply takes
/// the lock only to copy the snapshot; probes never wait on readers.
public final class StatusStore: Sendable {
    private let snapshot: Mutex<StatusSnapshot>

    public init(_ initial: StatusSnapshot) {
        snapshot = Mutex(initial)
    }

    public func read() -> StatusSnapshot {
        snapshot.withLock { $0 }
    }

    public func update(_ change: (inout StatusSnapshot) -> Void) {
        snapshot.withLock { change(&$0) }
    }
}
