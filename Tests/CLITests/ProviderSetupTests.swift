import Foundation
import RLM
import RLMTesting
import Testing

/// The README's one-line setups, each run against the fake server speaking that setup's wire format, with the
/// server's address in place of the real host.
@Suite("Provider setups from the README", .serialized)
struct ProviderSetupTests {
    struct Setup: Sendable, CustomStringConvertible {
        var description: String
        var format: FakeLLMServer.WireFormat
        /// `{root}` is the fake server's `http://127.0.0.1:PORT`.
        var arguments: [String]
        var environment: [String: String]
        /// The model the server must receive.
        var model: String
        /// The key the server insists on, when the setup sends one.
        var key: String? = nil
    }

    static let setups: [Setup] = [
        Setup(
            description: "OpenAI", format: .openAI, arguments: ["--model", "gpt-4o-mini"],
            environment: ["OPENAI_API_KEY": "sk-openai-test-key", "OPENAI_BASE_URL": "{root}/v1"],
            model: "gpt-4o-mini", key: "sk-openai-test-key"),
        Setup(
            description: "Anthropic", format: .anthropic, arguments: ["--model", "claude-sonnet-4-5"],
            environment: ["ANTHROPIC_API_KEY": "sk-ant-test-key", "ANTHROPIC_BASE_URL": "{root}"],
            model: "claude-sonnet-4-5", key: "sk-ant-test-key"),
        // OpenRouter's host sends OPENROUTER_API_KEY by itself; the fake server is not that host, so the test names the
        // variable as a gateway would.
        Setup(
            description: "OpenRouter", format: .openAI,
            arguments: [
                "--base-url", "{root}/api/v1", "--api-key-env", "OPENROUTER_API_KEY", "--model", "openai/gpt-4o-mini",
                "--max-cost", "1",
            ],
            environment: ["OPENROUTER_API_KEY": "sk-or-test-key"], model: "openai/gpt-4o-mini", key: "sk-or-test-key"),
        Setup(
            description: "a gateway with its own key", format: .openAI,
            arguments: ["--base-url", "{root}/v1", "--api-key-env", "MY_GATEWAY_KEY", "--model", "m"],
            environment: ["MY_GATEWAY_KEY": "gw-test-key-123"], model: "m", key: "gw-test-key-123"),
        Setup(
            description: "Ollama", format: .openAI, arguments: ["--base-url", "{root}", "--model", "qwen2.5-coder:7b"],
            environment: [:], model: "qwen2.5-coder:7b"),
        Setup(
            description: "vLLM", format: .openAI, arguments: ["--base-url", "{root}/v1"], environment: [:],
            model: FakeLLMServer.Configuration().defaultModel),
        Setup(
            description: "llama.cpp", format: .openAI, arguments: ["--base-url", "{root}"], environment: [:],
            model: FakeLLMServer.Configuration().defaultModel),
    ]

    @Test(arguments: setups)
    func theSetupAnswers(_ setup: Setup) async throws {
        // The reported-cost path of OpenRouter is covered where its host can be named: ReportedCostTests (wire) and
        // RuntimeTests.aPriceGivenByTheUserOrTheProviderLiftsTheRefusal (budget); here the gateway's `/api/v1` path.
        var configuration = FakeLLMServer.Configuration()
        configuration.expectedAPIKey = setup.key
        try await FakeLLMServer.withServer(configuration: configuration, scriptedHandler(steps: ["FINAL(42)"])) {
            server in
            let root = "http://127.0.0.1:\(server.port)"
            let arguments = setup.arguments.map { $0.replacingOccurrences(of: "{root}", with: root) }
            let environment = setup.environment.mapValues { $0.replacingOccurrences(of: "{root}", with: root) }
            let result = try await runRLM(["run"] + arguments + ["--json", "q"], environment: environment)
            #expect(result.status == 0, "\(result.stderr)")
            let json = try #require(result.json, "\(result.stdout)")
            #expect(json["answer"] as? String == "42")
            let calls = await server.requests.filter { !$0.path.hasSuffix("/models") }
            #expect(calls.count == 1)
            #expect(calls.first?.format == setup.format)
            #expect(calls.first?.model == setup.model)
        }
    }
}
