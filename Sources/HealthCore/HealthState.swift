/// What the daemon believes about the database right now.
public enum HealthState: String, Sendable, Codable, CaseIterable {
    /// Before the first verdict.
    case starting
    case healthy
    case unhealthy
    /// No connection string is configured: a real, reportable state, not an error.
    case notConfigured = "not-configured"
}
