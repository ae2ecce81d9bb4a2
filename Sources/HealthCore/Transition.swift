import struct FoundationEssentials.Date
import struct FoundationEssentials.UUID

/// One change of state. Every transition is an event worth recording.
public struct Transition: Sendable, Equatable, Identifiable {
    public var id: UUID
    public var from: HealthState
    public var to: HealthState
    /// When the probe that caused it finished (wall clock, UTC when shown).
    public var observedAt: Date
    /// The reason class that caused it: a `FailureReason` raw value, `ok`, or `not-configured`.
    public var reason: String
    public var phase: ProbePhase?
    public var sqlstate: String?
    public var latency: Duration?
    /// The kind of connection the deciding probe ran on; `nil` when no probe decided it.
    public var connection: ProbeConnection?
    /// How many consecutive results in the new direction led here.
    public var consecutive: Int
    /// Human-readable, scrubbed of secrets.
    public var message: String

    public init(
        id: UUID, from: HealthState, to: HealthState, observedAt: Date, reason: String,
        phase: ProbePhase? = nil, sqlstate: String? = nil, latency: Duration? = nil,
        connection: ProbeConnection? = nil, consecutive: Int, message: String
    ) {
        self.id = id
        self.from = from
        self.to = to
        self.observedAt = observedAt
        self.reason = reason
        self.phase = phase
        self.sqlstate = sqlstate
        self.latency = latency
        self.connection = connection
        self.consecutive = consecutive
        self.message = message
    }
}
