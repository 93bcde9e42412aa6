import Foundation
import Synchronization

/// Stamps events with their loop's scope and the run's usage so far, and hands them to the configured handler.
struct EventEmitter: Sendable {
    let handler: RLMEventHandler?
    let tracker: BudgetTracker?
    /// The loop the events belong to: `root`, or the `call_id` of the `rlm_query` that started it.
    var scope = RLMEvent.rootScope
    /// Numbers the run's sub-calls (`c1`, `c2`, …): one counter for the whole tree, so ids are unique in the run.
    var calls = CallCounter()

    func emit(_ kind: RLMEvent.Kind, depth: Int, iteration: Int = 0, data: [String: JSONValue] = [:]) async {
        guard let handler else { return }
        let usage = await tracker?.usage
        handler(RLMEvent(kind: kind, depth: depth, iteration: iteration, scope: scope, data: data, usage: usage))
    }

    /// The same sink for one run: its tracker and its sub-call numbering.
    func with(tracker: BudgetTracker, calls: CallCounter) -> EventEmitter {
        EventEmitter(handler: handler, tracker: tracker, scope: scope, calls: calls)
    }

    /// The same sink for a child loop started by the sub-call `callID`.
    func scoped(_ callID: String) -> EventEmitter {
        EventEmitter(handler: handler, tracker: tracker, scope: callID, calls: calls)
    }
}

/// Hands out the run's sub-call ids.
final class CallCounter: Sendable {
    private let next = Mutex(0)

    /// A fresh id: `c1`, `c2`, …
    func nextID() -> String {
        "c\(next.withLock { value in value += 1; return value })"
    }
}

/// Tokens and cost spent by one loop and everything it started (its sub-calls and child loops), for the `subcall`
/// event of the `rlm_query` that started it.
final class UsageMeter: Sendable {
    struct Spent: Sendable {
        var inputTokens = 0
        var outputTokens = 0
        /// `nil` once any call's cost was unknown.
        var costUSD: Double? = 0
    }

    private let spent = Mutex(Spent())

    func add(inputTokens: Int, outputTokens: Int, costUSD: Double?) {
        spent.withLock { value in
            value.inputTokens += inputTokens
            value.outputTokens += outputTokens
            value.costUSD = value.costUSD.flatMap { sum in costUSD.map { sum + $0 } }
        }
    }

    func add(_ other: Spent) {
        add(inputTokens: other.inputTokens, outputTokens: other.outputTokens, costUSD: other.costUSD)
    }

    var total: Spent { spent.withLock { $0 } }
}

/// Milliseconds since `start`, rounded to a tenth.
func milliseconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
    return (ms * 10).rounded() / 10
}
