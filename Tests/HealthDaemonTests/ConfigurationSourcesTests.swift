import FoundationEssentials
import Glibc
import HealthCore
import HealthDaemon
import TestSupport
import Testing

/// Reading the layers from real files: systemd's credentials directory and the config file.
@Suite struct ConfigurationSourcesTests {
    func write(_ text: String, to path: String, mode: mode_t = 0o440) throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, mode)
    }

    @Test func credentialsComeBeforeDatabaseURLAndNotesAreReported() throws {
        let directory = try DaemonStartTests.scratchDirectory()
        defer { _ = try? FileManager.default.removeItem(atPath: directory) }
        try write("postgresql://probe@db.example.net/postgres\n", to: directory + "/database-url")
        try write("#hunter2\n", to: directory + "/database-password")
        try write("# absent: /etc/dreamnet-healthd/events-database-url does not exist\n", to: directory + "/events-database-url")
        let (layers, notes) = try ConfigurationSources.layers(
            flags: [.interval: "5s"], configPath: nil,
            environment: ["CREDENTIALS_DIRECTORY": directory, "DATABASE_URL": "postgresql://other@elsewhere/db"]
        )
        let configuration = try layers.resolve()
        #expect(configuration.databaseURL == "postgresql://probe@db.example.net/postgres")
        #expect(configuration.databasePassword == "#hunter2")
        #expect(configuration.eventsDatabaseURL == nil)
        #expect(configuration.interval == .seconds(5))
        #expect(notes == ["credential events-database-url: absent: /etc/dreamnet-healthd/events-database-url does not exist"])
        #expect(layers.source(of: .databaseURL) == "credential database-url")
    }

    @Test func flagsOverrideTheFileAndAnUnreadableFileNamesItsPath() throws {
        let directory = try DaemonStartTests.scratchDirectory()
        defer { _ = try? FileManager.default.removeItem(atPath: directory) }
        try write("interval = 7s\nfall = 4\n", to: directory + "/d.conf", mode: 0o644)
        let (layers, _) = try ConfigurationSources.layers(flags: [.fall: "1"], configPath: directory + "/d.conf", environment: [:])
        let configuration = try layers.resolve()
        #expect(configuration.interval == .seconds(7))
        #expect(configuration.fall == 1)

        do {
            _ = try ConfigurationSources.layers(flags: [:], configPath: directory + "/missing.conf", environment: [:])
            Issue.record("a missing config file was read")
        } catch {
            #expect(error.code == .unreadableFile)
            #expect(error.description.contains("missing.conf") && error.description.contains("No such file"), "\(error)")
        }
    }

    @Test func aCredentialThatCannotBeReadIsAnErrorNotAnAbsence() throws {
        let directory = try DaemonStartTests.scratchDirectory()
        defer { _ = try? FileManager.default.removeItem(atPath: directory) }
        // A directory where a file should be: it exists, and read(2) fails.
        mkdir(directory + "/database-url", 0o700)
        do {
            _ = try ConfigurationSources.layers(flags: [:], configPath: nil, environment: ["CREDENTIALS_DIRECTORY": directory])
            Issue.record("an unreadable credential was ignored")
        } catch {
            #expect(error.source == "credential database-url", "\(error)")
        }
    }
}
