import CSystemd
import Glibc

/// Tells systemd what the daemon is doing (`sd_notify`). Outside systemd (`NOTIFY_SOCKET`
/// unset) every call is a no-op; a failure to notify is not a reason to stop monitoring, so
/// results are ignored.
public struct SystemdNotifier: Sendable {
    /// How often to send WATCHDOG=1, when systemd asked for it (`WatchdogSec=`; honours
    /// `WATCHDOG_PID`): a third of `WATCHDOG_USEC`, well inside the half systemd recommends.
    public let watchdogPeriod: Duration?
    /// `NOTIFY_SOCKET` was set at start: outside systemd, messages are not even formatted.
    public let isConnected: Bool

    public init() {
        isConnected = getenv("NOTIFY_SOCKET") != nil
        var microseconds: UInt64 = 0
        if sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 {
            watchdogPeriod = .microseconds(Int64(microseconds / 3))
        } else {
            watchdogPeriod = nil
        }
    }

    /// "Still alive": only the probe loop sends it, so a stalled loop gets the service restarted.
    public func watchdog() {
        guard watchdogPeriod != nil else { return }
        send("WATCHDOG=1")
    }

    public func ready(status: String) {
        send("READY=1\nSTATUS=\(Self.oneLine(status))")
    }

    public func status(_ text: String) {
        guard isConnected else { return }
        send("STATUS=\(Self.oneLine(text))")
    }

    /// RELOADING=1 with the monotonic time systemd uses to match it to the reload it asked for.
    public func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let microseconds = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000
        send("RELOADING=1\nMONOTONIC_USEC=\(microseconds)\nSTATUS=reloading the configuration")
    }

    public func stopping() {
        send("STOPPING=1\nSTATUS=stopping")
    }

    /// `sd_notifyf` is variadic and cannot be called from Swift: strings are formatted here.
    private func send(_ message: String) {
        _ = sd_notify(0, message)
    }

    /// A newline would start a new assignment: keep STATUS on one line.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
