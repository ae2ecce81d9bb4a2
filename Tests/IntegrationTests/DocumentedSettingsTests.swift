import Foundation
import HealthCore
import Testing
import TestSupport

/// Every setting the daemon knows is documented where operators look for it, under its own
/// name, with the default and the reload behaviour its `ConfigKey` states: the configuration
/// page's table (with its flag), dreamnet-healthd.conf(5), the sample configuration file the
/// package installs, and `--help`. A key added, or a default or reload behaviour changed, and
/// forgotten in one of them fails here.
@Suite struct DocumentedSettingsTests {
    let root = packageRootDirectory()

    func text(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// The cells of the configuration table's row for `key`: flag, key, default, reload, meaning.
    func tableRow(_ key: ConfigKey) throws -> [String]? {
        let row = try text("docs/configuration.md").split(separator: "\n").first { $0.hasPrefix("| ") && $0.contains("| `\(key.rawValue)` |") }
        return row.map { $0.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) } }
    }

    /// The paragraph of dreamnet-healthd.conf(5) under `key`, its macros taken out, on one line.
    func manParagraph(_ key: ConfigKey) throws -> String? {
        let page = try text("man/dreamnet-healthd.conf.5")
        guard let start = page.range(of: ".BI \(key.rawValue) \"") else { return nil }
        let rest = page[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false).dropFirst()
        let body = rest.prefix { !$0.hasPrefix(".TP") && !$0.hasPrefix(".SH") }
        return Self.plain(body.joined(separator: "\n"))
    }

    /// roff as a reader sees it: no macro names or font escapes, one space between words, no
    /// space before punctuation.
    static func plain(_ roff: String) -> String {
        let words = roff.split(separator: "\n").map { line -> String in
            var line = String(line)
            if line.hasPrefix("."), let space = line.firstIndex(of: " ") { line = String(line[line.index(after: space)...]) }
            for escape in ["\\fB", "\\fI", "\\fR", "\\fP"] { line = line.replacingOccurrences(of: escape, with: "") }
            return line.replacingOccurrences(of: "\\(aq", with: "'")
        }.joined(separator: " ")
        return words.split(separator: " ").joined(separator: " ")
            .replacingOccurrences(of: " ,", with: ",").replacingOccurrences(of: " .", with: ".")
    }

    /// The value the sample file shows, commented out, for `key`, unquoted.
    func sampleValue(_ key: ConfigKey) throws -> String? {
        let line = try text("config/dreamnet-healthd.conf").split(separator: "\n").first { $0.hasPrefix("#\(key.rawValue) = ") }
        return line.map { String($0.dropFirst("#\(key.rawValue) = ".count)).trimmingCharacters(in: CharacterSet(charactersIn: "'")) }
    }

    static func keys(_ effect: ConfigKey.ReloadEffect) -> String {
        ConfigKey.allCases.filter { $0.setting.reload == effect }.map(\.rawValue).joined(separator: ", ")
    }

    @Test(arguments: ConfigKey.allCases)
    func everySettingIsDocumentedWithItsDefaultAndReload(key: ConfigKey) throws {
        let row = try tableRow(key)
        #expect(row != nil, "docs/configuration.md has no row for \(key.rawValue)")
        if let row, row.count >= 5 {
            // Booleans are written `--[no-]name`.
            #expect(row[0].contains(key.flag) || row[0].contains("--[no-]" + key.flagName), "the row for \(key.rawValue) does not name \(key.flag)")
            #expect(row[2].replacingOccurrences(of: "`", with: "") == key.documentedDefault, "docs/configuration.md: \(key.rawValue) defaults to \(key.documentedDefault), not \(row[2])")
            let reload = key.setting.reload == .atOnce ? "at once" : "restart"
            #expect(row[3] == reload, "docs/configuration.md: \(key.rawValue) applies \(reload) on reload, not \(row[3])")
        }

        let paragraph = try manParagraph(key)
        #expect(paragraph != nil, "dreamnet-healthd.conf(5) lacks \(key.rawValue)")
        if let paragraph {
            let stated = paragraph.contains("Default \(key.documentedDefault).") || paragraph.contains("Default: \(key.documentedDefault).")
            #expect(stated, "dreamnet-healthd.conf(5): \(key.rawValue) does not say 'Default \(key.documentedDefault).': \(paragraph)")
        }

        let sample = try sampleValue(key)
        #expect(sample != nil, "the sample configuration lacks \(key.rawValue)")
        if let sample {
            if key.setting.defaultDescription == nil {
                // The sample's value, read as the daemon reads it, is the default.
                let layers = ConfigurationLayers(file: [key: SourcedValue(sample, source: .file(path: "sample", line: 1))])
                #expect(try layers.resolve().text(of: key) == DaemonConfiguration.defaults.text(of: key), "the sample shows \(key.rawValue) = \(sample)")
            } else {
                #expect(sample.isEmpty || key.documentedDefault.contains(sample), "the sample shows \(key.rawValue) = \(sample), the default is \(key.documentedDefault)")
            }
        }
    }

    @Test func theReloadSectionsNameTheKeysTheDaemonTreatsSo() throws {
        let manual = try text("man/dreamnet-healthd.conf.5")
        let section = manual[manual.range(of: ".SH RELOAD")!.upperBound...]
        let reload = String(section[..<(section.range(of: ".SH ")?.lowerBound ?? section.endIndex)])
        #expect(reload.contains("applied at once") && reload.contains(Self.keys(.atOnce) + "."), "conf(5) RELOAD: \(reload)")
        #expect(reload.contains("next restart") && reload.contains(Self.keys(.atRestart) + "."), "conf(5) RELOAD: \(reload)")
        #expect(try text("config/dreamnet-healthd.conf").contains("next restart:\n#   " + Self.keys(.atRestart) + "\n"))
    }

    /// `--help` shows each key's own help (its meaning and default), under the documented flag.
    @Test func theDocumentedFlagsAreTheDaemonsOwn() throws {
        let help = try Binaries.healthd(["--help"]).stdout
        let flowed = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for key in ConfigKey.allCases {
            #expect(help.contains(key.flag) || help.contains("--[no-]" + key.flagName), "--help does not list \(key.flag)")
            #expect(flowed.contains(key.help), "--help does not say: \(key.help)")
        }
    }

    /// The version is written once (`DaemonVersion.current`); what repeats it agrees.
    @Test func everyPlaceThatNamesTheVersionNamesTheSameOne() throws {
        let version = DaemonVersion.current
        #expect(try Binaries.healthd(["--version"]).stdout == version + "\n")
        #expect(try Binaries.healthctl(["--version"]).stdout == version + "\n")
        let changelog = try text("packaging/debian/changelog")
        #expect(changelog.hasPrefix("dreamnet-healthd (\(version)-"), "packaging/debian/changelog starts with another version")
        #expect(try text("man/dreamnet-healthd.conf.5").contains("\"dreamnet-healthd \(version)\""), "dreamnet-healthd.conf(5)'s header names another version")
    }
}
