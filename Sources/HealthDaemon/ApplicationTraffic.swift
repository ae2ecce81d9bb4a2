import HostSockets
import Logging
import PostgresProbe
import Synchronization

/// How recently the application on this host used the database, read from the kernel's socket
/// table: its TCP connections to the target's addresses, established or closed within the last
/// minute (TIME_WAIT: an application that connects for each request and closes at once is
/// seen that way), this process's own left out. Nothing is sent to the database. Blocking (name resolution, one netlink dump per
/// address family): call it from a thread of its own.
final class ApplicationTraffic: Sendable {
    private let target: ConnectionTarget
    private let environment: [String: String]
    private let logger: Logger
    private struct State {
        var endpoints: Set<TCPEndpoint> = []
        var resolvedAt: ContinuousClock.Instant?
        var saidUnreadable = false
    }
    private let state = Mutex(State())

    /// Names are resolved again this often: a managed endpoint's addresses change.
    static let resolveEvery = Duration.seconds(60)
    /// The longest one resolution may hold the loop's look at the table; a name without an
    /// answer by then keeps the addresses it had, and its lookup goes on in the background.
    static let resolveLimit = Duration.seconds(1)

    /// `nil` when the target has no TCP host (a Unix socket): the application's use of it
    /// cannot be seen, and every interval is probed.
    init?(target: ConnectionTarget, environment: [String: String], logger: Logger) {
        guard !target.tcpHosts(environment: environment).isEmpty else { return nil }
        self.target = target
        self.environment = environment
        self.logger = logger
    }

    /// The latest instant any of the application's connections to the database sent data (or,
    /// for one it closed, was closed); `nil` when it has none open or lately closed. What the server sends does not count: a database going to
    /// sleep sends its idle sessions 57P01, which is no use by the application (and a
    /// `NOTIFY` is none either). When the table cannot be read, `now`: the database is taken to
    /// be in use, so an outage is never missed (and it is not let sleep).
    func lastTraffic(at now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let endpoints = resolvedEndpoints(at: now)
        do {
            let own = SocketTable.ownSocketInodes()
            let ownClosed = ClosedConnections.recentLocalPorts(at: now)
            // The daemon's own connections are told apart by inode while open, and by local
            // port once closed (a closed one has no inode left).
            let theirs = try SocketTable.connections(to: endpoints).filter { connection in
                connection.isClosed ? !ownClosed.contains(connection.localPort) : !own.contains(connection.inode)
            }
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
        let endpoints = Set(target.tcpAddresses(environment: environment, within: Self.resolveLimit).compactMap {
            TCPEndpoint(numeric: $0.address, port: $0.port)
        })
        state.withLock { state in
            // A failed lookup keeps the addresses it had.
            if !endpoints.isEmpty || state.resolvedAt == nil { state.endpoints = endpoints }
            state.resolvedAt = now
        }
        return state.withLock { $0.endpoints }
    }
}
