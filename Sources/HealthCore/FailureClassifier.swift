/// Turns libpq's error text (and SQLSTATE, when there is one) into a reason class.
///
/// During connection set-up libpq exposes no SQLSTATE through its API; with verbose error
/// messages it writes the server's code into the text (`FATAL:  28P01: password ...`), which
/// `sqlstate(inConnectionError:)` reads back. Locations and line breaks are dropped so the
/// message fits on one line.
public enum FailureClassifier {
    public static func reason(sqlstate: String?, message: String) -> FailureReason {
        if let sqlstate {
            switch sqlstate {
            case "28P01", "28000": return .auth
            case "53300": return .tooManyConnections
            case "57P03": return .startingOrStopping
            default: return .serverError
            }
        }
        let lowered = message.lowercased()
        // Before the SQLSTATE-less generic texts: these are configuration, and say so.
        let textual: [(String, FailureReason)] = [
            ("certificate verify failed", .tlsCertificate),
            ("does not match host name", .tlsCertificate),
            ("root certificate file", .tlsCertificate),
            ("could not read root certificate", .tlsCertificate),
            ("could not get server's host name from server certificate", .tlsCertificate),
            ("server certificate for", .tlsCertificate),
            ("does not support ssl, but ssl was required", .tlsRequired),
            ("channel binding", .channelBinding),
            ("scram-sha-256-plus", .channelBinding),
            ("scram", .auth),
            ("sasl", .auth),
            ("connection refused", .refused),
            ("no such file or directory", .refused),
            ("could not translate host name", .dns),
            ("name or service not known", .dns),
            ("temporary failure in name resolution", .dns),
            ("password authentication failed", .auth),
            ("no password supplied", .auth),
            ("too many clients", .tooManyConnections),
            ("the database system is starting up", .startingOrStopping),
            ("the database system is shutting down", .startingOrStopping),
            ("the database system is in recovery mode", .startingOrStopping),
            ("server closed the connection unexpectedly", .network),
            ("connection reset", .network),
            ("no route to host", .network),
            ("network is unreachable", .network),
            ("broken pipe", .network),
            ("timed out", .network),
            ("invalid connection option", .invalidTarget),
            ("invalid uri", .invalidTarget),
            ("invalid percent-encoded token", .invalidTarget),
            ("missing \"=\" after", .invalidTarget),
            ("invalid sslmode value", .invalidTarget),
            ("could not match", .invalidTarget),
            ("invalid port number", .invalidTarget),
            ("invalid integer value", .invalidTarget),
            ("could not parse network address", .invalidTarget),
            ("invalid value for parameter", .invalidTarget),
        ]
        for (needle, reason) in textual where lowered.contains(needle) {
            return reason
        }
        return .other
    }

    /// Whether a connection was refused for the startup parameters the daemon adds itself
    /// (`options` with its server timeouts): PgBouncer's FATAL 08P01 "unsupported startup
    /// parameter: options" (1.18; "…in options: statement_timeout" from 1.20), and the same
    /// text relayed by Neon's proxy for its pooled hosts under XX000, the code of every proxy
    /// error. Any other SQLSTATE with that text is some other server's, and not ours to guess at.
    public static func refusesStartupOptions(sqlstate: String?, message: String) -> Bool {
        guard sqlstate == nil || sqlstate == "08P01" || sqlstate == "XX000" else { return false }
        let lowered = message.lowercased()
        guard let range = lowered.firstRange(of: "unsupported startup parameter") else { return false }
        let parameter = lowered[range.upperBound...]
        return parameter.hasPrefix(": options") || parameter.hasPrefix(" in options")
    }

    /// The SQLSTATE libpq printed into a verbose connection error, if any.
    public static func sqlstate(inConnectionError message: String) -> String? {
        for severity in ["FATAL:", "ERROR:", "PANIC:"] {
            var rest = Substring(message)
            while let range = rest.firstRange(of: severity) {
                let after = rest[range.upperBound...].drop(while: { $0 == " " })
                let code = after.prefix(5)
                if code.count == 5,
                   code.allSatisfy({ ($0.isASCII && $0.isUppercase) || ($0.isASCII && $0.isNumber) }),
                   after.dropFirst(5).first == ":" {
                    return String(code)
                }
                rest = rest[range.upperBound...]
            }
        }
        return nil
    }

    /// One line: no `LOCATION:` lines, no tabs or newlines, no doubled spaces, no SQLSTATE
    /// prefix (it is reported in its own field).
    public static func tidy(_ message: String) -> String {
        let lines = message.split(whereSeparator: \.isNewline)
            .map { $0.trimmed() }
            .filter { !$0.isEmpty && !$0.hasPrefix("LOCATION:") }
        var text = lines.joined(separator: " ")
        while text.contains("  ") { text = text.replacing("  ", with: " ") }
        for severity in ["FATAL: ", "ERROR: ", "PANIC: "] {
            var searchStart = text.startIndex
            while let range = text[searchStart...].firstRange(of: severity) {
                let codeEnd = text.index(range.upperBound, offsetBy: 7, limitedBy: text.endIndex)
                if let codeEnd, text[range.upperBound..<codeEnd].count == 7,
                   text[text.index(range.upperBound, offsetBy: 5)...].hasPrefix(": "),
                   sqlstate(inConnectionError: "FATAL:  " + text[range.upperBound..<codeEnd]) != nil {
                    text.removeSubrange(range.upperBound..<codeEnd)
                }
                searchStart = range.upperBound
            }
        }
        return text
    }
}

