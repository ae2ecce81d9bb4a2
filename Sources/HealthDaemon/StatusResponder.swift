import FoundationEssentials
import HealthCore

/// What the status servers call for every request (the Unix socket's and `http_listen`'s):
/// the route rendered from a copy of the current snapshot, with `/metrics` refreshed from the
/// same copy first. One function, so that the daemon and the allocation benchmarks
/// (Benchmarks/) measure the same path.
public enum StatusResponder {
    public typealias Respond = @Sendable (_ method: String, _ uri: String) -> StatusAPI.Reply

    /// `metrics` nil: `/metrics` is not served (the daemon was started without it).
    public static func make(store: StatusStore, metrics: DaemonMetrics?) -> Respond {
        var renderMetrics: (@Sendable () -> [UInt8])?
        if let metrics {
            renderMetrics = {
                metrics.refresh(from: store.read())
                return metrics.exposition()
            }
        }
        let metricsRoute = renderMetrics
        return { method, uri in
            StatusAPI.respond(
                method: method, uri: uri, snapshot: store.read(), clocks: StatusAPI.Clocks(wall: Date(), monotonic: .now),
                metrics: metricsRoute
            )
        }
    }
}
