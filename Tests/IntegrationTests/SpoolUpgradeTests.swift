import EventSpool
import Foundation
import HealthCore
import Testing
import TestSupport

/// A spool written by an earlier version (`Tests/Fixtures/spool-v2-grdb.sqlite3`: written by the
/// daemon while it still reached SQLite through GRDB, schema v2, closed by SIGTERM) opens
/// unchanged: no migration is run again, nothing is moved aside, every spooled event is kept.
@Suite struct SpoolUpgradeTests {
    static let fixture = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/spool-v2-grdb.sqlite3")

    /// The events in the fixture, oldest first: `seq`, id, kind.
    static let spooled: [(seq: Int64, id: String, kind: HealthEvent.Kind)] = [
        (1, "24cded64-21e0-4565-b7b2-8fdc3ebc9dea", .transition),
        (2, "2a31fe0c-ac21-44d3-9d66-8ead5f346d34", .transition),
        (3, "c44ac3b6-3980-4d7b-9988-a36edbce9a7c", .transition),
        (4, "a21a90e7-7ff2-4f84-ac7f-0dc90afed93b", .transition),
        (5, "c0ffe41d-6883-4854-9085-9d70fe21cc31", .transition),
    ]
    /// Events the full spool dropped while the fixture was written.
    static let dropped = 2

    /// A copy of a fixture in a directory of its own.
    static func copy(_ fixture: URL = fixture) throws -> URL {
        let directory = try temporaryDirectory(prefix: "spool-upgrade")
        try FileManager.default.copyItem(at: fixture, to: directory.appendingPathComponent(EventSpool.fileName))
        return directory
    }

    @Test func aSpoolOfTheEarlierVersionOpensWithEveryEvent() throws {
        let directory = try Self.copy()
        defer { try? FileManager.default.removeItem(at: directory) }
        let spool = try EventSpool(directory: directory.path, limit: 5)
        #expect(spool.recovery == nil)
        let pending = try spool.pending(limit: 100)
        #expect(pending.map(\.seq) == Self.spooled.map(\.seq))
        #expect(pending.map { $0.event.id.uuidString.lowercased() } == Self.spooled.map(\.id))
        #expect(pending.map(\.event.kind) == Self.spooled.map(\.kind))
        #expect(pending.allSatisfy { $0.attempts > 0 }, "every delivery attempt failed while it was written")
        #expect(try spool.unannounced().isEmpty)
        let summary = try spool.summary()
        #expect(summary.pending == Self.spooled.count)
        #expect(summary.dropped == Self.dropped)
        #expect(summary.oldestAt == pending.first?.event.observedAt)
        #expect(try spool.recall() != nil, "the saved state is read back")
        let moved = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains("corrupt") }
        #expect(moved.isEmpty)
    }

    @Test func aSpoolOfTheEarlierVersionTakesNewEventsAndKeepsThemAcrossARestart() throws {
        let directory = try Self.copy()
        defer { try? FileManager.default.removeItem(at: directory) }
        let next = HealthEvent(
            id: UUID(), kind: .transition, severity: .info, observedAt: Date(timeIntervalSince1970: 1_800_000_000), payload: #"{"from":"unhealthy","to":"healthy"}"#,
            origin: .init(host: "test", pid: 1, version: "0"), summary: "after the upgrade"
        )
        do {
            let spool = try EventSpool(directory: directory.path, limit: 100)
            // The drops recorded by the earlier version are reported once there is room.
            let overflow = try #require(try spool.reportDrops { drops in
                HealthEvent(
                    id: UUID(), kind: .spoolOverflow, severity: .warning, observedAt: drops.last ?? Date(),
                    payload: #"{"dropped":\#(drops.count)}"#, origin: .init(host: "test", pid: 1, version: "0"), summary: "dropped"
                )
            })
            #expect(overflow.payload.contains("\(Self.dropped)"))
            guard case .stored(let seq) = try spool.append(next) else {
                Issue.record("the new event was dropped")
                return
            }
            #expect(seq > Self.spooled.last?.seq ?? 0)
            try spool.markDelivered(throughSeq: Self.spooled[0].seq)
        }
        let reopened = try EventSpool(directory: directory.path, limit: 100)
        #expect(reopened.recovery == nil)
        let pending = try reopened.pending(limit: 100).map(\.event)
        // The first was delivered; the rest, the overflow report and the new event remain, in order.
        #expect(pending.prefix(Self.spooled.count - 1).map { $0.id.uuidString.lowercased() } == Self.spooled.dropFirst().map(\.id))
        #expect(pending.count == Self.spooled.count + 1)
        #expect(pending.dropLast().last?.kind == .spoolOverflow)
        #expect(pending.last == next)
        #expect(try reopened.summary().dropped == 0)
    }

    /// The same file with rows as schema v1 left them, and as `scripts/bench` adds them: no
    /// checksum, so each is checked field by field, its payload parsed. Those whose payload is
    /// not a JSON object are moved to `damaged_events`; the others are delivered as they are.
    @Test func rowsWithoutAChecksumAreCheckedFieldByField() throws {
        let fixture = Self.fixture.deletingLastPathComponent().appendingPathComponent("spool-v2-unchecked-rows.sqlite3")
        let directory = try Self.copy(fixture)
        defer { try? FileManager.default.removeItem(at: directory) }
        let spool = try EventSpool(directory: directory.path, limit: 100)
        let recovery = try #require(spool.recovery)
        #expect(recovery.movedAsideTo == nil)
        #expect(recovery.damaged == 4)
        let pending = try spool.pending(limit: 100)
        let good = ["6f1c2a9e-0b7d-4c55-9a3e-1d2b3c4d5e01", "6f1c2a9e-0b7d-4c55-9a3e-1d2b3c4d5e02", "6f1c2a9e-0b7d-4c55-9a3e-1d2b3c4d5e03"]
        #expect(pending.map { $0.event.id.uuidString.lowercased() } == Self.spooled.map(\.id) + good)
        #expect(pending.map(\.event.payload).suffix(3) == [
            #"{"from":"healthy","to":"unhealthy","reason":{"code":"57P01","detail":["a",1,-1.5e3,true,null]},"note":"caf\u00e9 \"quoted\""}"#,
            " { } ",
            #"{"nested":{"deeper":{"deepest":[[],[{}]]}},"n":0.25}"#,
        ])
        // Moved out at open, not left to be found again.
        let reopened = try EventSpool(directory: directory.path, limit: 100)
        #expect(reopened.recovery == nil)
        #expect(try reopened.pending(limit: 100).count == pending.count)
    }
}
