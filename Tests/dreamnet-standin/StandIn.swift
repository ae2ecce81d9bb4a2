import ArgumentParser
import Dispatch
import Foundation
import Glibc
import HealthCore
import TestSupport

/// The tests' stand-in for a database that sleeps when unused (`ScaleToZeroStandIn`) as a process
/// of its own, so that scripts/bench-sleep can run it beside the release daemon: it makes a
/// throwaway cluster (`TestPostgres`, from `PG_BINDIR` or the newest installed server), puts the
/// stand-in in front of it, and runs until told to stop. Not installed, not part of the daemon.
///
/// When ready it prints one line of JSON on standard output:
///
///     {"port": 41234, "cluster_port": 41233, "data": "/tmp/pg-…/data", "postmaster": 5678}
///
/// `port` is the stand-in's (the application's and the daemon's); the cluster's own data directory
/// holds `postmaster.pid`, whose pid changes with every wake.
///
/// Signals:
///
///     SIGUSR1          wakes fail from now on, refused (XX000 "Couldn't connect to compute node")
///     SIGUSR2          wakes fail from now on, never answered (held until SIGHUP)
///     SIGHUP           wakes succeed again
///     SIGTERM, SIGINT  writes the report to --report, stops the cluster, exits 0
///
/// The report is one JSON object, times in Unix seconds (wall clock, measured on the monotonic
/// clock from one reading of both):
///
///     {"made_at": t, "reported_at": t, "suspend_after_s": 60, "cold_start_s": 3,
///      "suspensions": [t, …], "wakes": [{"began": t, "ready": t}, …],
///      "up": [{"from": t, "to": t or null}, …], "relayed": n, "refused": n}
///
/// `suspensions` are when each suspension began (the idle timer fired); `wakes` the successful
/// ones; `up` when the server was up, from the start of a wake to the end of the suspension that
/// stopped it (`to` null: still up when the report was written).
@main
struct StandIn: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-standin",
        abstract: "A throwaway PostgreSQL behind a relay that suspends it when unused and wakes it for the next connection."
    )

    @Option(help: "Time without a byte from any client after which the server is suspended (e.g. 60s).",
            transform: { try HumanDuration.parse($0) })
    var suspendAfter: Duration

    @Option(help: "Added to each wake after the server has started (e.g. 3s).", transform: { try HumanDuration.parse($0) })
    var coldStart: Duration = .zero

    @Option(help: "Where the JSON report goes on SIGTERM.")
    var report: String

    func run() throws {
        let cluster = try TestPostgres.start()
        defer { cluster.destroy() }
        let standIn = try ScaleToZeroStandIn(cluster: cluster, suspendAfter: suspendAfter, coldStart: coldStart)
        defer { standIn.close() }
        let clock = WallClock()

        let stop = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "dreamnet-standin.signals")
        let actions: [(Int32, @Sendable () -> Void)] = [
            (SIGUSR1, { standIn.failWakes(.refuse) }),
            (SIGUSR2, { standIn.failWakes(.hold) }),
            (SIGHUP, { standIn.failWakes(nil) }),
            (SIGTERM, { stop.signal() }),
            (SIGINT, { stop.signal() }),
        ]
        // Dispatch sees a signal only when its default action is off.
        let sources = actions.map { signalNumber, action in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler(handler: action)
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        let ready: [String: Any] = [
            "port": standIn.port, "cluster_port": cluster.port, "data": cluster.dataDirectory.path,
            "postmaster": cluster.postmasterPID.map { Int($0) } ?? 0,
        ]
        try writeLine(JSONSerialization.data(withJSONObject: ready, options: [.sortedKeys, .withoutEscapingSlashes]), to: FileHandle.standardOutput)

        stop.wait()
        let document: [String: Any] = [
            "made_at": clock.unix(clock.origin), "reported_at": clock.unix(.now),
            "suspend_after_s": suspendAfter.timeInterval, "cold_start_s": coldStart.timeInterval,
            "suspensions": standIn.suspensions.map(clock.unix),
            "wakes": standIn.wakes.map { ["began": clock.unix($0.began), "ready": clock.unix($0.ready)] },
            "up": standIn.upIntervals.map { ["from": clock.unix($0.from), "to": $0.to.map(clock.unix) ?? NSNull()] as [String: Any] },
            "relayed": standIn.counts.relayed, "refused": standIn.counts.refused,
        ]
        let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
        try data.write(to: URL(fileURLWithPath: report), options: .atomic)
    }

    private func writeLine(_ data: Data, to handle: FileHandle) throws {
        try handle.write(contentsOf: data + Data("\n".utf8))
    }
}

/// Monotonic instants as Unix seconds: one reading of both clocks, then the monotonic one alone,
/// so that a step of the wall clock during a run moves no figure.
struct WallClock {
    let origin = ContinuousClock.now
    let originUnix = Date().timeIntervalSince1970

    func unix(_ instant: ContinuousClock.Instant) -> Double {
        originUnix + origin.duration(to: instant).timeInterval
    }
}
