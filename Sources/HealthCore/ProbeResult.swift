/// The stage of a probe, in the order a probe goes through them.
public enum ProbePhase: String, Sendable, Codable, CaseIterable, Comparable {
    case resolve
    case connect
    case tls
    case auth
    case query

    public static func < (lhs: ProbePhase, rhs: ProbePhase) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Why a probe failed, coarse enough to alert on.
public enum FailureReason: String, Sendable, Codable, CaseIterable {
    /// Nothing listens: the TCP port is closed or the Unix socket is missing.
    case refused
    /// The probe's deadline passed; `ProbeFailure.phase` says where.
    case timeout
    /// The host name could not be resolved.
    case dns
    /// Authentication was rejected (SQLSTATE 28P01 or 28000), or the SCRAM exchange failed.
    case auth
    /// The server's certificate did not verify (unknown CA, a name that does not match, a
    /// missing root certificate file): configuration or an impostor, not an outage.
    case tlsCertificate = "tls-certificate"
    /// TLS is required (`sslmode=require` or stricter) and the server does not offer it.
    case tlsRequired = "tls-required"
    /// `channel_binding=require`, and the server authenticated without it (no SCRAM-SHA-256-PLUS
    /// offered, as a pooler or a `trust`/`md5` rule does).
    case channelBinding = "channel-binding"
    /// SQLSTATE 53300.
    case tooManyConnections = "too-many-connections"
    /// SQLSTATE 57P03: the server is starting up or shutting down.
    case startingOrStopping = "starting-or-stopping"
    /// Any other SQLSTATE the server sent.
    case serverError = "server-error"
    /// The connection broke without a SQLSTATE (reset, unreachable, closed).
    case network
    /// The connection string itself is unusable.
    case invalidTarget = "invalid-target"
    /// Anything else.
    case other
}

/// Which kind of connection a probe ran on.
public enum ProbeConnection: String, Sendable, Codable, CaseIterable {
    /// A connection opened for this probe: it tested that new sessions start.
    case fresh
    /// The connection the daemon keeps open between probes: it tested that the server answers.
    case session
}

/// How a probe's deadline reaches the server, so that the server itself ends a statement the
/// daemon gave up on (a backend waiting on a lock does not notice that its client has gone).
public enum ServerTimeouts: String, Sendable, Codable, CaseIterable {
    /// `statement_timeout` and `lock_timeout` in the startup packet's `options`.
    case startupOptions = "startup-options"
    /// A pooler refused those options: both are set with `SET LOCAL` in the probe's own
    /// transaction, which a pooler in transaction mode passes on.
    case setLocal = "set-local"
    /// `server_timeouts = false`.
    case off
}

/// How long one phase of a probe took.
public struct PhaseTiming: Sendable, Equatable, Codable {
    public var phase: ProbePhase
    public var duration: Duration

    public init(phase: ProbePhase, duration: Duration) {
        self.phase = phase
        self.duration = duration
    }
}

/// Why a probe failed, and where.
public struct ProbeFailure: Sendable, Equatable {
    public var reason: FailureReason
    public var phase: ProbePhase
    public var sqlstate: String?
    /// Human-readable, already scrubbed of secrets.
    public var message: String

    public init(reason: FailureReason, phase: ProbePhase, sqlstate: String? = nil, message: String) {
        self.reason = reason
        self.phase = phase
        self.sqlstate = sqlstate
        self.message = message
    }
}

/// The measured outcome of one probe: never just a boolean.
public struct ProbeResult: Sendable, Equatable {
    /// Wall-clock time the probe started (for people and rows).
    public var startedAt: Date
    /// Total time from start to verdict, measured on a monotonic clock.
    public var latency: Duration
    /// Time spent in each phase the probe reached, in order.
    public var phases: [PhaseTiming]
    /// `nil` when the probe succeeded.
    public var failure: ProbeFailure?
    /// The connection the verdict came from.
    public var connection: ProbeConnection
    /// How the deadline was passed to the server; `nil` when no server was involved.
    public var serverTimeouts: ServerTimeouts?
    /// The first login after a sleep (`scale_to_zero`), under `wake_timeout`: its time is the
    /// database's cold start, no measure of the distance to it.
    public var underWakeBudget = false

    public var ok: Bool { failure == nil }

    public init(
        startedAt: Date, latency: Duration, phases: [PhaseTiming], failure: ProbeFailure?, connection: ProbeConnection = .fresh,
        serverTimeouts: ServerTimeouts? = nil
    ) {
        self.serverTimeouts = serverTimeouts
        self.startedAt = startedAt
        self.latency = latency
        self.phases = phases
        self.failure = failure
        self.connection = connection
    }

    /// The reason class as reported everywhere: the failure's reason, or `ok`.
    public var reasonText: String { failure?.reason.rawValue ?? "ok" }
}

import struct FoundationEssentials.Date
