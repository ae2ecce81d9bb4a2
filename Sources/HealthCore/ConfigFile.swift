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
        var lineNumber = 0
        // isNewline, not "\n": in Swift "\r\n" is one Character, and files written on
        // other systems use it.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            let source = ConfigSource.file(path: path, line: lineNumber)
            guard let (key, value) = try parseLine(Substring(rawLine), source: source) else { continue }
            guard let configKey = ConfigKey(rawValue: key) else {
                let known = ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")
                throw ConfigurationError(
                    code: .unknownKey, key: key, source: source.description,
                    message: "unknown key (known keys: \(known))"
                )
            }
            values[configKey] = SourcedValue(value, source: source)
        }
        return values
    }

    /// One line: `nil` for blank or comment lines, else its key and unquoted value.
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
            guard closed else { throw syntax(source, "unterminated quoted value for '\(key)'") }
            rest = rest[index...]
            value = unquoted
        } else {
            let word = rest.prefix(while: { !$0.isWhitespace && $0 != "#" })
            rest = rest.dropFirst(word.count)
            value = String(word)
        }
        let trailing = rest.drop(while: \.isWhitespace)
        guard trailing.isEmpty || trailing.first == "#" else {
            throw syntax(source, "unexpected text after the value of '\(key)' (quote values that contain spaces)")
        }
        return (key.lowercased(), value)
    }

    private static func syntax(_ source: ConfigSource, _ message: String) -> ConfigurationError {
        ConfigurationError(code: .syntax, key: nil, source: source.description, message: message)
    }
}
