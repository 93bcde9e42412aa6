import Foundation
import Synchronization
import Testing

@testable import RLMService

/// The server-wide gate: at most `limit` runs at once, the next ones wait their turn in order, a full queue is 503,
/// and a waiter that is cancelled leaves the queue without ever taking a turn.
@Suite("Run gate")
struct RunGateTests {
    /// The order in which waiters got their turns.
    final class Order: Sendable {
        private let names = Mutex<[String]>([])
        func append(_ name: String) { names.withLock { $0.append(name) } }
        var all: [String] { names.withLock { $0 } }
    }

    /// Starts a task that waits for a turn, records it, and holds it until `release` is signalled; returns once the
    /// task is about to enter (there is no suspension point between that and joining the queue), plus a short pause.
    private func waiter(
        _ name: String, gate: RunGate, order: Order, release: AsyncStream<Void>
    ) async -> Task<Void, any Error> {
        let (started, signal) = AsyncStream<Void>.makeStream()
        let task = Task {
            signal.yield()
            let turn = try await gate.enter()
            order.append(name)
            for await _ in release { break }
            turn.leave()
        }
        for await _ in started { break }
        try? await Task.sleep(for: .milliseconds(30))
        return task
    }

    @Test func atMostLimitRunAtOnceAndTheRestWaitInOrder() async throws {
        let gate = RunGate(limit: 2, queue: 2)
        let first = try await gate.enter()
        let second = try await gate.enter()
        #expect(gate.running == 2)
        let order = Order()
        let (releaseA, letAGo) = AsyncStream<Void>.makeStream()
        let (releaseB, letBGo) = AsyncStream<Void>.makeStream()
        let a = await waiter("a", gate: gate, order: order, release: releaseA)
        let b = await waiter("b", gate: gate, order: order, release: releaseB)
        #expect(order.all.isEmpty)  // both wait: the limit is 2
        #expect(gate.running == 2)

        // The queue holds 2: a third waiter is refused at once.
        let full = await serviceError { try await withTimeout(.seconds(5)) { try await gate.enter() } }
        #expect(full?.status == 503)
        #expect(full?.code == "unavailable")
        #expect(full?.retryAfter != nil)

        first.leave()
        #expect(await eventually { order.all == ["a"] })
        #expect(gate.running == 2)  // the turn passed on
        second.leave()
        second.leave()  // leaving twice gives away one turn only
        #expect(await eventually { order.all == ["a", "b"] })
        letAGo.yield()
        letBGo.yield()
        try await withTimeout(.seconds(5)) {
            try await a.value
            try await b.value
        }
        #expect(gate.running == 0)
        // With the gate empty, a new run enters at once.
        let again = try await withTimeout(.seconds(5)) { try await gate.enter() }
        #expect(gate.running == 1)
        again.leave()
        #expect(gate.running == 0)
    }

    @Test func aCancelledWaiterLeavesTheQueueAndNeverTakesATurn() async throws {
        let gate = RunGate(limit: 1, queue: 2)
        let holder = try await gate.enter()
        let order = Order()
        let (neverReleased, _) = AsyncStream<Void>.makeStream()
        let (releaseNext, letNextGo) = AsyncStream<Void>.makeStream()
        let (releaseLate, letLateGo) = AsyncStream<Void>.makeStream()
        let cancelled = await waiter("cancelled", gate: gate, order: order, release: neverReleased)
        let next = await waiter("next", gate: gate, order: order, release: releaseNext)

        cancelled.cancel()
        let result = try await withTimeout(.seconds(5)) { await cancelled.result }
        #expect(throws: CancellationError.self) { try result.get() }

        // Its place is free again: one more waiter fits in the queue of 2 (a full queue would be refused at once).
        let late = await waiter("late", gate: gate, order: order, release: releaseLate)

        holder.leave()
        #expect(await eventually { order.all == ["next"] })
        letNextGo.yield()
        #expect(await eventually { order.all == ["next", "late"] })
        letLateGo.yield()
        try await withTimeout(.seconds(5)) {
            try await next.value
            try await late.value
        }
        #expect(order.all == ["next", "late"])
        #expect(gate.running == 0)
    }

    @Test func aTaskCancelledBeforeItAsksNeverEnters() async throws {
        let gate = RunGate(limit: 1, queue: 4)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await gate.enter()
        }
        let result = await task.result
        #expect(throws: CancellationError.self) { _ = try result.get() }
        #expect(gate.running == 0)
    }

    @Test func aQueueOfZeroRefusesWhenBusy() async throws {
        let gate = RunGate(limit: 1, queue: 0)
        let turn = try await gate.enter()
        #expect(await serviceError { try await gate.enter() }?.status == 503)
        turn.leave()
        let again = try await gate.enter()
        again.leave()
        #expect(gate.running == 0)
    }
}
