import Glibc
import HealthCore
import PostgresProbe
import Prometheus

/// The daemon's metrics, registered with swift-prometheus from `MetricFamily` (names, types and
/// help in one place) and exposed on `GET /metrics`; the standard `process_*` ones are read
/// from /proc at each scrape.
public final class DaemonMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let probes: Counter
    private let freshProbes: Counter
    private let sessionProbes: Counter
    private let failures: [FailureReason: Counter]
    private let transitions: [HealthState: Counter]
    private let latency: DurationHistogram
    private let lastProbe: Gauge
    private let spoolPending: Gauge
    private let spoolDropped: Gauge
    private let spoolDegraded: Gauge
    private let asleep: Gauge
    private let states: [HealthState: Gauge]
    private let roundTrip: Gauge
    private let connectTime: Gauge
    private let connectBudget: Gauge
    private let answerBudget: Gauge
    private let process: ProcessMetrics

    /// Probe latencies: loopback milliseconds up to the largest deadline.
    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(1_500), .seconds(5), .seconds(30), .seconds(60),
    ]

    /// `libpq`: the version of the libpq the daemon runs with, for `build_info`.
    public init(libpq: String = LibPQ.version, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        func counter(_ family: MetricFamily, _ labels: [(String, String)] = []) -> Counter {
            registry.makeCounter(descriptor: family.descriptor, labels: labels)
        }
        func gauge(_ family: MetricFamily, _ labels: [(String, String)] = []) -> Gauge {
            registry.makeGauge(descriptor: family.descriptor, labels: labels)
        }
        gauge(.buildInfo, [("version", DaemonVersion.current), ("libpq", libpq)]).set(to: 1)
        probes = counter(.probes)
        freshProbes = counter(.probeConnections, [("connection", "fresh")])
        sessionProbes = counter(.probeConnections, [("connection", "session")])
        // Every label value made up front: recording a probe allocates nothing.
        failures = Dictionary(uniqueKeysWithValues: FailureReason.allCases.map { ($0, counter(.probeFailures, [("reason", $0.rawValue)])) })
        transitions = Dictionary(uniqueKeysWithValues: HealthState.allCases.filter { $0 != .starting }.map {
            ($0, counter(.transitions, [("to", $0.rawValue)]))
        })
        latency = registry.makeDurationHistogram(descriptor: MetricFamily.probeDuration.descriptor, labels: [], buckets: Self.latencyBuckets)
        lastProbe = gauge(.lastProbe)
        spoolPending = gauge(.spoolPending)
        spoolDropped = gauge(.spoolDropped)
        spoolDegraded = gauge(.spoolDegraded)
        asleep = gauge(.asleep)
        // Distance: the shortest recent SELECT 1, the latest new connection's set-up, and the
        // budgets they are held to (headroom is budget minus time).
        roundTrip = gauge(.roundTrip)
        connectTime = gauge(.connect)
        connectBudget = gauge(.connectBudget)
        answerBudget = gauge(.answerBudget)
        states = Dictionary(uniqueKeysWithValues: HealthState.allCases.map { ($0, gauge(.state, [("state", $0.rawValue)])) })
        process = ProcessMetrics(
            cpu: counter(.processCPU), openFDs: gauge(.processOpenFDs), maxFDs: gauge(.processMaxFDs),
            virtualMemory: gauge(.processVirtualMemory), residentMemory: gauge(.processResidentMemory),
            startTime: gauge(.processStartTime)
        )
    }

    /// After every probe (or not-configured tick): counters, latency, state, spool.
    public func record(probe: ProbeResult?, transition: Transition?, snapshot: StatusSnapshot) {
        if let probe {
            probes.increment()
            latency.record(probe.latency)
            lastProbe.set(to: probe.startedAt.timeIntervalSince1970 + probe.latency.seconds)
            // How often the server is asked to start a session for the daemon (fresh) against
            // how often a kept one answered (session): the cost the daemon puts on the server.
            (probe.connection == .fresh ? freshProbes : sessionProbes).increment()
            if let failure = probe.failure { failures[failure.reason]?.increment() }
        }
        if let transition { transitions[transition.to]?.increment() }
        refresh(from: snapshot)
    }

    /// Gauges that follow the snapshot: refreshed at every scrape too, so deliveries between
    /// probes show at once.
    public func refresh(from snapshot: StatusSnapshot) {
        for (state, gauge) in states { gauge.set(to: state == snapshot.state ? 1 : 0) }
        spoolPending.set(to: Double(snapshot.spool.pending))
        spoolDropped.set(to: Double(snapshot.spool.dropped))
        spoolDegraded.set(to: snapshot.spool.degradedReason == nil ? 0 : 1)
        asleep.set(to: snapshot.sleep?.phase == .asleep ? 1 : 0)
        connectBudget.set(to: snapshot.connectTimeout.seconds)
        answerBudget.set(to: snapshot.timeout.seconds)
        if let measured = snapshot.distance.roundTrip { roundTrip.set(to: measured.seconds) }
        if let measured = snapshot.distance.lastConnect { connectTime.set(to: measured.seconds) }
    }

    /// The Prometheus text exposition, with the process figures read now.
    public func exposition() -> [UInt8] {
        process.refresh()
        return registry.emitToBuffer()
    }
}

extension MetricFamily {
    /// The whole name as the metric name, with no unit added: the names are fixed in `MetricFamily`.
    var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}

/// `process_*`, read from /proc as Prometheus' client libraries read them.
private final class ProcessMetrics: Sendable {
    private let cpu: Counter
    private let openFDs: Gauge
    private let maxFDs: Gauge
    private let virtualMemory: Gauge
    private let residentMemory: Gauge
    private let startTime: Gauge
    /// The CPU time already counted: the counter only goes up, by what was spent since.
    private let counted = MutexBox(0.0)
    private let bootTime: Double
    private let clockTicks = Double(sysconf(Int32(_SC_CLK_TCK)))
    private let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))

    init(cpu: Counter, openFDs: Gauge, maxFDs: Gauge, virtualMemory: Gauge, residentMemory: Gauge, startTime: Gauge) {
        self.cpu = cpu
        self.openFDs = openFDs
        self.maxFDs = maxFDs
        self.virtualMemory = virtualMemory
        self.residentMemory = residentMemory
        self.startTime = startTime
        bootTime = readProcFile("/proc/stat").flatMap(ProcessStatistics.bootTime(procStat:)) ?? 0
    }

    /// A few reads of /proc: microseconds, on the status server's event loop.
    func refresh() {
        if let text = readProcFile("/proc/self/stat"),
           let figures = ProcessStatistics.parse(stat: text, bootTime: bootTime, clockTicks: clockTicks, pageSize: pageSize) {
            let spent = counted.withLock { counted -> Double in
                defer { counted = max(counted, figures.cpuSeconds) }
                return max(0, figures.cpuSeconds - counted)
            }
            if spent > 0 { cpu.increment(by: spent) }
            virtualMemory.set(to: figures.virtualBytes)
            residentMemory.set(to: figures.residentBytes)
            startTime.set(to: figures.startTime)
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFDs.set(to: Double(limit.rlim_cur)) }
        openFDs.set(to: Double(openDescriptors()))
    }

    /// Entries of /proc/self/fd, the directory's own descriptor left out.
    private func openDescriptors() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            // "." and "..".
            if entry.pointee.d_name.0 != 0x2E { count += 1 }
        }
        return max(0, count - 1)
    }
}

/// A small file of /proc, whole (their size shows as 0, so it is read to the end).
private func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4_096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
