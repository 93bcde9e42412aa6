import AsyncHTTPClient
import Foundation
import RLM
import RLMProviders
import RLMTesting
import Testing

/// `listModels()` of both providers against the fake server's `GET /v1/models`, over real HTTP.
@Suite("Providers: model lists")
struct ModelListTests {
    static let ids = ["model-a", "model-b", "model-c"]

    /// Lists the models of either format's client.
    private func listModels(_ format: FakeLLMServer.WireFormat, _ model: any LanguageModel) async throws -> [String] {
        switch format {
        case .openAI: return try await (model as! OpenAIChatModel).listModels()
        case .anthropic: return try await (model as! AnthropicModel).listModels()
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func listsTheServersModelsInOrder(_ format: FakeLLMServer.WireFormat) async throws {
        let configuration = FakeLLMServer.Configuration(expectedAPIKey: "sk-right", modelIDs: Self.ids)
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("unused"))) {
            server async throws in
            var settings = CommonSettings()
            settings.key = "sk-right"
            #expect(try await listModels(format, model(format, server, settings)) == Self.ids)

            let request = try #require(await server.requests.first)
            #expect(request.method == "GET")
            #expect(request.path == "/v1/models")
            #expect(request.format == format, "the fake answered in the caller's shape")
            #expect(request.header("content-type") == nil, "a GET carries no body")
            switch format {
            case .openAI:
                #expect(request.header("authorization") == "Bearer sk-right")
            case .anthropic:
                #expect(request.header("x-api-key") == "sk-right")
                #expect(request.header("anthropic-version") == "2023-06-01")
            }
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aBaseURLWithoutV1ListsModelsToo(_ format: FakeLLMServer.WireFormat) async throws {
        try await FakeLLMServer.withServer(.always(.text("unused"))) { server async throws in
            let base = "http://127.0.0.1:\(server.port)"
            let ids: [String]
            switch format {
            case .openAI:
                ids = try await OpenAIChatModel(configuration: .init(baseURL: base, defaultModel: "m")).listModels()
            case .anthropic:
                ids = try await AnthropicModel(configuration: .init(baseURL: base + "/v1/", apiKey: "k")).listModels()
            }
            #expect(ids == ["fake-model"], "by default the fake lists its default model")
            #expect(await server.requests.first?.path == "/v1/models")
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aWrongKeyIsUnauthorizedAndNeverShown(_ format: FakeLLMServer.WireFormat) async throws {
        let secret = "sk-wrong-SECRET-0123456789"
        let configuration = FakeLLMServer.Configuration(expectedAPIKey: "sk-right")
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("unused"))) {
            server async throws in
            var settings = CommonSettings()
            settings.key = secret
            let error = await llmError { try await listModels(format, model(format, server, settings)) }
            #expect(error?.kind == .unauthorized)
            #expect(error?.statusCode == 401)
            #expect(error?.message.contains(format == .openAI ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY") == true)
            #expect(error.map { "\($0)".contains(secret) } == false)
            #expect(await server.requests.count == 1, "a 401 is not retried")
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func anUnreachableServerIsATransportErrorNamingHostAndPort(_ format: FakeLLMServer.WireFormat) async throws {
        let port = try await closedPort()
        let base = "http://127.0.0.1:\(port)"
        let start = ContinuousClock.now
        let error = await llmError {
            switch format {
            case .openAI:
                var configuration = OpenAIChatModel.Configuration(baseURL: base, defaultModel: "m")
                configuration.connectTimeout = .milliseconds(300)
                configuration.retry = fastRetry
                return try await OpenAIChatModel(configuration: configuration).listModels()
            case .anthropic:
                var configuration = AnthropicModel.Configuration(baseURL: base, apiKey: "k")
                configuration.connectTimeout = .milliseconds(300)
                configuration.retry = fastRetry
                return try await AnthropicModel(configuration: configuration).listModels()
            }
        }
        #expect(error?.kind == .transport)
        #expect(error?.message.contains("127.0.0.1:\(port)/v1/models") == true, "\(error?.message ?? "")")
        #expect(ContinuousClock.now - start < .seconds(30))
    }

    @Test func aFailFastClientSaysTheConnectionWasRefused() async throws {
        let port = try await closedPort()
        try await ProviderHTTPClient.withHTTPClient { client in
            var configuration = OpenAIChatModel.Configuration(baseURL: "http://127.0.0.1:\(port)", defaultModel: "m")
            configuration.retry = RetryPolicy(maxAttempts: 1)
            let error = await llmError {
                try await OpenAIChatModel(configuration: configuration, httpClient: client).listModels()
            }
            #expect(error?.kind == .transport)
            #expect(error?.message.contains("connection refused") == true, "\(error?.message ?? "")")
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aServerThatNeverAnswersIsATimeout(_ format: FakeLLMServer.WireFormat) async throws {
        let configuration = FakeLLMServer.Configuration(latency: .seconds(30))
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("unused"))) {
            server async throws in
            var settings = CommonSettings()
            settings.key = "k"
            settings.totalTimeout = .milliseconds(400)
            let start = ContinuousClock.now
            let error = await llmError { try await listModels(format, model(format, server, settings)) }
            #expect(error?.kind == .timeout)
            #expect(error?.message.contains("/v1/models") == true, "\(error?.message ?? "")")
            #expect(ContinuousClock.now - start < .seconds(10))
        }
    }

    @Test(arguments: [
        "<html>Not the API</html>",
        #"{"object": "list"}"#,
        #"{"data": 3}"#,
    ])
    func aBodyThatIsNotAModelListIsAnInvalidResponse(_ body: String) async throws {
        var configuration = FakeLLMServer.Configuration()
        configuration.modelListReply = .raw(status: 200, headers: [("content-type", "application/json")], body: body)
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("unused"))) {
            server async throws in
            let error = await llmError { try await openAIModel(server).listModels() }
            #expect(error?.kind == .invalidResponse, "\(error?.message ?? "")")
        }
    }

    @Test func aServerErrorIsRetriedLikeACompletion() async throws {
        var configuration = FakeLLMServer.Configuration()
        configuration.modelListReply = .serverError
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("unused"))) {
            server async throws in
            let error = await llmError { try await openAIModel(server).listModels() }
            #expect(error?.kind == .server)
            #expect(await server.requests.count == fastRetry.maxAttempts)
        }
    }

    @Test func anthropicFollowsPages() async throws {
        let ids = (1...45).map { "claude-\($0)" }
        var configuration = FakeLLMServer.Configuration(modelIDs: ids)
        configuration.modelListPageSize = 20
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("unused"))) {
            server async throws in
            #expect(try await anthropicModel(server).listModels() == ids)
            #expect(await server.requests.count == 3, "20 + 20 + 5")
        }
    }
}
