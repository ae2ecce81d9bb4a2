/// What `systemctl status` shows: state, the last probe, the spool, on one line (systemd's
/// STATUS=).
public struct StatusLine: Sendable, Equatable {
    public enum LastProbe: Sendable, Equatable {
        case ok(latency: Duration)
        case failed(reason: String, phase: ProbePhase?)
    }

    public var state: HealthState
    public var lastProbe: LastProbe?
    public var spooled: Int
    /// Events held in memory while the spool is degraded; `nil` while it is not.
    public var degradedInMemory: Int?
    /// With `scale_to_zero`: the database is let sleep, and the last probe is as old as that.
    public var asleep: Bool

    public init(state: HealthState, lastProbe: LastProbe?, spooled: Int, degradedInMemory: Int?, asleep: Bool = false) {
        self.state = state
        self.lastProbe = lastProbe
        self.spooled = spooled
        self.degradedInMemory = degradedInMemory
        self.asleep = asleep
    }

    public init(_ snapshot: StatusSnapshot) {
        self.init(
            state: snapshot.state,
            lastProbe: snapshot.lastProbe.map { probe in
                probe.ok ? .ok(latency: probe.latency) : .failed(reason: probe.reasonText, phase: probe.failure?.phase)
            },
            spooled: snapshot.spool.pending,
            degradedInMemory: snapshot.spool.degradedReason == nil ? nil : snapshot.spool.inMemory,
            asleep: snapshot.sleep?.phase == .asleep
        )
    }

    public var text: String {
        var line = "database \(state.rawValue)"
        if asleep { line += "; asleep" }
        switch lastProbe {
        case .ok(let latency)?:
            line += "; last probe ok in \(FixedPoint.format(latency.fractionalMilliseconds, places: 1)) ms"
        case .failed(let reason, let phase)?:
            line += "; last probe \(reason) during \(phase?.rawValue ?? "?")"
        case nil:
            break
        }
        line += "; \(spooled) events spooled"
        if let degradedInMemory { line += "; spool DEGRADED (\(degradedInMemory) in memory)" }
        return line
    }

    /// Equal but for the last probe's latency, which changes at every probe.
    public func equalsIgnoringLatency(_ other: StatusLine) -> Bool {
        var mine = self
        var theirs = other
        if case .ok = mine.lastProbe { mine.lastProbe = .ok(latency: .zero) }
        if case .ok = theirs.lastProbe { theirs.lastProbe = .ok(latency: .zero) }
        return mine == theirs
    }
}
