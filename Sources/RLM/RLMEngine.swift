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
        let calls = CallCounter()
        let events = EventEmitter(handler: configuration.onEvent, tracker: tracker)
        let clock = ContinuousClock()
        let start = clock.now
        let iterations = IterationCounter()
        await events.emit(.runStarted, depth: 0, data: runStarted(query: query, configuration: configuration))
        do {
            let (result, noAnswer) = try await race(
                loop: loop, query: query, configuration: configuration, tracker: tracker, calls: calls,
                iterations: iterations, start: start)
            await finished(result, noAnswer: noAnswer, events: events)
            return result
        } catch {
            // A cancelled run (a signal, a closed stream) is ended by whoever cancelled it: it knows why.
            if !(error is CancellationError) && !Task.isCancelled {
                let message = String(describing: error)
                await events.emit(.error, depth: 0, iteration: iterations.value, data: ["message": .string(message)])
                await events.emit(
                    .runFinished, depth: 0, iteration: iterations.value,
                    data: [
                        "status": "error", "answer": nil, "reason": .string(message), "signal": nil,
                        "iterations": .int(iterations.value),
                        "duration_ms": JSONValue(milliseconds(since: start).rounded()),
                    ])
            }
            throw error
        }
    }

    /// The `run_started` record: the query, the models, the budget and the settings (never a key).
    static func runStarted(query: String, configuration: RLMConfiguration) -> [String: JSONValue] {
        let budget = configuration.budget
        func seconds(_ duration: Duration?) -> JSONValue {
            duration.map { JSONValue(Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18) }
                ?? .null
        }
        return [
            "query": .string(query), "model": .string(configuration.rootModel.name),
            "sub_model": .string(configuration.subcallModel.name),
            "budget": [
                "max_iterations": .int(budget.maxIterations), "max_depth": .int(budget.maxDepth),
                "max_tokens": JSONValue(budget.maxTokens), "max_input_tokens": JSONValue(budget.maxInputTokens),
                "max_output_tokens": JSONValue(budget.maxOutputTokens), "max_cost_usd": JSONValue(budget.maxCostUSD),
                "max_wall_seconds": seconds(budget.maxWallTime), "max_subcalls": JSONValue(budget.maxSubcalls),
                "max_consecutive_errors": JSONValue(budget.maxConsecutiveErrors),
                "max_live_sandboxes": .int(budget.maxLiveSandboxes),
            ],
            "configuration": [
                "sandbox": .string(String(describing: type(of: configuration.sandbox))),
                "callable_models": .array(configuration.callableModels.keys.sorted().map(JSONValue.string)),
                "batch_concurrency": .int(configuration.batchConcurrency),
                "cell_timeout_seconds": seconds(configuration.cellTimeout),
                "output_chars_per_cell": .int(configuration.outputCharsPerCell),
                "context_sample_chars": .int(configuration.contextSampleChars),
                "max_output_tokens": JSONValue(configuration.maxOutputTokens),
                "temperature": JSONValue(configuration.temperature),
                "history_window_tokens": JSONValue(configuration.historyWindowTokens),
                "confirm_answers_written_with_code": .bool(configuration.confirmAnswersWrittenWithCode),
                "accept_bare_last_answer": .bool(configuration.acceptBareLastAnswer),
            ],
        ]
    }

    /// The last events of a run that ended: `final_answer` was emitted by the loop; a spent budget is recorded,
    /// then `run_finished`.
    private static func finished(_ result: RLMResult, noAnswer: Bool, events: EventEmitter) async {
        let duration = JSONValue((result.duration.inMilliseconds).rounded())
        switch result.status {
        case .answered:
            await events.emit(
                .runFinished, depth: 0, iteration: result.iterations,
                data: [
                    "status": "answered", "answer": JSONValue(result.answer), "reason": nil, "signal": nil,
                    "iterations": .int(result.iterations), "duration_ms": duration,
                ])
        case .budgetExhausted(let reason):
            if !noAnswer {
                await events.emit(
                    .budgetExhausted, depth: 0, iteration: result.iterations,
                    data: ["budget": .string(reason.limit.rawValue), "reason": .string(reason.message)])
            }
            await events.emit(
                .runFinished, depth: 0, iteration: result.iterations,
                data: [
                    "status": noAnswer ? "no_answer" : "budget_exhausted", "answer": nil,
                    "reason": .string(reason.message), "signal": nil, "budget": .string(reason.limit.rawValue),
                    "iterations": .int(result.iterations), "duration_ms": duration,
                ])
        }
    }

    private static func race(
        loop: RLMLoop, query: String, configuration: RLMConfiguration, tracker: BudgetTracker, calls: CallCounter,
        iterations: IterationCounter, start: ContinuousClock.Instant
    ) async throws -> (RLMResult, noAnswer: Bool) {
        let clock = ContinuousClock()
        enum Race: Sendable {
            case loop(RLMLoop.Outcome)
            case budget(BudgetExhausted?)
        }
        let race: Race = try await withThrowingTaskGroup(of: Race.self) { group in
            group.addTask {
                .loop(try await loop.answer(query: query, tracker: tracker, calls: calls) { iterations.set($0) })
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
        let result: RLMResult
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
        if case .loop(.noAnswer) = race { return (result, true) }
        return (result, false)
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

    /// Asks a question under a budget of its own (a server narrows each question to what its caller has left); the
    /// iteration limit stays the session's.
    /// - Parameters:
    ///   - query: the question.
    ///   - budget: tokens, cost, time and sub-calls for this question.
    public func ask(_ query: String, budget: Budget) async throws -> RLMResult {
        var configuration = configuration
        configuration.budget = budget
        return try await RLMEngine.drive(loop: loop, query: query, configuration: configuration)
    }

    /// Runs code of the caller's own (not the model's) in the session's REPL, where the questions' variables and
    /// `context` are: state persists both ways. Sub-calls from the code are answered under `budget` (the session's
    /// by default).
    /// - Parameters:
    ///   - code: Python source.
    ///   - budget: what the code's sub-calls may spend.
    /// - Returns: the cell's output and outcome, and what its sub-calls spent.
    public func execute(_ code: String, budget: Budget? = nil) async throws -> (result: CellResult, usage: RunUsage) {
        let tracker = BudgetTracker(budget: budget ?? configuration.budget)
        do {
            let result = try await loop.execute(code, tracker: tracker, calls: CallCounter())
            await tracker.finish()
            return (result, await tracker.usage)
        } catch {
            await tracker.finish()
            throw error
        }
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
