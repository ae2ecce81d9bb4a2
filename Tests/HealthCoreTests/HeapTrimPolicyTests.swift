import HealthCore
import Testing

struct HeapTrimPolicyTests {
    @Test func aBurstThatEndsIsTrimmedOnce() {
        var policy = HeapTrimPolicy()
        for open in 1...200 { policy.admitted(open: open) }
        var scheduled = 0
        for open in stride(from: 199, through: 0, by: -1) where policy.released(open: open) { scheduled += 1 }
        #expect(scheduled == 1)
        let due = policy.due(open: 0)
        #expect(due)
        #expect(policy.peak == 0)
        // Nothing more until the next burst.
        let again = policy.released(open: 0)
        #expect(!again)
    }

    @Test func fewConnectionsNeverAskForATrim() {
        var policy = HeapTrimPolicy()
        var scheduled = 0
        for _ in 0..<1_000 {
            for open in 1..<HeapTrimPolicy.burst { policy.admitted(open: open) }
            for open in stride(from: HeapTrimPolicy.burst - 2, through: 0, by: -1) where policy.released(open: open) {
                scheduled += 1
            }
        }
        #expect(scheduled == 0)
    }

    @Test func aBurstThatComesBackBeforeTheTrimWaitsForItsEnd() {
        var policy = HeapTrimPolicy()
        for open in 1...100 { policy.admitted(open: open) }
        let first = policy.released(open: 25)
        #expect(first)
        for open in 26...300 { policy.admitted(open: open) }
        let dueDuringTheSecondBurst = policy.due(open: 300)
        #expect(!dueDuringTheSecondBurst)
        let second = policy.released(open: 75)
        #expect(second)
        let due = policy.due(open: 10)
        #expect(due)
        #expect(policy.peak == 10)
    }
}
