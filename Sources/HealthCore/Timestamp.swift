import FoundationEssentials

/// Timestamps as people and rows see them: UTC, RFC 3339, milliseconds.
public enum Timestamp {
    private static let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    /// Rounded to the nearest millisecond. The style truncates, and a time parsed back from its
    /// own text can sit a hair below the millisecond it names (binary floating point): without
    /// the half-millisecond nudge a round trip could lose a millisecond.
    public static func format(_ date: Date) -> String {
        style.format(date.addingTimeInterval(0.000_5))
    }

    public static func parse(_ text: String) -> Date? {
        try? style.parse(text)
    }
}
