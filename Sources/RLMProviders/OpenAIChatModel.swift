import AsyncHTTPClient
import Logging
import NIOHTTP1
import RLM

/// A ``LanguageModel`` over an OpenAI-compatible chat completions endpoint: OpenAI itself, llama.cpp's server,
/// vLLM, Ollama's `/v1`, and gateways that speak the same format.
///
/// Calls `POST {API root}/chat/completions` (see ``ProviderBaseURL/openAI(_:)``), with retries, timeouts and error
/// mapping as described on ``Configuration``. Errors are ``LLMError``; cancellation throws `CancellationError`.
///
/// ```swift
/// let model = OpenAIChatModel(
///     configuration: .init(baseURL: "http://127.0.0.1:8080/v1", apiKey: nil, defaultModel: "qwen2.5-7b"),
///     logger: logger
/// )
/// let completion = try await model.complete(CompletionRequest(messages: [.user("Hello")]))
/// ```
public struct OpenAIChatModel: LanguageModel, CustomReflectable {
    /// The settings this model was made with (the key cannot be read back).
    public let configuration: Configuration
    private let caller: ChatCaller<OpenAIWire>

    /// - Parameters:
    ///   - configuration: endpoint, key, model and limits.
    ///   - httpClient: the client every call goes through; share one per process (default `.shared`).
    ///   - logger: receives debug logs of attempts, retries and failures; never keys or bodies.
    public init(
        configuration: Configuration = Configuration(),
        httpClient: HTTPClient = .shared,
        logger: Logger = Logger(label: "rlm.providers.openai", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "accept", value: "application/json, text/event-stream")
        headers.add(name: "user-agent", value: "swiftrlm")
        for (name, value) in configuration.extraHeaders.sorted(by: { $0.key < $1.key }) {
            headers.replaceOrAdd(name: name, value: value)
        }
        let errors = ErrorMapper(
            baseURL: configuration.baseURL,
            endpoint: configuration.endpoint,
            keySource: configuration.keySource,
            hasKey: configuration.key != nil,
            secret: configuration.key
        )
        self.caller = ChatCaller(
            wire: OpenAIWire(
                maxOutputTokens: configuration.maxOutputTokens,
                temperature: configuration.temperature,
                includeStreamUsage: configuration.includeStreamUsage,
                maxTokensParameter: configuration.maxTokensParameter,
                requestsReportedCost: configuration.requestsReportedCost
            ),
            transport: ProviderTransport(
                httpClient: httpClient,
                logger: logger,
                providerName: "\(configuration.providerName):\(configuration.defaultModel)",
                endpoint: configuration.endpoint,
                headers: headers,
                authentication: configuration.key.map { (header: "authorization", prefix: "Bearer ", key: $0) },
                settings: CallSettings(
                    connectTimeout: configuration.connectTimeout,
                    readTimeout: configuration.readTimeout,
                    totalTimeout: configuration.totalTimeout,
                    retry: configuration.retry,
                    maxResponseBytes: configuration.maxResponseBytes,
                    connectionsPerHost: configuration.connectionsPerHost
                        ?? ProviderHTTPClient.defaultConnectionsPerHost(for: httpClient)
                ),
                errors: errors
            ),
            defaultModel: configuration.defaultModel,
            streamCompletions: configuration.streamCompletions
        )
    }

    /// `provider:model`, e.g. `openai:gpt-4o-mini` or `local:qwen2.5-7b`.
    public var name: String { "\(configuration.providerName):\(configuration.defaultModel)" }

    /// The model id requests name (the configuration's default model).
    public var modelID: String? { configuration.defaultModel }

    /// Shows the configuration (which hides the key) and nothing of the HTTP machinery.
    public var customMirror: Mirror {
        Mirror(self, children: ["name": name, "configuration": configuration], displayStyle: .struct)
    }

    /// The configured context window.
    public var contextWindow: Int? { configuration.contextWindow }

    /// Runs one completion.
    /// - Parameter request: the conversation and sampling options.
    /// - Returns: the completion, with the server's usage (estimated when it reported none).
    /// - Throws: ``LLMError``, or `CancellationError`.
    public func complete(_ request: CompletionRequest) async throws -> Completion {
        try await caller.complete(request)
    }

    /// The ids of the models the server offers, from `GET {API root}/models` (``Configuration/modelsEndpoint``), in
    /// the server's order.
    ///
    /// Sent with the key, headers, timeouts and retries of completions; failures map to the same ``LLMError`` kinds
    /// (`.unauthorized`, `.transport` naming the host and port, `.timeout`, `.invalidResponse`…), with the key
    /// redacted from anything the server echoes.
    /// - Returns: the model ids (`data[].id`).
    /// - Throws: ``LLMError``, or `CancellationError`.
    public func listModels() async throws -> [String] {
        try await caller.transport.modelListPage(at: configuration.modelsEndpoint).ids
    }

    /// Streams one completion: `.text` pieces, then one `.done`. A failure before any text is retried like
    /// ``complete(_:)``; after text was yielded it ends the stream with the error.
    /// - Parameter request: the conversation and sampling options.
    public func stream(_ request: CompletionRequest) -> AsyncThrowingStream<CompletionChunk, any Error> {
        caller.streamChunks(request)
    }
}
