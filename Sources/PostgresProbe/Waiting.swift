import Glibc

/// How a bounded wait ended.
enum WaitOutcome {
    case ready
    case deadline
    case cancelled
}

/// A flag a thread sleeps on with `poll()` and any thread sets: a non-blocking socket pair made
/// with one system call, so that making one per probe costs next to nothing. Stays set until
/// `clear()`.
public final class ThreadFlag: Sendable {
    /// `-1` only if no socket pair could be made (`failure` says why); waits then end only at
    /// their deadline.
    let descriptor: Int32
    private let writeDescriptor: Int32
    /// Why there is no descriptor, if there is none.
    let failure: String?

    public init() {
        var descriptors: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if socketpair(AF_UNIX, type, 0, &descriptors) == 0 {
            failure = nil
        } else {
            failure = "socketpair: " + String(cString: strerror(errno))
            descriptors = [-1, -1]
        }
        descriptor = descriptors[0]
        writeDescriptor = descriptors[1]
    }

    deinit {
        if descriptor >= 0 {
            close(descriptor)
            close(writeDescriptor)
        }
    }

    /// Idempotent until cleared (a full buffer stays readable).
    public func set() {
        var byte: UInt8 = 1
        _ = write(writeDescriptor, &byte, 1)
    }

    /// Clears the flag; returns whether it was set.
    @discardableResult
    public func clear() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 64)
        var wasSet = false
        while read(descriptor, &buffer, buffer.count) > 0 { wasSet = true }
        return wasSet
    }

    /// Blocks the calling thread until `deadline` or until one of `flags` is set; returns the
    /// first flag found set (not cleared), or `nil` at the deadline.
    public static func sleep(until deadline: ContinuousClock.Instant, wakingOn flags: [ThreadFlag]) -> ThreadFlag? {
        var entries = flags.map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
        while true {
            let remaining = deadline - .now
            guard remaining > .zero else { return nil }
            for index in entries.indices { entries[index].revents = 0 }
            let milliseconds = Int32(min(remaining.fractionalMilliseconds.rounded(.up), Double(Int32.max)))
            let ready = poll(&entries, nfds_t(entries.count), milliseconds)
            if ready > 0, let index = entries.firstIndex(where: { $0.revents != 0 }) { return flags[index] }
            if ready < 0 && errno != EINTR && errno != EAGAIN { return nil }
        }
    }
}

/// Ends a running probe early, from another thread: the daemon fires it at shutdown, so a probe
/// stuck on a server that never answers does not hold up a graceful stop.
public final class ProbeCancellation: Sendable {
    private let flag = ThreadFlag()

    public init() {}

    /// Idempotent.
    public func cancel() {
        flag.set()
    }

    /// The flag behind it, for a thread that sleeps on it with others.
    public var threadFlag: ThreadFlag { flag }

    /// Waits until `descriptor` has one of `events`, the deadline passes, or the probe is
    /// cancelled. Errors and hang-ups count as ready: the caller's next call reports them. A
    /// negative descriptor (libpq has none yet, or gave up) is ready at once, so the caller
    /// reads libpq's error instead of sleeping out the deadline.
    func wait(_ descriptor: Int32, for events: Int32, until deadline: ContinuousClock.Instant) -> WaitOutcome {
        guard descriptor >= 0 else { return .ready }
        while true {
            let remaining = deadline - .now
            guard remaining > .zero else { return .deadline }
            var entries = [
                pollfd(fd: descriptor, events: Int16(events), revents: 0),
                pollfd(fd: flag.descriptor, events: Int16(POLLIN), revents: 0),
            ]
            let milliseconds = Int32(min(remaining.fractionalMilliseconds.rounded(.up), Double(Int32.max)))
            let ready = poll(&entries, 2, milliseconds)
            if ready > 0 {
                return entries[1].revents != 0 ? .cancelled : .ready
            }
            if ready < 0 && errno != EINTR && errno != EAGAIN { return .ready }
        }
    }
}
