import Foundation
import RLM
import Synchronization

/// The live sandboxes of this process, counted across every ``ProcessSandbox``, so that no number of runs, threads
/// or recursion levels can start more than ``ProcessSandbox/Configuration/maxLiveSessionsPerProcess`` at once.
///
/// A slot is taken before a sandbox is spawned and given back only after its processes are reaped and its cgroups
/// removed, so the count is what the kernel sees. Waiters are served in arrival order (a session asking with a lower
/// limit waits until the count is below *its* limit).
final class SessionSlots: Sendable {
    static let shared = SessionSlots()

    private struct Waiter {
        let id: UInt64
        let limit: Int
        let continuation: CheckedContinuation<Void, any Error>
        let timer: Task<Void, Never>?
    }

    private struct State {
        var live = 0
        var nextID: UInt64 = 0
        var waiters: [Waiter] = []
    }

    private let state = Mutex(State())

    /// Slots held right now (for tests and `rlm doctor`).
    var live: Int { state.withLock { $0.live } }

    /// Takes a slot, waiting up to `wait` while `limit` are held.
    /// - Throws: ``SandboxError`` naming the limit when none frees up in time; `CancellationError` when cancelled.
    func acquire(limit: Int, wait: Duration) async throws -> SessionSlot {
        let limit = max(1, limit)
        let id: UInt64? = state.withLock { state in
            if state.live < limit && state.waiters.isEmpty {
                state.live += 1
                return nil
            }
            state.nextID += 1
            return state.nextID
        }
        guard let id else { return SessionSlot(owner: self) }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Armed before the waiter is visible, so expiry can never miss it; cancelled when it is served.
                let timer = Task { [weak self] in
                    try? await Task.sleep(for: wait)
                    guard !Task.isCancelled else { return }
                    self?.finish(
                        id,
                        throwing: SandboxError.startFailed(
                            "\(limit) sandboxes are already running in this process, the per-process limit "
                                + "(ProcessSandbox.Configuration.maxLiveSessionsPerProcess = \(limit)), and none ended "
                                + "within \(wait.inSeconds) s (sessionSlotWait); let earlier runs finish, run fewer at "
                                + "once, or raise the limit"))
                }
                let cancelled = state.withLock { state in
                    if Task.isCancelled { return true }
                    state.waiters.append(Waiter(id: id, limit: limit, continuation: continuation, timer: timer))
                    return false
                }
                if cancelled {
                    timer.cancel()
                    continuation.resume(throwing: CancellationError())
                    return
                }
                // A slot may have been released between the first check and the append.
                grant()
            }
        } onCancel: {
            finish(id, throwing: CancellationError())
        }
        return SessionSlot(owner: self)
    }

    /// Gives a slot back and serves the waiters that now fit.
    fileprivate func release() {
        state.withLock { $0.live -= 1 }
        grant()
    }

    private func grant() {
        let served: [Waiter] = state.withLock { state in
            var served = [Waiter]()
            var index = 0
            while index < state.waiters.count {
                if state.live < state.waiters[index].limit {
                    state.live += 1
                    served.append(state.waiters.remove(at: index))
                } else {
                    index += 1
                }
            }
            return served
        }
        for waiter in served {
            waiter.timer?.cancel()
            waiter.continuation.resume()
        }
    }

    /// Ends a wait that has not been served (timed out or cancelled); a served one is left alone.
    private func finish(_ id: UInt64, throwing error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        guard let waiter else { return }
        waiter.timer?.cancel()
        waiter.continuation.resume(throwing: error)
    }
}

/// One held slot; released exactly once, at the latest when it is freed (a session that was never shut down).
final class SessionSlot: Sendable {
    private let owner: SessionSlots
    private let released = Atomic<Bool>(false)

    fileprivate init(owner: SessionSlots) {
        self.owner = owner
    }

    func release() {
        if !released.exchange(true, ordering: .acquiringAndReleasing) { owner.release() }
    }

    deinit { release() }
}
