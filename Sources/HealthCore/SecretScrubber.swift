/// Removes secrets from text before it goes anywhere: logs, status, events, errors.
///
/// It knows the secrets of one connection string (its password, raw and decoded) and also
/// masks the one place libpq 15 echoes a URL password back: the quoted token of an
/// "invalid percent-encoded token" error.
public struct SecretScrubber: Sendable, Equatable {
    public static let mask = "***"

    /// Longest first, so a secret that contains another is masked whole.
    public private(set) var secrets: [String]

    public init(secrets: [String] = []) {
        self.secrets = []
        add(secrets)
    }

    /// A scrubber for the secrets written in a connection string (URL or key=value form).
    public init(connectionString: String) {
        self.init(secrets: Self.passwords(in: connectionString))
    }

    /// A scrubber for every password written in command-line arguments (`--flag=URL` included),
    /// for messages that quote arguments back, such as usage errors.
    public init(arguments: [String]) {
        self.init(secrets: arguments.flatMap { argument -> [String] in
            let value = argument.firstIndex(of: "=").map { String(argument[argument.index(after: $0)...]) }
            return Self.passwords(in: argument) + (value.map { Self.passwords(in: $0) } ?? [])
        })
    }

    public mutating func add(_ more: [String]) {
        let all = Set(secrets + more.filter { !$0.isEmpty })
        secrets = all.sorted { $0.count != $1.count ? $0.count > $1.count : $0 < $1 }
    }

    public func scrub(_ text: String) -> String {
        var result = text
        for secret in secrets where result.contains(secret) {
            result = result.replacing(secret, with: Self.mask)
        }
        return Self.maskPercentTokens(result)
    }

    /// Masks every double-quoted piece of `text`. For libpq's connection-string parse errors,
    /// which quote the offending text: it may be a password that was not recognised as one
    /// (`password=my secret` makes libpq complain about `"secret"`).
    public static func maskQuoted(_ text: String) -> String {
        var output = ""
        var inside = false
        for character in text {
            if character == "\"" {
                if inside { output += mask }
                output.append(character)
                inside.toggle()
            } else if !inside {
                output.append(character)
            }
        }
        if inside { output += mask }
        return output
    }

    /// libpq 15: `invalid percent-encoded token: "<token>"`: the token is part of the URL, often
    /// the password itself.
    static func maskPercentTokens(_ text: String) -> String {
        let marker = "percent-encoded token: \""
        guard text.contains(marker) else { return text }
        var output = ""
        var rest = Substring(text)
        while let range = rest.firstRange(of: marker) {
            output += rest[..<range.upperBound]
            rest = rest[range.upperBound...]
            if let close = rest.lastIndex(of: "\"") {
                output += mask
                rest = rest[close...]
            } else {
                output += mask
                rest = ""
            }
        }
        return output + rest
    }

    /// Every spelling of a password a connection string carries: URL userinfo, a URL
    /// `password=` parameter, a key=value `password` (quoted or not).
    public static func passwords(in connectionString: String) -> [String] {
        var found: [String] = []
        let text = connectionString.trimmed()
        if let schemeEnd = text.firstRange(of: "://"),
           ["postgres", "postgresql"].contains(text[..<schemeEnd.lowerBound].lowercased()) {
            let afterScheme = text[schemeEnd.upperBound...]
            let authorityEnd = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
            let authority = afterScheme[..<authorityEnd]
            if let at = authority.lastIndex(of: "@") {
                let userinfo = authority[..<at]
                if let colon = userinfo.firstIndex(of: ":") {
                    found.append(contentsOf: spellings(of: String(userinfo[userinfo.index(after: colon)...])))
                }
            }
            if let query = afterScheme.firstIndex(of: "?") {
                for pair in afterScheme[afterScheme.index(after: query)...].split(separator: "&") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2, parts[0].lowercased() == "password" {
                        found.append(contentsOf: spellings(of: String(parts[1])))
                    }
                }
            }
        } else {
            found.append(contentsOf: keyValuePasswords(text))
        }
        return found.filter { !$0.isEmpty }
    }

    private static func spellings(of raw: String) -> [String] {
        var all = [raw]
        if let decoded = raw.percentDecoded, decoded != raw { all.append(decoded) }
        return all
    }

    /// `password = value`, `password='va lue'` with `\'` and `\\` escapes, as libpq reads them.
    private static func keyValuePasswords(_ text: String) -> [String] {
        var found: [String] = []
        var rest = Substring(text)
        while let range = rest.firstRange(ofASCIICaseInsensitive: "password") {
            var cursor = rest[range.upperBound...].drop(while: \.isWhitespace)
            rest = rest[range.upperBound...]
            guard cursor.first == "=" else { continue }
            cursor = cursor.dropFirst().drop(while: \.isWhitespace)
            var value = ""
            var raw = ""
            if cursor.first == "'" {
                var index = cursor.index(after: cursor.startIndex)
                while index < cursor.endIndex, cursor[index] != "'" {
                    if cursor[index] == "\\", cursor.index(after: index) < cursor.endIndex {
                        index = cursor.index(after: index)
                    }
                    value.append(cursor[index])
                    index = cursor.index(after: index)
                }
                raw = String(cursor[cursor.index(after: cursor.startIndex)..<index])
            } else {
                value = String(cursor.prefix(while: { !$0.isWhitespace }))
                raw = value
            }
            found.append(value)
            if raw != value { found.append(raw) }
        }
        return found
    }
}

