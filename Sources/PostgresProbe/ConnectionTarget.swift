import CLibPQ
import HealthCore

/// A connection string, parsed by libpq itself so that every form it accepts works: URLs,
/// key=value strings, and whatever the environment adds later (PGPASSFILE, PGSERVICE, ...).
///
/// Holds the options exactly as written; defaults from the environment and service files are
/// applied by libpq when a probe connects.
public struct ConnectionTarget: Sendable {
    /// Explicit options, in libpq's order.
    public let options: [(keyword: String, value: String)]
    /// The target for people: scheme, user, hosts, ports and database; never the password.
    public let display: String
    /// Knows this target's secrets; run every message through it.
    public let scrubber: SecretScrubber

    /// `password`, if given, is used unless the string has one of its own (a systemd credential
    /// kept apart from the URL).
    public static func parse(_ connectionString: String, password: String? = nil) throws(ConnectionStringError) -> ConnectionTarget {
        var scrubber = SecretScrubber(connectionString: connectionString)
        if let password { scrubber.add([password]) }
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let parsed = PQconninfoParse(connectionString, &errorMessage) else {
            var message = "could not parse the connection string"
            if let errorMessage {
                message = FailureClassifier.tidy(String(cString: errorMessage))
                PQfreemem(errorMessage)
            }
            // libpq quotes the offending piece of the string, which may be (part of) the password.
            // Quoted pieces first, while they still match the input they were copied from.
            throw ConnectionStringError(message: scrubber.scrub(SecretScrubber.maskQuoted(message, input: connectionString)))
        }
        defer { PQconninfoFree(parsed) }

        var options: [(keyword: String, value: String)] = []
        var option = parsed
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                options.append((String(cString: keyword), String(cString: value)))
            }
            option += 1
        }
        if let password, !options.contains(where: { $0.keyword == "password" }) {
            options.append(("password", password))
        }
        scrubber.add(options.filter { $0.keyword == "password" }.map(\.value))

        // libpq reads a URL's user information only up to the first '@' before the first '/':
        // an unencoded '@' or '/' in a password makes it parse part of the password as host,
        // port or database, where it would be shown. Such a URL cannot work; say why.
        let isURL = ["postgres://", "postgresql://"].contains { connectionString.trimmed().lowercased().hasPrefix($0) }
        if isURL, options.contains(where: { ["host", "port", "dbname", "user"].contains($0.keyword) && $0.value.contains("@") }) {
            throw ConnectionStringError(
                message: "the URL's user or password contains an unencoded '@' or '/'; percent-encode them (%40, %2F)"
            )
        }
        // A URL given as the value of an option (`host=postgresql://u:pw@db`) would put its
        // password in the display and in libpq's errors. Host names and ports never hold '@'
        // ("@name" is an abstract socket).
        let misplaced = options.first { option in
            if option.keyword == "password" { return false }
            if let scheme = option.value.firstRange(of: "://"), option.value[scheme.upperBound...].contains("@") { return true }
            switch option.keyword {
            case "host": return option.value.split(separator: ",").contains { $0.dropFirst().contains("@") }
            case "hostaddr", "port": return option.value.contains("@")
            default: return false
            }
        }
        if let misplaced {
            throw ConnectionStringError(
                message: "\(misplaced.keyword) holds a URL or user information ('@'); give a URL as the whole connection string, and user and password as options of their own"
            )
        }
        return ConnectionTarget(options: options, display: scrubber.scrub(Self.describe(options)), scrubber: scrubber)
    }

    public func value(_ keyword: String) -> String? {
        options.last(where: { $0.keyword == keyword })?.value
    }

    /// The numeric addresses and ports of `tcpHosts`, each name resolved as a probe resolves it
    /// (bounded by `limit`, a stuck lookup joined rather than started again); a name without an
    /// answer in time is left out. Blocks: call it off the cooperative pool.
    public func tcpAddresses(environment: [String: String], within limit: Duration) -> [(address: String, port: UInt16)] {
        tcpHosts(environment: environment).flatMap { host, port in
            (HostResolver.addresses(of: host, within: limit) ?? []).map { ($0, port) }
        }
    }

    /// The TCP hosts and ports the target names (`hostaddr` before `host`, as libpq connects),
    /// in order; socket directories are left out. A host without a port has `PGPORT`'s, or 5432.
    public func tcpHosts(environment: [String: String]) -> [(host: String, port: UInt16)] {
        let hosts = (value("hostaddr") ?? value("host") ?? environment["PGHOST"] ?? "localhost")
            .split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let ports = (value("port") ?? environment["PGPORT"] ?? "").split(separator: ",", omittingEmptySubsequences: false)
        return hosts.enumerated().compactMap { index, host in
            guard !host.isEmpty, !host.hasPrefix("/"), !host.hasPrefix("@") else { return nil }
            let port = ports.count == hosts.count ? ports[index] : (ports.count == 1 ? ports[0] : "")
            return (host, UInt16(port) ?? 5432)
        }
    }

    static func describe(_ options: [(keyword: String, value: String)]) -> String {
        func value(_ keyword: String) -> String? {
            options.last(where: { $0.keyword == keyword })?.value
        }
        var text = "postgresql://"
        if let user = value("user") { text += user + "@" }
        let hosts = (value("host") ?? value("hostaddr") ?? "").split(separator: ",", omittingEmptySubsequences: false)
        let ports = (value("port") ?? "").split(separator: ",", omittingEmptySubsequences: false)
        var authority: [String] = []
        var socketDirectories: [String] = []
        for (index, host) in hosts.enumerated() {
            let port = ports.count == hosts.count ? ports[index] : (ports.count == 1 ? ports[0] : "")
            if host.hasPrefix("/") || host.hasPrefix("@") {
                // Socket directories go in the query, as libpq's own URLs write them.
                socketDirectories.append(String(host))
                authority.append(port.isEmpty ? "" : ":\(port)")
                continue
            }
            let entry = host.contains(":") ? "[\(host)]" : String(host)
            authority.append(port.isEmpty ? entry : "\(entry):\(port)")
        }
        text += authority.joined(separator: ",")
        if let database = value("dbname") { text += "/" + database }
        var shown = socketDirectories.isEmpty ? [] : ["host=" + socketDirectories.joined(separator: ",")]
        shown += ["sslmode", "service", "target_session_attrs"].compactMap { key in
            value(key).map { "\(key)=\($0)" }
        }
        if !shown.isEmpty { text += "?" + shown.joined(separator: "&") }
        return text
    }
}

/// A connection string libpq rejects. The message has been scrubbed of secrets.
public struct ConnectionStringError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { "invalid connection string: \(message)" }
}

