import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RLM
import RLMProviders
import RLMTesting
import Synchronization
import Testing

/// The fake server itself: what other suites rely on.
@Suite("FakeLLMServer")
struct FakeLLMServerTests {
    private func post(
        _ url: String,
        _ body: String,
        headers: [(String, String)] = [("content-type", "application/json")]
    ) async throws -> (status: Int, headers: [(String, String)], body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (
            Int(response.status.code),
            response.headers.map { ($0.name, $0.value) },
            String(buffer: bytes)
        )
    }

    @Test func servesSixteenPlusConcurrentRequests() async throws {
        let gauge = ConcurrencyGauge()
        let handler = FakeLLMServer.Handler { request in
            gauge.enter()
            try? await Task.sleep(for: .milliseconds(400))
            gauge.leave()
            return .text("re: \(request.lastUserMessage ?? "")")
        }
        try await FakeLLMServer.withServer(handler) { server async throws in
            try await ProviderHTTPClient.withHTTPClient { client in
                let configuration = OpenAIChatModel.Configuration(baseURL: server.openAIBaseURL, defaultModel: "m")
                let model = OpenAIChatModel(configuration: configuration, httpClient: client)
                let start = ContinuousClock.now
                let answers = try await withThrowingTaskGroup(of: String.self) { group in
                    for index in 0..<32 {
                        group.addTask {
                            try await model.complete(CompletionRequest(messages: [.user("q\(index)")])).text
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let elapsed = ContinuousClock.now - start
                #expect(Set(answers) == Set((0..<32).map { "re: q\($0)" }))
                #expect(await server.requests.count == 32)
                // Concurrency is proved by the gauge, not by a wall-clock bound a loaded machine can break.
                #expect(gauge.maximum >= 16, "at most \(gauge.maximum) requests were in flight at once (\(elapsed))")
            }
        }
    }

    @Test func requestsWaitingForAConnectionDoNotTripTheConnectTimeout() async throws {
        // Two at a time: the other four wait (here, not in the HTTP client's queue) far longer than the connect
        // timeout, and must not fail for it.
        let configuration = FakeLLMServer.Configuration(latency: .seconds(3))
        try await FakeLLMServer.withServer(configuration: configuration, .echo()) { server async throws in
            let model = openAIModel(server) {
                $0.connectTimeout = .seconds(2)
                $0.connectionsPerHost = 2
            }
            let answers = try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        try await model.complete(CompletionRequest(messages: [.user("q\(index)")])).text
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count == 6)
            #expect(await server.requests.count == 6, "no request failed and was retried")
        }
    }

    @Test func keepsConnectionsAlive() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            let model = anthropicModel(server)
            for _ in 0..<5 {
                _ = try await model.complete(CompletionRequest(messages: [.user("x")]))
                _ = await collect(model.stream(CompletionRequest(messages: [.user("x")])))
            }
            #expect(await server.requests.count == 10)
            let connections = await server.connectionCount
            #expect(connections == 1)
        }
    }

    @Test func aScriptPastItsEndAnswers500() async throws {
        try await FakeLLMServer.withServer(.scripted([.text("only")])) { server async throws in
            let model = openAIModel(server) { $0.retry = .none }
            let first = try await model.complete(CompletionRequest(messages: [.user("1")]))
            #expect(first.text == "only")
            let error = await llmError { try await model.complete(CompletionRequest(messages: [.user("2")])) }
            #expect(error?.kind == .server)
            #expect(error?.message.contains("script has 1 replies") == true)
        }
    }

    @Test func recordsRequestsInOrderWithSystemFirst() async throws {
        try await FakeLLMServer.withServer(.always(.text("ok"))) { server async throws in
            _ = try await anthropicModel(server).complete(
                CompletionRequest(messages: [.system("sys"), .user("one")], model: "claude-a", maxOutputTokens: 9)
            )
            _ = try await openAIModel(server).complete(CompletionRequest(messages: [.user("two"), .system("late")]))
            let received = await server.requests
            #expect(received.map(\.index) == [0, 1])
            #expect(received[0].format == .anthropic)
            #expect(received[0].messages == [.system("sys"), .user("one")])
            #expect(received[0].model == "claude-a")
            #expect(received[0].maxTokens == 9)
            #expect(received[0].systemPrompt == "sys")
            #expect(received[1].format == .openAI)
            #expect(received[1].messages == [.user("two"), .system("late")])
            #expect(received[1].lastUserMessage == "two")
            #expect(received[1].receivedAt >= received[0].receivedAt)
        }
    }

    @Test func handlersSeeTheRequest() async throws {
        try await FakeLLMServer.withServer(respond: { request in
            .text("\(request.format.rawValue):\(request.stream):\(request.lastUserMessage ?? "")")
        }) { server async throws in
            let completion = try await openAIModel(server).complete(CompletionRequest(messages: [.user("hey")]))
            #expect(completion.text == "openAI:false:hey")
            let streamed = await collect(anthropicModel(server).stream(CompletionRequest(messages: [.user("yo")])))
            #expect(streamed.completion?.text == "anthropic:true:yo")
        }
    }

    @Test func strictModeRefusesWhatAnthropicRefuses() async throws {
        try await FakeLLMServer.withServer(.always(.text("never"))) { server async throws in
            let url = server.anthropicBaseURL + "/v1/messages"
            let headers = [("content-type", "application/json"), ("anthropic-version", "2023-06-01")]
            let noMaxTokens = try await post(
                url,
                #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                headers: headers
            )
            #expect(noMaxTokens.status == 400)
            #expect(noMaxTokens.body.contains("max_tokens"))
            #expect(noMaxTokens.body.contains(#""type":"invalid_request_error""#))
            let assistantFirst = try await post(
                url,
                #"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":"hi"}]}"#,
                headers: headers
            )
            #expect(assistantFirst.body.contains("first message must use the"))
            let systemRole = try await post(
                url,
                #"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}"#,
                headers: headers
            )
            #expect(systemRole.status == 400)
            let noVersion = try await post(
                url,
                #"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#
            )
            #expect(noVersion.body.contains("anthropic-version"))
            let blocks = try await post(
                url,
                #"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
                headers: headers
            )
            #expect(blocks.status == 200)
            #expect(await server.requests.last?.messages == [.system("S"), .user("hi")])
        }
    }

    @Test func speaksTheRealOpenAIStreamShape() async throws {
        let reply = FakeLLMServer.Reply.stream(
            ["Hel", "lo"], usage: .exact(TokenUsage(inputTokens: 3, outputTokens: 2)))
        try await FakeLLMServer.withServer(.always(reply)) { server async throws in
            let response = try await post(
                server.openAIBaseURL + "/chat/completions",
                #"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
            )
            #expect(response.status == 200)
            #expect(
                response.headers.contains { $0.0.lowercased() == "content-type" && $0.1.hasPrefix("text/event-stream") }
            )
            var parser = SSEParser()
            let events = try parser.feed(Array(response.body.utf8)) + parser.finish()
            #expect(events.last?.data == "[DONE]")
            let chunks = events.dropLast().compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.data.utf8)) as? [String: Any]
            }
            #expect(chunks.count == 5, "role, two pieces, finish, usage")
            #expect(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
            let usage = chunks.last?["usage"] as? [String: Any]
            #expect(usage?["prompt_tokens"] as? Int == 3)
            #expect((chunks.last?["choices"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func speaksTheRealAnthropicStreamShape() async throws {
        try await FakeLLMServer.withServer(.always(.stream(["Hel", "lo"]))) { server async throws in
            let response = try await post(
                server.anthropicBaseURL + "/v1/messages",
                #"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                headers: [("content-type", "application/json"), ("anthropic-version", "2023-06-01")]
            )
            var parser = SSEParser()
            let events = try parser.feed(Array(response.body.utf8)) + parser.finish()
            #expect(
                events.map(\.type) == [
                    "message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                    "content_block_stop", "message_delta", "message_stop",
                ]
            )
            for event in events {
                let object = try JSONSerialization.jsonObject(with: Data(event.data.utf8)) as? [String: Any]
                #expect(object?["type"] as? String == event.type, "the data's type repeats the event name")
            }
        }
    }

    @Test func unknownPathsGet404AndHealthAnswers() async throws {
        try await FakeLLMServer.withServer(.always(.text("x"))) { server async throws in
            let unknown = try await post(server.anthropicBaseURL + "/v2/whatever", "{}")
            #expect(unknown.status == 404)
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: server.anthropicBaseURL + "/health"),
                timeout: .seconds(5)
            )
            #expect(response.status == .ok)
            #expect(await server.requests.isEmpty, "only LLM requests are recorded")
        }
    }

    @Test func delayedRepliesWait() async throws {
        try await FakeLLMServer.withServer(.always(.text("late").delayed(by: .milliseconds(150)))) {
            server async throws in
            let start = ContinuousClock.now
            _ = try await openAIModel(server).complete(CompletionRequest(messages: [.user("x")]))
            #expect(ContinuousClock.now - start >= .milliseconds(150))
        }
    }

    @Test func shutdownEndsStalledRequestsAndIsIdempotent() async throws {
        let server = FakeLLMServer(handler: .always(.stall))
        try await server.start()
        let model = openAIModel(server) { $0.retry = .none }
        let call = Task { try await model.complete(CompletionRequest(messages: [.user("x")])) }
        try await waitForRequests(server, count: 1)
        let start = ContinuousClock.now
        await server.shutdown()
        await server.shutdown()
        #expect(ContinuousClock.now - start < .seconds(20), "not the stall's hour")
        let result = await call.result
        #expect((try? result.get()) == nil, "the stalled call fails once the server is gone")
    }
}

/// Counts how many handlers run at once.
final class ConcurrencyGauge: Sendable {
    private let state = Mutex((current: 0, maximum: 0))

    func enter() {
        state.withLock {
            $0.current += 1
            $0.maximum = max($0.maximum, $0.current)
        }
    }

    func leave() { state.withLock { $0.current -= 1 } }

    var maximum: Int { state.withLock { $0.maximum } }
}
