import Foundation

/// One message of a chat conversation.
public struct ChatMessage: Sendable, Hashable, Codable {
    /// Who speaks.
    public enum Role: String, Sendable, Hashable, Codable {
        case system, user, assistant
    }

    /// Who speaks.
    public var role: Role
    /// What is said.
    public var content: String

    /// - Parameters:
    ///   - role: who speaks.
    ///   - content: what is said.
    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }

    /// A system message.
    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: .system, content: content) }
    /// A user message.
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: .user, content: content) }
    /// An assistant message.
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: .assistant, content: content) }
}

/// Tokens used by one or more model calls.
public struct TokenUsage: Sendable, Hashable, Codable {
    /// Prompt tokens.
    public var inputTokens: Int
    /// Generated tokens.
    public var outputTokens: Int

    /// - Parameters:
    ///   - inputTokens: prompt tokens.
    ///   - outputTokens: generated tokens.
    public init(inputTokens: Int = 0, outputTokens: Int = 0) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }

    /// Input plus output.
    public var totalTokens: Int { inputTokens + outputTokens }

    /// Adds two usages.
    public static func + (lhs: TokenUsage, rhs: TokenUsage) -> TokenUsage {
        TokenUsage(inputTokens: lhs.inputTokens + rhs.inputTokens, outputTokens: lhs.outputTokens + rhs.outputTokens)
    }

    /// Adds `rhs` into `lhs`.
    public static func += (lhs: inout TokenUsage, rhs: TokenUsage) { lhs = lhs + rhs }
}

/// A request for one completion.
public struct CompletionRequest: Sendable, Hashable {
    /// The conversation so far (a system message first, when there is one).
    public var messages: [ChatMessage]
    /// The model name the provider should use; `nil` uses the provider's default.
    public var model: String?
    /// Most tokens to generate; `nil` uses the provider's default.
    public var maxOutputTokens: Int?
    /// Sampling temperature; `nil` uses the provider's default.
    public var temperature: Double?
    /// Stop sequences.
    public var stop: [String]

    /// - Parameters: as the properties.
    public init(
        messages: [ChatMessage], model: String? = nil, maxOutputTokens: Int? = nil, temperature: Double? = nil,
        stop: [String] = []
    ) {
        self.messages = messages
        self.model = model
        self.maxOutputTokens = maxOutputTokens
        self.temperature = temperature
        self.stop = stop
    }
}

/// A finished completion.
public struct Completion: Sendable, Hashable {
    /// The generated text.
    public var text: String
    /// Tokens used, as the server reported them (estimated from text length when it reported none).
    public var usage: TokenUsage
    /// The model that answered, as the server named it.
    public var model: String
    /// Why generation stopped (`stop`, `length`, …), when the server said.
    public var finishReason: String?
    /// The cost of this call in USD as the provider reported it (OpenRouter's `usage.cost`); `nil` when it did not.
    /// Budgets prefer it to a price-table estimate.
    public var reportedCostUSD: Double?

    /// - Parameters: as the properties.
    public init(
        text: String, usage: TokenUsage, model: String, finishReason: String? = nil, reportedCostUSD: Double? = nil
    ) {
        self.text = text
        self.usage = usage
        self.model = model
        self.finishReason = finishReason
        self.reportedCostUSD = reportedCostUSD
    }
}

/// A piece of a streamed completion.
public enum CompletionChunk: Sendable, Hashable {
    /// More generated text.
    case text(String)
    /// The end: the whole completion with its usage.
    case done(Completion)
}

/// A chat model behind some API. Implementations: OpenAI-compatible chat completions, Anthropic Messages, the local
/// llama.cpp server (in `RLMProviders`), and scripted fakes in tests.
public protocol LanguageModel: Sendable {
    /// A short name for logs and trajectories, e.g. `openai:gpt-4o-mini`. Never contains a key.
    var name: String { get }

    /// The model's context window in tokens, when known (used to refuse prompts that cannot fit).
    var contextWindow: Int? { get }

    /// Runs one completion.
    /// - Parameter request: the conversation and sampling options.
    /// - Returns: the completion with usage.
    /// - Throws: ``LLMError``.
    func complete(_ request: CompletionRequest) async throws -> Completion

    /// Streams one completion: `.text` pieces, then exactly one `.done`.
    /// - Parameter request: the conversation and sampling options.
    func stream(_ request: CompletionRequest) -> AsyncThrowingStream<CompletionChunk, any Error>

    /// What a call with this usage would cost in USD, when the model knows its price; budgets reserve it before a
    /// call is sent.
    /// - Parameter usage: the tokens of a call.
    func estimatedCost(of usage: TokenUsage) -> Double?

    /// The model's id as the server knows it (`gpt-4o-mini`), for price lookups; `nil` when it has none.
    var modelID: String? { get }
}

extension LanguageModel {
    public var contextWindow: Int? { nil }

    /// Unknown by default: the engine falls back to its configured price table.
    public func estimatedCost(of usage: TokenUsage) -> Double? { nil }

    /// None by default: price lookups use ``name``.
    public var modelID: String? { nil }

    /// Default streaming for models that cannot stream: one `.text`, then `.done`.
    public func stream(_ request: CompletionRequest) -> AsyncThrowingStream<CompletionChunk, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let completion = try await complete(request)
                    continuation.yield(.text(completion.text))
                    continuation.yield(.done(completion))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// Errors from a language model provider. The description is safe to log (it never contains a key) and tells the
/// user what to do.
public struct LLMError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public enum Kind: String, Sendable, Hashable {
        /// 401/403: the key is missing or wrong.
        case unauthorized
        /// 429 after all retries.
        case rateLimited
        /// The prompt does not fit the model's context window.
        case contextOverflow
        /// 4xx other than the above: the request was refused.
        case badRequest
        /// 5xx after all retries.
        case server
        /// Could not connect, or the connection broke, after all retries.
        case transport
        /// A connect, read or total timeout.
        case timeout
        /// The response was not in the expected format.
        case invalidResponse
        /// No model or key is configured.
        case configuration
    }

    /// The kind of failure.
    public var kind: Kind
    /// What happened and what to do.
    public var message: String
    /// The HTTP status, when there was one.
    public var statusCode: Int?

    /// - Parameters: as the properties.
    public init(_ kind: Kind, _ message: String, statusCode: Int? = nil) {
        self.kind = kind
        self.message = message
        self.statusCode = statusCode
    }

    public var description: String { message }
}
