import Foundation
import Testing
import TestSupport
@testable import HealthCore

/// Seeded fuzzing of the two parsers that take input from outside: the configuration (file,
/// flags, environment, credentials) and the status socket's request path. Every run generates
/// the same inputs, so a failure names a seed and an index that reproduce it.
@Suite struct FuzzTests {
    static let inputsPerTarget = 12_000
    /// The password planted in connection strings; it must never come back in an error.
    static let sentinel = "Sentinel-fz-PW"

    // MARK: - Configuration

    @Test func malformedConfigFilesFailWithAClearError() {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0001)
        var count = 0
        var failures = 0
        for index in 0..<Self.inputsPerTarget {
            let text = fuzz.mutate(fuzz.pick(ConfigSeeds.files + [fuzz.randomConfig()]))
            count += 1
            var flags: [ConfigKey: String] = [:]
            if fuzz.oneIn(4) { flags[fuzz.pick(ConfigKey.allCases)] = fuzz.mutate(fuzz.pick(ConfigSeeds.values)) }
            switch load(text, flags: flags) {
            case .success(let config): checkInvariants(config, input: "#\(index)")
            case .failure(let error):
                failures += 1
                checkClear(error, text: text, input: "#\(index)")
            }
        }
        #expect(count >= 10_000)
        // Most mutations break something; a run where none did is not fuzzing anything.
        #expect(failures > count / 4)
    }

    @Test func malformedValuesOfEveryKeyFailWithAClearError() {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0002)
        var count = 0
        for index in 0..<Self.inputsPerTarget {
            let key = fuzz.pick(ConfigKey.allCases)
            let value = fuzz.mutate(fuzz.pick(ConfigSeeds.values), rounds: fuzz.int(0..<3))
            count += 1
            // The same value as a flag, and on a line of the file (quoted when it can be).
            switch load("", flags: [key: value]) {
            case .success(let config): checkInvariants(config, input: "#\(index) --\(key.rawValue)")
            case .failure(let error): checkClear(error, text: "", input: "#\(index) --\(key.rawValue)")
            }
            let line = "\(key.rawValue) = '\(value.replacing("'", with: "''"))'\n"
            switch load(line, flags: [:]) {
            case .success(let config): checkInvariants(config, input: "#\(index) \(key.rawValue)")
            case .failure(let error): checkClear(error, text: line, input: "#\(index) \(key.rawValue)")
            }
        }
        #expect(count >= 10_000)
    }

    @Test func aPasswordNeverComesBackInAConfigurationError() {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0003)
        var count = 0
        var errors = 0
        for index in 0..<Self.inputsPerTarget {
            let planted = fuzz.plantedSecret()
            let placement = fuzz.int(0..<5)
            var text = fuzz.mutate(fuzz.pick(ConfigSeeds.files), rounds: fuzz.int(0..<2))
            var flags: [ConfigKey: String] = [:]
            var environment: [String: String] = [:]
            var credentials: [String: String] = [:]
            let key = fuzz.oneIn(3) ? fuzz.pick(["database_url", "events_database_url"]) : fuzz.pick(ConfigSeeds.keys)
            switch placement {
            case 0, 1:
                // On a line of the file, under some key, with damage around it.
                let opening = fuzz.pick(["\(key) = '", "\(key) = ", "\(key)='", "\(key) ", "  \(key)\t=\t'"])
                let line = fuzz.mutateKeepingLines(opening) + planted.text + fuzz.mutateKeepingLines(fuzz.pick(ConfigSeeds.urlTails))
                text = placement == 0 ? line + "\n" + text : text + "\n" + line + fuzz.pick(["", "\n", "\r\n"])
            case 2:
                flags[ConfigKey(rawValue: key) ?? .databaseURL] = planted.text + fuzz.pick(ConfigSeeds.urlTails)
            case 3:
                environment["DATABASE_URL"] = planted.text + fuzz.pick(ConfigSeeds.urlTails)
                flags[fuzz.pick(ConfigKey.allCases)] = fuzz.mutate(fuzz.pick(ConfigSeeds.values))
            default:
                // A password credential, and the same password pasted where it does not belong.
                credentials["database-password"] = Self.sentinel
                credentials["database-url"] = "postgresql://u@h/db"
                let misplaced = fuzz.pick(ConfigSeeds.keys)
                // Padding puts the password across the point where a long value is cut short.
                let padding = String(repeating: fuzz.pick(["9", "x", "\u{1B}"]), count: fuzz.int(0..<70))
                let line = fuzz.mutateKeepingLines("\(misplaced) = ") + padding + Self.sentinel
                    + fuzz.mutateKeepingLines(fuzz.pick(["", "'", " x", "s", "@h"]))
                text = fuzz.oneIn(2) ? line + "\n" + text : text + "\n" + line
                if fuzz.oneIn(3) { text += "\n" + String(repeating: "k", count: fuzz.int(0..<70)) + Self.sentinel + "\n" }
            }
            count += 1
            guard case .failure(let error) = load(text, flags: flags, environment: environment, credentials: credentials) else {
                continue
            }
            errors += 1
            let description = error.description
            // Not even the start of it, where a long value is shortened.
            for spelling in planted.spellings + ["Sentinel"] {
                #expect(!description.utf8.contains(spelling.utf8), "input #\(index) (\(planted.text)) leaked in: \(description)")
            }
            checkClear(error, text: text, input: "#\(index)")
        }
        #expect(count >= 10_000)
        #expect(errors > count / 4)
    }

    @Test func validConfigurationsLoseNothing() throws {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0004)
        var count = 0
        for index in 0..<Self.inputsPerTarget {
            var written: [ConfigKey: String] = [:]
            var lines: [String] = []
            for key in ConfigKey.allCases where fuzz.oneIn(2) {
                let value = fuzz.pick(ConfigSeeds.valid[key] ?? [""])
                written[key] = value
                let quoted = "'" + value.replacing("'", with: "''") + "'"
                let spelled = value.isEmpty || value.contains(where: { $0.isWhitespace || $0 == "#" || $0 == "'" }) || fuzz.oneIn(2)
                    ? quoted : value
                let separator = fuzz.pick([" = ", "=", " ", "\t=\t", "   =   "])
                lines.append(fuzz.pick(["", "  ", "\t"]) + fuzz.pick([key.rawValue, key.rawValue.uppercased()]) + separator + spelled
                    + fuzz.pick(["", "  # comment", "\t#'quoted' # ="]))
                if fuzz.oneIn(4) { lines.append(fuzz.pick(["", "# " + fuzz.pick(ConfigSeeds.values), "   ", "\t# x = y"])) }
            }
            let text = lines.joined(separator: fuzz.pick(["\n", "\r\n"])) + fuzz.pick(["", "\n", "\r\n"])
            count += 1
            let values = try ConfigFile.parse(text, path: "/etc/fz.conf")
            #expect(values.mapValues(\.text) == written, "input #\(index): \(text)")
            let config = try ConfigurationLayers(file: values).resolve()
            checkInvariants(config, input: "#\(index)")
        }
        #expect(count >= 10_000)
    }

    @Test func durationsThatOverflowAreErrorsNotTraps() {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0005)
        var count = 0
        let units = ["ms", "s", "m", "h", "d", "", "us", "ns", "S", "MS", " s", "s ", "sec"]
        for _ in 0..<Self.inputsPerTarget {
            let sign = fuzz.pick(["", "", "-", "+", "--", " "])
            var number = String(fuzz.int(0..<Int.max), radix: 10)
            switch fuzz.int(0..<6) {
            case 0: number = String(repeating: "9", count: fuzz.int(1..<400))
            case 1: number += "." + String(fuzz.int(0..<1_000_000))
            case 2: number = fuzz.pick(["1e309", "1e3", "nan", "inf", "0x10", "1_000", ".", "..", "1..5", "١٢", "0.0000001", "٣"])
            default: break
            }
            let text = sign + number + fuzz.pick(units)
            count += 1
            if let duration = try? HumanDuration.parse(text) {
                #expect(duration >= .zero && duration < .seconds(86_400 * 366), "\(text)")
                _ = HumanDuration.format(duration)
            }
            for key in [ConfigKey.interval, .timeout, .flapWindow] {
                if case .failure(let error) = load("", flags: [key: text]) {
                    #expect(error.key == key.rawValue, "\(text)")
                }
            }
        }
        #expect(count >= 10_000)
    }

    // MARK: - Secrets in free text

    @Test func theScrubberMasksPasswordsWhateverSurroundsThem() {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0006)
        var count = 0
        for index in 0..<Self.inputsPerTarget {
            // A password that may start or end with a combining mark, a joiner or a line break:
            // characters that fuse with their neighbours into one Swift Character.
            let password = fuzz.pick(ConfigSeeds.awkwardScalars) + Self.sentinel + fuzz.pick(ConfigSeeds.awkwardScalars)
            let around = { (fuzz: inout Mutator) in fuzz.pick(ConfigSeeds.awkwardScalars + ["", " ", ":", "\"", "'", "=", "@"]) }
            let user = fuzz.pick(["u", "app", ""])
            let connection = fuzz.pick([
                "postgresql://\(user):\(password)@db/app",
                "postgres://\(user):\(password)@db:5432,db2/app?sslmode=require",
                "postgresql://db/app?user=\(user)&password=\(password)",
                "host=db user=\(user) password='\(password.replacing("'", with: "\\'"))'",
            ])
            let scrubber = SecretScrubber(connectionString: connection)
            let message = around(&fuzz) + "connection to " + around(&fuzz) + password + around(&fuzz) + " failed: \"" + password + "\""
                + around(&fuzz)
            count += 1
            let scrubbed = scrubber.scrub(message)
            #expect(!scrubbed.utf8.contains(Self.sentinel.utf8), "input #\(index): \(connection) → \(scrubbed)")
            let quoted = SecretScrubber.maskQuoted("missing \"=\" after \"" + password + "\" in connection info string")
            #expect(!quoted.utf8.contains(Self.sentinel.utf8), "input #\(index): \(quoted)")
        }
        #expect(count >= 10_000)
    }

    // MARK: - Status requests

    @Test func malformedRequestsGetAValidStatusAndAJSONBody() throws {
        var fuzz = Mutator(seed: 0xC0FF_EE00_0007)
        let snapshots = StatusSeeds.snapshots()
        let clocks = StatusAPI.Clocks(wall: StatusSeeds.wall.addingTimeInterval(42), monotonic: StatusSeeds.started + .seconds(42))
        let metrics: @Sendable () -> [UInt8] = { Array("# HELP x\nx 1\n".utf8) }
        var count = 0
        var statuses: [Int: Int] = [:]
        for index in 0..<Self.inputsPerTarget {
            let method = fuzz.oneIn(3) ? fuzz.mutate(fuzz.pick(StatusSeeds.methods), rounds: 1) : fuzz.pick(StatusSeeds.methods)
            let uri = fuzz.requestURI()
            let snapshot = fuzz.pick(snapshots)
            let withMetrics = fuzz.oneIn(2)
            count += 1
            let reply = StatusAPI.respond(method: method, uri: uri, snapshot: snapshot, clocks: clocks, metrics: withMetrics ? metrics : nil)
            statuses[reply.status, default: 0] += 1
            let input = "#\(index) \(method.debugDescription) \(String(uri.prefix(200)).debugDescription)"
            #expect(reply.status == StatusSeeds.expectedStatus(method: method, uri: uri, snapshot: snapshot, metrics: withMetrics), "\(input)")
            if reply.contentType.hasPrefix("text/plain") {
                #expect(reply.status == 200 && withMetrics, "\(input)")
                continue
            }
            #expect(reply.contentType == "application/json", "\(input)")
            let object = try #require(
                try? JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any], "\(input): body is not a JSON object"
            )
            if reply.status >= 400 && reply.status != 503 {
                #expect(object["error"] is String, "\(input)")
            }
            #expect((reply.status == 405) == (reply.allow == "GET, HEAD"), "\(input)")
            if reply.status == 200, let events = object["events"] as? [Any] {
                #expect(events.count <= min(StatusAPI.maximumEventLimit, snapshot.recentTransitions.count), "\(input)")
            }
        }
        #expect(count >= 10_000)
        // Every kind of answer was reached.
        for status in [200, 400, 404, 405] { #expect(statuses[status, default: 0] > 100, "\(statuses)") }
    }

    // MARK: - Checks

    /// The configuration as the daemon loads it: flags, then the file, then resolution.
    private func load(
        _ text: String, flags: [ConfigKey: String], environment: [String: String] = [:], credentials: [String: String] = [:]
    ) -> Result<DaemonConfiguration, ConfigurationError> {
        Result { () throws(ConfigurationError) in
            var layers = ConfigurationLayers(environment: environment, credentials: credentials)
            for (key, value) in flags { layers.setFlag(key, value) }
            try layers.parseFile(text, path: "/etc/fz.conf")
            return try layers.resolve()
        }
    }

    /// A failure names the key or the line, fits on a screen, and cannot drive a terminal.
    private func checkClear(_ error: ConfigurationError, text: String, input: String) {
        let description = error.description
        #expect(error.key != nil || error.source != nil, "\(input): \(description)")
        #expect(!error.message.isEmpty, "\(input)")
        #expect(description.utf8.count <= 1_000, "\(input): \(description.prefix(300))…")
        #expect(!description.unicodeScalars.contains { $0.properties.generalCategory == .control }, "\(input): \(description.debugDescription)")
        if let source = error.source, source.hasPrefix("/etc/fz.conf:") {
            // The line named is one an editor shows: lines end at LF, CRLF or a lone CR.
            let line = Int(source.dropFirst("/etc/fz.conf:".count))
            #expect(line != nil && line! >= 1 && line! <= Self.lineCount(text), "\(input): \(description) (\(Self.lineCount(text)) lines)")
        }
    }

    private func checkInvariants(_ config: DaemonConfiguration, input: String) {
        #expect(config.interval >= .milliseconds(100) && config.interval <= .seconds(86_400), "\(input)")
        #expect(config.timeout >= .milliseconds(10) && config.timeout <= .seconds(60), "\(input)")
        #expect(config.connectTimeout >= .milliseconds(10) && config.connectTimeout <= .seconds(60), "\(input)")
        #expect((1...1_000).contains(config.fall) && (1...1_000).contains(config.rise), "\(input)")
        #expect((1...1_000).contains(config.flapThreshold), "\(input)")
        #expect(config.flapWindow >= .seconds(1), "\(input)")
        #expect(config.freshEvery >= .seconds(1) && config.freshEvery <= .seconds(3_600), "\(input)")
        #expect((1...10_000_000).contains(config.spoolLimit), "\(input)")
        #expect(!config.socketPath.isEmpty && config.socketPath.utf8.count <= 103, "\(input)")
        // Strings handed to C (paths, libpq) must not hold a NUL that would silently cut them short.
        for text in [config.socketPath, config.stateDirectory, config.alertLogPath, config.databaseURL ?? "", config.eventsDatabaseURL ?? "",
                     config.databasePassword ?? ""] {
            #expect(!text.utf8.contains(0), "\(input): \(text.debugDescription)")
        }
        #expect(config.stateDirectory.hasPrefix("/") && config.alertLogPath.hasPrefix("/"), "\(input)")
        _ = config.detectionBound
        _ = config.stalenessBound
        #expect(config.newConnectionDetectionBound >= config.detectionBound, "\(input)")
    }

    /// Lines as an editor counts them.
    static func lineCount(_ text: String) -> Int {
        var lines = 1
        var previous: UInt8 = 0
        for byte in text.utf8 {
            if byte == UInt8(ascii: "\n") && previous != UInt8(ascii: "\r") || byte == UInt8(ascii: "\r") { lines += 1 }
            previous = byte
        }
        return lines
    }
}

// MARK: - Generators

/// Damages text the way files, shells and clients do: flipped and stray bytes, truncation,
/// doubled quotes, line endings from other systems, control characters, huge values.
struct Mutator {
    var rng: SplitMix64

    init(seed: UInt64) {
        rng = SplitMix64(seed: seed)
    }

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func oneIn(_ n: Int) -> Bool { int(0..<n) == 0 }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0..<items.count)] }

    mutating func randomBytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// 1 to 4 rounds of damage; the bytes are then read as a String (invalid UTF-8 repaired).
    mutating func mutate(_ text: String, rounds: Int? = nil) -> String {
        var bytes = Array(text.utf8)
        for _ in 0..<(rounds ?? int(1..<5)) { damage(&bytes, lineBreaks: true) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Damage that adds no line break, for the text around a planted secret.
    mutating func mutateKeepingLines(_ text: String) -> String {
        var bytes = Array(text.utf8)
        for _ in 0..<int(0..<3) { damage(&bytes, lineBreaks: false) }
        var result = String(decoding: bytes, as: UTF8.self)
        result.unicodeScalars.removeAll { $0 == "\n" || $0 == "\r" }
        return result
    }

    private mutating func damage(_ bytes: inout [UInt8], lineBreaks: Bool) {
        let position = int(0..<(bytes.count + 1))
        switch int(0..<11) {
        case 0 where !bytes.isEmpty:
            bytes[min(position, bytes.count - 1)] ^= 1 << UInt8(int(0..<8))
        case 1 where !bytes.isEmpty:
            bytes[min(position, bytes.count - 1)] = UInt8.random(in: 0...255, using: &rng)
        case 2:
            bytes.removeSubrange(position..<min(bytes.count, position + int(1..<16)))
        case 3:
            bytes.removeSubrange(position...)
        case 4, 5:
            bytes.insert(contentsOf: Array(pick(ConfigSeeds.tokens).utf8), at: position)
        case 6 where lineBreaks:
            let line = pick(ConfigSeeds.keys + ConfigSeeds.strangeKeys) + pick([" = ", "=", " ", " == ", ""]) + pick(ConfigSeeds.values)
            bytes.insert(contentsOf: Array(("\n" + line + "\n").utf8), at: position)
        case 7 where lineBreaks:
            let ending = pick(["\r\n", "\r", "\n\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}"])
            bytes = Array(String(decoding: bytes, as: UTF8.self).replacing("\n", with: ending).utf8)
        case 8:
            bytes.insert(contentsOf: pick([[0xC3], [0xFF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0xC0, 0xAF], [0]]), at: position)
        case 9 where oneIn(8):
            let huge = String(repeating: pick(["9", "a", "'", "x ", "%", "\u{301}"]), count: int(1_000..<70_000))
            bytes.insert(contentsOf: Array(huge.utf8), at: position)
        default:
            bytes.insert(contentsOf: randomBytes(int(1..<8)), at: position)
        }
    }

    /// A config file of random keys, some valid and some not.
    mutating func randomConfig() -> String {
        var lines: [String] = []
        for _ in 0..<int(0..<12) {
            let key = oneIn(5) ? pick(ConfigSeeds.strangeKeys) : pick(ConfigSeeds.keys)
            let value = oneIn(2) ? pick(ConfigSeeds.values) : pick(ConfigSeeds.valid[ConfigKey(rawValue: key) ?? .fall] ?? ["1"])
            lines.append(key + pick([" = ", "=", " "]) + (oneIn(2) ? "'\(value)'" : value))
        }
        return lines.joined(separator: "\n")
    }

    /// A connection string with `FuzzTests.sentinel` as its password, and every spelling of it
    /// that must not be shown.
    mutating func plantedSecret() -> (text: String, spellings: [String]) {
        let sentinel = FuzzTests.sentinel
        let encoded = "Sentinel%2Dfz%2DPW"
        let scheme = pick(["postgresql", "postgres", "POSTGRESQL", "Postgres"])
        switch int(0..<5) {
        case 0: return ("\(scheme)://u:\(sentinel)@", [sentinel])
        case 1: return ("\(scheme)://u:\(encoded)@", [sentinel, encoded])
        case 2: return ("\(scheme)://\(pick(["", "u", "u:"])):\(sentinel)@", [sentinel])
        case 3: return ("\(scheme)://h/db?sslmode=disable&password=\(sentinel)", [sentinel])
        default: return ("host=h password=\(sentinel) ", [sentinel])
        }
    }

    /// A request target: a route, damaged, with junk queries, escapes or great length.
    mutating func requestURI() -> String {
        let base = pick(StatusSeeds.paths)
        switch int(0..<8) {
        case 0: return base
        case 1: return "/events?" + pick(StatusSeeds.queries)
        case 2: return "/events?limit=" + mutate(pick(["1", "50", "1000", "", "x"]), rounds: int(1..<3))
        case 3: return mutate(base, rounds: int(1..<3))
        case 4: return base + "?" + pick(StatusSeeds.queries) + "&" + pick(StatusSeeds.queries)
        case 5: return "/" + String(repeating: pick(["a", "%", "/", "../", "%2F", "é"]), count: int(1..<20_000))
        case 6: return String(decoding: randomBytes(int(0..<64)), as: UTF8.self)
        default: return base.replacing("s", with: pick(["%73", "%53", "S", "s%00", "\u{301}s"]))
        }
    }
}

enum ConfigSeeds {
    static let keys = ConfigKey.allCases.map(\.rawValue)
    static let strangeKeys = [
        "intervall", "INTERVAL", "Timeout", "database-url", "databaseurl", "x", "_", "-", ".", "a.b", "é", "ключ",
        "interval\u{301}", "\u{FEFF}interval", "1", "include", "include_dir", "password", "sentinel",
    ]
    static let files = [
        """
        # dreamnet-healthd
        database_url = 'postgresql://monitor@db.internal:5432/app?sslmode=require'
        interval = 2s
        timeout = 500ms   # hard deadline
        fall = 3
        rise = 2
        socket = '/run/dreamnet-healthd/status.sock'
        require_database = on
        log_level = info
        """,
        """
        interval=250ms
        timeout=100ms
        flap_threshold = 6
        flap_window = 5m
        spool_limit = 100000
        state_dir = '/var/lib/dreamnet-healthd'
        alert_log = '/var/log/dreamnet-healthd/alerts.log'
        http_listen = 127.0.0.1:9187
        events_database_url = 'host=events.internal dbname=events user=writer'
        """,
        "database_url 'host=db user=it''s dbname=app'\n\n# only a comment\n   \n\tfall\t4\n",
        "http_listen = '[::1]:9187'\r\nrequire_database = false\r\nlog_level = 'debug'\r\n",
        "",
    ]
    static let urlTails = ["h/db'", "h/db", "db:5432/app?sslmode=require'", "h/db' # comment", "h/db'x", "'", "", "h/db''", "h/db' extra"]
    static let tokens = [
        "'", "''", "'''", "#", "=", "==", " ", "\t", "\r", "\n", "\r\n", "\0", "\u{1B}[31m", "\u{1B}]0;title\u{07}", "\u{7F}",
        "\u{08}", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{FEFF}", "\u{301}", "\u{200D}", "🇺🇸", "👩‍👩‍👧", "é", "e\u{301}",
        "-1s", "99999999999999h", "99999999999999s", "99999999999999999999m", "1e309s", "nan", "inf", "-0ms", "0x10", "+1",
        "18446744073709551616", "9223372036854775807", "-9223372036854775808", "1.5.5s", ".s", "ms", "٣s", "%00", "%", "\\",
        "\\'", "[::1]:", ":0", ":65536", "on", "maybe", "/", "//", "@", "://", "password=", "\"",
    ]
    static let values = [
        "2s", "250ms", "1.5s", "2m", "-1s", "0ms", "99ms", "99999999999999h", "9999999999999999999999ms", "1e3ms", "1h", "nans",
        "infs", "١s", "0", "1", "1000", "1001", "-1", "+5", " 3 ", "three", "9223372036854775808", "on", "off", "yes", "maybe",
        "TRUE", "trace", "LOUD", "info ", "/run/x.sock", "", "relative/path", "/" + String(repeating: "x", count: 120),
        "/tmp/a\0b", "127.0.0.1:9187", ":0", ":65536", "[::1]:80", "host only", "a:b:c", "10000000", "10000001",
        "postgresql://u@h/db", "host=h dbname=d", "'", "''", "\u{1B}[2J", "x\u{0C}y", "\u{FEFF}2s",
    ]
    static let valid: [ConfigKey: [String]] = [
        .databaseURL: ["postgresql://monitor@db.internal/app", "host=db user=it's dbname=app", "", "postgres://u@[::1]:5433/x?sslmode=disable#x"],
        .interval: ["100ms", "2s", "1.5s", "2m", "1440m", " 3s"],
        .timeout: ["10ms", "1s", "60s", "1m", "999ms"],
        .fall: ["1", "2", "1000", "+7"],
        .rise: ["1", "3", "999"],
        .socket: ["/run/dreamnet-healthd/status.sock", "/tmp/x y/s.sock", "relative.sock", "/tmp/it's #1.sock"],
        .requireDatabase: ["on", "off", "true", "FALSE", "yes", "no", "1", "0"],
        .logLevel: ["trace", "debug", "info", "NOTICE", "warning", "error", "critical"],
        .stateDirectory: ["/var/lib/dreamnet-healthd", "/tmp/state dir", "/"],
        .eventsDatabaseURL: ["postgresql://writer@events/ev", "", "dbname=events"],
        .spoolLimit: ["1", "100000", "10000000"],
        .alertLog: ["/var/log/dreamnet-healthd/alerts.log", "/tmp/a #b.log"],
        .httpListen: ["127.0.0.1:9187", ":80", "[::1]:65535", "", "localhost:1"],
        .flapThreshold: ["1", "6", "1000"],
        .flapWindow: ["1s", "5m", "1440m"],
        .probeConnection: ["fresh", "session", "SESSION", " fresh"],
        .freshEvery: ["1s", "30s", "60m"],
        .connectTimeout: ["10ms", "2s", "60s"],
        .splay: ["on", "off", "true", "no"],
        .serverTimeouts: ["on", "off", "YES", "0"],
        .scaleToZero: ["on", "off", "true", "0"],
        .suspendAfter: ["10s", "5m", "1440m"],
        .wakeEvery: ["off", "OFF", "1m", "60m", "10080m"],
        .wakeTimeout: ["100ms", "10s", "120s"],
    ]
    /// Scalars that join the Character before or after them.
    static let awkwardScalars = ["", "", "\u{301}", "\u{200D}", "\u{FE0F}", "\u{1F3FB}", "\u{0308}", "\n", "\r", "\u{1F1FA}", "é", "\u{20DD}"]
}

enum StatusSeeds {
    static let wall = Date(timeIntervalSince1970: 1_800_000_000)
    static let started = ContinuousClock.now

    static let methods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "get", "Get", "", " GET", "GET ",
        "PROPFIND", "M-SEARCH", "\u{0}", "GÉT", String(repeating: "G", count: 5_000),
    ]
    static let paths = [
        "/health", "/status", "/events", "/metrics", "/", "", "*", "/health/", "//status", "/status/../status", "/events/",
        "/EVENTS", "http://localhost/status", "status", "/status#x", "/status?", "/events?", "/events??limit=1", "/%2e%2e/",
    ]
    static let queries = [
        "limit=1", "limit=1000", "limit=1001", "limit=0", "limit=-1", "limit=", "limit", "limit==5", "limit=5=5", "limit=%31",
        "limit=1e3", "limit= 5", "limit=0x10", "limit=99999999999999999999", "limit=+5", "LIMIT=5", "limit=5&limit=x", "&&&",
        "limit=%", "limit=%zz", "limit=5#frag", "x=1", "=", "limit=٣", "limit=\u{0}", "limit=" + String(repeating: "9", count: 10_000),
    ]

    static func snapshots() -> [StatusSnapshot] {
        var snapshots: [StatusSnapshot] = []
        for state in [HealthState.starting, .healthy, .unhealthy, .notConfigured] {
            var configuration = DaemonConfiguration.defaults
            configuration.requireDatabase = state == .notConfigured
            var snapshot = StatusSnapshot(
                configuration: configuration, target: "postgresql://app@db/app\u{0}\"\\", version: "1.0", pid: 7,
                startedAt: wall, startedInstant: started
            )
            snapshot.state = state
            for index in 0..<(state == .healthy ? 1_200 : 3) {
                snapshot.append(Transition(
                    id: UUID(), from: .healthy, to: .unhealthy, observedAt: wall, reason: "timeout", phase: .tls,
                    latency: .milliseconds(index), consecutive: index,
                    message: "message \(index) \"quoted\" \\ \u{0}\u{1B} é \u{D7FF}"
                ), limit: 1_100)
            }
            snapshot.transitionCount = snapshot.recentTransitions.count
            snapshots.append(snapshot)
        }
        return snapshots
    }

    /// What the status API must answer, worked out independently of it.
    static func expectedStatus(method: String, uri: String, snapshot: StatusSnapshot, metrics: Bool) -> Int {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
        let query = uri.firstIndex(of: "?").map { uri[uri.index(after: $0)...] } ?? ""
        let readOnly = method == "GET" || method == "HEAD"
        if path == "/metrics" && metrics { return readOnly ? 200 : 405 }
        guard ["/health", "/status", "/events"].contains(path) else { return 404 }
        guard readOnly else { return 405 }
        switch path {
        case "/health":
            let unhealthy = snapshot.state == .unhealthy || snapshot.state == .notConfigured && snapshot.requireDatabase
            return unhealthy ? 503 : 200
        case "/status": return 200
        default:
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts[0] == "limit" else { continue }
                guard parts.count == 2, let limit = Int(parts[1]), (1...1_000).contains(limit) else { return 400 }
            }
            return 200
        }
    }
}
