import Foundation
import Logging
import RLM
import RLMProviders
import RLMTesting
import Synchronization
import Testing

/// Retries fast enough for tests.
let fastRetry = RetryPolicy(maxAttempts: 4, baseDelay: .milliseconds(10), maxDelay: .milliseconds(200))

/// An OpenAI-compatible client for the fake server.
func openAIModel(
    _ server: FakeLLMServer,
    key: String? = nil,
    logger: Logger? = nil,
    _ configure: (inout OpenAIChatModel.Configuration) -> Void = { _ in }
) -> OpenAIChatModel {
    var configuration = OpenAIChatModel.Configuration(
        baseURL: server.openAIBaseURL,
        apiKey: key,
        defaultModel: "test-model"
    )
    configuration.retry = fastRetry
    configure(&configuration)
    if let logger { return OpenAIChatModel(configuration: configuration, logger: logger) }
    return OpenAIChatModel(configuration: configuration)
}

/// An Anthropic client for the fake server.
func anthropicModel(
    _ server: FakeLLMServer,
    key: String? = "test-key",
    logger: Logger? = nil,
    _ configure: (inout AnthropicModel.Configuration) -> Void = { _ in }
) -> AnthropicModel {
    var configuration = AnthropicModel.Configuration(
        baseURL: server.anthropicBaseURL,
        apiKey: key,
        defaultModel: "claude-test"
    )
    configuration.retry = fastRetry
    configure(&configuration)
    if let logger { return AnthropicModel(configuration: configuration, logger: logger) }
    return AnthropicModel(configuration: configuration)
}

/// Timeouts and retry settings that both configurations share, applied to either.
struct CommonSettings {
    var key: String?
    var retry = fastRetry
    var connectTimeout: Duration = .seconds(10)
    var readTimeout: Duration = .seconds(120)
    var totalTimeout: Duration = .seconds(600)
    var streamCompletions = false
}

/// A client of either format for the fake server.
func model(
    _ format: FakeLLMServer.WireFormat,
    _ server: FakeLLMServer,
    logger: Logger? = nil,
    _ settings: CommonSettings = CommonSettings()
) -> any LanguageModel {
    switch format {
    case .openAI:
        return openAIModel(server, key: settings.key, logger: logger) {
            $0.retry = settings.retry
            $0.connectTimeout = settings.connectTimeout
            $0.readTimeout = settings.readTimeout
            $0.totalTimeout = settings.totalTimeout
            $0.streamCompletions = settings.streamCompletions
        }
    case .anthropic:
        return anthropicModel(server, key: settings.key, logger: logger) {
            $0.retry = settings.retry
            $0.connectTimeout = settings.connectTimeout
            $0.readTimeout = settings.readTimeout
            $0.totalTimeout = settings.totalTimeout
            $0.streamCompletions = settings.streamCompletions
        }
    }
}

/// What a stream produced.
struct StreamResult {
    var pieces: [String] = []
    var completion: Completion?
    var error: (any Error)?
    var doneCount = 0
}

/// Drains a stream, keeping its pieces, its completion and its error.
func collect(_ stream: AsyncThrowingStream<CompletionChunk, any Error>) async -> StreamResult {
    var result = StreamResult()
    do {
        for try await chunk in stream {
            switch chunk {
            case .text(let text): result.pieces.append(text)
            case .done(let completion):
                result.completion = completion
                result.doneCount += 1
            }
        }
    } catch {
        result.error = error
    }
    return result
}

/// Runs a completion one way or the other.
func run(_ model: any LanguageModel, _ request: CompletionRequest, streaming: Bool) async throws -> Completion {
    guard streaming else { return try await model.complete(request) }
    let result = await collect(model.stream(request))
    if let error = result.error { throw error }
    guard let completion = result.completion else { throw LLMError(.invalidResponse, "no .done") }
    #expect(expectPieces(result, completion), "streamed pieces must add up to the text, with one .done")
    return completion
}

/// Streamed pieces must add up to the final text.
func expectPieces(_ result: StreamResult, _ completion: Completion) -> Bool {
    result.pieces.joined() == completion.text && result.doneCount == 1
}

/// The error thrown by `body`, as an ``LLMError``, or `nil`.
func llmError(_ body: () async throws -> some Any) async -> LLMError? {
    do {
        _ = try await body()
        return nil
    } catch let error as LLMError {
        return error
    } catch {
        return LLMError(.invalidResponse, "unexpected error type: \(error)")
    }
}

/// A log handler that keeps every message and its metadata, for checking what was logged.
struct CapturingLogHandler: LogHandler {
    final class Store: Sendable {
        private let lines = Mutex<[String]>([])
        func append(_ line: String) { lines.withLock { $0.append(line) } }
        var all: [String] { lines.withLock { $0 } }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { _, new in new }
        store.append("\(event.level) \(event.message) \(merged) \(event.error.map { "\($0)" } ?? "")")
    }

    /// A trace-level logger writing into a new store.
    static func logger() -> (Logger, Store) {
        let store = Store()
        let logger = Logger(label: "test") { _ in CapturingLogHandler(store: store) }
        return (logger, store)
    }
}

/// A port that refuses connections. A privileged port (the discard service, unused here): a port freed by a server
/// that shut down could be handed to another test's server running in parallel, which would then answer.
func closedPort() async throws -> Int {
    9
}

/// Waits until the server has received `count` requests (at most 30 s: the whole suite runs in parallel on two cores,
/// with sandboxes starting beside it), so a test can act on a call in flight.
func waitForRequests(_ server: FakeLLMServer, count: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while await server.requests.count < count {
        guard ContinuousClock.now < deadline else {
            Issue.record("the server did not receive \(count) requests in time")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
