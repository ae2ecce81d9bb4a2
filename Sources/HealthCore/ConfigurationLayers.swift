/// Layers the sources of configuration, lowest first: defaults, the config file, the
/// environment (`DATABASE_URL` only, the web app's convention), then command-line flags.
public struct ConfigurationLayers: Sendable {
    public var file: [ConfigKey: SourcedValue]
    public var flags: [ConfigKey: SourcedValue]
    public var environment: [String: String]
    /// systemd credentials by name (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`:
    /// `database-url`, `events-database-url`, `database-password`.
    public var credentials: [String: String]

    public init(
        file: [ConfigKey: SourcedValue] = [:], flags: [ConfigKey: SourcedValue] = [:],
        environment: [String: String] = [:], credentials: [String: String] = [:]
    ) {
        self.file = file
        self.flags = flags
        self.environment = environment
        self.credentials = credentials
    }

    /// Credential files the daemon reads, if present.
    public static let credentialNames = ["database-url", "events-database-url", "database-password"]

    /// What a credential file's text means.
    public enum Credential: Sendable, Equatable {
        case value(String)
        /// Not a value: the unit's note for a file that is absent (see `credential(named:text:)`).
        case note(String)
    }

    /// Reads a credential file's text. Files often end in a newline (LF or CRLF, which Swift
    /// counts as one character) the secret does not contain. A connection-string credential that starts with `#` is a note, not a value: the
    /// unit sets one with `SetCredential=` as the fallback systemd uses when the file named by
    /// `LoadCredential=` is absent (without a fallback the service would not start at all). No
    /// connection string starts with `#`; a password may, so passwords are never notes.
    public static func credential(named name: String, text: String) -> Credential {
        let value = String(text.trimmingSuffix(while: \.isNewline))
        guard name != "database-password", value.hasPrefix("#") else { return .value(value) }
        let note = value.drop(while: { $0 == "#" || $0 == " " })
        return .note(note.isEmpty ? "absent" : String(note))
    }

    /// Records a flag's value, if it was given.
    public mutating func setFlag(_ key: ConfigKey, _ value: String?) {
        guard let value else { return }
        flags[key] = SourcedValue(value, source: .flag(key.flag))
    }

    /// Parses the config file's text into the file layer. Set the flags, environment and
    /// credentials first: an error is scrubbed of the passwords they hold.
    public mutating func parseFile(_ text: String, path: String) throws(ConfigurationError) {
        file = try ConfigFile.parse(text, path: path, secrets: scrubber)
    }

    /// Knows every password the layers hold: in connection strings given anywhere, and the
    /// password credential.
    public var scrubber: SecretScrubber {
        var strings = [environment["DATABASE_URL"], credentials["database-url"], credentials["events-database-url"]]
        for key in [ConfigKey.databaseURL, .eventsDatabaseURL] {
            strings += [flags[key]?.text, file[key]?.text]
        }
        var scrubber = SecretScrubber(secrets: strings.compactMap { $0 }.flatMap(SecretScrubber.passwords(in:)))
        if let password = credentials["database-password"] { scrubber.add([password]) }
        return scrubber
    }

    /// A validated configuration, or an error that names the key and where it was set. The
    /// error never repeats a secret the layers hold.
    public func resolve() throws(ConfigurationError) -> DaemonConfiguration {
        do {
            return try resolveUnscrubbed()
        } catch {
            throw error.scrubbed(by: scrubber)
        }
    }

    private func resolveUnscrubbed() throws(ConfigurationError) -> DaemonConfiguration {
        var config = DaemonConfiguration.defaults
        // Strings handed to C (paths, libpq) would be cut short at a NUL, silently.
        for key in [ConfigKey.databaseURL, .eventsDatabaseURL, .stateDirectory, .alertLog] {
            if let value = value(key), value.text.utf8.contains(0) { throw invalid(key, value, "must not contain a NUL character") }
        }
        if environment["DATABASE_URL"]?.utf8.contains(0) == true {
            throw ConfigurationError(
                code: .invalidValue, key: ConfigKey.databaseURL.rawValue, source: ConfigSource.environment("DATABASE_URL").description,
                message: "must not contain a NUL character"
            )
        }
        for name in Self.credentialNames where credentials[name]?.utf8.contains(0) == true {
            throw ConfigurationError(
                code: .invalidValue, key: nil, source: "credential \(name)", message: "must not contain a NUL character"
            )
        }

        // An empty value counts as unset, so `database_url = ''` does not hide DATABASE_URL.
        // After flags and the file: a systemd credential, then DATABASE_URL.
        if let url = value(.databaseURL), !url.text.isEmpty {
            config.databaseURL = url.text
        } else if let url = credentials["database-url"], !url.isEmpty {
            config.databaseURL = url
        } else if let url = environment["DATABASE_URL"], !url.isEmpty {
            config.databaseURL = url
        }
        if let password = credentials["database-password"], !password.isEmpty {
            config.databasePassword = password
        }
        if let value = value(.interval) { config.interval = try duration(.interval, value) }
        if let value = value(.timeout) { config.timeout = try duration(.timeout, value) }
        if let value = value(.connectTimeout) { config.connectTimeout = try duration(.connectTimeout, value) }
        if let value = value(.fall) { config.fall = try count(.fall, value) }
        if let value = value(.rise) { config.rise = try count(.rise, value) }
        if let value = value(.socket) {
            guard !value.text.isEmpty, !value.text.contains("\0") else {
                throw invalid(.socket, value, "must be a file system path")
            }
            // sockaddr_un holds at most 107 bytes of path plus its terminator, and the socket is
            // first bound under the path plus a 4-byte suffix, then moved into place.
            guard value.text.utf8.count <= 103 else {
                throw invalid(.socket, value, "path is longer than a Unix socket address allows (103 bytes)")
            }
            config.socketPath = value.text
        }
        if let value = value(.requireDatabase) {
            config.requireDatabase = try boolean(.requireDatabase, value)
        }
        if let value = value(.stateDirectory) {
            guard value.text.hasPrefix("/") else { throw invalid(.stateDirectory, value, "must be an absolute path") }
            config.stateDirectory = value.text
        } else if let fromSystemd = environment["STATE_DIRECTORY"], fromSystemd.hasPrefix("/") {
            // systemd's StateDirectory= (the first, if several).
            config.stateDirectory = String(fromSystemd.split(separator: ":").first ?? Substring(fromSystemd))
        }
        if let url = nonEmptyValue(.eventsDatabaseURL) {
            config.eventsDatabaseURL = url.text
        } else if let url = credentials["events-database-url"], !url.isEmpty {
            config.eventsDatabaseURL = url
        }
        if let value = value(.spoolLimit) {
            guard let limit = Int(value.text.trimmed()), (1...10_000_000).contains(limit) else {
                throw invalid(.spoolLimit, value, "must be a whole number from 1 to 10000000, got \(quoted(value))")
            }
            config.spoolLimit = limit
        }
        if let value = value(.alertLog) {
            guard value.text.hasPrefix("/") else { throw invalid(.alertLog, value, "must be an absolute path") }
            config.alertLogPath = value.text
        } else if let fromSystemd = environment["LOGS_DIRECTORY"], fromSystemd.hasPrefix("/") {
            // systemd's LogsDirectory= (the first, if several).
            config.alertLogPath = String(fromSystemd.split(separator: ":").first ?? Substring(fromSystemd)) + "/alerts.log"
        }
        if let value = nonEmptyValue(.httpListen) {
            guard let address = ListenAddress(value.text) else {
                throw invalid(.httpListen, value, "must be HOST:PORT, [IPv6]:PORT or :PORT, got \(quoted(value))")
            }
            config.httpListen = address
        }
        if let value = value(.flapThreshold) { config.flapThreshold = try count(.flapThreshold, value) }
        if let value = value(.flapWindow) { config.flapWindow = try duration(.flapWindow, value) }
        if let value = value(.probeConnection) {
            guard let mode = ProbeConnection(rawValue: value.text.trimmed().lowercased()) else {
                throw invalid(.probeConnection, value, "must be fresh or session, got \(quoted(value))")
            }
            config.probeConnection = mode
        }
        if let value = value(.freshEvery) { config.freshEvery = try duration(.freshEvery, value) }
        if let value = value(.splay) { config.splay = try boolean(.splay, value) }
        if let value = value(.serverTimeouts) { config.serverTimeouts = try boolean(.serverTimeouts, value) }
        if let value = value(.scaleToZero) { config.scaleToZero = try boolean(.scaleToZero, value) }
        if let value = value(.suspendAfter) { config.suspendAfter = try duration(.suspendAfter, value) }
        if let value = value(.wakeEvery) {
            config.wakeEvery = value.text.trimmed().lowercased() == "off" ? nil : try duration(.wakeEvery, value)
        }
        if let value = value(.wakeTimeout) { config.wakeTimeout = try duration(.wakeTimeout, value) }
        if let value = value(.logLevel) {
            guard let level = LogLevel(rawValue: value.text.lowercased()) else {
                let names = LogLevel.allCases.map(\.rawValue).joined(separator: ", ")
                throw invalid(.logLevel, value, "must be one of \(names), got \(quoted(value))")
            }
            config.logLevel = level
        }
        return config
    }

    /// Where the value of `key` came from, for error messages.
    public func source(of key: ConfigKey) -> String? {
        if let value = key == .databaseURL || key == .eventsDatabaseURL ? nonEmptyValue(key) : value(key) {
            return value.source.description
        }
        let credential = key == .databaseURL ? "database-url" : key == .eventsDatabaseURL ? "events-database-url" : nil
        if let credential, credentials[credential]?.isEmpty == false { return "credential \(credential)" }
        if key == .databaseURL, environment["DATABASE_URL"]?.isEmpty == false { return ConfigSource.environment("DATABASE_URL").description }
        return nil
    }

    private func value(_ key: ConfigKey) -> SourcedValue? {
        flags[key] ?? file[key]
    }

    private func nonEmptyValue(_ key: ConfigKey) -> SourcedValue? {
        guard let value = value(key), !value.text.isEmpty else { return nil }
        return value
    }

    /// A duration within the key's range (`ConfigKey.Setting.range`).
    private func duration(_ key: ConfigKey, _ value: SourcedValue) throws(ConfigurationError) -> Duration {
        guard let range = key.setting.range else { preconditionFailure("\(key.rawValue) is not a duration") }
        let (minimum, maximum) = (range.lowerBound, range.upperBound)
        let parsed: Duration
        do {
            parsed = try HumanDuration.parse(value.text)
        } catch {
            throw invalid(key, value, "\(quoted(value)) is not a duration (write a number with ms, s or m, e.g. 250ms, 1s, 2m)")
        }
        guard parsed >= minimum, parsed <= maximum else {
            throw invalid(
                key, value,
                "must be between \(HumanDuration.format(minimum)) and \(HumanDuration.format(maximum)), got \(quoted(value))"
            )
        }
        return parsed
    }

    private func count(_ key: ConfigKey, _ value: SourcedValue) throws(ConfigurationError) -> Int {
        guard let number = Int(value.text.trimmed()), (1...1_000).contains(number) else {
            throw invalid(key, value, "must be a whole number from 1 to 1000, got \(quoted(value))")
        }
        return number
    }

    private func boolean(_ key: ConfigKey, _ value: SourcedValue) throws(ConfigurationError) -> Bool {
        switch value.text.lowercased() {
        case "true", "on", "yes", "1": return true
        case "false", "off", "no", "0": return false
        default: throw invalid(key, value, "must be true or false, got \(quoted(value))")
        }
    }

    /// A value as an error repeats it: secrets masked, then quoted, shortened and made
    /// printable; not at all when it looks like a connection string, whose password the error
    /// must not carry (a URL given to the wrong key or flag).
    private func quoted(_ value: SourcedValue) -> String {
        let text = value.text
        // Bytes, not Characters: a combining mark after '@' must not hide it.
        let bytes = Array(text.lowercased().utf8)
        if bytes.contains(UInt8(ascii: "@")) || bytes.contains("://".utf8) || bytes.contains("password".utf8) {
            return "a value that looks like a connection string (not repeated here)"
        }
        return "'" + ConfigurationError.shown(scrubber.scrub(text)) + "'"
    }

    private func invalid(_ key: ConfigKey, _ value: SourcedValue, _ message: String) -> ConfigurationError {
        ConfigurationError(code: .invalidValue, key: key.rawValue, source: value.source.description, message: message)
    }
}

import FoundationEssentials
