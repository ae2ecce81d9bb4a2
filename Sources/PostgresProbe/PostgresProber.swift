import FoundationEssentials
import HealthCore
import NIOPosix

/// Probes one database. Each probe runs on NIO's blocking-work thread pool, so the libpq calls
/// and their `poll()` never occupy a thread of Swift's cooperative pool.
public struct PostgresProber: Sendable {
    public let target: ConnectionTarget
    public let timeout: Duration
    private let environment: [String: String]

    public init(target: ConnectionTarget, timeout: Duration, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.target = target
        self.timeout = timeout
        self.environment = environment
    }

    public func probe() async -> ProbeResult {
        let target = target
        let timeout = timeout
        let environment = environment
        do {
            return try await NIOThreadPool.singleton.runIfActive {
                LibPQProbe.run(target, timeout: timeout, resolver: .shared, environment: environment)
            }
        } catch {
            return ProbeResult(
                startedAt: Date(), latency: .zero, phases: [],
                failure: ProbeFailure(reason: .other, phase: .resolve, message: "probe thread pool unavailable: \(error)")
            )
        }
    }
}
