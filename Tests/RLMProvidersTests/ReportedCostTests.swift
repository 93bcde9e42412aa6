import Foundation
import RLM
import RLMProviders
import RLMTesting
import Testing

/// OpenRouter's `usage.cost`: asked for with `"usage": {"include": true}`, read into `Completion.reportedCostUSD`.
@Suite("Providers: reported cost")
struct ReportedCostTests {
    @Test(arguments: [
        ("https://openrouter.ai/api/v1", true),
        ("https://OpenRouter.ai/api/v1/", true),
        ("https://eu.openrouter.ai/api/v1", true),
        ("https://api.openai.com/v1", false),
        ("http://127.0.0.1:8080", false),
        ("https://notopenrouter.ai/api/v1", false),
        ("https://openrouter.ai.example.com/v1", false),
        ("https://user@openrouter.ai:443/api/v1", true),
    ])
    func isRequestedByDefaultOnlyFromOpenRouter(_ baseURL: String, _ expected: Bool) {
        #expect(OpenAIChatModel.Configuration(baseURL: baseURL).requestsReportedCost == expected)
    }

    @Test func theDefaultFollowsTheBaseURLUntilSet() {
        var configuration = OpenAIChatModel.Configuration()
        #expect(!configuration.requestsReportedCost)
        configuration.baseURL = "https://openrouter.ai/api/v1"
        #expect(configuration.requestsReportedCost)
        configuration.requestsReportedCost = false
        #expect(!configuration.requestsReportedCost)
        configuration.baseURL = "http://127.0.0.1:1"
        configuration.requestsReportedCost = true
        #expect(configuration.requestsReportedCost)
    }

    @Test(arguments: [false, true])
    func aReportedCostIsRead(_ streaming: Bool) async throws {
        let configuration = FakeLLMServer.Configuration(reportedCostUSD: 0.001_234)
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("ok"))) { server async throws in
            let model = openAIModel(server) { $0.requestsReportedCost = true }
            let completion = try await run(model, CompletionRequest(messages: [.user("hi")]), streaming: streaming)
            #expect(completion.text == "ok")
            #expect(completion.reportedCostUSD == 0.001_234)
            let request = try #require(await server.requests.first)
            #expect(request.includeCost)
            #expect((request.json?["usage"] as? [String: Any])?["include"] as? Bool == true)
        }
    }

    @Test(arguments: [false, true])
    func noCostIsAskedForOrReadWhenTheConfigurationSaysNo(_ streaming: Bool) async throws {
        let configuration = FakeLLMServer.Configuration(reportedCostUSD: 0.5)
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("ok"))) { server async throws in
            let completion = try await run(
                openAIModel(server), CompletionRequest(messages: [.user("hi")]), streaming: streaming)
            #expect(completion.reportedCostUSD == nil)
            let request = try #require(await server.requests.first)
            #expect(!request.includeCost)
            #expect(request.json?["usage"] == nil, "servers that do not know the field may refuse it")
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aServerThatReportsNoCostLeavesItNil(_ format: FakeLLMServer.WireFormat) async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let model: any LanguageModel =
                format == .openAI ? openAIModel(server) { $0.requestsReportedCost = true } : anthropicModel(server)
            let completion = try await model.complete(CompletionRequest(messages: [.user("hi")]))
            #expect(completion.reportedCostUSD == nil)
        }
    }

    /// What a gateway might put in `usage.cost`, and what we make of it.
    static let costs: [(json: String, expected: Double?)] = [
        ("0.25", 0.25),
        ("0", 0),
        ("1e-6", 0.000_001),
        (#""0.25""#, nil),
        ("-0.5", nil),
        ("null", nil),
        ("true", nil),
        (#"{"usd": 1}"#, nil),
    ]

    @Test(arguments: costs)
    func anOddCostIsTreatedAsAbsentWhole(_ json: String, _ expected: Double?) async throws {
        let body = #"""
            {"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"cost":\#(json)}}
            """#
        let reply = FakeLLMServer.Reply.raw(status: 200, headers: [("content-type", "application/json")], body: body)
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let completion = try await openAIModel(server).complete(CompletionRequest(messages: [.user("hi")]))
            #expect(completion.text == "ok")
            #expect(completion.usage == TokenUsage(inputTokens: 3, outputTokens: 1))
            #expect(completion.reportedCostUSD == expected)
        }
    }

    @Test(arguments: costs)
    func anOddCostIsTreatedAsAbsentStreamed(_ json: String, _ expected: Double?) async throws {
        let body =
            #"data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":null}]}"#
            + "\n\n"
            + #"data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
            + "\n\n"
            + #"data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"cost":\#(json)}}"#
            + "\n\ndata: [DONE]\n\n"
        let reply = FakeLLMServer.Reply.raw(status: 200, headers: [("content-type", "text/event-stream")], body: body)
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let result = await collect(openAIModel(server).stream(CompletionRequest(messages: [.user("hi")])))
            #expect(result.error == nil)
            #expect(result.completion?.text == "ok")
            #expect(result.completion?.usage == TokenUsage(inputTokens: 3, outputTokens: 1))
            #expect(result.completion?.reportedCostUSD == expected)
        }
    }
}
