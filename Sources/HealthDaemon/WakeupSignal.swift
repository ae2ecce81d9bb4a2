import Dispatch
import Synchronization

/// Wakes one waiting task: "there is something to do". Signals while nobody waits are kept (as
/// one), so none is lost; waiting costs nothing, no timer ticks.
final class WakeupSignal: Sendable {
    private struct Waiter {
        /// Tells a late timer from the wait it was set for.
        var token: UInt64
        var resume: @Sendable (Bool) -> Void
    }

    private struct State {
        var pending = false
        var waiter: Waiter?
        var nextToken: UInt64 = 0
    }

    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { state -> Waiter? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(true)
    }

    /// Takes a pending signal, if there is one, without waiting.
    @discardableResult
    func consume() -> Bool {
        state.withLock { state in
            defer { state.pending = false }
            return state.pending
        }
    }

    /// Returns when signalled, or when the calling task is cancelled.
    func wait() async {
        _ = await wait(timeout: nil)
    }

    /// Returns when signalled (`true`) or after `timeout` (`false`), whichever is first.
    ///
    /// One continuation, resumed by whichever comes first: a signal, a one-shot timer, or
    /// cancellation. The probe loop waits here every interval; child tasks racing a sleep
    /// would cost several task creations and a cancellation each time.
    @discardableResult
    func wait(timeout: Duration?) async -> Bool {
        let token = state.withLock { state -> UInt64 in
            defer { state.nextToken += 1 }
            return state.nextToken
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let resumeNow = state.withLock { state -> Bool? in
                    // Checked under the lock the cancellation handler also takes, so a cancel
                    // that came first is seen here, and one that comes later finds the waiter.
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    if Task.isCancelled { return false }
                    state.waiter = Waiter(token: token) { continuation.resume(returning: $0) }
                    return nil
                }
                if let resumeNow {
                    continuation.resume(returning: resumeNow)
                    return
                }
                guard let timeout else { return }
                let nanoseconds = max(0, timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) { [self] in
                    expire(token)
                }
            }
        } onCancel: {
            expire(token)
        }
    }

    /// Ends the wait of `token`, unsignalled, if it is still waiting.
    private func expire(_ token: UInt64) {
        let waiter = state.withLock { state -> Waiter? in
            guard let waiter = state.waiter, waiter.token == token else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(false)
    }
}
