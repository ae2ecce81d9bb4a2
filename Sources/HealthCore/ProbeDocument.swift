/// `dreamnet-healthctl probe --json`: one probe, measured.
public struct ProbeDocument: Codable, Sendable, Equatable {
    public var target: String
    public var at: String
    public var ok: Bool
    public var latencyMs: Double
    public var reason: String
    public var phase: String?
    public var sqlstate: String?
    public var message: String?
    public var phasesMs: [String: Double]

    enum CodingKeys: String, CodingKey {
        case target, at, ok, reason, phase, sqlstate, message
        case latencyMs = "latency_ms", phasesMs = "phases_ms"
    }

    public init(target: String, result: ProbeResult) {
        self.target = target
        at = Timestamp.format(result.startedAt)
        ok = result.ok
        latencyMs = StatusAPI.roundedMilliseconds(result.latency)
        reason = result.reasonText
        phase = result.failure?.phase.rawValue
        sqlstate = result.failure?.sqlstate
        message = result.failure?.message
        phasesMs = Dictionary(
            result.phases.map { ($0.phase.rawValue, StatusAPI.roundedMilliseconds($0.duration)) },
            uniquingKeysWith: +
        )
    }
}
