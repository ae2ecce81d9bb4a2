/// When to give the heap back to the system after a burst of status connections.
///
/// glibc keeps freed memory in its arenas (one per thread that allocated it, so per event loop)
/// and returns it only from the top of the heap; after a burst the pages stay resident
/// although nothing uses them. `malloc_trim` returns every free page, at a cost of a walk over
/// the arenas, so it is asked for once per burst: when the open connections, having reached
/// `burst`, fall to a quarter of their peak.
public struct HeapTrimPolicy: Sendable, Equatable {
    /// Open connections that make a burst worth a trim.
    public static let burst = 64
    /// How long the connections must stay down before the trim, so that a flood that churns
    /// (connections closed and opened at once) is trimmed once, after it ends.
    public static let quiet = Duration.seconds(1)

    public private(set) var peak = 0
    public private(set) var trimPending = false

    public init() {}

    /// A connection was admitted; `open` counts it.
    public mutating func admitted(open: Int) {
        peak = max(peak, open)
    }

    /// A connection closed; returns whether to schedule a trim after `quiet`.
    public mutating func released(open: Int) -> Bool {
        guard !trimPending, peak >= Self.burst, open <= peak / 4 else { return false }
        trimPending = true
        return true
    }

    /// The scheduled time came with `open` connections; returns whether to trim now. A burst
    /// that came back meanwhile waits for its own end.
    public mutating func due(open: Int) -> Bool {
        trimPending = false
        guard open <= peak / 4 else { return false }
        peak = open
        return true
    }
}
