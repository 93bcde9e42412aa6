import Foundation
import RLM
import Synchronization

/// An in-memory ``LanguageModel`` whose replies come from a script: the seam fake for engine unit tests (the fake
/// HTTP server, ``FakeLLMServer``, covers the wire).
///
/// ```swift
/// let model = ScriptedModel(replies: ["```repl\nprint(len(context))\n```", "FINAL(42)"])
/// ```
public final class ScriptedModel: LanguageModel {
    /// The model name reported in each completion.
    public let name: String
    /// The context window it claims, in tokens.
    public let contextWindow: Int?
    private let script: @Sendable ([ChatMessage]) throws -> String
    private let log = Mutex<[CompletionRequest]>([])
    private let delay: Duration
    private let reportedCost: Double?

    /// - Parameters:
    ///   - name: the model name reported in each completion.
    ///   - contextWindow: the window it claims.
    ///   - delay: how long each reply takes.
    ///   - reportedCostUSD: a cost to report with each completion, as OpenRouter does; `nil` reports none.
    ///   - script: the reply to each conversation; a thrown error is the call's error.
    public init(
        name: String = "scripted", contextWindow: Int? = nil, delay: Duration = .zero, reportedCostUSD: Double? = nil,
        _ script: @escaping @Sendable ([ChatMessage]) throws -> String
    ) {
        self.name = name
        self.contextWindow = contextWindow
        self.delay = delay
        self.reportedCost = reportedCostUSD
        self.script = script
    }

    /// Replies in order; past the end, `SCRIPT EXHAUSTED`, which makes an overrun obvious in a failure.
    /// - Parameters:
    ///   - name: the model name reported in each completion.
    ///   - replies: the replies, in order.
    public convenience init(name: String = "scripted", replies: [String]) {
        let index = Mutex(0)
        self.init(name: name) { _ in
            let i = index.withLock { value in
                defer { value += 1 }
                return value
            }
            return i < replies.count ? replies[i] : "SCRIPT EXHAUSTED"
        }
    }

    /// The model's name, which is also its id for price lookups.
    public var modelID: String? { name }

    /// The conversations received, in order.
    public var requests: [[ChatMessage]] { log.withLock { $0.map(\.messages) } }

    /// The whole requests received, in order (model name, limits, messages).
    public var completionRequests: [CompletionRequest] { log.withLock { $0 } }

    /// Answers from the script. Usage is about four characters a token, at least one output token.
    public func complete(_ request: CompletionRequest) async throws -> Completion {
        log.withLock { $0.append(request) }
        if delay > .zero { try await Task.sleep(for: delay) }
        let text = try script(request.messages)
        let input = request.messages.reduce(0) { $0 + $1.content.count } / 4
        var completion = Completion(
            text: text, usage: TokenUsage(inputTokens: input, outputTokens: max(1, text.count / 4)),
            model: request.model ?? name)
        completion.reportedCostUSD = reportedCost
        return completion
    }
}
