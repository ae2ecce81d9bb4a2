import EventSpool
import Foundation
import HealthCore
import Testing
import TestSupport

/// A spool file torn or damaged on disk: opening it never fails, no damaged event is ever
/// handed on as if it were good, and every event is either kept intact or counted as lost.
@Suite struct SpoolDamageTests {
    static let eventCount = 400

    /// A closed spool of `eventCount` events, the WAL checkpointed into the main file.
    static func pristineSpool() throws -> (directory: URL, events: [HealthEvent]) {
        let directory = try temporaryDirectory(prefix: "spool-pristine")
        let origin = HealthEvent.Origin(host: "test", pid: 1, version: "0")
        let events = (0..<eventCount).map { index in
            HealthEvent(
                id: UUID(), kind: .transition, severity: index % 2 == 0 ? .critical : .info,
                observedAt: Date(timeIntervalSince1970: 1_700_000_000 + Double(index)),
                payload: #"{"from":"healthy","to":"unhealthy","n":\#(index),"message":"connection refused, attempt \#(index)"}"#,
                origin: origin, summary: "event \(index) of the damage test, with some text to fill pages"
            )
        }
        do {
            let spool = try EventSpool(directory: directory.path, limit: 100_000)
            for event in events { _ = try spool.append(event) }
        }
        // The last connection closed: SQLite checkpointed the WAL into the file and removed it.
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/spool.sqlite3-wal"))
        return (directory, events)
    }

    enum Damage: CustomStringConvertible {
        case truncate(at: Int)
        case flip(offsets: [Int])

        var description: String {
            switch self {
            case .truncate(let offset): "truncated at \(offset)"
            case .flip(let offsets): "bytes flipped at \(offsets)"
            }
        }
    }

    /// Damage of every kind at offsets drawn from a fixed seed, so that a failure repeats.
    static func damages(fileSize: Int) -> [Damage] {
        var generator = SplitMix64(seed: 0x5eed_da4a)
        var damages: [Damage] = [.truncate(at: 0), .truncate(at: 50), .truncate(at: fileSize / 2), .truncate(at: fileSize - 1)]
        for _ in 0..<12 { damages.append(.truncate(at: Int.random(in: 100..<fileSize, using: &generator))) }
        for count in [1, 1, 1, 2, 4, 8, 16, 64] {
            damages.append(.flip(offsets: (0..<count).map { _ in Int.random(in: 100..<fileSize, using: &generator) }))
        }
        for _ in 0..<4 { damages.append(.flip(offsets: [Int.random(in: 0..<100, using: &generator)])) }
        return damages
    }

    @Test func everyEventIsKeptIntactOrCountedLost() throws {
        let (pristine, originals) = try Self.pristineSpool()
        defer { try? FileManager.default.removeItem(at: pristine) }
        let bytes = try Data(contentsOf: pristine.appendingPathComponent("spool.sqlite3"))
        let byID = Dictionary(uniqueKeysWithValues: originals.map { ($0.id, $0) })
        var totals = (kept: 0, lost: 0, unknown: 0, movedAside: 0, quarantined: 0)
        for damage in Self.damages(fileSize: bytes.count) {
            let directory = try temporaryDirectory(prefix: "spool-damaged")
            defer { try? FileManager.default.removeItem(at: directory) }
            var damaged = bytes
            switch damage {
            case .truncate(let offset): damaged = damaged.prefix(offset)
            case .flip(let offsets): for offset in offsets { damaged[offset] ^= 0xff }
            }
            try damaged.write(to: directory.appendingPathComponent("spool.sqlite3"))

            let spool = try EventSpool(directory: directory.path, limit: 100_000)
            let kept = try spool.pending(limit: 100_000).map(\.event)
            for event in kept {
                #expect(byID[event.id] == event, "\(damage): an event came back altered")
            }
            #expect(Set(kept.map(\.id)).count == kept.count, "\(damage): an event came back twice")
            #expect(kept.map(\.observedAt) == kept.map(\.observedAt).sorted(), "\(damage): order lost")
            if kept.count < originals.count {
                let recovery = try #require(spool.recovery, "\(damage): \(originals.count - kept.count) events lost silently")
                if let lost = recovery.damaged {
                    #expect(kept.count + lost >= originals.count, "\(damage): kept \(kept.count), reported \(lost) lost")
                    totals.lost += lost
                } else {
                    totals.unknown += 1
                }
                #expect(recovery.salvaged == kept.count || recovery.movedAsideTo == nil)
            }
            if let recovery = spool.recovery {
                if recovery.movedAsideTo == nil { totals.quarantined += 1 } else { totals.movedAside += 1 }
            }
            totals.kept += kept.count
            // The spool is usable afterwards.
            let next = HealthEvent(
                id: UUID(), kind: .transition, severity: .info, observedAt: Date(), payload: "{}",
                origin: .init(host: "test", pid: 1, version: "0"), summary: "after"
            )
            #expect(try spool.append(next) != .dropped)
        }
        // Not vacuous: both recovery paths ran, and most damage leaves most events readable.
        #expect(totals.movedAside > 0 && totals.quarantined > 0, "\(totals)")
        #expect(totals.kept > originals.count * Self.damages(fileSize: bytes.count).count / 3, "\(totals)")
        print("spool damage: \(totals)")
    }
}
