import Testing
@testable import HealthCore

@Suite struct ConfigurationTests {
    @Test func durationsAreHuman() throws {
        #expect(try HumanDuration.parse("250ms") == .milliseconds(250))
        #expect(try HumanDuration.parse("1s") == .seconds(1))
        #expect(try HumanDuration.parse("1.5s") == .milliseconds(1_500))
        #expect(try HumanDuration.parse("2m") == .seconds(120))
        #expect(try HumanDuration.parse(" 2s ") == .seconds(2))
        for bad in ["", "1", "s", "-1s", "1h", "1 s", "1e3ms", "abc", "1.2.3s", "nanms", "infs"] {
            #expect(throws: HumanDuration.ParseError.self, "\(bad)") { try HumanDuration.parse(bad) }
        }
        #expect(HumanDuration.format(.seconds(2)) == "2s")
        #expect(HumanDuration.format(.milliseconds(1_500)) == "1500ms")
        #expect(HumanDuration.format(.seconds(120)) == "2m")
        #expect(HumanDuration.formatRoughly(.milliseconds(45_900)) == "45s")
        #expect(HumanDuration.formatRoughly(.seconds(754)) == "12m 34s")
        #expect(HumanDuration.formatRoughly(.seconds(600)) == "10m")
        #expect(HumanDuration.formatRoughly(.seconds(11_100)) == "3h 5m")
        #expect(HumanDuration.formatRoughly(.seconds(7_200)) == "2h")
    }

    @Test func theFileParsesPostgresqlConfStyle() throws {
        let text = """
            # a comment
            interval = 5s   # trailing comment
            timeout=500ms
            fall 3
            database_url = 'postgresql://u:it''s%20secret@db/app'

            socket = '/run/x y/status.sock'
            require_database = on
            """
        let values = try ConfigFile.parse(text, path: "/etc/x.conf")
        #expect(values[.interval] == SourcedValue("5s", source: .file(path: "/etc/x.conf", line: 2)))
        #expect(values[.timeout]?.text == "500ms")
        #expect(values[.fall]?.text == "3")
        #expect(values[.databaseURL]?.text == "postgresql://u:it's%20secret@db/app")
        #expect(values[.socket]?.text == "/run/x y/status.sock")

        let config = try ConfigurationLayers(file: values).resolve()
        #expect(config.interval == .seconds(5))
        #expect(config.timeout == .milliseconds(500))
        #expect(config.fall == 3)
        #expect(config.rise == 2)
        #expect(config.requireDatabase)
        #expect(config.socketPath == "/run/x y/status.sock")
    }

    @Test func unknownKeysAndBadSyntaxNameTheLine() {
        #expect(throws: ConfigurationError(
            code: .unknownKey, key: "intervall", source: "/c:2",
            message: "unknown key (known keys: \(ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")))"
        )) {
            try ConfigFile.parse("fall = 2\nintervall = 2s\n", path: "/c")
        }
        #expect(throws: ConfigurationError.self) { try ConfigFile.parse("= 2", path: "/c") }
        #expect(throws: ConfigurationError.self) { try ConfigFile.parse("socket = 'unterminated", path: "/c") }
        #expect(throws: ConfigurationError.self) { try ConfigFile.parse("socket = a b", path: "/c") }
    }

    @Test func flagsOverrideTheFileAndTheFileOverridesDefaults() throws {
        var layers = ConfigurationLayers(
            file: try ConfigFile.parse("interval = 5s\nfall = 4\n", path: "/c"),
            environment: ["DATABASE_URL": "postgresql://env/db"]
        )
        layers.setFlag(.interval, "750ms")
        let config = try layers.resolve()
        #expect(config.interval == .milliseconds(750))
        #expect(config.fall == 4)
        #expect(config.timeout == .seconds(1))
        #expect(config.databaseURL == "postgresql://env/db")
        #expect(layers.source(of: .databaseURL) == "environment variable DATABASE_URL")
        #expect(layers.source(of: .interval) == "--interval")
        #expect(layers.source(of: .fall) == "/c:2")
    }

    @Test func databaseURLPrecedence() throws {
        var layers = ConfigurationLayers(
            file: try ConfigFile.parse("database_url = 'postgresql://file/db'", path: "/c"),
            environment: ["DATABASE_URL": "postgresql://env/db"]
        )
        #expect(try layers.resolve().databaseURL == "postgresql://file/db")
        layers.setFlag(.databaseURL, "postgresql://flag/db")
        #expect(try layers.resolve().databaseURL == "postgresql://flag/db")
        #expect(try ConfigurationLayers(environment: ["DATABASE_URL": ""]).resolve().databaseURL == nil)
        #expect(try ConfigurationLayers().resolve().databaseURL == nil)
    }

    @Test func badValuesNameTheKeyAndWhereItWasSet() {
        func error(_ key: ConfigKey, _ value: String) -> ConfigurationError? {
            var layers = ConfigurationLayers()
            layers.setFlag(key, value)
            do {
                _ = try layers.resolve()
                return nil
            } catch {
                return error
            }
        }
        #expect(error(.interval, "-1s")?.description == "interval (--interval): '-1s' is not a duration (write a number with ms, s or m, e.g. 250ms, 1s, 2m)")
        #expect(error(.interval, "0ms")?.key == "interval")
        #expect(error(.timeout, "2m")?.key == "timeout")
        #expect(error(.fall, "0")?.key == "fall")
        #expect(error(.rise, "two")?.key == "rise")
        #expect(error(.requireDatabase, "maybe")?.key == "require_database")
        #expect(error(.logLevel, "loud")?.key == "log_level")
        #expect(error(.socket, "")?.key == "socket")
        #expect(error(.socket, "/" + String(repeating: "x", count: 200))?.key == "socket")
        #expect(error(.interval, "2s") == nil)
    }

    @Test func boundsFollowFromTheSettings() {
        var config = DaemonConfiguration.defaults
        // The longest probe is a new connection just within 2 s, then an answer just within 1 s.
        #expect(config.longestProbe == .seconds(3))
        #expect(config.detectionBound == .seconds(9))
        #expect(config.stalenessBound == .seconds(7))
        // Session mode by default: a fault only new connections see waits for the next fresh one.
        #expect(config.probeConnection == .session)
        #expect(config.newConnectionDetectionBound == .seconds(39))
        config.probeConnection = .fresh
        #expect(config.newConnectionDetectionBound == .seconds(9))
        // With the budgets of a database on loopback, the bound of before.
        config.connectTimeout = .zero
        #expect(config.detectionBound == .seconds(5))
    }

    @Test func probeConnectionSettings() throws {
        var layers = ConfigurationLayers(
            file: try ConfigFile.parse("probe_connection = fresh\nfresh_every = 10s\nsplay = off\nserver_timeouts = no\n", path: "/c")
        )
        var config = try layers.resolve()
        #expect(config.probeConnection == .fresh)
        #expect(config.freshEvery == .seconds(10))
        #expect(config.splay == false)
        #expect(config.serverTimeouts == false)
        layers.setFlag(.probeConnection, "Session")
        layers.setFlag(.splay, "true")
        config = try layers.resolve()
        #expect(config.probeConnection == .session)
        #expect(config.splay)

        let defaults = try ConfigurationLayers().resolve()
        #expect(defaults.probeConnection == .session && defaults.freshEvery == .seconds(30))
        #expect(defaults.splay && defaults.serverTimeouts)

        func error(_ key: ConfigKey, _ value: String) -> ConfigurationError? {
            var layers = ConfigurationLayers()
            layers.setFlag(key, value)
            do { _ = try layers.resolve(); return nil } catch { return error }
        }
        #expect(error(.probeConnection, "pooled")?.description == "probe_connection (--probe-connection): must be fresh or session, got 'pooled'")
        #expect(error(.freshEvery, "500ms")?.key == "fresh_every")
        #expect(error(.freshEvery, "2h")?.key == "fresh_every")
        #expect(error(.splay, "sometimes")?.key == "splay")
        #expect(error(.serverTimeouts, "maybe")?.key == "server_timeouts")
    }

    @Test func jitterStaysWithinItsShare() {
        let backoff = Duration.seconds(8)
        var seen: Set<Int64> = []
        for _ in 0..<1_000 {
            let wait = backoff.jittered(from: 0.5)
            #expect(wait >= .seconds(4) && wait <= backoff)
            seen.insert(wait.milliseconds / 500)
        }
        // Spread over the whole range, not one value.
        #expect(seen.count >= 8)
        #expect(Duration.zero.jittered(from: 0.5) <= .nanoseconds(1))
    }
}

@Suite struct ConfigurationEdgeTests {
    @Test func windowsLineEndingsAreLines() throws {
        let values = try ConfigFile.parse("# sample\r\ninterval = 5s\r\nrequire_database = on\r\n", path: "/c")
        #expect(values[.interval]?.text == "5s")
        #expect(values[.interval]?.source == .file(path: "/c", line: 2))
        #expect(values[.requireDatabase]?.text == "on")
    }

    @Test func anEmptyDatabaseURLFallsBackToTheEnvironment() throws {
        let layers = ConfigurationLayers(
            file: try ConfigFile.parse("database_url = ''", path: "/c"),
            environment: ["DATABASE_URL": "postgresql://env/db"]
        )
        #expect(try layers.resolve().databaseURL == "postgresql://env/db")
        #expect(layers.source(of: .databaseURL) == "environment variable DATABASE_URL")
    }

    @Test func intervalsBelow100msAreRefused() {
        var layers = ConfigurationLayers()
        layers.setFlag(.interval, "50ms")
        #expect(throws: ConfigurationError.self) { try layers.resolve() }
    }

    @Test func detectionBoundWhenProbesOverrunTheInterval() {
        var config = DaemonConfiguration.defaults
        config.interval = .milliseconds(500)
        config.timeout = .seconds(2)
        config.connectTimeout = .seconds(1)
        config.fall = 2
        #expect(config.detectionBound == .seconds(9))
    }
}

@Suite struct ListenAddressTests {
    @Test func forms() {
        #expect(ListenAddress("127.0.0.1:9187") == ListenAddress("127.0.0.1:9187"))
        #expect(ListenAddress("127.0.0.1:9187")?.host == "127.0.0.1")
        #expect(ListenAddress("[::1]:9187")?.host == "::1")
        #expect(ListenAddress(":9187")?.host == "0.0.0.0")
        #expect(ListenAddress("[::1]:9187")?.description == "[::1]:9187")
        for bad in ["", "9187", "host:", "host:0", "host:70000", "a b:1"] {
            #expect(ListenAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func credentialsSitBetweenTheFileAndTheEnvironment() throws {
        var layers = ConfigurationLayers(
            environment: ["DATABASE_URL": "postgresql://env/db"],
            credentials: ["database-url": "postgresql://credential/db", "database-password": "pw"]
        )
        #expect(try layers.resolve().databaseURL == "postgresql://credential/db")
        #expect(try layers.resolve().databasePassword == "pw")
        #expect(layers.source(of: .databaseURL) == "credential database-url")
        layers.file = try ConfigFile.parse("database_url = 'postgresql://file/db'", path: "/c")
        #expect(try layers.resolve().databaseURL == "postgresql://file/db")
    }
}

/// Found by FuzzTests: each was broken before.
@Suite struct ConfigurationRegressionTests {
    @Test func aConnectionStringUnderTheWrongKeyIsNotRepeated() {
        var layers = ConfigurationLayers()
        layers.setFlag(.logLevel, "postgresql://u:pw-9f3@db/app")
        #expect(throws: ConfigurationError(
            code: .invalidValue, key: "log_level", source: "--log-level",
            message: "must be one of \(LogLevel.allCases.map(\.rawValue).joined(separator: ", ")), got a value that looks like a connection string (not repeated here)"
        )) { try layers.resolve() }
        layers = ConfigurationLayers()
        layers.setFlag(.fall, "u:pw-9f3@\u{301}db")
        #expect(throws: ConfigurationError(
            code: .invalidValue, key: "fall", source: "--fall",
            message: "must be a whole number from 1 to 1000, got a value that looks like a connection string (not repeated here)"
        )) { try layers.resolve() }
        layers = ConfigurationLayers(file: [.interval: SourcedValue("host=db password=pw-9f3", source: .file(path: "/c", line: 1))])
        #expect(throws: ConfigurationError(
            code: .invalidValue, key: "interval", source: "/c:1",
            message: "a value that looks like a connection string (not repeated here) is not a duration (write a number with ms, s or m, e.g. 250ms, 1s, 2m)"
        )) { try layers.resolve() }
    }

    @Test func aPasswordPastedOnALineOfItsOwnIsNotRepeated() {
        let text = "database_url = 'postgresql://u:Pw-9f3@db/app'\nPw-9f3\n"
        #expect(throws: ConfigurationError(
            code: .unknownKey, key: "***", source: "/c:2",
            message: "unknown key (known keys: \(ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")))"
        )) { try ConfigFile.parse(text, path: "/c") }
        // The password known only from a credential.
        var layers = ConfigurationLayers(credentials: ["database-password": "Pw-9f3"])
        #expect(throws: ConfigurationError(
            code: .syntax, key: nil, source: "/c:1", message: "unterminated quoted value for '***'"
        )) { try layers.parseFile("Pw-9f3 = 'x", path: "/c") }
        layers.setFlag(.spoolLimit, "Pw-9f3")
        #expect(throws: ConfigurationError(
            code: .invalidValue, key: "spool_limit", source: "--spool-limit", message: "must be a whole number from 1 to 10000000, got '***'"
        )) { try layers.resolve() }
    }

    @Test func aPasswordIsMaskedBeforeALongValueIsShortened() {
        let padding = String(repeating: "x", count: 62)
        var layers = ConfigurationLayers(credentials: ["database-password": "Pw-9f3-long"])
        layers.setFlag(.fall, padding + "Pw-9f3-long")
        #expect(throws: ConfigurationError(
            code: .invalidValue, key: "fall", source: "--fall", message: "must be a whole number from 1 to 1000, got '\(padding)**…'"
        )) { try layers.resolve() }
        #expect(throws: ConfigurationError(
            code: .unknownKey, key: padding + "**…", source: "/c:1",
            message: "unknown key (known keys: \(ConfigKey.allCases.map(\.rawValue).joined(separator: ", ")))"
        )) { try layers.parseFile(padding + "Pw-9f3-long = 1", path: "/c") }
    }

    @Test func onlyLFCRLFAndCREndLines() throws {
        // A form feed or U+2028 is not a line break for an editor: line numbers must agree.
        let values = try ConfigFile.parse("# page one\u{0C}still a comment\ninterval = 5s\u{2028}\r\nfall = 3\rrise = 4", path: "/c")
        #expect(values[.interval] == SourcedValue("5s", source: .file(path: "/c", line: 2)))
        #expect(values[.fall] == SourcedValue("3", source: .file(path: "/c", line: 3)))
        #expect(values[.rise] == SourcedValue("4", source: .file(path: "/c", line: 4)))
        #expect(throws: ConfigurationError.self) { try ConfigFile.parse("fall = 3\u{0B}4", path: "/c") }
    }

    @Test func aByteOrderMarkIsNotPartOfTheFirstKey() throws {
        #expect(try ConfigFile.parse("\u{FEFF}interval = 5s\n", path: "/c")[.interval]?.text == "5s")
    }

    @Test func aNULIsRefusedWhereCWouldCutTheValueShort() {
        for key in [ConfigKey.databaseURL, .eventsDatabaseURL, .stateDirectory, .alertLog] {
            var layers = ConfigurationLayers()
            layers.setFlag(key, key == .stateDirectory || key == .alertLog ? "/tmp/a\0b" : "postgresql://h/a\0b")
            #expect(throws: ConfigurationError(code: .invalidValue, key: key.rawValue, source: key.flag, message: "must not contain a NUL character")) {
                try layers.resolve()
            }
        }
        #expect(throws: ConfigurationError.self) { try ConfigurationLayers(credentials: ["database-password": "a\0b"]).resolve() }
    }

    @Test func repeatedValuesAreShortAndPrintable() {
        var layers = ConfigurationLayers()
        layers.setFlag(.fall, "\u{1B}[2J" + String(repeating: "9", count: 100_000))
        do {
            _ = try layers.resolve()
            Issue.record("accepted")
        } catch {
            #expect(error.message == "must be a whole number from 1 to 1000, got '\\u{1B}[2J" + String(repeating: "9", count: 60) + "…'")
        }
    }
}
