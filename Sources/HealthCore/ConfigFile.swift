/// The config file: postgresql.conf style, familiar to anyone who runs PostgreSQL.
///
///     # comment
///     interval = 2s
///     database_url = 'postgresql://monitor@db.internal/app'
///
/// Values may be bare words or single-quoted ('' inside quotes is a quote). A key given twice
/// takes its last value, as in postgresql.conf. Unknown keys are errors, so typos are not
/// silently ignored.
public enum ConfigFile {
    public static func parse(_ text: String, path: String) throws(ConfigurationError) -> [ConfigKey: SourcedValue] {
        var values: [ConfigKey: SourcedValue] = [:]
        var firstError: ConfigurationError?
        // Every line is read even after an error, so that the error can be scrubbed of the
        // passwords the whole file holds (a password pasted on a line of its own would
        // otherwise come back as an unknown key).
        var secrets: [String] = []
        for (offset, line) in lines(of: text).enumerated() {
            let source = ConfigSource.file(path: path, line: offset + 1)
            do throws(ConfigurationError) {
                guard let (key, value) = try parseLine(line, source: source) else { continue }
                secrets += SecretScrubber.passwords(in: value)
                guard let configKey = ConfigKey(rawValue: key.lowercased()) else {
                    let known = ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ConfigurationError(
                        code: .unknownKey, key: ConfigurationError.shown(key), source: source.description,
                        message: "unknown key (known keys: \(known))"
                    )
                }
                values[configKey] = SourcedValue(value, source: source)
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError.scrubbed(by: SecretScrubber(secrets: secrets)) }
        return values
    }

    /// Lines end at LF, CRLF or a lone CR, as editors and `grep -n` count them; other Unicode
    /// line breaks (form feed, U+2028, ...) stay inside the line, so a line number in an error
    /// is the one an editor shows. A leading byte order mark is not part of the first line.
    static func lines(of text: String) -> [Substring] {
        var scalars = Substring(text).unicodeScalars
        if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
        var lines: [Substring] = []
        var start = scalars.startIndex
        var index = start
        while index < scalars.endIndex {
            let scalar = scalars[index]
            guard scalar == "\n" || scalar == "\r" else {
                index = scalars.index(after: index)
                continue
            }
            lines.append(Substring(scalars[start..<index]))
            index = scalars.index(after: index)
            if scalar == "\r", index < scalars.endIndex, scalars[index] == "\n" { index = scalars.index(after: index) }
            start = index
        }
        lines.append(Substring(scalars[start...]))
        return lines
    }

    /// One line: `nil` for blank or comment lines, else its key (as written) and unquoted value.
    static func parseLine(_ line: Substring, source: ConfigSource) throws(ConfigurationError) -> (String, String)? {
        var rest = line.drop(while: \.isWhitespace)
        if rest.isEmpty || rest.first == "#" { return nil }

        let key = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." })
        guard !key.isEmpty else {
            throw syntax(source, "expected 'key = value'")
        }
        rest = rest.dropFirst(key.count).drop(while: \.isWhitespace)
        if rest.first == "=" { rest = rest.dropFirst().drop(while: \.isWhitespace) }

        let value: String
        if rest.first == "'" {
            var unquoted = ""
            var index = rest.index(after: rest.startIndex)
            var closed = false
            while index < rest.endIndex {
                let character = rest[index]
                let next = rest.index(after: index)
                if character == "'" {
                    if next < rest.endIndex, rest[next] == "'" {
                        unquoted.append("'")
                        index = rest.index(after: next)
                        continue
                    }
                    closed = true
                    index = next
                    break
                }
                unquoted.append(character)
                index = next
            }
            guard closed else { throw syntax(source, "unterminated quoted value for '\(ConfigurationError.shown(key))'") }
            rest = rest[index...]
            value = unquoted
        } else {
            let word = rest.prefix(while: { !$0.isWhitespace && $0 != "#" })
            rest = rest.dropFirst(word.count)
            value = String(word)
        }
        let trailing = rest.drop(while: \.isWhitespace)
        guard trailing.isEmpty || trailing.first == "#" else {
            throw syntax(source, "unexpected text after the value of '\(ConfigurationError.shown(key))' (quote values that contain spaces)")
        }
        return (String(key), value)
    }

    private static func syntax(_ source: ConfigSource, _ message: String) -> ConfigurationError {
        ConfigurationError(code: .syntax, key: nil, source: source.description, message: message)
    }
}
