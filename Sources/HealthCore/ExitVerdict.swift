/// The commands' exit codes, as Nagios plugins and pg_isready users expect them:
/// `dreamnet-healthctl`'s and `dreamnet-healthd probe`'s.
public enum ExitVerdict: Int32, Sendable {
    case healthy = 0
    case notConfigured = 1
    case unhealthy = 2
    case unknown = 3

    /// From a status report: a stale one is no verdict.
    public init(state: String, stale: Bool) {
        guard !stale else { self = .unknown; return }
        switch HealthState(rawValue: state) {
        case .healthy: self = .healthy
        case .unhealthy: self = .unhealthy
        case .notConfigured: self = .notConfigured
        case .starting, nil: self = .unknown
        }
    }

    /// From a one-off probe: an unusable connection string is no verdict on the database.
    public init(probe result: ProbeResult) {
        self = result.ok ? .healthy : result.failure?.reason == .invalidTarget ? .unknown : .unhealthy
    }
}
