/// Durations as people write them in config and flags: `250ms`, `1s`, `1.5s`, `2m`.
public enum HumanDuration {
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var input: String
        public var description: String {
            "'\(ConfigurationError.shown(input))' is not a duration (write a number with ms, s or m, e.g. 250ms, 1s, 2m)"
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> Duration {
        let trimmed = text.trimmed()
        let units: [(suffix: String, millisecondsPerUnit: Double)] = [("ms", 1), ("s", 1_000), ("m", 60_000)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count)
            guard !number.isEmpty,
                  number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
                  let value = Double(number), value.isFinite
            else { break }
            let milliseconds = value * scale
            guard milliseconds < 86_400_000 * 365 else { break }
            return .microseconds(Int64((milliseconds * 1_000).rounded()))
        }
        throw ParseError(input: text)
    }

    /// The shortest exact spelling: `2s`, `250ms`, `1500ms`.
    public static func format(_ duration: Duration) -> String {
        let ms = duration.milliseconds
        if ms % 60_000 == 0 && ms >= 60_000 { return "\(ms / 60_000)m" }
        if ms % 1_000 == 0 && ms >= 1_000 { return "\(ms / 1_000)s" }
        return "\(ms)ms"
    }

    /// For people reading a long stretch: whole seconds in at most two units, `45s`, `12m 34s`,
    /// `3h 5m`.
    public static func formatRoughly(_ duration: Duration) -> String {
        let seconds = max(0, duration.milliseconds / 1_000)
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3_600 { return seconds % 60 == 0 ? "\(seconds / 60)m" : "\(seconds / 60)m \(seconds % 60)s" }
        let minutes = (seconds % 3_600) / 60
        return minutes == 0 ? "\(seconds / 3_600)h" : "\(seconds / 3_600)h \(minutes)m"
    }
}

extension Duration {
    /// Whole milliseconds, truncated.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds, truncated.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// A uniformly random share of this duration, from `low` (a fraction) up to all of it:
    /// jitter, so that many daemons waiting the same time do not wake together.
    public func jittered(from low: Double) -> Duration {
        let whole = max(1, nanoseconds)
        let least = Int64(Double(whole) * min(max(low, 0), 1))
        return .nanoseconds(Int64.random(in: least...whole))
    }

    /// Milliseconds as a fraction, for latencies.
    public var fractionalMilliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1_000 + Double(attoseconds) / 1e15
    }
}

