import Foundation

/// Something that happened during a run, in order. Sinks (trajectory file, live progress, SSE streams) consume these.
public struct RLMEvent: Sendable, Hashable, Codable {
    /// What kind of event.
    public enum Kind: String, Sendable, Hashable, Codable {
        case runStarted = "run_started"
        /// A sandbox built the context: what it measured (type, bytes, characters, lines, items, skipped files).
        case contextLoaded = "context_loaded"
        case modelRequest = "model_request"
        case modelResponse = "model_response"
        case codeResult = "code_result"
        case subcall
        case note
        case finalAnswer = "final_answer"
        case budgetExhausted = "budget_exhausted"
        case error
        case runFinished = "run_finished"
    }

    /// What kind of event.
    public var kind: Kind
    /// Seconds since the Unix epoch.
    public var time: Double
    /// Recursion depth: 0 for the root, 1 for a child started by `rlm_query`, …
    public var depth: Int
    /// The iteration of the loop at that depth (0 before the first).
    public var iteration: Int
    /// Free-form fields of the event (text is cut to keep trajectories readable).
    public var data: [String: String]
    /// Usage of the whole run so far.
    public var usage: RunUsage?

    /// - Parameters: as the properties.
    public init(
        kind: Kind, depth: Int, iteration: Int, data: [String: String] = [:], usage: RunUsage? = nil,
        time: Double = Date().timeIntervalSince1970
    ) {
        self.kind = kind
        self.depth = depth
        self.iteration = iteration
        self.data = data
        self.usage = usage
        self.time = time
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
