import HealthCore
import Testing

/// The facts each `ConfigKey` carries, and the rules of credential files.
@Suite struct ConfigKeyTests {
    /// A configuration with every key set away from its default, written as a file would.
    static let everyKeyChanged: [ConfigKey: String] = [
        .databaseURL: "postgresql://probe@db.example.net/postgres", .interval: "5s", .timeout: "750ms",
        .connectTimeout: "3s", .fall: "3", .rise: "4", .socket: "/run/x/status.sock", .requireDatabase: "on",
        .logLevel: "debug", .stateDirectory: "/srv/state", .eventsDatabaseURL: "postgresql://events@db.example.net/app",
        .spoolLimit: "500", .alertLog: "/srv/alerts.log", .httpListen: "127.0.0.1:9187", .flapThreshold: "9",
        .flapWindow: "10m", .probeConnection: "fresh", .freshEvery: "1m", .splay: "off", .serverTimeouts: "off",
        .scaleToZero: "on", .suspendAfter: "2m", .wakeEvery: "off", .wakeTimeout: "20s",
    ]

    static func resolved(_ values: [ConfigKey: String]) throws -> DaemonConfiguration {
        var file: [ConfigKey: SourcedValue] = [:]
        for (key, text) in values { file[key] = SourcedValue(text, source: .file(path: "test.conf", line: 1)) }
        return try ConfigurationLayers(file: file).resolve()
    }

    @Test func everyKeyReadsBackAsItIsWritten() throws {
        #expect(Set(Self.everyKeyChanged.keys) == Set(ConfigKey.allCases), "the sample covers every key")
        let configuration = try Self.resolved(Self.everyKeyChanged)
        for key in ConfigKey.allCases {
            #expect(configuration.text(of: key) == Self.everyKeyChanged[key], "\(key.rawValue)")
        }
        #expect(configuration.changedKeys(from: .defaults) == ConfigKey.allCases)
        #expect(DaemonConfiguration.defaults.changedKeys(from: .defaults).isEmpty)
    }

    @Test func aNewPasswordCountsAsAChangedDatabase() {
        var withPassword = DaemonConfiguration.defaults
        withPassword.databasePassword = "s3cret"
        #expect(withPassword.changedKeys(from: .defaults) == [.databaseURL])
    }

    @Test func theHelpStatesTheDefault() {
        #expect(ConfigKey.interval.help == "Time between probe starts (default 2s).")
        #expect(ConfigKey.splay.help.hasSuffix("(default on)."))
        #expect(ConfigKey.stateDirectory.documentedDefault == "$STATE_DIRECTORY, else /var/lib/dreamnet-healthd")
        for key in ConfigKey.allCases {
            #expect(!key.documentedDefault.isEmpty && key.documentedDefault != "unset", "\(key.rawValue) has no documented default")
            // A switch has no value name; everything else does.
            #expect((key.setting.valueName == nil) == ["on", "off"].contains(DaemonConfiguration.defaults.text(of: key) ?? ""), "\(key.rawValue)")
        }
    }

    @Test(arguments: ConfigKey.allCases.filter { $0.setting.range != nil })
    func aDurationOutsideItsRangeIsRefusedAndItsEndsAccepted(key: ConfigKey) throws {
        let range = try #require(key.setting.range)
        for edge in [range.lowerBound, range.upperBound] {
            #expect(try Self.resolved([key: HumanDuration.format(edge)]).text(of: key) == HumanDuration.format(edge))
        }
        for outside in [range.lowerBound - .milliseconds(1), range.upperBound + .seconds(1)] where outside > .zero {
            #expect(throws: ConfigurationError.self, "\(key.rawValue) = \(HumanDuration.format(outside))") {
                try Self.resolved([key: HumanDuration.format(outside)])
            }
        }
    }

    @Test func reloadAppliesAtOnceAllButWhatHoldsOpenResources() {
        let atRestart = ConfigKey.allCases.filter { $0.setting.reload == .atRestart }
        #expect(atRestart == [.socket, .logLevel, .stateDirectory, .spoolLimit, .httpListen, .splay])
    }

    @Test func onlyConnectionStringsAreSecret() {
        #expect(ConfigKey.allCases.filter(\.setting.isSecret) == [.databaseURL, .eventsDatabaseURL])
    }
}

@Suite struct CredentialFileTests {
    @Test func aTrailingNewlineIsNotPartOfTheValue() {
        #expect(ConfigurationLayers.credential(named: "database-url", text: "postgresql://a@b/c\n") == .value("postgresql://a@b/c"))
        #expect(ConfigurationLayers.credential(named: "database-password", text: "pw\r\n") == .value("pw"))
        #expect(ConfigurationLayers.credential(named: "database-password", text: "pw \n") == .value("pw "), "spaces are the secret's own")
    }

    @Test func aConnectionStringThatStartsWithAHashIsTheUnitsNote() {
        #expect(ConfigurationLayers.credential(named: "database-url", text: "# absent: /etc/x does not exist\n") == .note("absent: /etc/x does not exist"))
        #expect(ConfigurationLayers.credential(named: "events-database-url", text: "#") == .note("absent"))
    }

    @Test func aPasswordThatStartsWithAHashIsAPassword() {
        #expect(ConfigurationLayers.credential(named: "database-password", text: "#hash-first\n") == .value("#hash-first"))
    }
}
