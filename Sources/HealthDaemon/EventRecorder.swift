import EventSpool
import FoundationEssentials
import HealthCore
import Logging
import NIOPosix
import AlertLog
import SystemdNotify

/// Makes every transition durable before anything else hears of it: the spool first (fsynced),
/// then the log, then the delivery service is woken.
///
/// If the spool cannot store (disk full, an I/O error), events are kept in memory in order, the
/// spool is reported degraded, and storing is retried before the next event; an event is never
/// called durable that is not. Used from the probe loop only, so events keep their order.
final class EventRecorder: Sendable {
    private let spool: EventSpool
    private let store: StatusStore
    private let logger: Logger
    private let origin: HealthEvent.Origin
    private let wakeup: WakeupSignal
    private let alertLog: AlertLog
    /// Events the spool could not take yet, oldest first.
    private let unspooled = MutexBox<[HealthEvent]>([])
    /// Events announced while they waited in memory: stored as announced when the spool takes
    /// them, so that their rows can go once delivered.
    private let announcedUnspooled = MutexBox<Set<UUID>>([])
    private let lastMemory = MutexBox<DaemonMemory?>(nil)

    init(
        spool: EventSpool, alertLog: AlertLog, store: StatusStore, logger: Logger, origin: HealthEvent.Origin,
        wakeup: WakeupSignal
    ) {
        self.spool = spool
        self.alertLog = alertLog
        self.store = store
        self.logger = logger
        self.origin = origin
        self.wakeup = wakeup
    }

    func event(for transition: Transition) -> HealthEvent {
        HealthEvent.transition(transition, origin: origin)
    }

    func flappingEvent(_ report: HealthEvent.FlapReport) -> HealthEvent {
        HealthEvent.flapping(report, id: UUID(), origin: origin)
    }

    func sleepEvent(_ change: SleepChange) -> HealthEvent {
        HealthEvent.sleep(change, id: UUID(), origin: origin)
    }

    /// Stores the event (after any held in memory) together with the state it led to, then
    /// tells operators: alert log, journal.
    ///
    /// Returns the events to `announce` (the event, and an overflow event if one was stored):
    /// the caller publishes the verdict first, so the status socket is not kept waiting on the
    /// alert log and the journal.
    func record(_ event: HealthEvent, memory: DaemonMemory) async -> [HealthEvent] {
        unspooled.withLock { $0.append(event) }
        let overflow = await flushToSpool(memory: memory)
        wakeup.signal()
        return [event] + overflow
    }

    /// Retries events held in memory, and reports drops once the spool has room again; cheap
    /// when there is neither.
    func retry(memory: DaemonMemory) async {
        guard hasEventsToRetry else { return }
        for overflow in await flushToSpool(memory: memory) { await announce(overflow) }
        wakeup.signal()
    }

    /// At shutdown: one last try to store what is held in memory; says what could not be.
    func finish(memory: DaemonMemory) async {
        guard unspooled.withLock({ !$0.isEmpty }) else { return }
        _ = await flushToSpool(memory: memory)
        let lost = unspooled.withLock { $0.count }
        if lost > 0 {
            logger.critical("stopping with events the spool could not store: they are lost", metadata: ["count": "\(lost)"])
        }
    }

    /// The alert log line and the journal entry of an event (file and socket I/O: off the
    /// cooperative pool).
    func announce(_ event: HealthEvent) async {
        FaultInjection.beforeAnnounce()
        let alertLog = alertLog
        let error = await runBlocking { alertLog.append(AlertLine.encode(event)) }
        FaultInjection.afterAlertLine()
        let previous = store.read().alertLogError
        store.update { $0.alertLogError = error }
        if let error, error != previous {
            logger.error("alert log unwritable; alerts still go to the journal and system_events", metadata: ["error": "\(error)"])
        }
        let priority: SystemdJournal.Priority = switch event.severity {
        case .critical: .critical
        case .warning: .warning
        case .info: .info
        }
        var fields: [(String, String)] = [
            ("DREAMNET_EVENT_ID", event.id.uuidString.lowercased()), ("DREAMNET_EVENT_TYPE", event.kind.rawValue),
            ("DREAMNET_SEVERITY", event.severity.rawValue), ("DREAMNET_PAYLOAD", event.payload),
        ]
        if let payload = try? JSONDecoder().decode([String: JSONScalar].self, from: Data(event.payload.utf8)) {
            for key in ["from", "to", "reason", "sqlstate", "phase"] {
                if case .string(let value)? = payload[key] { fields.append(("DREAMNET_" + key.uppercased(), value)) }
            }
        }
        let messageID = switch event.kind {
        case .transition: SystemdJournal.transitionMessageID
        case .asleep, .awake: SystemdJournal.sleepMessageID
        case .flapping, .spoolOverflow, .spoolDamaged: SystemdJournal.recordKeepingMessageID
        }
        let fieldList = fields
        unspooled.withLock { queue in
            if queue.contains(where: { $0.id == event.id }) { announcedUnspooled.withLock { _ = $0.insert(event.id) } }
        }
        await runBlocking {
            SystemdJournal.send(message: event.summary, priority: priority, messageID: messageID, fields: fieldList)
        }
        await markAnnounced(event.id)
    }

    private func markAnnounced(_ id: UUID) async {
        let spool = spool
        let marked = await runBlocking { Result { () throws(SpoolError) in try spool.markAnnounced(id) } }
        if case .failure(let error) = marked {
            // Harmless for now: the row stays, and a restart checks the alert log before
            // announcing it again.
            logger.warning("could not mark an event announced", metadata: ["error": "\(error)"])
        }
    }

    /// At start, before any new event: announces what a crash left unannounced, then records
    /// damage the spool found when it was opened.
    func recoverAtStart(memory: DaemonMemory) async {
        await announceLeftovers()
        if let recovery = spool.recovery {
            let report = HealthEvent.spoolDamaged(
                id: UUID(), salvaged: recovery.salvaged, damaged: recovery.damaged, movedAsideTo: recovery.movedAsideTo,
                at: Date(), origin: origin
            )
            for event in await record(report, memory: memory) { await announce(event) }
        }
    }

    /// Announces events a crash left stored but unannounced (the daemon died between the
    /// spool's commit and the alert log): each once, checking the end of the alert log (and of
    /// its newest rotated copy) for the ones whose line was written before the crash.
    private func announceLeftovers() async {
        let spool = spool
        let alertLog = alertLog
        let (leftovers, recent) = await runBlocking { ((try? spool.unannounced()) ?? [], alertLog.recentLines(bytes: 1 << 20)) }
        guard !leftovers.isEmpty else { return }
        let written = Set(recent.split(separator: "\n").compactMap { AlertLine.id(of: String($0)) })
        var announced = 0
        for spooled in leftovers {
            let id = spooled.event.id.uuidString.lowercased()
            if written.contains(id) {
                await markAnnounced(spooled.event.id)
            } else {
                await announce(spooled.event)
                announced += 1
            }
        }
        logger.notice("events stored before the last stop were announced now", metadata: [
            "stored": "\(leftovers.count)", "announced": "\(announced)",
        ])
    }

    /// Whether a probe that changed nothing still has work here: what `retry` and `remember`
    /// would do.
    func hasWork(memory: DaemonMemory) -> Bool {
        hasEventsToRetry || hasStateToSave(memory)
    }

    /// Events held in memory to store, or drops to report.
    private var hasEventsToRetry: Bool {
        unspooled.withLock({ !$0.isEmpty }) || store.read().spool.dropped > 0
    }

    /// The state changed since it was saved, and no event waits in memory.
    private func hasStateToSave(_ memory: DaemonMemory) -> Bool {
        unspooled.withLock({ $0.isEmpty }) && lastMemory.withLock({ $0 != memory })
    }

    /// Saves the verdict and counters when they changed. Not while events wait in memory: the
    /// state must never get ahead of the transitions that led to it.
    func remember(_ memory: DaemonMemory) async {
        guard hasStateToSave(memory) else { return }
        let spool = spool
        let result = await runBlocking { Result { () throws(SpoolError) in try spool.remember(memory) } }
        switch result {
        case .success: lastMemory.withLock { $0 = memory }
        case .failure(let error): logger.warning("could not save the state", metadata: ["error": "\(error)"])
        }
    }

    /// Returns overflow events it recorded. `memory` is saved with the newest event.
    private func flushToSpool(memory: DaemonMemory) async -> [HealthEvent] {
        let queued = unspooled.withLock { $0 }
        let announced = announcedUnspooled.withLock { $0 }
        let newest = queued.last?.id
        let spool = spool
        let origin = origin
        let (outcomes, overflow, failure): ([(UUID, EventDelivery)], HealthEvent?, SpoolError?) = await runBlocking {
            var outcomes: [(UUID, EventDelivery)] = []
            do {
                for event in queued {
                    switch try spool.append(
                        event, remembering: event.id == newest ? memory : nil, announced: announced.contains(event.id)
                    ) {
                    case .stored: outcomes.append((event.id, .pending))
                    case .dropped: outcomes.append((event.id, .dropped))
                    }
                }
                // Room again after drops: say how many were lost, durably.
                if let overflow = try spool.reportDrops({ drops in
                    HealthEvent.spoolOverflow(
                        id: UUID(), dropped: drops.count, firstDroppedAt: drops.first ?? Date(),
                        lastDroppedAt: drops.last ?? Date(), limit: spool.limit, at: Date(), origin: origin
                    )
                }) {
                    outcomes.append((overflow.id, .pending))
                    return (outcomes, overflow, nil)
                }
                return (outcomes, nil, nil)
            } catch let error as SpoolError {
                return (outcomes, nil, error)
            } catch {
                return (outcomes, nil, nil)
            }
        }
        let stored = Set(outcomes.map(\.0))
        let remaining = unspooled.withLock { queue -> Int in
            queue.removeAll { stored.contains($0.id) }
            announcedUnspooled.withLock { $0.subtract(stored) }
            return queue.count
        }
        let summary = await spoolSummary()
        if remaining == 0 && failure == nil { lastMemory.withLock { $0 = memory } }
        let transitions = Set(queued.filter { $0.kind == .transition }.map(\.id))
        store.update { snapshot in
            // Transitions only (what /events lists); and never a step back: the delivery
            // service may already have delivered one.
            for (id, delivery) in outcomes where transitions.contains(id) {
                if snapshot.deliveries[id] == nil || snapshot.deliveries[id] == .memory { snapshot.deliveries[id] = delivery }
            }
            for event in queued where !stored.contains(event.id) && transitions.contains(event.id) {
                snapshot.deliveries[event.id] = .memory
            }
            if let summary { snapshot.spool.apply(summary) }
            snapshot.spool.inMemory = remaining
            snapshot.spool.degradedReason = failure.map(\.description)
        }
        for (id, delivery) in outcomes where delivery == .dropped {
            logger.error("event spool is full: event dropped", metadata: ["event_id": "\(id.uuidString.lowercased())"])
        }
        if let failure {
            logger.error("event spool degraded: events held in memory only", metadata: [
                "error": "\(failure)", "in_memory": "\(remaining)",
            ])
        }
        return overflow.map { [$0] } ?? []
    }

    func spoolSummary() async -> EventSpool.Summary? {
        let spool = spool
        return await runBlocking { try? spool.summary() }
    }
}

/// Runs blocking work (disk I/O) on NIO's thread pool, never on the cooperative pool.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    // Not `runIfActive`: it refuses work for a cancelled task, and an event being made durable
    // at shutdown must still be written. The pool itself is never shut down.
    await withCheckedContinuation { continuation in
        NIOThreadPool.singleton.submit { _ in continuation.resume(returning: body()) }
    }
}

/// A JSON value of a payload's top level, read back for the journal's fields.
enum JSONScalar: Decodable {
    case string(String)
    case other

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = (try? container.decode(String.self)).map(JSONScalar.string) ?? .other
    }
}
