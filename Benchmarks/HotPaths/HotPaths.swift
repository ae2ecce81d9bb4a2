import Benchmark
import EventSpool
import Foundation
import HealthCore
import HealthDaemon

/// `MetricsSystem` takes one factory per process; the daemon bootstraps it once at start too.
let daemonMetrics = DaemonMetrics()

/// Allocations are gated (Thresholds/), times are shown for information only: on a shared
/// 2-core machine times move by tens of percent from run to run, allocation counts do not.
///
/// Names have no spaces or slashes: the thresholds' files are written with those replaced, and
/// read back under the name as it is, so such a benchmark would never be checked.
///
/// The checked figure is the p90 of the allocations per measured iteration, so that a rare
/// iteration that differs (a WAL checkpoint, a buffer grown once) is not what is compared. Each
/// iteration runs its step 1 000 times (`scalingFactor: .kilo`; the figures shown are per step,
/// marked `*`, the thresholds per 1 000 steps): the tolerance can then be a fraction of an
/// allocation per step, and one allocation more per probe or per request, 1 000 more per
/// iteration, fails the check.
let benchmarks: @Sendable () -> Void = {
    /// The tolerance around a threshold, in allocations per iteration, either way.
    func allocations(tolerance perIteration: Int) -> [BenchmarkMetric: BenchmarkThresholds] {
        [.mallocCountTotal: BenchmarkThresholds(absolute: [.p90: perIteration])]
    }

    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal, .wallClock, .throughput],
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000,
        // A tenth of an allocation per step.
        thresholds: allocations(tolerance: 100)
    )

    // MARK: Per probe

    // One healthy result into the rise/fall damping of a database healthy for a while.
    Benchmark("HealthStateMachine.probeFinished") { benchmark, machine in
        var machine = machine
        let probe = Fixtures.healthyProbe(at: Fixtures.startedAt)
        var wall = Fixtures.startedAt
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(machine.probeFinished(probe, at: wall, newID: UUID()))
            wall += Fixtures.configuration.interval.seconds
        }
        benchmark.stopMeasurement()
        precondition(machine.state == .healthy && machine.transitionCount == 3, "a steady state records no transition")
    } setup: {
        Fixtures.steadyHealthyMachine()
    }

    // The loop's side of one probe under systemd: the result, the status line, the next wake.
    Benchmark("ProbeLoop.tick") { benchmark, loop in
        var loop = loop
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(loop.tick())
        }
        benchmark.stopMeasurement()
    } setup: {
        Fixtures.SteadyLoop()
    }

    // The counters, latency histogram and gauges, after every probe.
    Benchmark("DaemonMetrics.record") { benchmark, store in
        let probe = Fixtures.healthyProbe(at: Fixtures.startedAt)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            // As `ProbeService.publish` does after every probe: the snapshot read included.
            daemonMetrics.record(probe: probe, transition: nil, snapshot: store.read())
        }
        benchmark.stopMeasurement()
    } setup: {
        Fixtures.statusStore()
    }

    // MARK: Per request

    /// What the daemon's status servers call for every request.
    typealias Respond = StatusResponder.Respond
    func respond(store: StatusStore) -> Respond {
        StatusResponder.make(store: store, metrics: daemonMetrics)
    }

    // One request each, as a healthy daemon answers it.
    for route in ["/status", "/health", "/metrics"] {
        Benchmark("GET-" + route.dropFirst()) { (benchmark: Benchmark, respond: Respond) in
            for _ in benchmark.scaledIterations {
                let reply = respond("GET", route)
                precondition(reply.status == 200, "a healthy daemon answers \(route) with 200")
                blackHole(reply)
            }
        } setup: {
            let store = Fixtures.statusStore()
            // A scrape shows what the probes recorded: an hour of probes and one outage.
            let snapshot = store.read()
            for step in 0..<1_800 {
                let at = Fixtures.startedAt + Double(step) * Fixtures.configuration.interval.seconds
                daemonMetrics.record(probe: Fixtures.healthyProbe(at: at), transition: nil, snapshot: snapshot)
            }
            for transition in snapshot.recentTransitions {
                daemonMetrics.record(probe: Fixtures.timedOutProbe(at: transition.observedAt), transition: transition, snapshot: snapshot)
            }
            return respond(store: store)
        }
    }

    // MARK: Per event

    // A transition's event: its payload JSON is what the spool, the table and the alert log carry.
    Benchmark("HealthEvent.transition") { benchmark, transition in
        for _ in benchmark.scaledIterations {
            blackHole(HealthEvent.transition(transition, origin: Fixtures.origin))
        }
    } setup: {
        Fixtures.transitionToUnhealthy(id: UUID(), at: Fixtures.startedAt)
    }

    // A `system_events` row, its metadata JSON, as the delivery service builds each of a batch.
    Benchmark("EventRow") { benchmark, event in
        for _ in benchmark.scaledIterations {
            blackHole(EventRow(event, delivery: .direct, seq: 1_234))
        }
    } setup: {
        HealthEvent.transition(Fixtures.transitionToUnhealthy(id: UUID(), at: Fixtures.startedAt), origin: Fixtures.origin)
    }

    // A transition stored as `EventRecorder` stores it: with the state it led to, fsynced. Into
    // a spool of its own, in a temporary directory removed afterwards.
    let spoolDirectory = FileManager.default.temporaryDirectory
        .appendingPathComponent("dreamnet-healthd-benchmark-\(UUID().uuidString)").path
    Benchmark(
        "EventSpool.append",
        // One fsynced append per iteration: 1 000 would take seconds. Its count is the same in
        // nearly every iteration (a WAL checkpoint makes the odd one differ, which the p90
        // leaves out), so no tolerance: one allocation more per append fails.
        configuration: .init(
            warmupIterations: 5, scalingFactor: .one, maxIterations: 300, thresholds: allocations(tolerance: 0)
        )
    ) { benchmark, spool in
        let transition = Fixtures.transitionToUnhealthy(id: UUID(), at: Date())
        let event = HealthEvent.transition(transition, origin: Fixtures.origin)
        let memory = DaemonMemory(
            health: .init(state: .unhealthy, since: transition.observedAt, consecutiveFailures: 2, consecutiveSuccesses: 0),
            flaps: nil
        )
        benchmark.startMeasurement()
        let outcome = try? spool.append(event, remembering: memory)
        benchmark.stopMeasurement()
        guard case .stored(let seq)? = outcome else {
            benchmark.error("the spool did not store the event")
            return
        }
        // Announced and delivered, the row goes: the spool stays as small as a healthy daemon's.
        do {
            try spool.markAnnounced(event.id)
            try spool.markDelivered(throughSeq: seq)
        } catch {
            benchmark.error("\(error)")
        }
    } setup: {
        try EventSpool(directory: spoolDirectory, limit: Fixtures.configuration.spoolLimit)
    } teardown: {
        try? FileManager.default.removeItem(atPath: spoolDirectory)
    }
}
