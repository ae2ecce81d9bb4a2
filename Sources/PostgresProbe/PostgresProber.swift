import FoundationEssentials
import HealthCore

/// Probes one database. Each probe runs on a thread of its own, so the libpq calls and their
/// `poll()` never occupy a thread of Swift's cooperative pool nor wait behind other blocking work.
public struct PostgresProber: Sendable {
    public let target: ConnectionTarget
    public let timeout: Duration
    private let environment: [String: String]

    public init(target: ConnectionTarget, timeout: Duration, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.target = target
        self.timeout = timeout
        self.environment = environment
    }

    /// One probe; `nil` if the calling task was cancelled before the probe reached a verdict
    /// (cancellation ends the probe's wait at once, whatever the deadline).
    public func probe() async -> ProbeResult? {
        let target = target
        let timeout = timeout
        let environment = environment
        let cancellation = ProbeCancellation()
        let outcome = await withTaskCancellationHandler {
            await onOwnThread {
                LibPQProbe.run(target, timeout: timeout, resolver: .shared, environment: environment, cancellation: cancellation)
            }
        } onCancel: {
            cancellation.cancel()
        }
        // Outer nil: no thread; inner nil: cancelled.
        guard let outcome else {
            return ProbeResult(
                startedAt: Date(), latency: .zero, phases: [],
                failure: ProbeFailure(reason: .other, phase: .resolve, message: "could not start a probe thread")
            )
        }
        return outcome
    }
}
