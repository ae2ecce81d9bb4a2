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
        let config = DaemonConfiguration.defaults
        #expect(config.detectionBound == .seconds(5))
        #expect(config.stalenessBound == .seconds(5))
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
        config.fall = 2
        #expect(config.detectionBound == .seconds(6))
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
