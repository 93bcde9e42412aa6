import Foundation
import RLM
import RLMProviders
import RLMSandbox
import RLMTesting
import Testing

/// The engine with real provider clients over real HTTP to the fake server: recursion, follow-up questions,
/// recovery from a traceback and the answer dict, in both wire formats.
@Suite("Engine over HTTP", .serialized, .noSandboxLeftBehind)
struct EngineOverHTTPTests {
    static func model(_ server: FakeLLMServer, _ format: FakeLLMServer.WireFormat) -> any LanguageModel {
        switch format {
        case .openAI:
            return OpenAIChatModel(
                configuration: .init(baseURL: server.openAIBaseURL, apiKey: "sk-test", defaultModel: "m"),
                httpClient: ProviderHTTPClient.shared)
        case .anthropic:
            return AnthropicModel(
                configuration: .init(baseURL: server.anthropicBaseURL, apiKey: "sk-test", defaultModel: "m"),
                httpClient: ProviderHTTPClient.shared)
        }
    }

    static func configuration(_ model: any LanguageModel) -> RLMConfiguration {
        var configuration = RLMConfiguration(rootModel: model, sandbox: sandboxForTests())
        configuration.cellTimeout = .seconds(20)
        return configuration
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func recursionAndTracebackRecovery(format: FakeLLMServer.WireFormat) async throws {
        let handler = FakeLLMServer.Handler { request in
            let question = request.messages.count > 1 ? request.messages[1].content : ""
            let turn = request.messages.filter { $0.role == .assistant }.count
            if question.contains("child: count commas") {
                return .text(turn == 0 ? "```repl\nFINAL(context.count(','))\n```" : "FINAL(bad)")
            }
            switch turn {
            case 0: return .text("```repl\nprint(undefined_thing)\n```")
            case 1:
                let sawError = request.lastUserMessage?.contains("NameError") == true
                return .text(
                    sawError
                        ? "```repl\nn = rlm_query('child: count commas', context=context)\nprint(n)\n```"
                        : "FINAL(no traceback)")
            default: return .text("FINAL(\(request.lastUserMessage?.contains("3") == true ? "three" : "wrong"))")
            }
        }
        try await FakeLLMServer.withServer(handler) { server in
            let result = try await RLMEngine(configuration: Self.configuration(Self.model(server, format)))
                .run(query: "parent", context: .text("a,b,c,d"))
            #expect(result.answer == "three")
            #expect(result.usage.subcalls == 1)
        }
    }

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func followUpsKeepStateAndHistory(format: FakeLLMServer.WireFormat) async throws {
        let handler = FakeLLMServer.Handler { request in
            let turn = request.messages.filter { $0.role == .assistant }.count
            switch turn {
            case 0:
                return .text(
                    "```repl\nwords = context.split()\nanswer['content'] = len(words)\nanswer['ready'] = True\n```")
            case 1: return .text("```repl\nprint(words[-1])\n```")
            default: return .text("FINAL(\(request.lastUserMessage?.contains("gamma") == true ? "gamma" : "lost"))")
            }
        }
        try await FakeLLMServer.withServer(handler) { server in
            let session = RLMSession(
                configuration: Self.configuration(Self.model(server, format)), context: .text("alpha beta gamma"))
            let first = try await session.ask("how many words?")
            let second = try await session.ask("last word?")
            await session.close()
            #expect(first.answer == "3")
            #expect(second.answer == "gamma")
            let last = await server.requests.last
            #expect(last?.messages.contains { $0.content.contains("how many words?") } == true)
        }
    }
}
