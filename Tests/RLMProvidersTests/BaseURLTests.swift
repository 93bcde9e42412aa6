import Foundation
import RLM
import RLMProviders
import RLMTesting
import Testing

/// Base URLs typed with or without `/v1`, with a trailing `/`, or as a pasted endpoint, reach the right endpoint.
@Suite("Providers: base URLs")
struct BaseURLTests {
    static let openAICases: [(typed: String, endpoint: String)] = [
        ("http://h:8080", "http://h:8080/v1/chat/completions"),
        ("http://h:8080/", "http://h:8080/v1/chat/completions"),
        ("http://h:8080/v1", "http://h:8080/v1/chat/completions"),
        ("http://h:8080/v1/", "http://h:8080/v1/chat/completions"),
        ("http://h:8080/v1/chat/completions", "http://h:8080/v1/chat/completions"),
        ("http://h:8080/v1/chat/completions/", "http://h:8080/v1/chat/completions"),
        ("http://h:8080/v1/models", "http://h:8080/v1/chat/completions"),
        ("  http://h:8080/v1//  ", "http://h:8080/v1/chat/completions"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/chat/completions"),
        ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1/chat/completions"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
        ),
        (
            "https://gateway.ai.cloudflare.com/v1/ACCOUNT/GATEWAY/openai",
            "https://gateway.ai.cloudflare.com/v1/ACCOUNT/GATEWAY/openai/chat/completions"
        ),
        ("https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1/chat/completions"),
        ("http://h:8080/llama", "http://h:8080/llama/v1/chat/completions"),
        (
            "https://x.openai.azure.com/openai/v1/?api-version=preview",
            "https://x.openai.azure.com/openai/v1/chat/completions?api-version=preview"
        ),
        ("http://[::1]:8080", "http://[::1]:8080/v1/chat/completions"),
    ]

    @Test(arguments: openAICases)
    func openAIEndpoint(_ typed: String, _ endpoint: String) {
        #expect(OpenAIChatModel.Configuration(baseURL: typed).endpoint == endpoint)
    }

    @Test(arguments: [
        ("http://h:8080", "http://h:8080/v1/models"),
        ("http://h:8080/v1/chat/completions", "http://h:8080/v1/models"),
        ("https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/models"),
    ])
    func openAIModelsEndpoint(_ typed: String, _ endpoint: String) {
        #expect(OpenAIChatModel.Configuration(baseURL: typed).modelsEndpoint == endpoint)
    }

    static let anthropicCases: [(typed: String, endpoint: String)] = [
        ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1/", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1/messages/", "https://api.anthropic.com/v1/messages"),
        ("https://api.deepseek.com/anthropic", "https://api.deepseek.com/anthropic/v1/messages"),
        // A version further up the path is the gateway's; Anthropic's own `/v1` still follows.
        (
            "https://gateway.ai.cloudflare.com/v1/ACCOUNT/GATEWAY/anthropic",
            "https://gateway.ai.cloudflare.com/v1/ACCOUNT/GATEWAY/anthropic/v1/messages"
        ),
    ]

    @Test(arguments: anthropicCases)
    func anthropicEndpoint(_ typed: String, _ endpoint: String) {
        #expect(AnthropicModel.Configuration(baseURL: typed).endpoint == endpoint)
    }

    @Test(arguments: [
        "https://api.anthropic.com", "https://api.anthropic.com/v1/", "https://api.anthropic.com/v1/messages",
    ])
    func anthropicModelsEndpoint(_ typed: String) {
        #expect(AnthropicModel.Configuration(baseURL: typed).modelsEndpoint == "https://api.anthropic.com/v1/models")
    }

    @Test(arguments: [
        ("http://h", "http://h/v1", "http://h/v1"),
        ("http://h/v2", "http://h/v2", "http://h/v2"),
        ("http://h/v1alpha1/x", "http://h/v1alpha1/x", "http://h/v1alpha1/x/v1"),
        ("http://h/version", "http://h/version/v1", "http://h/version/v1"),
        ("http://h/vx", "http://h/vx/v1", "http://h/vx/v1"),
    ])
    func theRootsKeepAnyVersionSegment(_ typed: String, _ openAI: String, _ anthropic: String) {
        #expect(ProviderBaseURL.openAI(typed) == openAI)
        #expect(ProviderBaseURL.anthropic(typed) == anthropic)
    }

    // MARK: Over real HTTP

    @Test(arguments: ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
    func anOpenAIBaseWithOrWithoutV1ReachesTheEndpoint(_ suffix: String) async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            var configuration = OpenAIChatModel.Configuration(
                baseURL: "http://127.0.0.1:\(server.port)\(suffix)", defaultModel: "m")
            configuration.retry = fastRetry
            let completion = try await OpenAIChatModel(configuration: configuration).complete(
                CompletionRequest(messages: [.user("hi")]))
            #expect(completion.text == "ok")
            let request = try #require(await server.requests.first)
            #expect(request.method == "POST")
            #expect(request.path == "/v1/chat/completions")
        }
    }

    @Test(arguments: ["", "/", "/v1", "/v1/", "/v1/messages"])
    func anAnthropicBaseWithOrWithoutV1ReachesTheEndpoint(_ suffix: String) async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            var configuration = AnthropicModel.Configuration(
                baseURL: "http://127.0.0.1:\(server.port)\(suffix)", apiKey: "k", defaultModel: "m")
            configuration.retry = fastRetry
            let completion = try await AnthropicModel(configuration: configuration).complete(
                CompletionRequest(messages: [.user("hi")]))
            #expect(completion.text == "ok")
            let request = try #require(await server.requests.first)
            #expect(request.path == "/v1/messages")
        }
    }
}
