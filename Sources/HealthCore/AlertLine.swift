import FoundationEssentials

/// One line of the alert log: the event as JSON, with the same `id` as its `system_events` row.
public enum AlertLine {
    struct Envelope: Codable {
        var id: String
        var eventType: String
        var severity: String
        var timestamp: String
        var source: String
        var summary: String

        enum CodingKeys: String, CodingKey {
            case id, severity, timestamp, source, summary
            case eventType = "event_type"
        }
    }

    /// The line, newline included; the payload is embedded as the JSON object it is.
    public static func encode(_ event: HealthEvent) -> String {
        let envelope = EventJSON.encode(Envelope(
            id: event.id.uuidString.lowercased(), eventType: event.kind.rawValue, severity: event.severity.rawValue,
            timestamp: Timestamp.format(event.observedAt), source: EventRow.source, summary: event.summary
        ))
        return String(envelope.dropLast()) + ",\"payload\":" + event.payload + "}\n"
    }

    /// What `dreamnet-healthctl alerts` shows for a line: time, severity and summary; a line
    /// that is not an alert is shown as it is.
    public static func humanReadable(_ line: String) -> String {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(line.utf8)) else { return line }
        let severity = envelope.severity + String(repeating: " ", count: max(0, 8 - envelope.severity.count))
        return "\(envelope.timestamp)  \(severity)  \(envelope.summary)"
    }

    /// The event id of a line, if it is an alert.
    public static func id(of line: String) -> String? {
        (try? JSONDecoder().decode(Envelope.self, from: Data(line.utf8)))?.id
    }
}
