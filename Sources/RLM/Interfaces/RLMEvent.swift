import Foundation

/// Something that happened during a run, in order. Sinks (trajectory file, live progress, SSE streams) consume these.
/// Its JSON form is one line of a trajectory, schema version 1 (`docs/TRAJECTORY.md`, `docs/trajectory.schema.json`):
/// `schema`, `run`, `seq`, `time`, `kind`, `depth`, `scope`, `iteration`, `data`, `usage`.
///
/// Events carry text whole (code, outputs, prompts, replies): every sink that writes text down redacts it first and
/// only then cuts it (``TrajectoryWriter`` does both).
public struct RLMEvent: Sendable, Hashable, Codable {
    /// What kind of event.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// The query, models, budget and settings.
        case runStarted = "run_started"
        /// A sandbox built the context: what it measured (type, bytes, characters, lines, items, skipped files).
        case contextLoaded = "context_loaded"
        /// A loop is about to call its model.
        case modelRequest = "model_request"
        /// The model replied.
        case modelResponse = "model_response"
        /// A code block of the reply starts running.
        case codeStarted = "code_started"
        /// A code block ran.
        case codeResult = "code_result"
        /// Code made a sub-call (`llm_query`, `llm_query_batched`, `rlm_query`); it is in flight.
        case subcallStarted = "subcall_started"
        /// A sub-call ended: its reply, tokens, cost and latency.
        case subcall
        /// Something worth knowing (history trimmed, repeated code).
        case note
        /// The loop's final answer.
        case finalAnswer = "final_answer"
        /// A budget ran out.
        case budgetExhausted = "budget_exhausted"
        /// The run failed.
        case error
        /// The run ended (the last event of a run).
        case runFinished = "run_finished"
    }

    /// The version of the trajectory schema these events follow.
    public static let schemaVersion = 1
    /// The `scope` of the root loop's events.
    public static let rootScope = "root"

    /// The schema version (``schemaVersion``).
    public var schema: Int = RLMEvent.schemaVersion
    /// The run's id, stamped by the trajectory writer (`nil` before).
    public var run: String?
    /// The event's number within its trajectory file, stamped by the writer (`nil` before).
    public var seq: Int?
    /// What kind of event.
    public var kind: Kind
    /// Seconds since the Unix epoch.
    public var time: Double
    /// Recursion depth: 0 for the root, 1 for a child started by `rlm_query`, …
    public var depth: Int
    /// The loop it belongs to: ``rootScope``, or the `call_id` of the `rlm_query` that started the child loop.
    public var scope: String
    /// The iteration of the loop at that depth (1-based; 0 before the first). A sub-call carries its cell's.
    public var iteration: Int
    /// The kind's fields (see `docs/TRAJECTORY.md`): numbers are numbers, names are snake_case, text is whole.
    public var data: [String: JSONValue]
    /// Usage of the whole run so far.
    public var usage: RunUsage?

    /// - Parameters: as the properties.
    public init(
        kind: Kind, depth: Int, iteration: Int, scope: String = RLMEvent.rootScope, data: [String: JSONValue] = [:],
        usage: RunUsage? = nil, time: Double = Date().timeIntervalSince1970
    ) {
        self.kind = kind
        self.depth = depth
        self.iteration = iteration
        self.scope = scope
        self.data = data
        self.usage = usage
        self.time = time
    }

    /// An event whose fields are all text.
    /// - Parameters: as the properties; `data`'s values become JSON strings.
    public init(
        kind: Kind, depth: Int, iteration: Int, scope: String = RLMEvent.rootScope, data: [String: String],
        usage: RunUsage? = nil, time: Double = Date().timeIntervalSince1970
    ) {
        self.init(
            kind: kind, depth: depth, iteration: iteration, scope: scope, data: data.mapValues(JSONValue.string),
            usage: usage, time: time)
    }

    /// The `run_finished` of a run stopped by a signal, written by whoever caught the signal (the run itself was
    /// cancelled and says nothing).
    /// - Parameters:
    ///   - signal: `"SIGINT"` or `"SIGTERM"`.
    ///   - iterations: root iterations begun.
    ///   - durationMilliseconds: since the run started.
    ///   - usage: the run's usage so far, when known.
    public static func interrupted(
        signal: String, iterations: Int = 0, durationMilliseconds: Double = 0, usage: RunUsage? = nil
    ) -> RLMEvent {
        RLMEvent(
            kind: .runFinished, depth: 0, iteration: iterations,
            data: [
                "status": "interrupted", "answer": nil,
                "reason": "interrupted by \(signal); the run was stopped and its sandboxes killed",
                "signal": .string(signal), "iterations": .int(iterations),
                "duration_ms": JSONValue(durationMilliseconds.rounded()),
            ],
            usage: usage)
    }

    private enum CodingKeys: String, CodingKey {
        case schema, run, seq, time, kind, depth, scope, iteration, data, usage
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        schema = try container.decodeIfPresent(Int.self, forKey: .schema) ?? Self.schemaVersion
        run = try container.decodeIfPresent(String.self, forKey: .run)
        seq = try container.decodeIfPresent(Int.self, forKey: .seq)
        time = try container.decode(Double.self, forKey: .time)
        kind = try container.decode(Kind.self, forKey: .kind)
        depth = try container.decode(Int.self, forKey: .depth)
        scope = try container.decodeIfPresent(String.self, forKey: .scope) ?? Self.rootScope
        iteration = try container.decode(Int.self, forKey: .iteration)
        data = try container.decodeIfPresent([String: JSONValue].self, forKey: .data) ?? [:]
        usage = try container.decodeIfPresent(UsageLine.self, forKey: .usage)?.usage
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(schema, forKey: .schema)
        try container.encodeIfPresent(run, forKey: .run)
        try container.encodeIfPresent(seq, forKey: .seq)
        try container.encode(time, forKey: .time)
        try container.encode(kind, forKey: .kind)
        try container.encode(depth, forKey: .depth)
        try container.encode(scope, forKey: .scope)
        try container.encode(iteration, forKey: .iteration)
        try container.encode(data, forKey: .data)
        try container.encodeIfPresent(usage.map(UsageLine.init), forKey: .usage)
    }

    /// `usage` as a trajectory line spells it: snake_case, typed numbers.
    private struct UsageLine: Codable {
        var inputTokens: Int
        var outputTokens: Int
        var costUSD: Double
        var modelCalls: Int
        var subcalls: Int

        enum CodingKeys: String, CodingKey {
            case inputTokens = "input_tokens"
            case outputTokens = "output_tokens"
            case costUSD = "cost_usd"
            case modelCalls = "model_calls"
            case subcalls
        }

        init(_ usage: RunUsage) {
            inputTokens = usage.tokens.inputTokens
            outputTokens = usage.tokens.outputTokens
            costUSD = usage.costUSD.isFinite ? usage.costUSD : 0
            modelCalls = usage.modelCalls
            subcalls = usage.subcalls
        }

        var usage: RunUsage {
            var usage = RunUsage()
            usage.tokens = TokenUsage(inputTokens: inputTokens, outputTokens: outputTokens)
            usage.costUSD = costUSD
            usage.modelCalls = modelCalls
            usage.subcalls = subcalls
            return usage
        }
    }
}

/// Receives events as they happen. Called from several tasks at once: implementations must be thread-safe and fast.
public typealias RLMEventHandler = @Sendable (RLMEvent) -> Void

/// The outcome of a run.
public struct RLMResult: Sendable, Hashable {
    /// How the run ended.
    public enum Status: Sendable, Hashable {
        /// The model gave a final answer.
        case answered
        /// A budget ran out before an answer.
        case budgetExhausted(BudgetExhausted)
    }

    /// The final answer; `nil` when a budget ran out first.
    public var answer: String?
    /// How the run ended.
    public var status: Status
    /// Root iterations used.
    public var iterations: Int
    /// Tokens, cost and calls of the whole run tree.
    public var usage: RunUsage
    /// Wall time.
    public var duration: Duration

    /// - Parameters: as the properties.
    public init(answer: String?, status: Status, iterations: Int, usage: RunUsage, duration: Duration) {
        self.answer = answer
        self.status = status
        self.iterations = iterations
        self.usage = usage
        self.duration = duration
    }
}
