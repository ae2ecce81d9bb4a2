import Glibc

/// Faults the test suite injects into a real daemon where no outside action can reach: a crash
/// at an exact point. Read from `DREAMNET_HEALTHD_FAULT`; debug builds only: release binaries
/// carry none of this.
enum FaultInjection {
    /// `exit-after-commit`: die right after the database committed a batch and before the
    /// spool forgets it, as a kill -9 there would.
    static func afterCommit() {
        exit(ifFault: "exit-after-commit", status: 86)
    }

    /// `exit-before-announce`: die after an event is stored, before its alert-log line.
    static func beforeAnnounce() {
        exit(ifFault: "exit-before-announce", status: 87)
    }

    /// `exit-after-alert-line`: die after the alert-log line, before the spool knows it was
    /// written.
    static func afterAlertLine() {
        exit(ifFault: "exit-after-alert-line", status: 88)
    }

    /// `stall-probe-loop-after=N`: after N probes the probe loop blocks for good, as a deadlock
    /// would; the watchdog pings stop with it.
    static func stallProbeLoop(after probes: Int) {
        #if DEBUG
        guard let value = fault, value.hasPrefix("stall-probe-loop-after="),
              let limit = Int(value.dropFirst("stall-probe-loop-after=".count)), probes >= limit
        else { return }
        while true { sleep(3_600) }
        #endif
    }

    private static func exit(ifFault name: String, status: Int32) {
        #if DEBUG
        if fault == name { _exit(status) }
        #endif
    }

    private static var fault: String? {
        getenv("DREAMNET_HEALTHD_FAULT").map { String(cString: $0) }
    }
}
