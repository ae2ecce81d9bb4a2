/// Every family `GET /metrics` serves: its name, type and help text, in one place. The daemon
/// registers them from here, and a test checks that docs/socket-api.md lists each one.
public struct MetricFamily: Sendable, Hashable {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public let name: String
    public let kind: Kind
    /// The `# HELP` line.
    public let help: String

    init(_ name: String, _ kind: Kind, _ help: String) {
        self.name = name
        self.kind = kind
        self.help = help
    }

    public static let buildInfo = MetricFamily(
        "dreamnet_healthd_build_info", .gauge, "Always 1; the daemon's version and the libpq it runs with are its labels."
    )
    public static let state = MetricFamily(
        "dreamnet_healthd_state", .gauge, "1 for the daemon's current verdict on the database (the state label), 0 for the others."
    )
    public static let probes = MetricFamily("dreamnet_healthd_probes_total", .counter, "Probes run, failed ones included.")
    public static let probeConnections = MetricFamily(
        "dreamnet_healthd_probe_connections_total", .counter,
        "Probes by the connection they ran on: fresh (a new login) or session (a kept one)."
    )
    public static let probeDuration = MetricFamily(
        "dreamnet_healthd_probe_duration_seconds", .histogram, "How long each probe took to its verdict."
    )
    public static let probeFailures = MetricFamily(
        "dreamnet_healthd_probe_failures_total", .counter, "Failed probes, by reason."
    )
    public static let transitions = MetricFamily(
        "dreamnet_healthd_transitions_total", .counter, "Changes of the daemon's verdict, by the state entered."
    )
    public static let lastProbe = MetricFamily(
        "dreamnet_healthd_last_probe_timestamp_seconds", .gauge, "When the last probe ended, in seconds since the Unix epoch."
    )
    public static let spoolPending = MetricFamily(
        "dreamnet_healthd_spool_pending_events", .gauge, "Events in the local spool, waiting to be written to system_events."
    )
    public static let spoolDropped = MetricFamily(
        "dreamnet_healthd_spool_dropped_events", .gauge,
        "Events dropped because the spool was full, until an overflow event has recorded them."
    )
    public static let spoolDegraded = MetricFamily(
        "dreamnet_healthd_spool_degraded", .gauge, "1 while the spool cannot store and events are held in memory only."
    )
    public static let asleep = MetricFamily(
        "dreamnet_healthd_database_asleep", .gauge, "1 while a database let sleep when unused (scale_to_zero) is asleep."
    )
    public static let roundTrip = MetricFamily(
        "dreamnet_healthd_round_trip_seconds", .gauge, "The shortest recent SELECT 1 on a kept session: the network's round trip."
    )
    public static let connect = MetricFamily(
        "dreamnet_healthd_connect_seconds", .gauge, "How long the latest new connection took to set up (TCP, TLS, authentication)."
    )
    public static let connectBudget = MetricFamily(
        "dreamnet_healthd_connect_budget_seconds", .gauge, "The deadline a new connection is held to (connect_timeout)."
    )
    public static let answerBudget = MetricFamily(
        "dreamnet_healthd_answer_budget_seconds", .gauge, "The deadline an answer is held to (timeout)."
    )

    // The standard process metrics, as Prometheus' client libraries name and describe them.
    public static let processCPU = MetricFamily(
        "process_cpu_seconds_total", .counter, "Total user and system CPU time spent in seconds."
    )
    public static let processOpenFDs = MetricFamily("process_open_fds", .gauge, "Number of open file descriptors.")
    public static let processMaxFDs = MetricFamily("process_max_fds", .gauge, "Maximum number of open file descriptors.")
    public static let processVirtualMemory = MetricFamily(
        "process_virtual_memory_bytes", .gauge, "Virtual memory size in bytes."
    )
    public static let processResidentMemory = MetricFamily(
        "process_resident_memory_bytes", .gauge, "Resident memory size in bytes."
    )
    public static let processStartTime = MetricFamily(
        "process_start_time_seconds", .gauge, "Start time of the process since unix epoch in seconds."
    )

    public static let all: [MetricFamily] = [
        buildInfo, state, probes, probeConnections, probeDuration, probeFailures, transitions, lastProbe, spoolPending,
        spoolDropped, spoolDegraded, asleep, roundTrip, connect, connectBudget, answerBudget,
        processCPU, processOpenFDs, processMaxFDs, processVirtualMemory, processResidentMemory, processStartTime,
    ]
}

/// The process's own figures for the `process_*` metrics, from the text of `/proc/self/stat`
/// (and `/proc/stat`'s boot time), read as Prometheus' client libraries read them. Pure: the
/// adapter reads the files.
public struct ProcessStatistics: Sendable, Equatable {
    /// User and system CPU time.
    public var cpuSeconds: Double
    public var virtualBytes: Double
    public var residentBytes: Double
    /// Seconds since the Unix epoch.
    public var startTime: Double

    public init(cpuSeconds: Double, virtualBytes: Double, residentBytes: Double, startTime: Double) {
        self.cpuSeconds = cpuSeconds
        self.virtualBytes = virtualBytes
        self.residentBytes = residentBytes
        self.startTime = startTime
    }

    /// `stat`: `/proc/self/stat`. The command name in parentheses may hold spaces and
    /// parentheses of its own: the fields are counted from the last `)`. `bootTime`: the
    /// `btime` of `/proc/stat`; `clockTicks`: `sysconf(_SC_CLK_TCK)`.
    public static func parse(stat: String, bootTime: Double, clockTicks: Double, pageSize: Double) -> ProcessStatistics? {
        guard clockTicks > 0, let close = stat.lastIndex(of: ")") else { return nil }
        // From field 3 (state) on: utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        func field(_ number: Int) -> Double? {
            let index = number - 3
            return fields.indices.contains(index) ? Double(fields[index]) : nil
        }
        guard let user = field(14), let system = field(15), let start = field(22), let virtual = field(23), let resident = field(24)
        else { return nil }
        return ProcessStatistics(
            cpuSeconds: (user + system) / clockTicks, virtualBytes: virtual, residentBytes: resident * pageSize,
            startTime: bootTime + start / clockTicks
        )
    }

    /// The `btime` line of `/proc/stat`: when the system booted, in seconds since the epoch.
    public static func bootTime(procStat: String) -> Double? {
        for line in procStat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmed())
        }
        return nil
    }
}
