import HealthCore

/// The one connection a user of the server (the probe, or the event writer) may hold between
/// two of its calls:
/// - a kept session, idle, for the next statement (the probe's session mode);
/// - or an unfinished connection: one whose connect or statement outlived its deadline while
///   the server held it (a backend waiting on a lock during start-up, say). Dropping it would
///   not free the backend (it does not notice its client has gone until it next writes), so
///   it is carried on with instead of opening another.
///
/// Not thread-safe: its owner keeps it behind a lock and uses it from one thread at a time.
final class ConnectionSlot {
    private enum Held {
        case kept(PGSession, openedAt: ContinuousClock.Instant)
        case unfinished(PGSession, since: ContinuousClock.Instant)
    }

    private var held: Held?

    /// The server (a pooler) refused the startup options that carry the server timeouts: new
    /// connections go without them until the slot is replaced (a reload, a restart).
    private(set) var startupOptionsRefused = false

    /// An unfinished connection is given up on after this long, whatever it waits for, so that
    /// a path that went dead without a reset (and without keepalives to notice) cannot hold the
    /// verdict at "timeout" for ever. Long enough that a lock held for minutes costs the server
    /// one more backend every five minutes, not one per probe.
    static let longestWait = Duration.seconds(300)

    init() {}

    var isEmpty: Bool { held == nil }

    /// What a timeout says when the connection that ran out of time was opened by an earlier
    /// call (before `start`) and is still unfinished: how long it has waited, and that no other
    /// is opened meanwhile. `nil` when the timeout is this call's own.
    func stillWaitingNote(callStartedAt start: ContinuousClock.Instant) -> String? {
        guard case .unfinished(_, let since) = held, since < start else { return nil }
        let waited = (ContinuousClock.now - since).components.seconds
        return "the connection opened \(waited) s ago is still waiting, and no other is opened until the server answers or drops it"
    }

    /// How long ago the kept session was opened; nil when none is kept.
    var keptSessionAge: Duration? {
        guard case .kept(_, let openedAt) = held else { return nil }
        return ContinuousClock.now - openedAt
    }

    /// Takes the kept session out, if there is one.
    func takeKept() -> (session: PGSession, openedAt: ContinuousClock.Instant)? {
        guard case .kept(let session, let openedAt) = held else { return nil }
        held = nil
        return (session, openedAt)
    }

    /// Reads the kept session without sending anything; one the server ended is dropped.
    func checkKept() -> IdleSessionCheck {
        guard case .kept(let session, _) = held else { return .none }
        let check = session.checkIdle()
        if case .ended = check { held = nil }
        return check
    }

    func keep(_ session: PGSession, openedAt: ContinuousClock.Instant) {
        held = .kept(session, openedAt: openedAt)
    }

    /// Keeps a session whose connect or statement has not finished, if the server holds it;
    /// closes it otherwise.
    func holdUnfinished(_ session: PGSession, since: ContinuousClock.Instant) {
        held = session.serverHoldsIt ? .unfinished(session, since: since) : nil
    }

    /// Closes the kept session, if any; an unfinished connection stays.
    func closeKept() {
        if case .kept = held { held = nil }
    }

    /// Closes whatever it holds (reload, shutdown).
    func close() {
        held = nil
    }

    /// A connected session under `clock`'s deadline: the unfinished one carried on if there is
    /// one, else a new one. After `.deadline`, `stillWaitingNote` tells whether an earlier
    /// connection is still waiting; a new connection that runs out of time
    /// while the server holds it is kept as the unfinished one. The kept session is not
    /// touched: take it first.
    func connection(
        _ target: ConnectionTarget, clock: inout PhaseClock, resolver: HostResolver,
        environment: [String: String], cancellation: ProbeCancellation, serverTimeout: Duration?
    ) -> Result<PGSession, PGSession.Stop> {
        if case .unfinished(let session, let since) = held {
            held = nil
            if ContinuousClock.now - since < Self.longestWait {
                session.cancellation = cancellation
                clock.enter(session.phase)
                let stop: PGSession.Stop?
                if session.isConnected {
                    // A statement an earlier deadline cut short: read it to its end.
                    switch session.finishStatement(until: clock.deadline) {
                    case .success: stop = nil
                    case .failure(let failure): stop = failure
                    }
                } else {
                    stop = session.connect(clock: &clock)
                }
                switch stop {
                case nil:
                    return .success(session)
                case .deadline?, .cancelled?:
                    held = .unfinished(session, since: since)
                    return .failure(stop!)
                case .failed?:
                    // The server ended it (or the path broke): a new connection may be tried.
                    break
                }
            }
        }
        let opened = open(
            target, clock: &clock, resolver: resolver, environment: environment, cancellation: cancellation,
            serverTimeout: startupOptionsRefused ? nil : serverTimeout
        )
        guard serverTimeout != nil, !startupOptionsRefused, case .failure(.failed(_, let sqlstate, let message)) = opened,
              FailureClassifier.refusesStartupOptions(sqlstate: sqlstate, message: message)
        else { return opened }
        // A pooler in front (PgBouncer, a serverless proxy's pooled endpoint) that refuses the
        // daemon's own startup options: that says nothing about the database. Again at once,
        // in the time left, without them; and without them from now on.
        startupOptionsRefused = true
        return open(
            target, clock: &clock, resolver: resolver, environment: environment, cancellation: cancellation,
            serverTimeout: nil
        )
    }

    /// A new connection, connected; one that runs out of time while the server holds it is
    /// kept as the unfinished one.
    private func open(
        _ target: ConnectionTarget, clock: inout PhaseClock, resolver: HostResolver,
        environment: [String: String], cancellation: ProbeCancellation, serverTimeout: Duration?
    ) -> Result<PGSession, PGSession.Stop> {
        let session: PGSession
        switch PGSession.start(
            target, clock: &clock, resolver: resolver, environment: environment, cancellation: cancellation,
            serverTimeout: serverTimeout
        ) {
        case .success(let started): session = started
        case .failure(let stop): return .failure(stop)
        }
        if let stop = session.connect(clock: &clock) {
            if case .deadline = stop { holdUnfinished(session, since: clock.start) }
            return .failure(stop)
        }
        return .success(session)
    }
}
