import Foundation
import Synchronization

/// At most `limit` runs at once across every caller; the next ones wait in order (never refused while the queue
/// has room), and a waiter that is cancelled leaves the queue.
final class RunGate: Sendable {
    private struct State {
        var running = 0
        var waiting = [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)]()
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())
    let limit: Int
    let queue: Int

    init(limit: Int, queue: Int) {
        self.limit = max(1, limit)
        self.queue = max(0, queue)
    }

    /// A turn to run; ``Turn/leave()`` gives it to the next waiter.
    final class Turn: Sendable {
        private let gate: RunGate
        private let left = Mutex(false)

        init(gate: RunGate) { self.gate = gate }

        func leave() {
            let first = left.withLock { left in
                defer { left = true }
                return !left
            }
            if first { gate.release() }
        }

        deinit { leave() }
    }

    /// Waits for a turn.
    /// - Throws: ``ServiceError`` 503 when the queue is full; `CancellationError` when cancelled while waiting.
    func enter() async throws -> Turn {
        enum Entry {
            case now
            case full
            case cancelled
            case wait(UInt64)
        }
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let entry = state.withLock { state -> Entry in
                    // Checked under the lock: a cancellation after this finds the waiter in the queue.
                    if Task.isCancelled { return .cancelled }
                    if state.running < limit {
                        state.running += 1
                        return .now
                    }
                    if state.waiting.count >= queue { return .full }
                    state.waiting.append((id, continuation))
                    return .wait(id)
                }
                switch entry {
                case .now: continuation.resume()
                case .full:
                    continuation.resume(
                        throwing: ServiceError.unavailable(
                            "the server is at capacity (\(limit) runs, \(queue) waiting); retry shortly",
                            retryAfter: 5))
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .wait: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiting.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
        return Turn(gate: self)
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if state.waiting.isEmpty {
                state.running -= 1
                return nil
            }
            return state.waiting.removeFirst().continuation  // the turn passes on: `running` stays
        }
        next?.resume()
    }

    /// Runs holding a turn now.
    var running: Int { state.withLock { $0.running } }
}
