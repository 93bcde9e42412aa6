import Foundation
import RLM
import Synchronization

/// Runs tasks through the RLM engine and through the baseline (the same model asked once, with as much of the
/// context as fits its window), scores every answer and collects a ``BenchReport``.
///
/// Tasks run one after another (a local model serves one request at a time). A task that errors or times out counts
/// as wrong and the run goes on; only errors that would fail every task (no sandbox, no credentials) stop it.
public struct BenchRunner: Sendable {
    /// What to run and how long to wait.
    public struct Options: Sendable {
        /// Run each task through the RLM engine.
        public var runRLM: Bool
        /// Run each task through the baseline.
        public var runBaseline: Bool
        /// Wall-clock limit per task and method; `nil` for none.
        public var taskTimeout: Duration?
        /// Tokens reserved for the baseline's reply (also its `max_tokens`).
        public var baselineReplyTokens: Int
        /// The baseline model's window when the model does not say (`LanguageModel.contextWindow` is `nil`).
        public var fallbackWindowTokens: Int

        /// - Parameters: as the properties.
        public init(
            runRLM: Bool = true, runBaseline: Bool = true, taskTimeout: Duration? = nil, baselineReplyTokens: Int = 256,
            fallbackWindowTokens: Int = 32_768
        ) {
            self.runRLM = runRLM
            self.runBaseline = runBaseline
            self.taskTimeout = taskTimeout
            self.baselineReplyTokens = baselineReplyTokens
            self.fallbackWindowTokens = fallbackWindowTokens
        }
    }

    /// Hooks for progress displays and trajectory files; every closure is optional.
    public struct Observer: Sendable {
        /// A task is about to run with a method: (task, method, 0-based position, number of tasks).
        public var started: (@Sendable (BenchTask, BenchMethod, Int, Int) -> Void)?
        /// An RLM engine event of the running task.
        public var event: (@Sendable (BenchTask, RLMEvent) -> Void)?
        /// A task finished with a method.
        public var finished: (@Sendable (BenchTask, MethodOutcome) -> Void)?

        /// - Parameters: as the properties.
        public init(
            started: (@Sendable (BenchTask, BenchMethod, Int, Int) -> Void)? = nil,
            event: (@Sendable (BenchTask, RLMEvent) -> Void)? = nil,
            finished: (@Sendable (BenchTask, MethodOutcome) -> Void)? = nil
        ) {
            self.started = started
            self.event = event
            self.finished = finished
        }
    }

    /// The engine's configuration (models, sandbox, budget, sampling): exactly what `rlm run` would use.
    public var configuration: RLMConfiguration
    /// The model the baseline asks; `configuration.rootModel` by default.
    public var baselineModel: any LanguageModel
    /// What to run.
    public var options: Options

    /// - Parameters:
    ///   - configuration: the engine's configuration; its `cost` and `temperature` apply to the baseline too.
    ///   - baselineModel: the baseline's model (default: the root model).
    ///   - options: what to run.
    public init(
        configuration: RLMConfiguration, baselineModel: (any LanguageModel)? = nil, options: Options = Options()
    ) {
        self.configuration = configuration
        self.baselineModel = baselineModel ?? configuration.rootModel
        self.options = options
    }

    /// Runs every task with each enabled method, in order.
    /// - Parameters:
    ///   - tasks: the tasks.
    ///   - observer: progress hooks.
    /// - Returns: the report.
    /// - Throws: errors that would fail every task — a sandbox that cannot start, a missing or refused key — and
    ///   cancellation.
    public func run(_ tasks: [BenchTask], observer: Observer = Observer()) async throws -> BenchReport {
        let startedAt = ISO8601DateFormatter().string(from: Date())
        var results = [TaskResult]()
        for (index, task) in tasks.enumerated() {
            var result = TaskResult(task: task)
            if options.runRLM {
                observer.started?(task, .rlm, index, tasks.count)
                let outcome = try await runRLM(task, observer: observer)
                result.rlm = outcome
                observer.finished?(task, outcome)
            }
            if options.runBaseline {
                observer.started?(task, .baseline, index, tasks.count)
                let outcome = try await runBaseline(task)
                result.baseline = outcome
                observer.finished?(task, outcome)
            }
            results.append(result)
        }
        var settings = [
            "max_iterations": "\(configuration.budget.maxIterations)",
            "max_depth": "\(configuration.budget.maxDepth)",
            "baseline_window_tokens": "\(baselineModel.contextWindow ?? options.fallbackWindowTokens)",
        ]
        if let timeout = options.taskTimeout {
            settings["task_timeout_seconds"] = String(format: "%.0f", timeout.inSeconds)
        }
        if let temperature = configuration.temperature { settings["temperature"] = "\(temperature)" }
        return BenchReport(
            model: configuration.rootModel.name, startedAt: startedAt, settings: settings, tasks: results)
    }

    /// One task through the engine. The timeout is the run's wall-time budget (so usage so far is reported), with a
    /// hard stop shortly after in case a call ignores cancellation.
    func runRLM(_ task: BenchTask, observer: Observer) async throws -> MethodOutcome {
        var configuration = configuration
        if let timeout = options.taskTimeout {
            configuration.budget.maxWallTime = min(configuration.budget.maxWallTime ?? timeout, timeout)
        }
        let seen = Mutex((usage: RunUsage(), iteration: 0))
        let previous = configuration.onEvent
        configuration.onEvent = { event in
            previous?(event)
            seen.withLock { value in
                if let usage = event.usage { value.usage = usage }
                if event.depth == 0 { value.iteration = max(value.iteration, event.iteration) }
            }
            observer.event?(task, event)
        }
        let engine = RLMEngine(configuration: configuration)
        let clock = ContinuousClock()
        let start = clock.now
        do {
            let result = try await Self.withDeadline(options.taskTimeout.map { $0 + .seconds(30) }) {
                try await engine.run(query: task.query, context: task.context)
            }
            let wall = (clock.now - start).inSeconds
            var status = OutcomeStatus.answered
            var detail: String?
            if case .budgetExhausted(let reason) = result.status {
                status = reason.limit == .wallTime ? .timeout : .noAnswer
                detail = reason.message
            }
            return MethodOutcome(
                method: .rlm, status: status,
                correct: AnswerScorer.isCorrect(predicted: result.answer, expected: task.answer, kind: task.answerKind),
                predicted: result.answer, iterations: result.iterations, inputTokens: result.usage.tokens.inputTokens,
                outputTokens: result.usage.tokens.outputTokens, subcalls: result.usage.subcalls, wallSeconds: wall,
                costUSD: result.usage.costUSD, detail: detail)
        } catch {
            try Self.rethrowIfFatal(error)
            let (usage, iteration) = seen.withLock { ($0.usage, $0.iteration) }
            return MethodOutcome(
                method: .rlm, status: error is DeadlineExceeded ? .timeout : .error, correct: false, predicted: nil,
                iterations: iteration, inputTokens: usage.tokens.inputTokens, outputTokens: usage.tokens.outputTokens,
                subcalls: usage.subcalls, wallSeconds: (clock.now - start).inSeconds, costUSD: usage.costUSD,
                detail: String(describing: error))
        }
    }

    /// One task through the baseline: one request with the head of the context that fits the window. When the
    /// server says the prompt is still too long (its tokenizer is less generous than our estimate), the context is cut
    /// by a quarter and the request retried, twice at most.
    func runBaseline(_ task: BenchTask) async throws -> MethodOutcome {
        let window = baselineModel.contextWindow ?? options.fallbackWindowTokens
        let clock = ContinuousClock()
        let start = clock.now
        var usage = TokenUsage()
        var cost = 0.0
        var budgetChars: Int?
        var attempt = 0
        while true {
            let prompt = BaselinePrompt(
                task: task, windowTokens: window, replyTokens: options.baselineReplyTokens,
                maxContextChars: budgetChars)
            let request = CompletionRequest(
                messages: prompt.messages, maxOutputTokens: options.baselineReplyTokens,
                temperature: configuration.temperature)
            do {
                let model = baselineModel
                let completion = try await Self.withDeadline(options.taskTimeout) { try await model.complete(request) }
                usage += completion.usage
                cost += configuration.cost(of: completion)
                let answer = completion.text.trimmingCharacters(in: .whitespacesAndNewlines)
                return MethodOutcome(
                    method: .baseline, status: .answered,
                    correct: AnswerScorer.isCorrect(predicted: answer, expected: task.answer, kind: task.answerKind),
                    predicted: answer, iterations: nil, inputTokens: usage.inputTokens,
                    outputTokens: usage.outputTokens, wallSeconds: (clock.now - start).inSeconds, costUSD: cost,
                    detail: prompt.note)
            } catch let error as LLMError where error.kind == .contextOverflow && attempt < 2 {
                attempt += 1
                budgetChars = prompt.contextChars * 3 / 4
            } catch {
                try Self.rethrowIfFatal(error)
                return MethodOutcome(
                    method: .baseline, status: error is DeadlineExceeded ? .timeout : .error, correct: false,
                    predicted: nil, iterations: nil, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens,
                    wallSeconds: (clock.now - start).inSeconds, costUSD: cost, detail: String(describing: error))
            }
        }
    }

    /// Errors that would fail every task stop the run instead of being counted.
    static func rethrowIfFatal(_ error: any Error) throws {
        if error is CancellationError, Task.isCancelled { throw error }
        if let error = error as? SandboxError, error.isSetupError { throw error }
        if let error = error as? LLMError, error.kind == .configuration || error.kind == .unauthorized { throw error }
    }

    /// The per-task timeout passed.
    struct DeadlineExceeded: Error, CustomStringConvertible {
        var limit: Duration
        var description: String { String(format: "timed out after %.0f s", limit.inSeconds) }
    }

    /// Runs `body`, cancelling it and throwing ``DeadlineExceeded`` when `limit` passes first.
    static func withDeadline<T: Sendable>(
        _ limit: Duration?, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        guard let limit else { return try await body() }
        return try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                throw DeadlineExceeded(limit: limit)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

/// The baseline's single request: an instruction to answer with the answer only, the head of the context (documents
/// joined by blank lines) cut to the window minus the question and the reply budget, and the question.
public struct BaselinePrompt: Sendable {
    /// The messages to send.
    public var messages: [ChatMessage]
    /// Characters of the context included.
    public var contextChars: Int
    /// Characters of the whole context.
    public var totalChars: Int
    /// Says how much of the context the model saw.
    public var note: String {
        contextChars >= totalChars
            ? "saw the whole context"
            : String(
                format: "saw the first %d of %d characters (%.1f%%)", contextChars, totalChars,
                Double(contextChars) * 100 / Double(max(1, totalChars)))
    }

    static let system =
        "You answer questions about a text. Reply with the answer only (a number, an id, a path or a short phrase): "
        + "no explanation, no code."

    /// - Parameters:
    ///   - task: the task.
    ///   - windowTokens: the model's context window.
    ///   - replyTokens: tokens kept free for the reply.
    ///   - maxContextChars: a tighter cap on the context (after the server refused a longer prompt).
    public init(task: BenchTask, windowTokens: Int, replyTokens: Int, maxContextChars: Int? = nil) {
        let text = Self.flatten(task.context)
        totalChars = text.count
        let question = "\n\nQuestion: \(task.query)\nReply with the answer only."
        // Tokens are estimated at 3 bytes each (the engine's estimate); 5% of the window and 64 tokens stay free for
        // chat-template overhead and estimation error.
        let overhead = Self.tokens(Self.system) + Self.tokens(question) + 100 + 64 + windowTokens / 20
        let fitChars = max(0, (windowTokens - replyTokens - overhead) * 3)
        var keep = min(text.count, fitChars, maxContextChars ?? .max)
        var head = String(text.prefix(keep))
        let header: String
        if keep < text.count {
            // Cut at a line break so the model does not see half a record.
            if let cut = head.lastIndex(of: "\n"), head.distance(from: head.startIndex, to: cut) > keep / 2 {
                head = String(head[..<cut])
                keep = head.count
            }
            header = "The text (only its first \(keep) of \(text.count) characters fit here):\n"
        } else {
            header = "The text:\n"
        }
        contextChars = keep
        messages = [.system(Self.system), .user(header + "<<<\n" + head + "\n>>>" + question)]
    }

    static func flatten(_ context: ContextValue) -> String {
        switch context {
        case .text(let text): return text
        case .documents(let documents):
            return documents.map { $0.hasSuffix("\n") ? String($0.dropLast()) : $0 }.joined(separator: "\n\n")
        case .json(let value):
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
        }
    }

    static func tokens(_ text: String) -> Int { (text.utf8.count + 2) / 3 }
}
