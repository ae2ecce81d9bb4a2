import Glibc
import Synchronization

/// The local ports of this process's TCP connections to databases, noted as each is closed.
/// A connection closed by this host stays in the kernel's socket table, in TIME_WAIT, for a
/// minute, without an owner; the daemon counts such entries as the application's recent use
/// of a database that sleeps when unused (`ApplicationTraffic`), and must not count its own.
public enum ClosedConnections {
    /// How long a port is kept: TIME_WAIT's length, and a margin for a slow look.
    public static let memory = Duration.seconds(65)
    /// Enough for a probe a second and the event writer over `memory`.
    static let limit = 256

    private static let recent = Mutex<[(port: UInt16, at: ContinuousClock.Instant)]>([])

    /// Ports closed within `memory`.
    public static func recentLocalPorts(at now: ContinuousClock.Instant = .now) -> Set<UInt16> {
        recent.withLock { entries in Set(entries.lazy.filter { now - $0.at < memory }.map(\.port)) }
    }

    /// Notes the local port of `descriptor`, about to be closed, if it is a TCP socket.
    static func closing(_ descriptor: Int32) {
        guard descriptor >= 0 else { return }
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { return }
        let family = Int32(address.ss_family)
        guard family == AF_INET || family == AF_INET6 else { return }
        // sin_port and sin6_port are both 2 bytes in, after the family.
        let port = withUnsafeBytes(of: &address) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
        guard port != 0 else { return }
        let now = ContinuousClock.now
        recent.withLock { entries in
            entries.removeAll { now - $0.at >= memory }
            if entries.count >= limit { entries.removeFirst(entries.count - limit + 1) }
            entries.append((port, now))
        }
    }
}
