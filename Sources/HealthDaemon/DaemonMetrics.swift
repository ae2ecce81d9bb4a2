import HealthCore
import Metrics
import Prometheus

/// The daemon's metrics, through swift-metrics, exposed by swift-prometheus on `GET /metrics`.
public final class DaemonMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let probes: Metrics.Counter
    private let freshProbes: Metrics.Counter
    private let sessionProbes: Metrics.Counter
    private let latency: Metrics.Timer
    private let lastProbe: Metrics.Gauge
    private let spoolPending: Metrics.Gauge
    private let spoolDropped: Metrics.Gauge
    private let spoolDegraded: Metrics.Gauge
    private let asleep: Metrics.Gauge
    private let states: [HealthState: Metrics.Gauge]
    private let roundTrip: Metrics.Gauge
    private let connectTime: Metrics.Gauge
    private let connectBudget: Metrics.Gauge
    private let answerBudget: Metrics.Gauge

    /// Bootstraps swift-metrics with a Prometheus registry: call once per process.
    public static func bootstrap() -> DaemonMetrics {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Probe latencies: loopback milliseconds up to the largest deadline.
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(1_500), .seconds(5), .seconds(30), .seconds(60),
        ]
        MetricsSystem.bootstrap(factory)
        return DaemonMetrics(registry: registry)
    }

    private init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        probes = Metrics.Counter(label: "dreamnet_healthd_probes_total")
        freshProbes = Metrics.Counter(label: "dreamnet_healthd_probe_connections_total", dimensions: [("connection", "fresh")])
        sessionProbes = Metrics.Counter(label: "dreamnet_healthd_probe_connections_total", dimensions: [("connection", "session")])
        latency = Metrics.Timer(label: "dreamnet_healthd_probe_duration_seconds")
        lastProbe = Metrics.Gauge(label: "dreamnet_healthd_last_probe_timestamp_seconds")
        spoolPending = Metrics.Gauge(label: "dreamnet_healthd_spool_pending_events")
        spoolDropped = Metrics.Gauge(label: "dreamnet_healthd_spool_dropped_events")
        spoolDegraded = Metrics.Gauge(label: "dreamnet_healthd_spool_degraded")
        asleep = Metrics.Gauge(label: "dreamnet_healthd_database_asleep")
        // Distance: the shortest recent SELECT 1, the latest new connection's set-up, and the
        // budgets they are held to (headroom is budget minus time).
        roundTrip = Metrics.Gauge(label: "dreamnet_healthd_round_trip_seconds")
        connectTime = Metrics.Gauge(label: "dreamnet_healthd_connect_seconds")
        connectBudget = Metrics.Gauge(label: "dreamnet_healthd_connect_budget_seconds")
        answerBudget = Metrics.Gauge(label: "dreamnet_healthd_answer_budget_seconds")
        var states: [HealthState: Metrics.Gauge] = [:]
        for state in HealthState.allCases {
            states[state] = Metrics.Gauge(label: "dreamnet_healthd_state", dimensions: [("state", state.rawValue)])
        }
        self.states = states
    }

    /// After every probe (or not-configured tick): counters, latency, state, spool.
    public func record(probe: ProbeResult?, transition: Transition?, snapshot: StatusSnapshot) {
        if let probe {
            probes.increment()
            latency.recordNanoseconds(Int64(probe.latency.fractionalMilliseconds * 1_000_000))
            lastProbe.record(probe.startedAt.timeIntervalSince1970 + probe.latency.seconds)
            // How often the server is asked to start a session for the daemon (fresh) against
            // how often a kept one answered (session): the cost the daemon puts on the server.
            (probe.connection == .fresh ? freshProbes : sessionProbes).increment()
            if let failure = probe.failure {
                Metrics.Counter(label: "dreamnet_healthd_probe_failures_total", dimensions: [("reason", failure.reason.rawValue)]).increment()
            }
        }
        if let transition {
            Metrics.Counter(label: "dreamnet_healthd_transitions_total", dimensions: [("to", transition.to.rawValue)]).increment()
        }
        refresh(from: snapshot)
    }

    /// Gauges that follow the snapshot: refreshed at every scrape too, so deliveries between
    /// probes show at once.
    public func refresh(from snapshot: StatusSnapshot) {
        for (state, gauge) in states { gauge.record(state == snapshot.state ? 1 : 0) }
        spoolPending.record(snapshot.spool.pending)
        spoolDropped.record(snapshot.spool.dropped)
        spoolDegraded.record(snapshot.spool.degradedReason == nil ? 0 : 1)
        asleep.record(snapshot.sleep?.phase == .asleep ? 1 : 0)
        connectBudget.record(snapshot.connectTimeout.seconds)
        answerBudget.record(snapshot.timeout.seconds)
        if let measured = snapshot.distance.roundTrip { roundTrip.record(measured.seconds) }
        if let measured = snapshot.distance.lastConnect { connectTime.record(measured.seconds) }
    }

    /// The Prometheus text exposition.
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}

import FoundationEssentials
