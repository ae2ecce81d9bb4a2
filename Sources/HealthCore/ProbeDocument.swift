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

extension ProbeDocument {
    /// What `dreamnet-healthctl probe` (and `dreamnet-healthd probe`) prints without `--json`.
    public var summary: String {
        let phases = ProbePhase.allCases.compactMap { phase in
            phasesMs[phase.rawValue].map { "\(phase.rawValue) \(FixedPoint.format($0, places: 1))" }
        }.joined(separator: ", ")
        var text = ok
            ? "ok: \(target) answered SELECT 1 in \(FixedPoint.format(latencyMs, places: 1)) ms"
            : "unhealthy: \(target): \(reason)"
        if let phase { text += " during \(phase)" }
        if let sqlstate { text += " (SQLSTATE \(sqlstate))" }
        if !ok { text += " after \(FixedPoint.format(latencyMs, places: 1)) ms" }
        if let message { text += "\n  \(message)" }
        if !phases.isEmpty { text += "\n  phases (ms): \(phases)" }
        return text
    }
}
