import Foundation
import Glibc
import Synchronization

/// A TCP relay on 127.0.0.1 that holds every byte for `delay` in each direction before passing it
/// on, in order: a server `2 × delay` of round trip away, over loopback. (Kernel `netem` would do
/// this below TCP, but it is not available everywhere tests run.)
///
/// A relayed connection is a real TCP connection at each end, so what the client sees when the
/// server closes, resets or stops answering is what it would see without the relay, only later.
public final class LatencyRelay: Sendable {
    public var port: Int { listener.port }
    public let upstreamPort: Int
    private let listener: RelayListener
    private let delay: Mutex<Duration>
    private let partitioned = Mutex(false)
    private let acceptedCount = Mutex(0)

    /// `delay`: how long each direction holds bytes; the round trip grows by twice that.
    public init(upstreamPort: Int, delay: Duration) throws {
        listener = try RelayListener()
        self.upstreamPort = upstreamPort
        self.delay = Mutex(delay)
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { close() }

    /// The round trip the relay adds.
    public var addedRoundTrip: Duration { delay.withLock { $0 } * 2 }

    /// Changes the delay for bytes read from now on (bytes already held keep theirs, so order holds).
    public func setDelay(_ newDelay: Duration) {
        delay.withLock { $0 = newDelay }
    }

    /// Cuts the path (`true`) or mends it: while cut, nothing is passed on either way, and nothing
    /// is dropped; new connections are accepted and hang. A network partition, as the client sees
    /// one: a kept session gets no answer, a new connection never completes.
    public func setPartitioned(_ cut: Bool) {
        partitioned.withLock { $0 = cut }
    }

    /// Connections accepted so far.
    public var accepted: Int { acceptedCount.withLock { $0 } }

    /// Stops accepting and closes every relayed connection.
    public func close() {
        listener.close()
    }

    private func acceptLoop() {
        while let client = listener.next() {
            setNoDelay(client)
            guard let server = connectToLoopback(port: upstreamPort) else {
                _ = Glibc.close(client)
                continue
            }
            guard listener.admit([client, server]) else { continue }
            acceptedCount.withLock { $0 += 1 }
            let done = Mutex(0)
            let finish: @Sendable () -> Void = { [self] in
                // The second direction to end closes both descriptors.
                let last = done.withLock { count -> Bool in
                    count += 1
                    return count == 2
                }
                if last { listener.release([client, server]) }
            }
            Thread.detachNewThread { [self] in
                forwardDelayed(from: client, to: server, delay: { self.delay.withLock { $0 } }, paused: { self.partitioned.withLock { $0 } })
                finish()
            }
            Thread.detachNewThread { [self] in
                forwardDelayed(from: server, to: client, delay: { self.delay.withLock { $0 } }, paused: { self.partitioned.withLock { $0 } })
                finish()
            }
        }
    }

}

/// Copies one direction, each chunk written once `delay()` (read as it arrives) has passed since
/// it was read. The end of input is passed on after the bytes before it; a reset ends both ways.
/// While `paused()`, nothing is read or written.
func forwardDelayed(from source: Int32, to destination: Int32, delay: () -> Duration, paused: () -> Bool = { false }) {
    var held: [(due: ContinuousClock.Instant, bytes: [UInt8])] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    var sourceOpen = true
    defer {
        shutdown(destination, Int32(SHUT_WR))
        shutdown(source, Int32(SHUT_RD))
    }
    while sourceOpen || !held.isEmpty {
        if paused() {
            pause(for: .milliseconds(5))
            continue
        }
        let now = ContinuousClock.now
        while let first = held.first, first.due <= now {
            held.removeFirst()
            guard writeAll(first.bytes, to: destination) else {
                shutdown(source, Int32(SHUT_RDWR))
                return
            }
        }
        var timeout: Int32 = -1
        if let first = held.first {
            let left = (first.due - ContinuousClock.now).components
            // Rounded up: woken early, the loop would only spin until the chunk is due.
            timeout = Int32(max(0, left.seconds * 1_000 + (left.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
        }
        guard sourceOpen else {
            if timeout > 0 { pause(for: .milliseconds(Int64(timeout))) }
            continue
        }
        var ready = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
        let polled = poll(&ready, 1, timeout)
        if polled < 0 && errno != EINTR { return }
        guard polled > 0 else { continue }
        let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count < 0 {
            // A reset: the other side gets one too, at once.
            shutdown(destination, Int32(SHUT_RDWR))
            return
        }
        if count == 0 {
            sourceOpen = false
            continue
        }
        held.append((ContinuousClock.now + delay(), Array(buffer[0..<count])))
    }
}

// MARK: - Loopback sockets for the relays

/// A listening socket on 127.0.0.1, on a port the kernel picks.
func listenOnLoopback(backlog: Int32 = 128) throws -> (descriptor: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError("socket() failed: \(String(cString: strerror(errno)))") }
    var address = loopbackAddress(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, backlog) == 0, let port = boundPort(of: fd) else {
        let reason = String(cString: strerror(errno))
        _ = Glibc.close(fd)
        throw TestSupportError("cannot listen on 127.0.0.1: \(reason)")
    }
    // Not to be handed out to a cluster or a pooler as a free port while it is in use here.
    handedOutPorts.withLock { _ = $0.insert(port) }
    return (fd, port)
}

/// `accept`, the new descriptor closed on exec (a child started meanwhile must not keep it open).
func acceptClosingOnExec(_ listener: Int32) -> Int32 {
    let fd = accept(listener, nil, nil)
    if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return fd
}

/// A connected socket to 127.0.0.1:`port`, or nil.
func connectToLoopback(port: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = loopbackAddress(port: port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        _ = Glibc.close(fd)
        return nil
    }
    setNoDelay(fd)
    return fd
}

/// Relayed bytes go out as they are due, not when Nagle's algorithm lets them.
func setNoDelay(_ fd: Int32) {
    var noDelay: Int32 = 1
    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
}

/// Writes every byte, or returns false when the peer has gone.
func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> Bool {
    var offset = 0
    while offset < bytes.count {
        // MSG_NOSIGNAL: a peer that has gone is an answer, not a SIGPIPE.
        let written = bytes[offset...].withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return false }
        offset += written
    }
    return true
}
