import Glibc
import Synchronization

/// What every test relay shares: a listener on 127.0.0.1, the descriptors of the connections it
/// let in, and a `close()` that stops accepting and ends all of them.
final class RelayListener: Sendable {
    let port: Int
    private let descriptor: Int32
    private let state = Mutex(State())

    private struct State {
        var closed = false
        /// Whether `descriptor` is still open: only while it is may `close()` shut it down.
        var listening = true
        var open: Set<Int32> = []
    }

    init(backlog: Int32 = 128) throws {
        (descriptor, port) = try listenOnLoopback(backlog: backlog)
    }

    /// The next connection (closed on exec); `nil` once `close()` has ended the listener.
    func next() -> Int32? {
        while true {
            let client = acceptClosingOnExec(descriptor)
            if client >= 0 { return client }
            // A connection reset while it waited in the backlog is not the listener's end.
            if errno == EINTR || errno == ECONNABORTED { continue }
            state.withLock { state in
                state.listening = false
                _ = Glibc.close(descriptor)
            }
            return nil
        }
    }

    /// Keeps `descriptors` for `close()` to end; once closed, closes them instead and says no.
    func admit(_ descriptors: [Int32]) -> Bool {
        let admitted = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.open.formUnion(descriptors)
            return true
        }
        if !admitted { for fd in descriptors { _ = Glibc.close(fd) } }
        return admitted
    }

    /// Closes the descriptors of a connection that has ended.
    func release(_ descriptors: [Int32]) {
        state.withLock { $0.open.subtract(descriptors) }
        for fd in descriptors { _ = Glibc.close(fd) }
    }

    /// Stops accepting and shuts down every admitted connection. Safe to call more than once.
    ///
    /// Everything is shut down under the lock that `next()` and `release` take before they close
    /// a descriptor: a number shut down after it was closed may already be another socket of
    /// this process (a status request of a test running beside this one), which would see its
    /// connection end.
    func close() {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            if state.listening { shutdown(descriptor, Int32(SHUT_RDWR)) }
            for fd in state.open { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }
}

// MARK: - The startup phase, for the stand-ins that read it themselves

/// One length-prefixed startup-phase packet (no type byte: SSLRequest, StartupMessage), or nil
/// at the end of input, or when `within` (if given) passes between two reads.
func readStartupPacket(from descriptor: Int32, within limit: Duration? = nil) -> [UInt8]? {
    guard let header = readExactly(4, from: descriptor, within: limit) else { return nil }
    let length = Int(header.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
    guard (8...10_000).contains(length), let rest = readExactly(length - 4, from: descriptor, within: limit) else { return nil }
    return header + rest
}

private func readExactly(_ count: Int, from descriptor: Int32, within limit: Duration?) -> [UInt8]? {
    var bytes = [UInt8](repeating: 0, count: count)
    var offset = 0
    while offset < count {
        if let limit {
            var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let polled = poll(&ready, 1, Int32(limit / .milliseconds(1)))
            if polled < 0 && errno == EINTR { continue }
            guard polled > 0 else { return nil }
        }
        let got = bytes[offset...].withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if got < 0 && errno == EINTR { continue }
        guard got > 0 else { return nil }
        offset += got
    }
    return bytes
}
