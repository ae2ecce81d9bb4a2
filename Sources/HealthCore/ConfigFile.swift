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
    /// `secrets`: passwords known from elsewhere (flags, credentials), masked in an error.
    public static func parse(
        _ text: String, path: String, secrets: SecretScrubber = SecretScrubber()
    ) throws(ConfigurationError) -> [ConfigKey: SourcedValue] {
        var values: [ConfigKey: SourcedValue] = [:]
        var first: (line: Int, problem: LineProblem)?
        // Every line is read even after a problem, so that the error can be scrubbed of the
        // passwords the whole file holds (a password pasted on a line of its own would
        // otherwise come back as an unknown key).
        var scrubber = secrets
        for (offset, line) in lines(of: text).enumerated() {
            switch parseLine(line) {
            case .blank:
                continue
            case .entry(let key, let value):
                scrubber.add(SecretScrubber.passwords(in: value))
                if let configKey = ConfigKey(rawValue: key.lowercased()) {
                    values[configKey] = SourcedValue(value, source: .file(path: path, line: offset + 1))
                } else if first == nil {
                    first = (offset + 1, .unknownKey(key))
                }
            case .problem(let problem):
                if first == nil { first = (offset + 1, problem) }
            }
        }
        if let first {
            // Masked before it is shortened, so that no part of a password is left.
            let shown = { (text: String) in ConfigurationError.shown(scrubber.scrub(text)) }
            throw first.problem.error(source: ConfigSource.file(path: path, line: first.line).description, shown: shown)
        }
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

    enum Line {
        case blank
        case entry(key: String, value: String)
        case problem(LineProblem)
    }

    enum LineProblem {
        case expectedKey
        case unterminated(key: String)
        case trailingText(key: String)
        case unknownKey(String)

        func error(source: String, shown: (String) -> String) -> ConfigurationError {
            switch self {
            case .expectedKey:
                return ConfigurationError(code: .syntax, key: nil, source: source, message: "expected 'key = value'")
            case .unterminated(let key):
                return ConfigurationError(code: .syntax, key: nil, source: source, message: "unterminated quoted value for '\(shown(key))'")
            case .trailingText(let key):
                return ConfigurationError(
                    code: .syntax, key: nil, source: source,
                    message: "unexpected text after the value of '\(shown(key))' (quote values that contain spaces)"
                )
            case .unknownKey(let key):
                let known = ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")
                return ConfigurationError(code: .unknownKey, key: shown(key), source: source, message: "unknown key (known keys: \(known))")
            }
        }
    }

    /// One line: blank (or a comment), a key as written with its unquoted value, or a problem.
    static func parseLine(_ line: Substring) -> Line {
        var rest = line.drop(while: \.isWhitespace)
        if rest.isEmpty || rest.first == "#" { return .blank }

        let key = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." })
        guard !key.isEmpty else { return .problem(.expectedKey) }
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
            guard closed else { return .problem(.unterminated(key: String(key))) }
            rest = rest[index...]
            value = unquoted
        } else {
            let word = rest.prefix(while: { !$0.isWhitespace && $0 != "#" })
            rest = rest.dropFirst(word.count)
            value = String(word)
        }
        let trailing = rest.drop(while: \.isWhitespace)
        guard trailing.isEmpty || trailing.first == "#" else { return .problem(.trailingText(key: String(key))) }
        return .entry(key: String(key), value: value)
    }
}
