/// Which connection a probe runs on, decided from the mode and the kept session's age; the
/// prober performs it (the libpq calls live in PostgresProbe).
///
/// In `session` mode a routine probe uses the connection kept from the last one, and at least
/// every `fresh_every` a new connection instead: only a new one sees faults that leave open
/// sessions alone (a lock that blocks start-up, `max_connections`, a postmaster that accepts no
/// more). The kept session is closed before its successor opens, so the probe never holds two.
/// In `fresh` mode every probe opens a new connection and nothing is kept.
public enum ConnectionChoice: Sendable, Equatable {
    /// Send the probe's statement on the kept session.
    case keptSession
    /// Open a new connection (after closing the kept session, if there is one).
    case newConnection

    /// `keptSessionAge`: how long ago the kept session was opened; nil when there is none.
    public init(mode: ProbeConnection, freshEvery: Duration, keptSessionAge: Duration?) {
        switch (mode, keptSessionAge) {
        case (.session, let age?) where age < freshEvery: self = .keptSession
        default: self = .newConnection
        }
    }
}
