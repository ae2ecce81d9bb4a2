import Glibc
import Synchronization

/// A TCP listener on 127.0.0.1 that never accepts.
///
/// The kernel completes the handshake for queued connections, so a client connects successfully
/// and then waits forever for a reply: the shape of a hung server, which a refused port cannot imitate.
public final class BlackHoleListener: Sendable {
    public let port: Int

    /// The listening descriptor, or nil once closed.
    private let descriptor: Mutex<Int32?>

    /// Binds a free port on 127.0.0.1 and listens with room for `backlog` pending connections.
    public init(backlog: Int32 = 128) throws {
        // CLOEXEC (listenOnLoopback's): a child started while this is open must not inherit it and
        // keep the port alive.
        let (fd, port) = try listenOnLoopback(backlog: backlog)
        self.port = port
        self.descriptor = Mutex(fd)
    }

    deinit {
        close()
    }

    /// Stops listening; connections still queued are reset. Safe to call more than once.
    public func close() {
        let fd = descriptor.withLock { fd -> Int32? in
            defer { fd = nil }
            return fd
        }
        if let fd {
            _ = Glibc.close(fd)
        }
    }
}

/// A UDP socket that takes datagrams and never answers: a name server that has gone silent.
public final class UDPBlackHole: Sendable {
    private let descriptor: Mutex<Int32?>

    public init(address: String, port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestSupportError("socket() failed: \(String(cString: strerror(errno)))") }
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        inet_pton(AF_INET, address, &socketAddress.sin_addr)
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            _ = Glibc.close(fd)
            throw TestSupportError("cannot bind \(address):\(port) (udp): \(reason)")
        }
        descriptor = Mutex(fd)
    }

    deinit { close() }

    public func close() {
        let fd = descriptor.withLock { fd -> Int32? in
            defer { fd = nil }
            return fd
        }
        if let fd { _ = Glibc.close(fd) }
    }
}
