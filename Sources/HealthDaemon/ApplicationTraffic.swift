import Glibc
import HostSockets
import Logging
import PostgresProbe
import Synchronization

/// How recently the application on this host used the database, read from the kernel's socket
/// table: its established TCP connections to the target's addresses, this process's own left
/// out. Nothing is sent to the database. Blocking (name resolution, one netlink dump per
/// address family): call it from a thread of its own.
final class ApplicationTraffic: Sendable {
    private let hosts: [(host: String, port: UInt16)]
    private let logger: Logger
    private struct State {
        var endpoints: Set<TCPEndpoint> = []
        var resolvedAt: ContinuousClock.Instant?
        var saidUnreadable = false
    }
    private let state = Mutex(State())

    /// Names are resolved again this often: a managed endpoint's addresses change.
    static let resolveEvery = Duration.seconds(60)

    /// `nil` when the target has no TCP host (a Unix socket): the application's use of it
    /// cannot be seen, and every interval is probed.
    init?(target: ConnectionTarget, environment: [String: String], logger: Logger) {
        hosts = target.tcpHosts(environment: environment)
        guard !hosts.isEmpty else { return nil }
        self.logger = logger
    }

    /// The latest instant any of the application's connections to the database sent data;
    /// `nil` when it has none open. What the server sends does not count: a database going to
    /// sleep sends its idle sessions 57P01, which is no use by the application (and a
    /// `NOTIFY` is none either). When the table cannot be read, `now`: the database is taken to
    /// be in use, so an outage is never missed (and it is not let sleep).
    func lastTraffic(at now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let endpoints = resolvedEndpoints(at: now)
        do {
            let own = SocketTable.ownSocketInodes()
            let theirs = try SocketTable.established(to: endpoints).filter { !own.contains($0.inode) }
            state.withLock { $0.saidUnreadable = false }
            if let newest = theirs.min(by: { $0.sinceSent < $1.sinceSent }) {
                logger.trace("the application's traffic to the database", metadata: [
                    "connections": "\(theirs.count)", "local_port": "\(newest.localPort)", "uid": "\(newest.uid)",
                    "since_sent_ms": "\(newest.sinceSent.milliseconds)",
                ])
            }
            return theirs.map(\.sinceSent).min().map { now - $0 }
        } catch {
            let first = state.withLock { state in
                defer { state.saidUnreadable = true }
                return !state.saidUnreadable
            }
            if first {
                logger.warning(
                    "cannot read the host's socket table, so the application's use of the database is unknown: probing at every interval, which keeps a database that sleeps when unused awake",
                    metadata: ["error": "\(error)"]
                )
            }
            return now
        }
    }

    private func resolvedEndpoints(at now: ContinuousClock.Instant) -> Set<TCPEndpoint> {
        let cached = state.withLock { state -> Set<TCPEndpoint>? in
            guard let at = state.resolvedAt, now - at < Self.resolveEvery else { return nil }
            return state.endpoints
        }
        if let cached { return cached }
        var endpoints: Set<TCPEndpoint> = []
        for (host, port) in hosts {
            endpoints.formUnion(Self.addresses(of: host).compactMap { TCPEndpoint(numeric: $0, port: port) })
        }
        state.withLock { state in
            // A failed lookup keeps the addresses it had.
            if !endpoints.isEmpty || state.resolvedAt == nil { state.endpoints = endpoints }
            state.resolvedAt = now
        }
        return state.withLock { $0.endpoints }
    }

    private static func addresses(of host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var found: [String] = []
        var entry = list
        while let current = entry {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(current.pointee.ai_addr, current.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 {
                found.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            entry = current.pointee.ai_next
        }
        return found
    }
}
