import Foundation

/// Everything an ``RLMEngine`` needs. Configure once, run many times.
public struct RLMConfiguration: Sendable {
    /// The model that drives the loop (and child RLMs).
    public var rootModel: any LanguageModel
    /// The model `llm_query` and `llm_query_batched` call; the root model when `nil`.
    public var subModel: (any LanguageModel)?
    /// The models code may name with `model=` in `llm_query`, `llm_query_batched` and `rlm_query`, by the name the
    /// code uses. The front end declares them (the root model and the sub-model under their names, and every
    /// `--allow-model`); any other name is refused with an error string in the REPL and nothing is sent.
    public var callableModels: [String: any LanguageModel]
    /// Where model-written code runs.
    public var sandbox: any Sandbox
    /// Limits on the whole run.
    public var budget: Budget
    /// How many prompts of one `llm_query_batched` call run at once.
    public var batchConcurrency: Int
    /// Wall-clock limit per code cell.
    public var cellTimeout: Duration
    /// Characters of each cell's output shown to the model (head + tail kept).
    public var outputCharsPerCell: Int
    /// Characters of the context shown to the model in its first message, so it sees the format before it codes.
    public var contextSampleChars: Int
    /// Most tokens per root model reply.
    public var maxOutputTokens: Int?
    /// Sampling temperature for the root model; `nil` uses the server's default.
    public var temperature: Double?
    /// When a reply both runs code and writes `FINAL(…)` in its text, run the code, show the output and ask again
    /// instead of accepting the answer. Small models write the code and a guessed answer in one breath; large models
    /// rarely do. Off by default (the contract accepts a text `FINAL` in any reply); `--provider local` turns it on.
    public var confirmAnswersWrittenWithCode: Bool
    /// At the last request (iterations spent), accept a one-line reply without `FINAL(…)` as the answer. Small models
    /// often answer "42" when asked for their final answer; off by default (the contract wants `FINAL`).
    public var acceptBareLastAnswer: Bool
    /// Before the first question, run a probe in the REPL that describes the context's format (JSON lines and their
    /// field paths, a CSV header, a log's keys and few-valued fields, a folder's files) and put it in the first
    /// message beside the raw sample. Off in the library (its cells are the model's alone); `RLMRuntime`, which
    /// every front end uses, turns it on.
    public var describeContextFormat: Bool
    /// When a step's code finds nothing (empty output, `0`, `[]`, an `IndexError` on an empty selection), show the
    /// model the real lines of the context that hold the strings its code searched for. Off in the library;
    /// `RLMRuntime` turns it on.
    public var showLinesWhenNothingFound: Bool
    /// Refuse, once per question, a `FINAL(value)` that no cell output shows (a guess), asking for code that prints
    /// it. Small models answer with numbers nothing printed; off by default, `--provider local` turns it on.
    public var refuseUnsupportedAnswers: Bool
    /// After a step's code runs, say which things the question names (ids, paths, quoted values, numbers) no code
    /// has tested yet, and which near misses of them (`svc-10` for `svc-1`) its output holds; at most twice per
    /// question. Off by default; `--provider local` turns it on.
    public var checkQuestionTerms: Bool
    /// When a reply is stuck (it resubmits the code just run, or has neither code nor an answer), drop it and ask
    /// the same again once at this temperature: at a low temperature the same prompt brings the same reply. `nil`
    /// (the default) keeps the stuck reply and nudges; `--provider local` sets 0.8.
    public var resampleTemperature: Double?
    /// Price of a model call in USD, from the server-reported model name and its usage.
    /// `nil` when the price is unknown: under a cost budget, calls to such a model then go out one at a time.
    public var cost: @Sendable (_ model: String, _ usage: TokenUsage) -> Double?
    /// Receives every event of every run.
    public var onEvent: RLMEventHandler?
    /// The root model's context window in tokens, for trimming the history (defaults to the model's own, else 32k).
    public var historyWindowTokens: Int?

    /// - Parameters:
    ///   - rootModel: drives the loop.
    ///   - subModel: answers `llm_query`; the root model when `nil`.
    ///   - sandbox: runs the code.
    ///   - budget: limits (defaults: 20 iterations, depth 1).
    public init(
        rootModel: any LanguageModel, subModel: (any LanguageModel)? = nil, sandbox: any Sandbox,
        budget: Budget = Budget()
    ) {
        self.rootModel = rootModel
        self.subModel = subModel
        self.callableModels = [:]
        self.sandbox = sandbox
        self.budget = budget
        self.batchConcurrency = 16
        self.cellTimeout = .seconds(60)
        self.outputCharsPerCell = 4000
        self.contextSampleChars = 600
        self.maxOutputTokens = nil
        self.temperature = nil
        self.confirmAnswersWrittenWithCode = false
        self.acceptBareLastAnswer = false
        self.describeContextFormat = false
        self.showLinesWhenNothingFound = false
        self.refuseUnsupportedAnswers = false
        self.resampleTemperature = nil
        self.checkQuestionTerms = false
        self.cost = { _, _ in 0 }
        self.onEvent = nil
        self.historyWindowTokens = nil
    }

    /// What a call to `model` with `usage` would cost, when known: the model's own price, else the table's by its id.
    /// - Parameters:
    ///   - usage: the tokens of the call.
    ///   - model: the model.
    public func estimatedCost(of usage: TokenUsage, model: any LanguageModel) -> Double? {
        model.estimatedCost(of: usage) ?? cost(model.modelID ?? model.name, usage)
    }

    /// The model `llm_query` uses when the code names none.
    public var subcallModel: any LanguageModel { subModel ?? rootModel }

    /// The model code asked for with `model=`.
    /// - Parameter name: the name the code passed; `nil` means the sub-model.
    /// - Returns: the model, or a refusal whose message goes back to the code as the call's result.
    public func model(named name: String?) -> Result<any LanguageModel, ModelRefusal> {
        guard let name else { return .success(subcallModel) }
        if let model = callableModels[name] { return .success(model) }
        let known = callableModels.keys.sorted().map { "'\($0)'" }.joined(separator: ", ")
        return .failure(
            ModelRefusal(
                message: "Error: model '\(name.prefix(80))' is not declared for this run, so nothing was sent. "
                    + (known.isEmpty
                        ? "Call without model= to use the sub-model."
                        : "Models you may name: \(known); without model= the sub-model answers.")))
    }

    /// The cost of one completion in USD: what the provider reported, else the price table's estimate.
    /// - Parameter completion: a finished model call.
    public func cost(of completion: Completion) -> Double {
        completion.reportedCostUSD ?? cost(completion.model, completion.usage) ?? 0
    }

    /// Settings for small local models (Qwen2.5-Coder 0.5B/1.5B on one CPU thread), from watching them work: run code
    /// before believing an answer written next to it, accept a bare last answer, show less output per cell (their
    /// window is 8K tokens), cap replies at 1024 tokens, sample at a low temperature (at 0 they repeat themselves), and
    /// refuse once an answer no output shows.
    public mutating func tuneForSmallModels() {
        confirmAnswersWrittenWithCode = true
        acceptBareLastAnswer = true
        refuseUnsupportedAnswers = true
        resampleTemperature = 0.8
        checkQuestionTerms = true
        outputCharsPerCell = 2000
        maxOutputTokens = 1024
        temperature = 0.2
    }
}

/// Why a model named by code was not called. The message is written for the model's code to read.
public struct ModelRefusal: Error, Sendable, Hashable {
    /// The error string returned into the REPL.
    public var message: String
}
