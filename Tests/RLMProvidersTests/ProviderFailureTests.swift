import AsyncHTTPClient
import Foundation
import RLM
import RLMProviders
import RLMTesting
import Testing

/// Retries, error mapping, timeouts and cancellation, against the fake server over real HTTP.
@Suite("Providers: failures")
struct ProviderFailureTests {
    private let hello = CompletionRequest(messages: [.user("hello")])

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func retriesAfter429HonouringRetryAfter(_ format: FakeLLMServer.WireFormat) async throws {
        let script = FakeLLMServer.scripted([.rateLimited(retryAfter: "1"), .text("ok")])
        try await FakeLLMServer.withServer(script) { server async throws in
            var settings = CommonSettings()
            settings.retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(1), maxDelay: .seconds(5))
            let completion = try await model(format, server, settings).complete(hello)
            #expect(completion.text == "ok")
            let received = await server.requests
            #expect(received.count == 2)
            let waited = received[1].receivedAt - received[0].receivedAt
            #expect(waited >= .seconds(1), "waited \(waited), Retry-After said 1 s")
        }
    }

    @Test func retryAfterMsIsPreferredAndHonoured() async throws {
        let reply = FakeLLMServer.Reply.error(
            status: 503,
            message: "busy",
            headers: [("retry-after-ms", "150"), ("retry-after", "3600")]
        )
        try await FakeLLMServer.withServer(.scripted([reply, .text("ok")])) { server async throws in
            let model = openAIModel(server) {
                $0.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(1), maxDelay: .seconds(2))
            }
            #expect(try await model.complete(hello).text == "ok")
            let received = await server.requests
            let waited = received[1].receivedAt - received[0].receivedAt
            #expect(waited >= .milliseconds(150))
            #expect(waited < .seconds(60), "retry-after-ms wins over Retry-After")
        }
    }

    @Test func anHourLongRetryAfterIsCappedAtMaxDelay() async throws {
        try await FakeLLMServer.withServer(.scripted([.rateLimited(retryAfter: "3600"), .text("ok")])) {
            server async throws in
            let model = openAIModel(server) {
                $0.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(1), maxDelay: .milliseconds(100))
            }
            let start = ContinuousClock.now
            #expect(try await model.complete(hello).text == "ok")
            #expect(ContinuousClock.now - start < .seconds(60), "capped at maxDelay, not an hour")
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func retriesAfter500ThenSucceeds(_ format: FakeLLMServer.WireFormat) async throws {
        try await FakeLLMServer.withServer(.scripted([.serverError, .overloaded, .text("ok")])) { server async throws in
            #expect(try await model(format, server).complete(hello).text == "ok")
            #expect(await server.requests.count == 3)
        }
    }

    @Test(arguments: [429, 500, 502, 503, 504, 529])
    func givesUpAfterMaxAttempts(_ status: Int) async throws {
        let reply = FakeLLMServer.Reply.error(status: status, message: "nope")
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let error = await llmError { try await openAIModel(server).complete(hello) }
            #expect(error?.kind == (status == 429 ? .rateLimited : .server))
            #expect(error?.statusCode == status)
            #expect(error?.message.contains("nope") == true)
            #expect(await server.requests.count == 4)
        }
    }

    @Test(arguments: [400, 401, 403, 404, 422])
    func neverRetriesClientErrors(_ status: Int) async throws {
        let reply = FakeLLMServer.Reply.error(status: status, message: "refused")
        try await FakeLLMServer.withServer(.scripted([reply, .text("never")])) { server async throws in
            let error = await llmError { try await anthropicModel(server).complete(hello) }
            #expect(error?.statusCode == status)
            let expected: LLMError.Kind = status == 401 || status == 403 ? .unauthorized : .badRequest
            #expect(error?.kind == expected)
            #expect(await server.requests.count == 1)
        }
    }

    @Test func unauthorizedNamesTheKeyVariable() async throws {
        try await FakeLLMServer.withServer(.always(.error(status: 401, message: "invalid x-api-key"))) {
            server async throws in
            let error = await llmError { try await anthropicModel(server, key: "wrong").complete(hello) }
            #expect(error?.kind == .unauthorized)
            #expect(
                error?.message
                    == "the server at \(server.anthropicBaseURL) rejected the API key (HTTP 401); check "
                    + "ANTHROPIC_API_KEY: invalid x-api-key"
            )
        }
    }

    @Test func aMissingKeySaysWhichVariableToSet() async throws {
        let configuration = FakeLLMServer.Configuration(expectedAPIKey: "sk-right")
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("ok"))) { server async throws in
            let error = await llmError { try await openAIModel(server, key: nil).complete(hello) }
            #expect(error?.kind == .unauthorized)
            #expect(error?.message.contains("no API key is configured; set OPENAI_API_KEY") == true)
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func theServersAuthCheckRejectsAWrongKey(_ format: FakeLLMServer.WireFormat) async throws {
        let configuration = FakeLLMServer.Configuration(expectedAPIKey: "sk-right")
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("ok"))) { server async throws in
            var wrong = CommonSettings()
            wrong.key = "sk-wrong"
            let error = await llmError { try await model(format, server, wrong).complete(hello) }
            #expect(error?.kind == .unauthorized)
            #expect(error?.statusCode == 401)
            let variable = format == .openAI ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY"
            #expect(error?.message.contains("check \(variable)") == true)
            #expect(await server.requests.count == 1)

            var right = CommonSettings()
            right.key = "sk-right"
            #expect(try await model(format, server, right).complete(hello).text == "ok")
        }
    }

    static let overflowCases: [(FakeLLMServer.ContextOverflowStyle, FakeLLMServer.WireFormat)] = [
        (.openAI, .openAI), (.llamaCpp, .openAI), (.vLLM, .openAI), (.anthropic, .anthropic),
    ]

    @Test(arguments: overflowCases)
    func contextOverflowIsRecognised(
        _ style: FakeLLMServer.ContextOverflowStyle,
        _ format: FakeLLMServer.WireFormat
    ) async throws {
        for streaming in [false, true] {
            try await FakeLLMServer.withServer(.always(.contextOverflow(style))) { server async throws in
                let error = await llmError { try await run(model(format, server), hello, streaming: streaming) }
                #expect(error?.kind == .contextOverflow, "\(style), streaming: \(streaming)")
                #expect(error?.statusCode == 400)
                #expect(await server.requests.count == 1, "never retried")
            }
        }
    }

    @Test func contextOverflowCarriesTheServersMessageTruncated() async throws {
        let long = "This model's maximum context length is 4096 tokens. " + String(repeating: "x", count: 2000)
        try await FakeLLMServer.withServer(.always(.error(status: 400, message: long))) { server async throws in
            let error = await llmError { try await openAIModel(server).complete(hello) }
            #expect(error?.kind == .contextOverflow)
            #expect(error?.message.contains("maximum context length is 4096") == true)
            #expect((error?.message.count ?? 0) < 700)
        }
    }

    @Test func aStreamedErrorEventBeforeAnyTextIsRetried() async throws {
        let script = FakeLLMServer.scripted([
            .stream([], then: .error(type: "overloaded_error", message: "Overloaded")),
            .stream(["fine"]),
        ])
        try await FakeLLMServer.withServer(script) { server async throws in
            let result = await collect(anthropicModel(server).stream(hello))
            #expect(result.error == nil)
            #expect(result.pieces == ["fine"])
            #expect(await server.requests.count == 2)
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aStreamedErrorAfterTextEndsTheStream(_ format: FakeLLMServer.WireFormat) async throws {
        let script = FakeLLMServer.scripted([
            .stream(["partial"], then: .error(type: "api_error", message: "boom")),
            .stream(["never"]),
        ])
        try await FakeLLMServer.withServer(script) { server async throws in
            let result = await collect(model(format, server).stream(hello))
            #expect(result.pieces == ["partial"])
            #expect((result.error as? LLMError)?.kind == .server)
            #expect((result.error as? LLMError)?.message.contains("boom") == true)
            #expect(await server.requests.count == 1)
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aDroppedConnectionIsRetried(_ format: FakeLLMServer.WireFormat) async throws {
        try await FakeLLMServer.withServer(.scripted([.drop, .text("recovered")])) { server async throws in
            #expect(try await model(format, server).complete(hello).text == "recovered")
            #expect(await server.requests.count == 2)
        }
    }

    @Test func aDropMidStreamIsNotRetriedOnceTextWasYielded() async throws {
        try await FakeLLMServer.withServer(.scripted([.stream(["a", "b"], then: .drop), .stream(["x"])])) {
            server async throws in
            let result = await collect(openAIModel(server).stream(hello))
            #expect(result.pieces == ["a", "b"])
            #expect((result.error as? LLMError)?.kind == .transport)
            #expect(await server.requests.count == 1)
        }
    }

    private func unreachableModel(
        _ format: FakeLLMServer.WireFormat,
        port: Int,
        httpClient: HTTPClient,
        connectTimeout: Duration = .milliseconds(300)
    ) -> any LanguageModel {
        let base = format == .openAI ? "http://127.0.0.1:\(port)/v1" : "http://127.0.0.1:\(port)"
        switch format {
        case .openAI:
            var configuration = OpenAIChatModel.Configuration(baseURL: base, defaultModel: "m")
            configuration.connectTimeout = connectTimeout
            configuration.retry = fastRetry
            return OpenAIChatModel(configuration: configuration, httpClient: httpClient)
        case .anthropic:
            var configuration = AnthropicModel.Configuration(baseURL: base, apiKey: "k", defaultModel: "m")
            configuration.connectTimeout = connectTimeout
            configuration.retry = fastRetry
            return AnthropicModel(configuration: configuration, httpClient: httpClient)
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func anUnreachableEndpointIsATransportErrorNamingTheURL(_ format: FakeLLMServer.WireFormat) async throws {
        let port = try await closedPort()
        let start = ContinuousClock.now
        let error = await llmError {
            try await unreachableModel(format, port: port, httpClient: .shared).complete(hello)
        }
        #expect(error?.kind == .transport)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("check that the server is running") == true)
        #expect(ContinuousClock.now - start < .seconds(30), "the connect timeout ended it")
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func aFailFastClientSaysTheConnectionWasRefused(_ format: FakeLLMServer.WireFormat) async throws {
        let port = try await closedPort()
        try await ProviderHTTPClient.withHTTPClient(connectTimeout: .seconds(2)) { client in
            let start = ContinuousClock.now
            let error = await llmError {
                try await unreachableModel(format, port: port, httpClient: client, connectTimeout: .seconds(3))
                    .complete(hello)
            }
            #expect(error?.kind == .transport)
            #expect(error?.message.contains("connection refused") == true, "\(error?.message ?? "")")
            #expect(error?.message.contains("127.0.0.1:\(port)") == true)
            #expect(ContinuousClock.now - start < .seconds(30))
        }
        let error = await llmError {
            try await unreachableModel(
                format,
                port: port,
                httpClient: ProviderHTTPClient.shared,
                connectTimeout: .seconds(3)
            ).complete(hello)
        }
        #expect(error?.message.contains("connection refused") == true, "\(error?.message ?? "")")
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func theTotalTimeoutEndsAStreamThatStalls(_ format: FakeLLMServer.WireFormat) async throws {
        let reply = FakeLLMServer.Reply.stream(["one ", "two"], delay: .milliseconds(20), then: .stall)
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            var settings = CommonSettings()
            settings.totalTimeout = .seconds(1)
            let start = ContinuousClock.now
            let result = await collect(model(format, server, settings).stream(hello))
            let elapsed = ContinuousClock.now - start
            #expect(["one ", "two"].starts(with: result.pieces))
            let error = result.error as? LLMError
            #expect(error?.kind == .timeout)
            #expect(error?.message.contains("total timeout") == true)
            #expect(elapsed >= .seconds(1) && elapsed < .seconds(30), "took \(elapsed)")
            #expect(await server.requests.count <= 1, "no retry after the total timeout")
        }
    }

    @Test func theReadTimeoutEndsASilentStream() async throws {
        let reply = FakeLLMServer.Reply.stream(["x"], then: .stall)
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let model = anthropicModel(server) { $0.readTimeout = .milliseconds(200) }
            let result = await collect(model.stream(hello))
            let error = result.error as? LLMError
            #expect(error?.kind == .timeout)
            #expect(error?.message.contains("read timeout") == true)
        }
    }

    @Test func theReadTimeoutBeforeAnyTextIsRetried() async throws {
        let handler = FakeLLMServer.Handler { request in
            request.index == 0 ? .stream([], then: .stall) : .stream(["late"])
        }
        try await FakeLLMServer.withServer(handler) { server async throws in
            // 1.5 s: a retry that answers at once must not miss the read timeout on a loaded machine.
            let model = openAIModel(server) { $0.readTimeout = .milliseconds(1500) }
            let result = await collect(model.stream(hello))
            #expect(result.error == nil)
            #expect(result.pieces == ["late"])
            #expect(await server.requests.count >= 2)
        }
    }

    @Test func theTotalTimeoutBoundsANonStreamedCallThatNeverAnswers() async throws {
        try await FakeLLMServer.withServer(.always(.stall)) { server async throws in
            let model = openAIModel(server) { $0.totalTimeout = .milliseconds(500) }
            let error = await llmError { try await model.complete(hello) }
            #expect(error?.kind == .timeout)
            #expect(error?.message.contains("total timeout") == true)
            #expect(await server.requests.count <= 1, "a total timeout is never retried")
        }
    }

    @Test func aSlowButSteadyStreamIsNotAReadTimeout() async throws {
        // 3 s of stream in all, never 1.5 s of silence: the read timeout bounds each wait, not the whole stream (a
        // piece every 250 ms leaves a loaded machine six times the margin).
        let pieces = (0..<12).map { "p\($0) " }
        try await FakeLLMServer.withServer(.always(.stream(pieces, delay: .milliseconds(250)))) { server async throws in
            let model = openAIModel(server) { $0.readTimeout = .milliseconds(1500) }
            let result = await collect(model.stream(hello))
            #expect(result.error == nil)
            #expect(result.pieces == pieces)
        }
    }

    @Test func cancellationStopsACall() async throws {
        try await FakeLLMServer.withServer(.always(.stall)) { server async throws in
            let model = openAIModel(server)
            let task = Task { try await model.complete(hello) }
            try await waitForRequests(server, count: 1)
            let start = ContinuousClock.now
            task.cancel()
            let result = await task.result
            #expect(ContinuousClock.now - start < .seconds(15), "not the 20 s backoff nor a hang")
            #expect(throws: CancellationError.self) { try result.get() }
            let count = await server.requests.count
            #expect(count == 1)
        }
    }

    @Test func cancellationStopsRetries() async throws {
        try await FakeLLMServer.withServer(.always(.serverError)) { server async throws in
            let model = openAIModel(server) {
                $0.retry = RetryPolicy(maxAttempts: 10, baseDelay: .seconds(20), maxDelay: .seconds(20), jitter: false)
            }
            let task = Task { try await model.complete(hello) }
            try await waitForRequests(server, count: 1)
            try await Task.sleep(for: .milliseconds(50))
            task.cancel()
            let start = ContinuousClock.now
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(ContinuousClock.now - start < .seconds(15), "not the 20 s backoff nor a hang")
            #expect(await server.requests.count == 1)
        }
    }
}
