/// How far away the database is, measured from the probes themselves, and how much of each
/// budget that distance uses: no extra traffic.
///
/// - The round trip is the shortest `query` phase of the recent successful probes: one
///   `SELECT 1` is one round trip plus a fraction of a millisecond on the server, and the
///   shortest of several is the least disturbed by a busy moment (the estimate TCP itself uses).
/// - A new connection's time is its phases before the query (name resolution, TCP, TLS and
///   authentication): about seven round trips over TLS with SCRAM, against `connectTimeout`.
///
/// Pure: the daemon feeds it every probe and logs what `record` returns.
public struct DistanceMeter: Sendable, Equatable {
    public struct Budgets: Sendable, Equatable {
        /// The answer to `SELECT 1` on an open session.
        public var answer: Duration
        /// Opening a new connection, up to the query.
        public var connect: Duration

        public init(answer: Duration, connect: Duration) {
            self.answer = answer
            self.connect = connect
        }
    }

    /// What an operator should hear of: new connections began to take most of their budget,
    /// or went back to taking much less.
    public enum Notice: Sendable, Equatable {
        case connectNearBudget(took: Duration, budget: Duration)
        case connectWithinBudget(took: Duration, budget: Duration)
    }

    /// A new connection that takes this share of its budget is worth a warning: the next slow
    /// moment of the network would turn it into a timeout. Said again only after connections
    /// fell back under `clearShare`, so a connection time hovering at the line is said once.
    public static let warnShare = 0.75
    public static let clearShare = 0.5
    /// Query phases the round trip is the shortest of.
    public static let window = 16

    public private(set) var budgets: Budgets
    private var recentQueries: [Duration] = []
    /// The latest successful probe's query phase, and the latest new connection's set-up.
    public private(set) var lastAnswer: Duration?
    public private(set) var lastConnect: Duration?
    private var warned = false

    public init(budgets: Budgets) {
        self.budgets = budgets
    }

    /// The shortest recent `SELECT 1`: the round trip, with the server's own time in it.
    public var roundTrip: Duration? { recentQueries.min() }

    /// Budget left over by the latest new connection, and by the latest answer.
    public var connectHeadroom: Duration? { lastConnect.map { budgets.connect - $0 } }
    public var answerHeadroom: Duration? { lastAnswer.map { budgets.answer - $0 } }

    /// Whether the latest new connection took most of its budget, and has not yet fallen back.
    public var connectNearBudget: Bool { warned }

    public mutating func record(_ probe: ProbeResult) -> Notice? {
        // A wake's time is the cold start's, held to `wake_timeout`, not `connect_timeout`.
        guard probe.ok, !probe.underWakeBudget else { return nil }
        if let query = probe.phases.last(where: { $0.phase == .query })?.duration {
            lastAnswer = query
            recentQueries.append(query)
            if recentQueries.count > Self.window { recentQueries.removeFirst(recentQueries.count - Self.window) }
        }
        guard probe.connection == .fresh else { return nil }
        let connect = probe.phases.filter { $0.phase != .query }.reduce(Duration.zero) { $0 + $1.duration }
        lastConnect = connect
        let share = connect / budgets.connect
        if !warned, share >= Self.warnShare {
            warned = true
            return .connectNearBudget(took: connect, budget: budgets.connect)
        }
        if warned, share < Self.clearShare {
            warned = false
            return .connectWithinBudget(took: connect, budget: budgets.connect)
        }
        return nil
    }
}
