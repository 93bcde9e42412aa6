import Foundation
import RLM

/// One question for the RLM, from either front end.
public struct RunRequest: Sendable {
    /// The question.
    public var query: String
    /// Earlier messages of a chat, as text: loaded beside the contexts as a document named `messages`.
    public var history: String?
    /// Uploaded (or `load_context`) context ids of the caller's.
    public var contextIDs: [String]
    /// Paths beneath the server's roots (MCP).
    public var paths: [String]
    /// A session of the caller's to ask in (follow-up questions over one REPL).
    public var sessionID: String?
    /// The model the caller named; `nil` is the root model.
    public var model: String?
    /// Root iterations.
    public var maxIterations: Int?
    /// Recursion depth.
    public var maxDepth: Int?
    /// Tokens for the whole run tree.
    public var maxTokens: Int?
    /// USD for the whole run tree.
    public var maxCostUSD: Double?
    /// Wall-clock seconds.
    public var timeoutSeconds: Double?

    /// - Parameters: as the properties.
    public init(
        query: String, history: String? = nil, contextIDs: [String] = [], paths: [String] = [],
        sessionID: String? = nil, model: String? = nil, maxIterations: Int? = nil, maxDepth: Int? = nil,
        maxTokens: Int? = nil, maxCostUSD: Double? = nil, timeoutSeconds: Double? = nil
    ) {
        self.query = query
        self.history = history
        self.contextIDs = contextIDs
        self.paths = paths
        self.sessionID = sessionID
        self.model = model
        self.maxIterations = maxIterations
        self.maxDepth = maxDepth
        self.maxTokens = maxTokens
        self.maxCostUSD = maxCostUSD
        self.timeoutSeconds = timeoutSeconds
    }

    /// The budget of this request: the server's, narrowed by what the request asks, then by what the key has left.
    /// A request can lower the server's limits but never raise them.
    /// - Throws: ``ServiceError`` 400 naming the field for a value out of range.
    func budget(server: Budget, tokensLeft: Int?, costLeft: Double?) throws -> Budget {
        var budget = server
        if let maxIterations {
            guard (1...1000).contains(maxIterations) else {
                throw ServiceError.invalid("rlm.max_iterations must be 1 to 1000", param: "rlm.max_iterations")
            }
            budget.maxIterations = min(maxIterations, server.maxIterations)
        }
        if let maxDepth {
            guard (0...8).contains(maxDepth) else {
                throw ServiceError.invalid("rlm.max_depth must be 0 to 8", param: "rlm.max_depth")
            }
            budget.maxDepth = min(maxDepth, server.maxDepth)
        }
        func narrowed<T: Comparable>(_ value: T?, _ limit: T?) -> T? {
            guard let value else { return limit }
            guard let limit else { return value }
            return min(value, limit)
        }
        if let maxTokens, maxTokens < 1 {
            throw ServiceError.invalid("rlm.max_tokens must be at least 1", param: "rlm.max_tokens")
        }
        budget.maxTokens = narrowed(narrowed(maxTokens, server.maxTokens), tokensLeft)
        if let maxCostUSD, !(maxCostUSD > 0 && maxCostUSD.isFinite) {
            throw ServiceError.invalid("rlm.max_cost must be a positive amount of USD", param: "rlm.max_cost")
        }
        budget.maxCostUSD = narrowed(narrowed(maxCostUSD, server.maxCostUSD), costLeft)
        if let timeoutSeconds {
            guard timeoutSeconds > 0, timeoutSeconds <= 86_400 else {
                throw ServiceError.invalid("rlm.timeout must be 0 to 86400 seconds", param: "rlm.timeout")
            }
            let asked = Duration.milliseconds(Int64(timeoutSeconds * 1000))
            budget.maxWallTime = narrowed(asked, server.maxWallTime)
        }
        return budget
    }
}

/// A run that ended with a result (answered, or a budget spent).
public struct RunOutcome: Sendable {
    /// The engine's result.
    public var result: RLMResult
    /// The trajectory's id (`run-…`), for the caller to quote; never its path.
    public var trajectoryID: String
    /// The root model's name.
    public var model: String
    /// The session the run was asked in, if any.
    public var sessionID: String?

    /// How the run ended, as the audit log and the trajectory say it.
    public var status: String {
        switch result.status {
        case .answered: return result.answer == nil ? "no_answer" : "answered"
        case .budgetExhausted: return "budget_exhausted"
        }
    }
}

/// What a caller sees of a session.
public struct SessionSummary: Sendable, Hashable {
    /// `ses_` and 24 hex digits.
    public var id: String
    /// When it was opened.
    public var created: Date
    /// When it closes unless used again.
    public var expires: Date
    /// The contexts it was opened over.
    public var contextIDs: [String]
    /// Questions asked and cells executed in it.
    public var turns: Int
    /// Whether a question or a cell is running in it now.
    public var busy: Bool
    /// The latest events kept (at most the configured number).
    public var events: Int
}
