import Foundation
import Synchronization

/// The Recursive Language Model engine: a root model answers a query over a context it never sees whole, by writing
/// Python in a sandboxed REPL where the context is the variable `context`.
///
/// ```swift
/// let engine = RLMEngine(configuration: RLMConfiguration(rootModel: model, sandbox: ProcessSandbox()))
/// let result = try await engine.run(query: "How many ERROR lines?", context: .text(log))
/// ```
/// Cancel a run by cancelling its task: the sandbox is killed and in-flight sub-calls are cancelled.
public struct RLMEngine: Sendable {
    /// The configuration every run uses.
    public let configuration: RLMConfiguration

    /// - Parameter configuration: models, sandbox, budgets.
    public init(configuration: RLMConfiguration) {
        self.configuration = configuration
    }

    /// Answers one query.
    /// - Parameters:
    ///   - query: the question.
    ///   - context: what the question is about; `nil` for none.
    /// - Returns: the answer, or the budget that ran out, with usage.
    /// - Throws: ``LLMError`` when the root model cannot be reached; `SandboxError` when no sandbox can start.
    public func run(query: String, context: ContextValue?) async throws -> RLMResult {
        try await run(query: query, source: context.map(ContextSource.init))
    }

    /// Answers one query over a context the sandbox builds from its sources (files streamed in, never held here).
    /// - Parameters:
    ///   - query: the question.
    ///   - source: what the question is about; `nil` for none.
    /// - Returns: the answer, or the budget that ran out, with usage.
    /// - Throws: ``ContextLoadError`` when the context cannot be built; otherwise as ``run(query:context:)``.
    public func run(query: String, source context: ContextSource?) async throws -> RLMResult {
        let loop = RLMLoop(
            configuration: configuration, context: context, depth: 0,
            events: EventEmitter(handler: configuration.onEvent, tracker: nil))
        do {
            let result = try await Self.drive(loop: loop, query: query, configuration: configuration)
            await loop.close()
            return result
        } catch {
            await loop.close()
            throw error
        }
    }

    /// Answers one query and streams its events; the last element is `.runFinished` carrying the answer.
    /// Terminating the stream (breaking out of the loop) cancels the run.
    /// - Parameters:
    ///   - query: the question.
    ///   - context: what the question is about.
    public func events(query: String, context: ContextValue?) -> AsyncThrowingStream<RLMEvent, any Error> {
        AsyncThrowingStream { continuation in
            var configuration = configuration
            let previous = configuration.onEvent
            configuration.onEvent = { event in
                previous?(event)
                continuation.yield(event)
            }
            let engine = RLMEngine(configuration: configuration)
            let task = Task {
                do {
                    _ = try await engine.run(query: query, context: context)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Runs a loop under the budget: whichever comes first, the loop's answer or a spent budget, ends the run; a spent
    /// budget cancels the loop (killing its sandboxes and in-flight sub-calls) and reports usage so far.
    static func drive(loop: RLMLoop, query: String, configuration: RLMConfiguration) async throws -> RLMResult {
        let tracker = BudgetTracker(budget: configuration.budget)
        let events = EventEmitter(handler: configuration.onEvent, tracker: tracker)
        let clock = ContinuousClock()
        let start = clock.now
        let iterations = IterationCounter()
        await events.emit(.runStarted, depth: 0, data: ["query": cut(query), "model": configuration.rootModel.name])

        enum Race: Sendable {
            case loop(RLMLoop.Outcome)
            case budget(BudgetExhausted?)
        }
        let race: Race = try await withThrowingTaskGroup(of: Race.self) { group in
            group.addTask {
                .loop(try await loop.answer(query: query, tracker: tracker) { iterations.set($0) })
            }
            group.addTask {
                .budget(await tracker.exhaustion())
            }
            if let wall = configuration.budget.maxWallTime {
                group.addTask {
                    try await Task.sleep(for: wall)
                    await tracker.trip(.wallTime, "the run's wall-time budget (\(formatDuration(wall))) is spent")
                    return .budget(await tracker.exhaustion())
                }
            }
            defer { group.cancelAll() }
            while true {
                do {
                    guard let first = try await group.next() else { throw CancellationError() }
                    await tracker.finish()
                    return first
                } catch let exhausted as BudgetExhausted {
                    await tracker.finish()
                    return .budget(exhausted)
                } catch {
                    // The loop failed because the budget cancelled it: report the budget, not the cancellation.
                    if let exhausted = await tracker.exhausted {
                        await tracker.finish()
                        return .budget(exhausted)
                    }
                    await tracker.finish()
                    throw error
                }
            }
        }
        let usage = await tracker.usage
        let duration = clock.now - start
        var result: RLMResult
        switch race {
        case .loop(.answered(let answer)):
            result = RLMResult(
                answer: answer, status: .answered, iterations: iterations.value, usage: usage, duration: duration)
        case .loop(.noAnswer):
            let reason = BudgetExhausted(
                limit: .iterations,
                message: "all \(configuration.budget.maxIterations) iterations were used without a final answer")
            result = RLMResult(
                answer: nil, status: .budgetExhausted(reason), iterations: iterations.value, usage: usage,
                duration: duration)
        case .budget(let reason):
            let reason = reason ?? BudgetExhausted(limit: .iterations, message: "the run was stopped")
            result = RLMResult(
                answer: nil, status: .budgetExhausted(reason), iterations: iterations.value, usage: usage,
                duration: duration)
        }
        switch result.status {
        case .answered:
            await events.emit(
                .runFinished, depth: 0, iteration: result.iterations,
                data: ["status": "answered", "answer": cut(result.answer ?? "")])
        case .budgetExhausted(let reason):
            await events.emit(
                .budgetExhausted, depth: 0, iteration: result.iterations,
                data: ["limit": reason.limit.rawValue, "message": reason.message])
            await events.emit(
                .runFinished, depth: 0, iteration: result.iterations,
                data: ["status": "budget_exhausted", "limit": reason.limit.rawValue])
        }
        return result
    }
}

/// A conversation with follow-ups: each ``ask(_:)`` reuses the REPL state (variables, the loaded context) and the
/// message history of the earlier questions.
public actor RLMSession {
    private let configuration: RLMConfiguration
    private let loop: RLMLoop

    /// - Parameters:
    ///   - configuration: models, sandbox, budgets (each question gets the full budget).
    ///   - context: what the questions are about.
    public init(configuration: RLMConfiguration, context: ContextValue?) {
        self.init(configuration: configuration, source: context.map(ContextSource.init))
    }

    /// - Parameters:
    ///   - configuration: models, sandbox, budgets (each question gets the full budget).
    ///   - source: what the questions are about, built inside the sandbox from its files.
    public init(configuration: RLMConfiguration, source context: ContextSource?) {
        self.configuration = configuration
        self.loop = RLMLoop(
            configuration: configuration, context: context, depth: 0,
            events: EventEmitter(handler: configuration.onEvent, tracker: nil))
    }

    /// Asks a question; follow-ups see the answers and variables of earlier ones.
    /// - Parameter query: the question.
    public func ask(_ query: String) async throws -> RLMResult {
        try await RLMEngine.drive(loop: loop, query: query, configuration: configuration)
    }

    /// Kills the session's sandbox.
    public func close() async {
        await loop.close()
    }
}

/// The latest iteration number, readable after the loop task was cancelled.
final class IterationCounter: Sendable {
    private let storage = Mutex(0)
    func set(_ value: Int) { storage.withLock { $0 = value } }
    var value: Int { storage.withLock { $0 } }
}
