import Synchronization

/// Limits how many requests run at once through one HTTP client to one host, so that none waits in the client's own
/// queue: there, waiting for a connection looks exactly like a slow connect, and the connect timeout would fire on
/// requests that are merely queued behind long generations. Requests wait here instead, where the wait is visible,
/// cancellable and bounded by the call's total timeout.
final class ConnectionGate: Sendable {
    /// One gate per client and host, process-wide; the first limit given for a key wins.
    private static let gates = Mutex<[String: ConnectionGate]>([:])

    static func gate(for key: String, limit: Int) -> ConnectionGate {
        gates.withLock { gates in
            if let gate = gates[key] { return gate }
            let gate = ConnectionGate(limit: max(1, limit))
            gates[key] = gate
            return gate
        }
    }

    private struct State {
        var available: Int
        var nextID: UInt64 = 0
        /// Acquisitions that started but neither wait nor hold a permit yet.
        var starting: Set<UInt64> = []
        /// Acquisitions cancelled while starting.
        var cancelled: Set<UInt64> = []
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    private let state: Mutex<State>

    init(limit: Int) {
        state = Mutex(State(available: limit))
    }

    private enum Decision {
        case granted, cancelled, waiting
    }

    /// Takes a permit, waiting for one if none is free.
    /// - Throws: `CancellationError` when the task is cancelled while waiting.
    func acquire() async throws {
        let id = state.withLock { state in
            state.nextID += 1
            state.starting.insert(state.nextID)
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let decision: Decision = state.withLock { state in
                    state.starting.remove(id)
                    if state.cancelled.remove(id) != nil { return .cancelled }
                    if state.available > 0 {
                        state.available -= 1
                        return .granted
                    }
                    state.waiters.append((id, continuation))
                    return .waiting
                }
                switch decision {
                case .granted: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            let waiter: CheckedContinuation<Void, any Error>? = state.withLock { state in
                if let index = state.waiters.firstIndex(where: { $0.id == id }) {
                    return state.waiters.remove(at: index).continuation
                }
                if state.starting.remove(id) != nil { state.cancelled.insert(id) }
                return nil
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Takes a permit, waiting at most until `deadline`.
    /// - Returns: whether a permit was taken (`false`: the deadline passed first).
    /// - Throws: `CancellationError` when the task is cancelled while waiting.
    func acquire(until deadline: ContinuousClock.Instant) async throws -> Bool {
        enum Outcome: Sendable {
            case acquired, failed(any Error), expired
        }
        let (acquired, failure) = await withTaskGroup(of: Outcome.self) { group in
            group.addTask {
                do {
                    try await self.acquire()
                    return .acquired
                } catch {
                    return .failed(error)
                }
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return .expired
            }
            let first = await group.next() ?? .expired
            group.cancelAll()
            var acquired = false
            var failure: (any Error)?
            switch first {
            case .acquired: acquired = true
            case .failed(let error): failure = error
            case .expired: break
            }
            while let next = await group.next() {
                // The permit may have been granted just as the deadline passed: then it is ours to give back.
                if case .acquired = next {
                    if case .expired = first { release() } else { acquired = true }
                }
            }
            return (acquired, failure)
        }
        if let failure { throw failure }
        if Task.isCancelled {
            if acquired { release() }
            throw CancellationError()
        }
        // A permit that came too late (the waiting task was not scheduled in time) is no use.
        if acquired, ContinuousClock.now >= deadline {
            release()
            return false
        }
        return acquired
    }

    /// Returns a permit.
    func release() {
        let waiter: CheckedContinuation<Void, any Error>? = state.withLock { state in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        waiter?.resume()
    }
}
