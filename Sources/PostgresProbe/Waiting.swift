import Glibc

/// How a bounded wait ended.
enum WaitOutcome {
    case ready
    case deadline
    case cancelled
}

/// A pipe used as a one-shot flag another thread can `poll()` on: once signalled, its read end
/// stays readable.
final class SignalPipe: Sendable {
    let readDescriptor: Int32
    private let writeDescriptor: Int32

    init() throws {
        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else {
            throw ResolverError(message: "pipe: \(String(cString: strerror(errno)))")
        }
        for descriptor in descriptors {
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
            _ = fcntl(descriptor, F_SETFL, O_NONBLOCK)
        }
        readDescriptor = descriptors[0]
        writeDescriptor = descriptors[1]
    }

    deinit {
        close(readDescriptor)
        close(writeDescriptor)
    }

    func signal() {
        var byte: UInt8 = 1
        _ = write(writeDescriptor, &byte, 1)
    }
}

/// Ends a running probe early, from another thread: the daemon fires it at shutdown, so a probe
/// stuck on a server that never answers does not hold up a graceful stop.
public final class ProbeCancellation: Sendable {
    /// `nil` only if no pipe could be made; the probe then runs to its deadline.
    private let flag = try? SignalPipe()

    public init() {}

    /// Idempotent.
    public func cancel() {
        flag?.signal()
    }

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
                pollfd(fd: flag?.readDescriptor ?? -1, events: Int16(POLLIN), revents: 0),
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
