import FoundationEssentials

/// A `system_events` row exactly as it is inserted.
public struct EventRow: Sendable, Equatable {
    public static let source = "dreamnet-healthd"

    public var id: UUID
    public var eventType: String
    public var severity: String
    public var payload: String
    /// Observation time; stored as UTC in the `timestamp without time zone` column.
    public var timestamp: Date
    public var metadata: String

    public init(_ event: HealthEvent, delivery: HealthEvent.Delivery, seq: Int64) {
        id = event.id
        eventType = event.kind.rawValue
        severity = event.severity.rawValue
        payload = event.payload
        timestamp = event.observedAt
        metadata = event.metadata(delivery: delivery, seq: seq)
    }
}
