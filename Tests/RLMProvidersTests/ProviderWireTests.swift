import Foundation
import RLM
import RLMProviders
import RLMTesting
import Testing

/// Both formats × streamed and not, against the fake server over real HTTP.
@Suite("Providers: wire formats")
struct ProviderWireTests {
    static let matrix: [(FakeLLMServer.WireFormat, Bool)] = [
        (.openAI, false), (.openAI, true), (.anthropic, false), (.anthropic, true),
    ]

    @Test(arguments: matrix)
    func completesAndParsesUsage(_ format: FakeLLMServer.WireFormat, _ streaming: Bool) async throws {
        let usage = TokenUsage(inputTokens: 123, outputTokens: 45)
        let reply = FakeLLMServer.Reply.stream(
            ["The ", "answer ", "is 42."], usage: .exact(usage), finishReason: "length")
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let model = model(format, server)
            let request = CompletionRequest(messages: [.system("Be brief."), .user("What is it?")])
            let completion = try await run(model, request, streaming: streaming)
            #expect(completion.text == "The answer is 42.")
            #expect(completion.usage == usage)
            #expect(completion.finishReason == "length")
            #expect(completion.model == (format == .openAI ? "test-model" : "claude-test"))
            let received = await server.requests
            #expect(received.count == 1)
            #expect(received.first?.stream == streaming)
            #expect(received.first?.format == format)
            #expect(received.first?.messages == [.system("Be brief."), .user("What is it?")])
        }
    }

    @Test(arguments: matrix)
    func streamsPiecesInOrder(_ format: FakeLLMServer.WireFormat, _ streaming: Bool) async throws {
        guard streaming else { return }
        let pieces = ["α", "β ", "γ—", "🎉", " done"]
        try await FakeLLMServer.withServer(.always(.stream(pieces, delay: .milliseconds(5)))) { server async throws in
            let result = await collect(model(format, server).stream(CompletionRequest(messages: [.user("go")])))
            #expect(result.error == nil)
            #expect(result.pieces == pieces)
            #expect(result.doneCount == 1)
            #expect(result.completion?.text == pieces.joined())
        }
    }

    @Test(arguments: matrix)
    func estimatesTokensWhenTheServerReportsNone(_ format: FakeLLMServer.WireFormat, _ streaming: Bool) async throws {
        try await FakeLLMServer.withServer(.always(.text("12345678", usage: .omitted))) { server async throws in
            // 17 characters of prompt → ceil(17/4) = 5; 8 characters of text → 2.
            let request = CompletionRequest(messages: [.user("0123456789abcdefg")])
            let completion = try await run(model(format, server), request, streaming: streaming)
            #expect(completion.usage == TokenUsage(inputTokens: 5, outputTokens: 2))
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func completeCanStreamUnderTheHood(_ format: FakeLLMServer.WireFormat) async throws {
        try await FakeLLMServer.withServer(.always(.stream(["a", "b"]))) { server async throws in
            var settings = CommonSettings()
            settings.streamCompletions = true
            let completion = try await model(format, server, settings).complete(
                CompletionRequest(messages: [.user("x")])
            )
            #expect(completion.text == "ab")
            #expect(await server.requests.first?.stream == true)
        }
    }

    @Test func openAIRequestBodyCarriesTheOptions() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let model = openAIModel(server) { $0.temperature = 0.5 }
            let request = CompletionRequest(
                messages: [.system("sys"), .user("hi")],
                model: "other-model",
                maxOutputTokens: 77,
                stop: ["END", "\n\n"]
            )
            _ = try await run(model, request, streaming: true)
            let received = try #require(await server.requests.first)
            #expect(received.path == "/v1/chat/completions")
            #expect(received.model == "other-model")
            #expect(received.maxTokens == 77)
            #expect(received.temperature == 0.5)
            #expect(received.stop == ["END", "\n\n"])
            #expect(received.includeUsage)
            #expect(received.header("authorization") == nil, "no key configured: no Authorization header")
            let json = try #require(received.json)
            #expect(json["max_tokens"] as? Int == 77)
            #expect((json["messages"] as? [[String: Any]])?.first?["role"] as? String == "system")
        }
    }

    @Test func openAIOmitsUnsetOptions() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            _ = try await openAIModel(server, key: "sk-local").complete(CompletionRequest(messages: [.user("hi")]))
            let received = try #require(await server.requests.first)
            let json = try #require(received.json)
            #expect(json["max_tokens"] == nil)
            #expect(json["temperature"] == nil)
            #expect(json["stop"] == nil)
            #expect(json["stream_options"] == nil)
            #expect(json["stream"] as? Bool == false)
            #expect(received.header("authorization") == "Bearer sk-local")
        }
    }

    @Test func openAIMaxTokensParameterCanBeRenamed() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let model = openAIModel(server) {
                $0.maxTokensParameter = "max_completion_tokens"
                $0.maxOutputTokens = 300
            }
            _ = try await model.complete(CompletionRequest(messages: [.user("hi")]))
            let json = try #require(await server.requests.first?.json)
            #expect(json["max_completion_tokens"] as? Int == 300)
            #expect(json["max_tokens"] == nil)
        }
    }

    /// A bare host gets `/v1` (see ``BaseURLTests`` for every shape).
    @Test func openAIAcceptsABaseURLWithATrailingSlashAndWithoutV1() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let slashed = openAIModel(server) { $0.baseURL = server.openAIBaseURL + "/" }
            #expect(try await slashed.complete(CompletionRequest(messages: [.user("a")])).text == "ok")
            let bare = openAIModel(server) { $0.baseURL = server.anthropicBaseURL }
            #expect(try await bare.complete(CompletionRequest(messages: [.user("a")])).text == "ok")
            #expect(await server.requests.map(\.path) == ["/v1/chat/completions", "/v1/chat/completions"])
        }
    }

    @Test func anthropicPutsTheSystemPromptAtTopLevelAndMergesRoles() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let request = CompletionRequest(
                messages: [
                    .system("You are terse."),
                    .user("part one"),
                    .user("part two"),
                    .assistant("noted"),
                    .system("Answer in French."),
                    .assistant("and more"),
                    .user("go"),
                ],
                maxOutputTokens: 64,
                temperature: 0.2,
                stop: ["STOP"]
            )
            _ = try await anthropicModel(server).complete(request)
            let received = try #require(await server.requests.first)
            #expect(received.path == "/v1/messages")
            #expect(received.header("x-api-key") == "test-key")
            #expect(received.header("anthropic-version") == "2023-06-01")
            #expect(received.header("content-type") == "application/json")
            let json = try #require(received.json)
            #expect(json["system"] as? String == "You are terse.\n\nAnswer in French.")
            #expect(json["max_tokens"] as? Int == 64)
            #expect(json["temperature"] as? Double == 0.2)
            #expect(json["stop_sequences"] as? [String] == ["STOP"])
            let messages = try #require(json["messages"] as? [[String: Any]])
            #expect(messages.map { $0["role"] as? String } == ["user", "assistant", "user"])
            #expect(messages.map { $0["content"] as? String } == ["part one\n\npart two", "noted\n\nand more", "go"])
            #expect(
                received.messages == [
                    .system("You are terse.\n\nAnswer in French."), .user("part one\n\npart two"),
                    .assistant("noted\n\nand more"), .user("go"),
                ]
            )
        }
    }

    @Test func anthropicStartsWithAUserMessageAndDefaultsMaxTokens() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            _ = try await anthropicModel(server).complete(
                CompletionRequest(messages: [.system("sys"), .assistant("I spoke first."), .user("")])
            )
            let json = try #require(await server.requests.first?.json)
            #expect(json["max_tokens"] as? Int == 4096)
            let messages = try #require(json["messages"] as? [[String: Any]])
            #expect(messages.map { $0["role"] as? String } == ["user", "assistant", "user"])
            #expect(messages.first?["content"] as? String == "Continue.")
            #expect(messages.last?["content"] as? String == "Continue.", "empty content is replaced")
        }
    }

    @Test func anthropicWithOnlyASystemPromptStillSendsAUserMessage() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let completion = try await anthropicModel(server).complete(CompletionRequest(messages: [.system("s")]))
            #expect(completion.text == "ok")
            #expect(await server.requests.first?.messages == [.system("s"), .user("Continue.")])
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func toleratesAServerThatIgnoresStreamTrue(_ format: FakeLLMServer.WireFormat) async throws {
        let body =
            format == .openAI
            ? #"{"model":"m","choices":[{"message":{"content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#
            : #"{"type":"message","model":"m","content":[{"type":"text","text":"whole"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#
        let reply = FakeLLMServer.Reply.raw(status: 200, headers: [("content-type", "application/json")], body: body)
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let result = await collect(model(format, server).stream(CompletionRequest(messages: [.user("x")])))
            #expect(result.pieces == ["whole"])
            #expect(result.completion?.usage == TokenUsage(inputTokens: 3, outputTokens: 1))
        }
    }

    @Test func openAIToleratesAStreamWithoutDONE() async throws {
        let body = """
            data: {"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}

            data: {"choices":[{"delta":{},"finish_reason":"stop"}]}
            """
        let reply = FakeLLMServer.Reply.raw(status: 200, headers: [("content-type", "text/event-stream")], body: body)
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let result = await collect(openAIModel(server).stream(CompletionRequest(messages: [.user("x")])))
            #expect(result.error == nil)
            #expect(result.completion?.text == "hi")
            #expect(result.completion?.finishReason == "stop")
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func garbageIsAnInvalidResponse(_ format: FakeLLMServer.WireFormat) async throws {
        let reply = FakeLLMServer.Reply.raw(
            status: 200, headers: [("content-type", "application/json")], body: "<html>")
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let error = await llmError {
                try await model(format, server).complete(CompletionRequest(messages: [.user("x")]))
            }
            #expect(error?.kind == .invalidResponse)
        }
    }

    @Test func anOversizedBodyIsRefusedClearly() async throws {
        try await FakeLLMServer.withServer(.always(.text(String(repeating: "x", count: 4096)))) { server async throws in
            let model = openAIModel(server) { $0.maxResponseBytes = 1024 }
            let error = await llmError { try await model.complete(CompletionRequest(messages: [.user("x")])) }
            #expect(error?.kind == .invalidResponse)
            #expect(error?.message.contains("larger than") == true)
            #expect(await server.requests.count == 1)
        }
    }

    @Test func namesAndWindowsComeFromTheConfiguration() {
        var openAI = OpenAIChatModel.Configuration(defaultModel: "qwen", contextWindow: 8192)
        openAI.providerName = "local"
        #expect(OpenAIChatModel(configuration: openAI).name == "local:qwen")
        #expect(OpenAIChatModel(configuration: openAI).contextWindow == 8192)
        let anthropic = AnthropicModel(configuration: .init(defaultModel: "claude-x"))
        #expect(anthropic.name == "anthropic:claude-x")
        #expect(anthropic.contextWindow == nil)
        #expect(openAI.endpoint == "https://api.openai.com/v1/chat/completions")
        #expect(AnthropicModel.Configuration().endpoint == "https://api.anthropic.com/v1/messages")
    }

    @Test func anEmptyModelNameIsAConfigurationError() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let model = openAIModel(server) { $0.defaultModel = "" }
            let error = await llmError { try await model.complete(CompletionRequest(messages: [.user("x")])) }
            #expect(error?.kind == .configuration)
            #expect(await server.requests.isEmpty)
        }
    }
}
