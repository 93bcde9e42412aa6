import Foundation

/// Stamps events with the run's usage so far and hands them to the configured handler.
struct EventEmitter: Sendable {
    let handler: RLMEventHandler?
    let tracker: BudgetTracker?

    func emit(_ kind: RLMEvent.Kind, depth: Int, iteration: Int = 0, data: [String: String] = [:]) async {
        guard let handler else { return }
        let usage = await tracker?.usage
        handler(RLMEvent(kind: kind, depth: depth, iteration: iteration, data: data, usage: usage))
    }

    func with(tracker: BudgetTracker) -> EventEmitter {
        EventEmitter(handler: handler, tracker: tracker)
    }
}
