import FoundationEssentials

/// Timestamps as people and rows see them: UTC, RFC 3339, milliseconds.
public enum Timestamp {
    private static let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    public static func format(_ date: Date) -> String {
        style.format(date)
    }

    public static func parse(_ text: String) -> Date? {
        try? style.parse(text)
    }
}
