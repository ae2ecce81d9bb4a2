import EventSpool
import FoundationEssentials
import Glibc
import HealthCore
import Logging
import PostgresProbe
import ServiceLifecycle

/// Whether rows may be written to the events database now. Shut while a database that sleeps
/// when unused (`scale_to_zero`) is asleep or would be kept up by the write: the events wait,
/// durable, in the spool, and go the next time it is awake (`ProbeLoop.mayWriteToDatabase`).
/// Open otherwise.
final class DeliveryGate: Sendable {
    private let open = MutexBox(true)
    private let wakeup: WakeupSignal

    init(wakeup: WakeupSignal) {
        self.wakeup = wakeup
    }

    var isOpen: Bool { open.withLock { $0 } }

    /// Opening it wakes the delivery.
    func set(open isOpen: Bool) {
        let opened = open.withLock { state -> Bool in
            defer { state = isOpen }
            return isOpen && !state
        }
        if opened { wakeup.signal() }
    }
}

/// Replays the spool into `system_events`, oldest first, in batches, and removes events only
/// after the database has committed them. Sleeps until there is something to deliver; after a
/// failure it retries with a jittered backoff (1 s doubling to 10 s, each wait a random 50–100 %
/// of it), or at once when woken (a new event,
/// the database back).
final class EventDeliveryService: Service {
    static let batchSize = 1_000

    private let spool: EventSpool
    /// Replaced by a reload that changes the events database.
    private let writerBox: MutexBox<EventTableWriter?>
    private let store: StatusStore
    private let logger: Logger
    private let wakeup: WakeupSignal
    private let gate: DeliveryGate

    init(
        spool: EventSpool, writer: EventTableWriter?, store: StatusStore, logger: Logger, wakeup: WakeupSignal,
        gate: DeliveryGate
    ) {
        self.spool = spool
        self.writerBox = MutexBox(writer)
        self.store = store
        self.logger = logger
        self.wakeup = wakeup
        self.gate = gate
    }

    /// After a reload: the next delivery uses the new events database.
    func setWriter(_ writer: EventTableWriter?) {
        writerBox.withLock { $0 = writer }
        wakeup.signal()
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            var backoff: Duration = .seconds(1)
            var lastError: String?
            var warnedUnconfigured = false
            while !Task.isCancelled {
                guard let writer = writerBox.withLock({ $0 }) else {
                    if !warnedUnconfigured {
                        logger.warning("no events database configured: events stay in the spool")
                        warnedUnconfigured = true
                    }
                    await wakeup.wait()
                    continue
                }
                warnedUnconfigured = false
                // Opening the gate signals.
                guard gate.isOpen else {
                    await wakeup.wait()
                    continue
                }
                switch await drain(writer) {
                case .success:
                    if lastError != nil { logger.notice("events delivered to system_events again") }
                    lastError = nil
                    backoff = .seconds(1)
                    await wakeup.wait()
                case .failure(let failure):
                    // Log a failure when it changes, not at every retry.
                    if failure.kind != lastError {
                        logger.error("cannot deliver events to system_events; they stay spooled", metadata: [
                            "error": "\(failure)",
                        ])
                        lastError = failure.kind
                    }
                    // Jittered: daemons that lost the same database retry spread out, not together.
                    await wakeup.wait(timeout: backoff.jittered(from: 0.5))
                    backoff = min(backoff * 2, .seconds(10))
                }
            }
        }
        // Shutting down (after the probe loop, which stored its last events): one more
        // delivery if the database answers within a short budget; what is left stays spooled.
        guard let writer = writerBox.withLock({ $0 }), gate.isOpen else { return }
        let budget = Self.shutdownFlushBudget
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in _ = await drain(writer) }
            group.addTask { try? await Task.sleep(for: budget) }
            await group.next()
            group.cancelAll()
        }
    }

    /// How long shutdown waits for a last delivery.
    static let shutdownFlushBudget = Duration.seconds(2)

    private enum DrainError: Error, CustomStringConvertible {
        case spool(SpoolError)
        case database(EventTableWriter.Failure)

        var description: String {
            switch self {
            case .spool(let error): return error.description
            case .database(let error): return error.description
            }
        }

        /// What a failure is, without figures that change from one attempt to the next.
        var kind: String {
            switch self {
            case .spool(let error): return error.description
            case .database(let error): return error.kind
            }
        }
    }

    /// Delivers everything pending; stops at the first failure.
    private func drain(_ writer: EventTableWriter) async -> Result<Void, DrainError> {
        let spool = spool
        while !Task.isCancelled {
            let batch: [SpooledEvent]
            switch await runBlocking({ Result { () throws(SpoolError) in try spool.pending(limit: Self.batchSize) } }) {
            case .success(let events): batch = events
            case .failure(let error): return .failure(.spool(error))
            }
            guard !batch.isEmpty else { return .success(()) }

            let rows = batch.map { EventRow($0.event, delivery: $0.attempts == 0 ? .direct : .spooled, seq: $0.seq) }
            let seqs = batch.map(\.seq)
            if let failure = await writer.insert(rows) {
                // Shutdown abandoned the attempt: the database was not asked, nothing failed.
                guard !failure.isCancellation else { return .success(()) }
                if case .failure(let error) = await runBlocking({ Result { () throws(SpoolError) in try spool.recordFailedAttempt() } }) {
                    logger.warning("could not count a failed delivery", metadata: ["error": "\(error)"])
                }
                store.update { $0.spool.lastDeliveryError = failure.description }
                return .failure(.database(failure))
            }
            FaultInjection.afterCommit()
            let last = seqs.last ?? 0
            if case .failure(let error) = await runBlocking({ Result { () throws(SpoolError) in try spool.markDelivered(throughSeq: last) } }) {
                // Committed but still spooled: the replay inserts nothing twice (ON CONFLICT).
                return .failure(.spool(error))
            }
            let summary = await runBlocking { try? spool.summary() }
            store.update { snapshot in
                // Only the transitions /events still lists are tracked.
                for event in batch where snapshot.deliveries[event.event.id] != nil {
                    snapshot.deliveries[event.event.id] = event.attempts == 0 ? .direct : .spooled
                }
                snapshot.spool.lastDeliveryError = nil
                if let summary { snapshot.spool.apply(summary) }
            }
            logger.debug("events delivered", metadata: ["count": "\(batch.count)"])
        }
        return .success(())
    }
}
