import Foundation
import Glibc
import Synchronization

/// A TCP relay in front of a PostgreSQL server that lets a test act on the real backend of each
/// session at the moment it becomes ready: after authentication, before the client has seen
/// `ReadyForQuery` and so before its first query is sent. The backend's pid comes from the
/// server's own `BackendKeyData` message.
///
/// That is how a fault is put exactly between connecting and querying (stop the backend: a hung
/// query; terminate it: 57P01), where no timing from outside could place it.
public final class SessionInterceptor: Sendable {
    public var port: Int { listener.port }
    private let listener: RelayListener
    private let upstreamPort: Int
    private let onReady: @Sendable (pid_t) -> Void
    private let seenBackends = Mutex<[pid_t]>([])

    /// `onReady` runs on the relay's thread with the backend's pid; the client sees the server's
    /// `ReadyForQuery` only after it returns.
    public init(upstreamPort: Int, onReady: @escaping @Sendable (pid_t) -> Void) throws {
        listener = try RelayListener(backlog: 64)
        self.upstreamPort = upstreamPort
        self.onReady = onReady
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { close() }

    /// Backends seen so far, oldest first.
    public var backends: [pid_t] { seenBackends.withLock { $0 } }

    /// Stops accepting and closes every relayed connection.
    public func close() {
        listener.close()
    }

    private func acceptLoop() {
        while let client = listener.next() {
            guard let server = connectToLoopback(port: upstreamPort) else {
                _ = Glibc.close(client)
                continue
            }
            guard listener.admit([client, server]) else { continue }
            let sslRequested = Flag()
            Thread.detachNewThread { [self] in relay(from: client, to: server, clientSide: true, sslRequested: sslRequested) }
            Thread.detachNewThread { [self] in relay(from: server, to: client, clientSide: false, sslRequested: sslRequested) }
        }
    }

    /// Copies bytes one way. From the server, messages are parsed: `K` gives the backend's pid,
    /// the first `Z` calls `onReady` before it is passed on.
    private func relay(from source: Int32, to destination: Int32, clientSide: Bool, sslRequested: Flag) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var pending: [UInt8] = []
        var first = true
        var awaitingSSLAnswer = true
        var backend: pid_t?
        var ready = false
        defer {
            shutdown(destination, Int32(SHUT_WR))
            shutdown(source, Int32(SHUT_RD))
        }
        while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            var chunk = Array(buffer[0..<count])
            if clientSide {
                // An SSLRequest is 8 bytes: length 8, code 80877103.
                if first && count >= 8 && Array(chunk[0..<8]) == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
                    sslRequested.set()
                }
                first = false
            } else if !ready {
                pending += chunk
                chunk = []
                // The answer to an SSLRequest is one byte, not a message.
                if awaitingSSLAnswer, sslRequested.isSet, let answer = pending.first {
                    awaitingSSLAnswer = false
                    chunk.append(answer)
                    pending.removeFirst()
                }
                awaitingSSLAnswer = false
                while pending.count >= 5 {
                    let length = Int(pending[1]) << 24 | Int(pending[2]) << 16 | Int(pending[3]) << 8 | Int(pending[4])
                    guard pending.count >= 1 + length else { break }
                    let message = Array(pending[0..<(1 + length)])
                    pending.removeFirst(1 + length)
                    if message[0] == UInt8(ascii: "K"), length >= 8 {
                        let pid = pid_t(Int32(bitPattern: UInt32(message[5]) << 24 | UInt32(message[6]) << 16 | UInt32(message[7]) << 8 | UInt32(message[8])))
                        backend = pid
                        seenBackends.withLock { $0.append(pid) }
                    }
                    if message[0] == UInt8(ascii: "Z"), !ready {
                        ready = true
                        if !writeAll(chunk, to: destination) { return }
                        chunk = []
                        if let backend { onReady(backend) }
                        // What the server sent meanwhile (a FATAL message, say) goes out with
                        // the `ReadyForQuery`: once the client's query meets a closed socket,
                        // the reset would discard it unread.
                        pending += available(from: source)
                    }
                    chunk += message
                }
                if ready {
                    chunk += pending
                    pending = []
                }
            }
            if !writeAll(chunk, to: destination) { return }
        }
    }

    private func available(from descriptor: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 0) == 1 else { return bytes }
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { return bytes }
            bytes += buffer[0..<count]
        }
    }
}

/// Set once by one relay direction, read by the other.
private final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
