import FoundationEssentials
import HealthCore
import HealthDaemon
import Testing
import TestSupport

/// `GET /metrics` as Prometheus reads it: compared with a golden file, the values that change
/// from run to run (the process's own) masked, the families in name order.
@Suite struct MetricsExpositionTests {
    static let golden = "Tests/Fixtures/metrics.golden.prom"

    /// The exposition after a known history: a healthy probe, a failed one, a transition.
    static func exposition() -> String {
        let metrics = DaemonMetrics(libpq: "15.10")
        let wall = Date(timeIntervalSince1970: 1_800_000_000)
        var snapshot = StatusSnapshot(
            configuration: .defaults, target: "postgresql://app@db:5432/app", version: DaemonVersion.current, pid: 42,
            startedAt: wall, startedInstant: .now
        )
        snapshot.state = .healthy
        var ok = ProbeResult(startedAt: wall, latency: .milliseconds(3), phases: [], failure: nil)
        ok.connection = .session
        let failed = ProbeResult(
            startedAt: wall.addingTimeInterval(2), latency: .milliseconds(1_000), phases: [],
            failure: ProbeFailure(reason: .timeout, phase: .connect, message: "no answer")
        )
        let transition = Transition(
            id: UUID(), from: .starting, to: .healthy, observedAt: wall, reason: "ok", consecutive: 1, message: "SELECT 1"
        )
        metrics.record(probe: ok, transition: transition, snapshot: snapshot)
        metrics.record(probe: failed, transition: nil, snapshot: snapshot)
        return String(decoding: metrics.exposition(), as: UTF8.self)
    }

    /// Families in name order (the registry's order is a dictionary's), samples in order within
    /// each, `process_*` values masked.
    static func normalised(_ text: String) -> String {
        var families: [String: [String]] = [:]
        var current = ""
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                current = String(line.split(separator: " ")[2])
                families[current, default: []].append(line)
                continue
            }
            let masked = line.hasPrefix("process_") ? String(line.prefix { $0 != " " }) + " <volatile>" : line
            families[current, default: []].append(masked)
        }
        return families.keys.sorted().map { name in
            let lines = families[name] ?? []
            let comments = lines.filter { $0.hasPrefix("#") }
            let samples = lines.filter { !$0.hasPrefix("#") }
            // Buckets keep their order (le ascending); other samples are sorted by labels.
            let ordered = name.hasSuffix("_seconds") && samples.contains { $0.contains("_bucket{") } ? samples : samples.sorted()
            return (comments.sorted() + ordered).joined(separator: "\n")
        }.joined(separator: "\n") + "\n"
    }

    @Test func theExpositionIsTheGoldenOne() throws {
        let actual = Self.normalised(Self.exposition())
        let path = packageRootDirectory().appendingPathComponent(Self.golden).path
        if ProcessInfo.processInfo.environment["DREAMNET_UPDATE_GOLDEN"] == "1" {
            try actual.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOfFile: path, encoding: .utf8)
        #expect(actual == expected, "rerun with DREAMNET_UPDATE_GOLDEN=1 to accept:\n\(actual)")
    }

    /// Every family has its HELP and TYPE, once, as `MetricFamily` says.
    @Test func everyFamilyHasItsHelpAndType() {
        let text = Self.exposition()
        for family in MetricFamily.all {
            #expect(text.components(separatedBy: "# HELP \(family.name) \(family.help)\n").count == 2, "\(family.name)")
            #expect(text.components(separatedBy: "# TYPE \(family.name) \(family.kind.rawValue)\n").count == 2, "\(family.name)")
        }
        #expect(text.contains("dreamnet_healthd_build_info{version=\"\(DaemonVersion.current)\",libpq=\"15.10\"} 1"))
    }

    /// The process's own figures are its own: resident memory within what /proc says, a start
    /// time in the past, CPU that only goes up.
    @Test func processFiguresAreThisProcesssOwn() throws {
        let metrics = DaemonMetrics(libpq: "15.10")
        func value(_ name: String) -> Double? {
            let text = String(decoding: metrics.exposition(), as: UTF8.self)
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
        }
        let resident = try #require(value("process_resident_memory_bytes"))
        #expect(resident > 1_000_000 && resident < 4_000_000_000)
        let start = try #require(value("process_start_time_seconds"))
        #expect(start > 1_600_000_000 && start <= Date().timeIntervalSince1970 + 1)
        let open = try #require(value("process_open_fds"))
        #expect(open >= 3)
        #expect(try #require(value("process_max_fds")) >= open)
        let cpu = try #require(value("process_cpu_seconds_total"))
        var spin = 0.0
        for index in 0..<3_000_000 { spin += Double(index & 7) }
        #expect(spin > 0)
        #expect(try #require(value("process_cpu_seconds_total")) >= cpu)
        #expect(try #require(value("process_virtual_memory_bytes")) >= resident)
    }

    /// The socket API's documentation names every family.
    @Test func theDocumentationListsEveryFamily() throws {
        let documentation = try String(
            contentsOfFile: packageRootDirectory().appendingPathComponent("docs/socket-api.md").path, encoding: .utf8
        )
        for family in MetricFamily.all {
            #expect(documentation.contains("`\(family.name)"), "docs/socket-api.md does not name \(family.name)")
        }
    }
}
