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
        secrets = all.sorted { $0.utf8.count != $1.utf8.count ? $0.utf8.count > $1.utf8.count : $0 < $1 }
    }

    /// Matches bytes, not Characters: a password that starts with a combining mark, or that a
    /// message follows with one, fuses with its neighbour into one Character and would escape
    /// a Character-wise search.
    public func scrub(_ text: String) -> String {
        var bytes = Array(text.utf8)
        for secret in secrets {
            bytes = Self.replacing(Array(secret.utf8), in: bytes)
        }
        // A secret is whole scalars, so a match starts and ends on scalar boundaries and the
        // bytes stay valid UTF-8.
        return Self.maskPercentTokens(String(decoding: bytes, as: UTF8.self))
    }

    private static func replacing(_ secret: [UInt8], in bytes: [UInt8]) -> [UInt8] {
        guard !secret.isEmpty, bytes.count >= secret.count else { return bytes }
        var output: [UInt8] = []
        var index = 0
        var found = false
        while index < bytes.count {
            if bytes[index] == secret[0], index + secret.count <= bytes.count,
               bytes[index..<index + secret.count].elementsEqual(secret) {
                output.append(contentsOf: mask.utf8)
                index += secret.count
                found = true
            } else {
                output.append(bytes[index])
                index += 1
            }
        }
        return found ? output : bytes
    }

    /// Masks every double-quoted piece of `text`. For libpq's connection-string parse errors,
    /// which quote the offending text: it may be a password that was not recognised as one
    /// (`password=my secret` makes libpq complain about `"secret"`). Scalar by scalar, so that
    /// a quote followed by a combining mark still counts.
    ///
    /// `input`, the connection string, tells where a quoted piece ends when the piece itself
    /// holds a quote (`postgres"ql://u:pw@h`): it runs to the farthest closing quote that
    /// leaves it a piece of the input.
    public static func maskQuoted(_ text: String, input: String? = nil) -> String {
        let scalars = Array(text.unicodeScalars)
        let quotes = scalars.indices.filter { scalars[$0] == "\"" }
        let inputBytes = input.map { Array($0.utf8) }
        var output = String.UnicodeScalarView()
        var position = 0
        var next = 0
        while next < quotes.count {
            let open = quotes[next]
            output.append(contentsOf: scalars[position...open])
            output.append(contentsOf: mask.unicodeScalars)
            let candidates = quotes[(next + 1)...]
            var close = candidates.first
            if let inputBytes, candidates.count > 1 {
                close = candidates.last { candidate in
                    let piece = Array(String(String.UnicodeScalarView(scalars[(open + 1)..<candidate])).utf8)
                    return piece.isEmpty || firstIndex(of: piece, in: inputBytes, from: 0) != nil
                } ?? close
            }
            guard let close else {
                position = scalars.count
                break
            }
            output.append(scalars[close])
            position = close + 1
            next = quotes.firstIndex(of: close)! + 1
        }
        if position < scalars.count { output.append(contentsOf: scalars[position...]) }
        return String(output)
    }

    /// libpq 15: `invalid percent-encoded token: "<token>"`: the token is part of the URL, often
    /// the password itself.
    static func maskPercentTokens(_ text: String) -> String {
        let marker = Array("percent-encoded token: \"".unicodeScalars)
        let scalars = Array(text.unicodeScalars)
        var output = String.UnicodeScalarView()
        var start = 0
        while let found = firstIndex(of: marker, in: scalars, from: start) {
            output.append(contentsOf: scalars[start..<found + marker.count])
            output.append(contentsOf: mask.unicodeScalars)
            let rest = found + marker.count
            start = scalars[rest...].lastIndex(of: "\"") ?? scalars.count
        }
        guard start > 0 else { return text }
        output.append(contentsOf: scalars[start...])
        return String(output)
    }

    private static func firstIndex<T: Equatable>(of needle: [T], in haystack: [T], from start: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for index in start...(haystack.count - needle.count) where haystack[index..<index + needle.count].elementsEqual(needle) {
            return index
        }
        return nil
    }

    /// Every spelling of a password a connection string carries: URL userinfo, a URL
    /// `password=` parameter, a key=value `password` (quoted or not). Read byte by byte, as
    /// libpq reads it: its delimiters are ASCII, and a combining mark after one must not hide it.
    public static func passwords(in connectionString: String) -> [String] {
        var found: [String] = []
        let bytes = ArraySlice(connectionString.utf8).trimmingASCIISpaces()
        if let schemeEnd = firstIndex(of: Array("://".utf8), in: Array(bytes), from: 0).map({ bytes.startIndex + $0 }),
           ["postgres", "postgresql"].contains(String(decoding: bytes[..<schemeEnd], as: UTF8.self).lowercased()) {
            let afterScheme = bytes[(schemeEnd + 3)...]
            let authorityEnd = afterScheme.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }) ?? afterScheme.endIndex
            let authority = afterScheme[..<authorityEnd]
            if let at = authority.lastIndex(of: UInt8(ascii: "@")) {
                let userinfo = authority[..<at]
                if let colon = userinfo.firstIndex(of: UInt8(ascii: ":")) {
                    found.append(contentsOf: spellings(of: text(userinfo[(colon + 1)...])))
                }
            }
            if let query = afterScheme.firstIndex(of: UInt8(ascii: "?")) {
                for pair in afterScheme[(query + 1)...].split(separator: UInt8(ascii: "&")) {
                    let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1)
                    if parts.count == 2, text(parts[0]).lowercased() == "password" {
                        found.append(contentsOf: spellings(of: text(parts[1])))
                    }
                }
            }
        } else {
            found.append(contentsOf: keyValuePasswords(bytes))
        }
        return found.filter { !$0.isEmpty }
    }

    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    private static func spellings(of raw: String) -> [String] {
        var all = [raw]
        if let decoded = raw.percentDecoded, decoded != raw { all.append(decoded) }
        return all
    }

    /// `password = value`, `password='va lue'` with `\'` and `\\` escapes, as libpq reads them.
    private static func keyValuePasswords(_ bytes: ArraySlice<UInt8>) -> [String] {
        var found: [String] = []
        let keyword = Array("password".utf8)
        var index = bytes.startIndex
        while index + keyword.count <= bytes.endIndex {
            guard bytes[index..<index + keyword.count].map({ $0 | 0x20 }).elementsEqual(keyword) else {
                index += 1
                continue
            }
            index += keyword.count
            var cursor = bytes[index...].drop(while: \.isASCIISpace)
            guard cursor.first == UInt8(ascii: "=") else { continue }
            cursor = cursor.dropFirst().drop(while: \.isASCIISpace)
            var value: [UInt8] = []
            var raw: ArraySlice<UInt8>
            if cursor.first == UInt8(ascii: "'") {
                var position = cursor.startIndex + 1
                while position < cursor.endIndex, cursor[position] != UInt8(ascii: "'") {
                    if cursor[position] == UInt8(ascii: "\\"), position + 1 < cursor.endIndex { position += 1 }
                    value.append(cursor[position])
                    position += 1
                }
                raw = cursor[(cursor.startIndex + 1)..<position]
            } else {
                raw = cursor.prefix(while: { !$0.isASCIISpace })
                value = Array(raw)
            }
            found.append(String(decoding: value, as: UTF8.self))
            if !raw.elementsEqual(value) { found.append(text(raw)) }
        }
        return found
    }
}


extension UInt8 {
    /// Space, tab, newline, vertical tab, form feed or carriage return: C's `isspace`.
    var isASCIISpace: Bool {
        self == 0x20 || (0x09...0x0D).contains(self)
    }
}

extension ArraySlice<UInt8> {
    func trimmingASCIISpaces() -> ArraySlice<UInt8> {
        guard let first = firstIndex(where: { !$0.isASCIISpace }), let last = lastIndex(where: { !$0.isASCIISpace }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }
}
