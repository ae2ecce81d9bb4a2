import FoundationEssentials
import Glibc
import HealthCore
import HealthDaemon
import Logging
import TestSupport
import Testing

/// `Daemon.make` reads its environment from its argument, not the process: what systemd would
/// pass is tested without setting it for the whole test process.
@Suite struct DaemonStartTests {
    static func configuration(in directory: String) -> DaemonConfiguration {
        var configuration = DaemonConfiguration.defaults
        configuration.socketPath = directory + "/status.sock"
        configuration.stateDirectory = directory + "/state"
        configuration.alertLogPath = directory + "/alerts.log"
        return configuration
    }

    static func scratchDirectory() throws -> String {
        try temporaryDirectory(prefix: "healthd-start-").path
    }

    @Test(arguments: [
        (["LISTEN_FDS": "1", "LISTEN_PID": "1"], "not this one"),
        (["LISTEN_FDS": "2", "LISTEN_PID": "\(getpid())"], "expected exactly one socket"),
    ])
    func descriptorsThatAreNotOursAreRefused(environment: [String: String], says: String) async throws {
        let directory = try Self.scratchDirectory()
        defer { _ = try? FileManager.default.removeItem(atPath: directory) }
        do {
            _ = try await Daemon.make(
                configuration: Self.configuration(in: directory), databaseURLSource: nil, environment: environment,
                logger: Logger(label: "test")
            )
            Issue.record("started with LISTEN_FDS=\(environment["LISTEN_FDS"] ?? "")")
        } catch let error {
            guard case .activation = error else {
                Issue.record("unexpected error: \(error)")
                return
            }
            #expect(error.description.contains(says), "\(error.description)")
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/status.sock"), "no socket of its own bound instead")
    }
}
