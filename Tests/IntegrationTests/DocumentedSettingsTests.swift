import Foundation
import HealthCore
import Testing
import TestSupport

/// Every setting the daemon knows is documented where operators look for it, under its own
/// name: the configuration page's table (with its flag), dreamnet-healthd.conf(5) and the sample
/// configuration file the package installs. A key added to `ConfigKey` and forgotten in one of
/// them fails here.
@Suite struct DocumentedSettingsTests {
    let root = packageRootDirectory()

    func text(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    @Test(arguments: ConfigKey.allCases)
    func everySettingIsDocumented(key: ConfigKey) throws {
        let table = try text("docs/configuration.md").split(separator: "\n").filter { $0.hasPrefix("| ") }
        let row = table.first { $0.contains("| `\(key.rawValue)` |") }
        #expect(row != nil, "docs/configuration.md has no row for \(key.rawValue)")
        // Booleans are written `--[no-]name`.
        let negatable = "--[no-]" + key.flag.dropFirst(2)
        #expect(row.map { $0.contains(key.flag) || $0.contains(negatable) } == true, "the row for \(key.rawValue) does not name \(key.flag)")
        #expect(try text("man/dreamnet-healthd.conf.5").contains(".BI \(key.rawValue) \""), "dreamnet-healthd.conf(5) lacks \(key.rawValue)")
        #expect(try text("config/dreamnet-healthd.conf").contains("\n#\(key.rawValue) = "), "the sample configuration lacks \(key.rawValue)")
    }

    /// The flag each row names is one the daemon accepts: `--help` lists it.
    @Test func theDocumentedFlagsAreTheDaemonsOwn() throws {
        let help = try Binaries.healthd(["--help"]).stdout
        for key in ConfigKey.allCases {
            // swift-argument-parser writes a boolean's pair as `--[no-]name`.
            let flag = key.flag
            #expect(help.contains(flag) || help.contains("--[no-]" + flag.dropFirst(2)), "--help does not list \(flag)")
        }
    }
}
