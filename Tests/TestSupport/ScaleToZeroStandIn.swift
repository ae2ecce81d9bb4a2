import Foundation
import Glibc
import Synchronization

/// A stand-in for a serverless PostgreSQL that suspends when unused (Neon's compute behind its
/// proxy): a TCP relay on 127.0.0.1 in front of a real cluster that it stops and starts.
///
/// - Activity is what clients send: any byte from any client connection (a statement, a Sync, a
///   Terminate) restarts the idle timer. Bytes from the server do not, nor does a connection
///   that sends nothing.
/// - After `suspendAfter` without a client byte the server is suspended: every client session is
///   ended with `pg_terminate_backend` (its client reads the server's own FATAL 57P01, relayed,
///   then the end of the connection), then the cluster is stopped.
/// - A connection arriving while suspended is held, nothing read from it, while the cluster
///   starts and `coldStart` more passes (the compute booting); then it is relayed. Connections
///   arriving during one wake all wait for that wake.
/// - `failWakes(_:)` makes the wake fail the ways the proxy's do: refused with its XX000
///   "Couldn't connect to compute node", or never answered.
///
/// The cluster must be running when the stand-in is made, or it counts as suspended.
public final class ScaleToZeroStandIn: Sendable {
    /// How a wake fails.
    public enum WakeFailure: Sendable {
        /// The held connection's startup packet is answered with an ErrorResponse (SQLSTATE
        /// XX000, "Couldn't connect to compute node"), then the connection is closed.
        case refuse
        /// The connection is held and the server never started, until `failWakes(nil)` or `close()`.
        case hold
    }

    /// The proxy's text when the compute does not come up.
    public static let wakeRefusal = "Couldn't connect to compute node"

    public var port: Int { listener.port }
    public let cluster: TestPostgres
    public let suspendAfter: Duration
    public let coldStart: Duration

    private let listener: RelayListener
    private let state: Mutex<State>

    private enum Phase {
        /// Up and relaying.
        case awake
        /// Ending sessions and stopping the server.
        case suspending
        case suspended
        /// Starting the server and waiting out `coldStart`.
        case waking
    }

    private struct State {
        var phase: Phase
        var closed = false
        var failure: WakeFailure?
        /// The idle timer's origin: the last client byte, or the last time the server came up.
        var lastActivity: ContinuousClock.Instant
        var lastClientBytes: ContinuousClock.Instant?
        /// Connections being connected upstream: the server is not suspended under them.
        var connecting = 0
        var suspensions: [ContinuousClock.Instant] = []
        var wakes: [(began: ContinuousClock.Instant, ready: ContinuousClock.Instant)] = []
        /// When the server was up: from the start of a wake (or the stand-in's making) to the
        /// end of the suspension that stopped it; the last one open while it is up.
        var upIntervals: [(from: ContinuousClock.Instant, to: ContinuousClock.Instant?)] = []
        var relayed = 0
        var refused = 0
        /// When each connection held by `.hold` arrived.
        var holds: [ContinuousClock.Instant] = []
    }

    /// `suspendAfter`: idle time before suspending; `coldStart`: added to each wake after the
    /// cluster has started, as the compute's boot.
    public init(cluster: TestPostgres, suspendAfter: Duration, coldStart: Duration = .zero) throws {
        listener = try RelayListener()
        self.cluster = cluster
        self.suspendAfter = suspendAfter
        self.coldStart = coldStart
        let now = ContinuousClock.now
        var initial = State(phase: cluster.isRunning ? .awake : .suspended, lastActivity: now)
        if initial.phase == .awake { initial.upIntervals.append((now, nil)) }
        state = Mutex(initial)
        Thread.detachNewThread { [self] in acceptLoop() }
        Thread.detachNewThread { [self] in idleTimer() }
    }

    deinit { close() }

    /// Stops accepting, ends every relayed and held connection and the idle timer. The cluster
    /// is left as it is (running or stopped). Safe to call more than once.
    public func close() {
        state.withLock { $0.closed = true }
        listener.close()
    }

    // MARK: Control

    /// Makes the following wakes fail as `mode` says; `nil` lets them succeed again, and
    /// connections held by `.hold` then wake the server.
    public func failWakes(_ mode: WakeFailure?) {
        state.withLock { $0.failure = mode }
    }

    /// Suspends the server now, as the idle timer would; returns once it is stopped. Waits for
    /// a wake under way to finish first. Blocks the calling thread for a second or so.
    public func suspendNow() throws {
        while true {
            let begun = state.withLock { state -> Bool? in
                if state.closed { return false }
                switch state.phase {
                case .awake:
                    state.phase = .suspending
                    return true
                case .suspended: return false
                case .suspending, .waking: return nil
                }
            }
            switch begun {
            case true?: return try suspend()
            case false?: return
            case nil: pause(for: .milliseconds(20))
            }
        }
    }

    // MARK: Observations

    /// Whether the server is up and connections are relayed at once (not while it is being
    /// suspended or woken).
    public var isAwake: Bool { state.withLock { $0.phase == .awake } }

    /// Whether the server is stopped, its suspension finished, and the next connection wakes it
    /// (unless `failWakes(_:)` says otherwise).
    public var isSuspended: Bool { state.withLock { $0.phase == .suspended } }

    /// When each suspension began (the idle timer fired, or `suspendNow()`), oldest first.
    public var suspensions: [ContinuousClock.Instant] { state.withLock { $0.suspensions } }

    /// Each wake: when a held connection started it, and when connections were relayed again
    /// (the cluster started and `coldStart` passed). Failed wakes are not listed.
    public var wakes: [(began: ContinuousClock.Instant, ready: ContinuousClock.Instant)] { state.withLock { $0.wakes } }

    /// The last time any client connection sent a byte.
    public var lastClientBytes: ContinuousClock.Instant? { state.withLock { $0.lastClientBytes } }

    /// When each connection held by `.hold` (a compute that never comes up) arrived, oldest first.
    public var holds: [ContinuousClock.Instant] { state.withLock { $0.holds } }

    /// Connections relayed to the server, and connections refused by `.refuse`.
    public var counts: (relayed: Int, refused: Int) { state.withLock { ($0.relayed, $0.refused) } }

    /// When the server was up, oldest first: from the start of each wake (or the stand-in's
    /// making) until the suspension stopped it; `to` is nil for the one still open.
    public var upIntervals: [(from: ContinuousClock.Instant, to: ContinuousClock.Instant?)] {
        state.withLock { $0.upIntervals }
    }

    /// How long the server was up within `from`...`to`: from the start of each wake (a starting
    /// compute counts, as it is billed) until the suspension stopped it.
    public func awakeTime(from start: ContinuousClock.Instant, to end: ContinuousClock.Instant = .now) -> Duration {
        let intervals = upIntervals
        let now = ContinuousClock.now
        var total = Duration.zero
        for interval in intervals {
            let lower = max(interval.from, start)
            let upper = min(interval.to ?? now, end)
            if upper > lower { total += lower.duration(to: upper) }
        }
        return total
    }

    // MARK: Idle timer and suspension

    private func idleTimer() {
        while true {
            pause(for: .milliseconds(50))
            let due = state.withLock { state -> Bool? in
                if state.closed { return nil }
                guard state.phase == .awake, state.connecting == 0,
                      state.lastActivity.duration(to: .now) >= suspendAfter
                else { return false }
                state.phase = .suspending
                return true
            }
            guard let due else { return }
            // A failed stop leaves the server up and the timer restarted; the next try comes
            // after another `suspendAfter`.
            if due { try? suspend() }
        }
    }

    /// The caller has set the phase to `.suspending`.
    private func suspend() throws {
        state.withLock { $0.suspensions.append(.now) }
        do {
            // The sessions end first, each with the server's own 57P01 relayed to its client;
            // fast shutdown would end them the same way, but after the server had stopped
            // accepting, which is not how a suspension looks from the client.
            try cluster.psql("""
                SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                """)
            try cluster.stop()
        } catch {
            state.withLock { state in
                state.phase = .awake
                state.lastActivity = .now
            }
            throw error
        }
        state.withLock { state in
            state.phase = .suspended
            if let last = state.upIntervals.indices.last, state.upIntervals[last].to == nil {
                state.upIntervals[last].to = .now
            }
        }
    }

    /// Starts the server for a held connection. The caller has set the phase to `.waking`.
    private func wake() {
        let began = ContinuousClock.now
        state.withLock { $0.upIntervals.append((began, nil)) }
        do {
            try cluster.start()
            pause(for: coldStart)
        } catch {
            state.withLock { state in
                state.phase = .suspended
                state.upIntervals.removeLast()
            }
            return
        }
        state.withLock { state in
            let ready = ContinuousClock.now
            state.wakes.append((began, ready))
            state.phase = .awake
            state.lastActivity = ready
        }
    }

    // MARK: Connections

    private func acceptLoop() {
        while let client = listener.next() {
            setNoDelay(client)
            guard listener.admit([client]) else { continue }
            Thread.detachNewThread { [self] in
                serve(client)
                listener.release([client])
            }
        }
    }

    private enum Next {
        case relay, wake, refuse, wait, quit
    }

    private func serve(_ client: Int32) {
        var held = false
        while true {
            let next = state.withLock { state -> Next in
                if state.closed { return .quit }
                switch state.phase {
                case .awake:
                    state.connecting += 1
                    return .relay
                case .suspending, .waking:
                    return .wait
                case .suspended:
                    switch state.failure {
                    case .refuse?:
                        state.refused += 1
                        return .refuse
                    case .hold?:
                        if !held { state.holds.append(.now) }
                        held = true
                        return .wait
                    case nil:
                        state.phase = .waking
                        return .wake
                    }
                }
            }
            switch next {
            case .relay: return relay(client)
            case .refuse: return refuse(client)
            case .quit: return
            case .wake: wake()
            case .wait:
                // A client that gives up while held is let go (psql's connect_timeout).
                if hasHungUp(client) { return }
                pause(for: .milliseconds(20))
            }
        }
    }

    /// The caller has counted this connection in `connecting`.
    private func relay(_ client: Int32) {
        let server = connectToLoopback(port: cluster.port)
        let admitted = server.map { listener.admit([$0]) } ?? false
        state.withLock { state in
            state.connecting -= 1
            if admitted { state.relayed += 1 }
        }
        guard let server, admitted else { return }
        defer { listener.release([server]) }
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            forwardDelayed(from: server, to: client, delay: { .zero })
            finished.signal()
        }
        // `delay` is asked once for each chunk read from the client: that is the activity.
        forwardDelayed(from: client, to: server, delay: { [self] in
            state.withLock { state in
                let now = ContinuousClock.now
                state.lastClientBytes = now
                state.lastActivity = now
            }
            return .zero
        })
        finished.wait()
    }

    /// What the proxy answers when the compute does not start: the startup packet is read (an
    /// SSLRequest or GSSENCRequest first is declined with "N"), then an ErrorResponse, then the end.
    private func refuse(_ client: Int32) {
        while true {
            guard let packet = readStartupPacket(from: client, within: .seconds(10)) else { return }
            let code = packet.count == 8 ? packet[4...7].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } : 0
            guard code == 80_877_103 || code == 80_877_104 else { break }
            guard writeAll([UInt8(ascii: "N")], to: client) else { return }
        }
        _ = writeAll(PooledEndpointStandIn.errorResponse(sqlstate: "XX000", message: Self.wakeRefusal), to: client)
    }

    /// Whether the client has closed its end (or reset it); what it sent stays unread.
    private func hasHungUp(_ descriptor: Int32) -> Bool {
        var ready = pollfd(fd: descriptor, events: pollReadHangUp, revents: 0)
        guard poll(&ready, 1, 0) > 0 else { return false }
        return ready.revents & (pollReadHangUp | Int16(POLLHUP | POLLERR)) != 0
    }
}

/// POLLRDHUP (Linux), which the Glibc module does not import: the peer has shut down writing.
private let pollReadHangUp: Int16 = 0x2000
