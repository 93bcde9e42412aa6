import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import RLM

/// A ``LanguageModel`` over the Anthropic Messages API.
///
/// Calls `POST {API root}/messages`, normally `…/v1/messages` (see ``ProviderBaseURL/anthropic(_:)``). System
/// messages become the top-level `system` field; consecutive messages of one role are merged and a user message is put
/// first when needed, as the API requires. Retries, timeouts and error mapping are described on ``Configuration``.
/// Errors are ``LLMError``; cancellation throws `CancellationError`.
public struct AnthropicModel: LanguageModel, CustomReflectable {
    /// The settings this model was made with (the key cannot be read back).
    public let configuration: Configuration
    private let caller: ChatCaller<AnthropicWire>

    /// - Parameters:
    ///   - configuration: endpoint, key, model and limits.
    ///   - httpClient: the client every call goes through; share one per process (default `.shared`).
    ///   - logger: receives debug logs of attempts, retries and failures; never keys or bodies.
    public init(
        configuration: Configuration = Configuration(),
        httpClient: HTTPClient = .shared,
        logger: Logger = Logger(label: "rlm.providers.anthropic", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "accept", value: "application/json, text/event-stream")
        headers.add(name: "user-agent", value: "swiftrlm")
        headers.add(name: "anthropic-version", value: configuration.apiVersion)
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
            wire: AnthropicWire(
                maxOutputTokens: configuration.maxOutputTokens,
                temperature: configuration.temperature,
                placeholderUserMessage: configuration.placeholderUserMessage
            ),
            transport: ProviderTransport(
                httpClient: httpClient,
                logger: logger,
                providerName: "\(configuration.providerName):\(configuration.defaultModel)",
                endpoint: configuration.endpoint,
                headers: headers,
                authentication: configuration.key.map { (header: "x-api-key", prefix: "", key: $0) },
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

    /// `provider:model`, e.g. `anthropic:claude-sonnet-4-20250514`.
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

    /// The ids of the models the API offers, from `GET {API root}/models` (``Configuration/modelsEndpoint``), newest
    /// first as Anthropic lists them. Follows the list's pages (`has_more`, `after_id`).
    ///
    /// Sent with the key, `anthropic-version`, timeouts and retries of completions; failures map to the same
    /// ``LLMError`` kinds (`.unauthorized`, `.transport` naming the host and port, `.timeout`, `.invalidResponse`…),
    /// with the key redacted from anything the server echoes.
    /// - Returns: the model ids (`data[].id`).
    /// - Throws: ``LLMError``, or `CancellationError`.
    public func listModels() async throws -> [String] {
        // 1000 is the API's largest page; the loop is for the day the list outgrows it.
        let first = appendingQueryItem(configuration.modelsEndpoint, "limit=1000")
        var page = try await caller.transport.modelListPage(at: first)
        var ids = page.ids
        var pages = 1
        while page.has_more == true, let last = page.last_id, !last.isEmpty, pages < Self.maxModelListPages {
            let next = appendingQueryItem(
                first, "after_id=" + (last.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? last))
            page = try await caller.transport.modelListPage(at: next)
            ids += page.ids
            pages += 1
        }
        return ids
    }

    /// A bound on pages followed, so a server that always says `has_more` cannot keep us looping.
    static let maxModelListPages = 50

    /// Streams one completion: `.text` pieces, then one `.done`. A failure before any text is retried like
    /// ``complete(_:)``; after text was yielded it ends the stream with the error.
    /// - Parameter request: the conversation and sampling options.
    public func stream(_ request: CompletionRequest) -> AsyncThrowingStream<CompletionChunk, any Error> {
        caller.streamChunks(request)
    }
}
