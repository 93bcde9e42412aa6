import Foundation
import RLM
import RLMProviders
import RLMRuntime
import Testing

/// How the runtime picks the provider, base URL, model names and callable models from flags and the environment.
@Suite("Provider resolution")
struct ProviderResolverTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var options: RuntimeOptions
        var environment: [String: String]
        var provider: ProviderKind
        var baseURL: String?
    }

    static let cases: [Case] = [
        Case(
            description: "no key: local", options: RuntimeOptions(), environment: [:], provider: .local),
        Case(
            description: "OpenAI key", options: RuntimeOptions(), environment: ["OPENAI_API_KEY": "sk-a"],
            provider: .openai, baseURL: "https://api.openai.com/v1"),
        Case(
            description: "Anthropic key", options: RuntimeOptions(), environment: ["ANTHROPIC_API_KEY": "sk-b"],
            provider: .anthropic, baseURL: "https://api.anthropic.com"),
        Case(
            description: "both keys: OpenAI first", options: RuntimeOptions(),
            environment: ["OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"], provider: .openai),
        Case(
            description: "unknown base URL, only an Anthropic key",
            options: RuntimeOptions(baseURL: "http://127.0.0.1:9/"), environment: ["ANTHROPIC_API_KEY": "sk-b"],
            provider: .anthropic, baseURL: "http://127.0.0.1:9/"),
        Case(
            description: "unknown base URL, only an OpenAI key",
            options: RuntimeOptions(baseURL: "http://127.0.0.1:9/v1"), environment: ["OPENAI_API_KEY": "sk-a"],
            provider: .openai),
        Case(
            description: "unknown base URL, no key: OpenAI-compatible",
            options: RuntimeOptions(baseURL: "http://127.0.0.1:11434/v1"), environment: [:], provider: .openai),
        Case(
            description: "anthropic.com base URL wins over an OpenAI key",
            options: RuntimeOptions(baseURL: "https://api.anthropic.com/v1"),
            environment: ["OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"], provider: .anthropic),
        Case(
            description: "OPENAI_BASE_URL alone", options: RuntimeOptions(),
            environment: ["OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"], provider: .openai,
            baseURL: "http://127.0.0.1:8000/v1"),
        Case(
            description: "ANTHROPIC_BASE_URL with its key", options: RuntimeOptions(),
            environment: ["ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "sk-b"],
            provider: .anthropic, baseURL: "http://127.0.0.1:9"),
        Case(
            description: "--provider wins", options: RuntimeOptions(provider: .local),
            environment: ["OPENAI_API_KEY": "sk-a"], provider: .local),
        Case(
            description: "OPENAI_BASE_URL names its wire format even beside an Anthropic key",
            options: RuntimeOptions(),
            environment: ["OPENAI_BASE_URL": "http://127.0.0.1:8000/v1", "ANTHROPIC_API_KEY": "sk-b"],
            provider: .openai),
    ]

    @Test(arguments: cases)
    func choosesTheProvider(_ testCase: Case) throws {
        let models = try ProviderResolver.resolve(testCase.options, environment: testCase.environment)
        #expect(models.root.endpoint.provider == testCase.provider)
        if let baseURL = testCase.baseURL {
            switch models.root.endpoint {
            case .openAI(let configuration): #expect(configuration.baseURL == baseURL)
            case .anthropic(let configuration): #expect(configuration.baseURL == baseURL)
            case .local: Issue.record("expected a remote provider")
            }
        }
    }

    @Test func theOfficialAPIsNeedAKeyAndSaySo() {
        #expect(throws: LLMError.self) {
            try ProviderResolver.resolve(RuntimeOptions(provider: .openai), environment: [:])
        }
        do {
            _ = try ProviderResolver.resolve(RuntimeOptions(provider: .anthropic), environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("ANTHROPIC_API_KEY"))
        }
    }

    /// A key goes only where it belongs: its provider's host, the base URL configured beside it, or where
    /// `--api-key-env` sends it.
    @Test func keysGoOnlyWhereTheyBelong() throws {
        func key(_ options: RuntimeOptions, _ environment: [String: String]) throws -> Bool {
            guard
                case .openAI(let configuration) = try ProviderResolver.resolve(options, environment: environment)
                    .root.endpoint
            else { return false }
            return configuration.hasAPIKey
        }
        let ambient = ["OPENAI_API_KEY": "sk-a"]
        #expect(try key(RuntimeOptions(model: "m"), ambient), "api.openai.com gets it")
        #expect(try key(RuntimeOptions(model: "m"), ambient.merging(["OPENAI_BASE_URL": "http://10.0.0.5/v1"]) { $1 }))
        #expect(!(try key(RuntimeOptions(baseURL: "http://10.0.0.5:11434", model: "m"), ambient)))
        #expect(
            try key(
                RuntimeOptions(baseURL: "http://10.0.0.5:11434", model: "m", apiKeyVariable: "OPENAI_API_KEY"), ambient)
        )
        #expect(throws: RuntimeError.self) {
            try ProviderResolver.resolve(
                RuntimeOptions(baseURL: "http://10.0.0.5", model: "m", apiKeyVariable: "GATEWAY_KEY"), environment: [:])
        }
        let models = try ProviderResolver.resolve(
            RuntimeOptions(baseURL: "http://10.0.0.5:11434", model: "m"), environment: ambient)
        #expect(models.notes.contains { $0.contains("OPENAI_API_KEY is not sent") })
        #expect(models.secrets.contains("sk-a"), "an unsent key is still redacted")
    }

    @Test func theOfflineModelServesOneModelPerRun() {
        for options in [
            RuntimeOptions(provider: .local, subModel: "qwen2.5-coder-0.5b"),
            RuntimeOptions(provider: .local, allowedModels: ["judge"]),
        ] {
            do {
                _ = try ProviderResolver.resolve(options, environment: [:])
                Issue.record("expected a refusal for \(options)")
            } catch let error as RuntimeError {
                #expect(error.message.contains("--models"))
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }

    @Test func declaredModelsAreCallableAndOthersAreNot() throws {
        let options = RuntimeOptions(
            baseURL: "http://127.0.0.1:9/v1", model: "big", subModel: "small", allowedModels: ["judge"])
        let models = try ProviderResolver.resolve(options, environment: [:])
        #expect(Set(models.callable.keys) == ["big", "small", "judge"])
        #expect(models.callable["judge"]?.modelName == "judge")
        #expect(models.sub?.endpoint.modelName == "small")
    }

    @Test func aModelsFilePlacesModelsOnOtherProvidersWithTheirOwnKeys() throws {
        let file = try writeFile(
            """
            {"models": {
              "judge": {"provider": "anthropic", "base_url": "http://127.0.0.1:7", "model": "claude-x",
                        "key_env": "JUDGE_KEY", "price": {"input": 1, "output": 2}},
              "fast": {"provider": "openai", "base_url": "http://127.0.0.1:8/v1", "context_window": 8192}
            }}
            """)
        let options = RuntimeOptions(baseURL: "http://127.0.0.1:9/v1", model: "root", modelsFile: file)
        let models = try ProviderResolver.resolve(options, environment: ["JUDGE_KEY": "sk-judge-secret-123"])
        #expect(models.callable["judge"]?.provider == .anthropic)
        #expect(models.callable["judge"]?.modelName == "claude-x")
        #expect(models.callable["fast"]?.modelName == "fast")
        #expect(models.prices["claude-x"] == ModelPricing.Price(input: 1, output: 2))
        #expect(models.secrets.contains("sk-judge-secret-123"), "a models-file key is redacted like the others")
        #expect(throws: RuntimeError.self) {
            try ProviderResolver.resolve(options, environment: [:])  // JUDGE_KEY unset
        }
    }

    @Test(arguments: [
        ("not json", "expected a JSON object"),
        (#"{"models": {"a": {"provider": "gopher"}}}"#, "\"provider\" must be"),
        (#"{"models": {"a": {"provider": "openai", "api_key": "sk-1"}}}"#, "keys do not belong"),
        (#"{"models": {"a": {"provider": "openai", "colour": 1}}}"#, "unknown field 'colour'"),
        (#"{"models": {"a": {"provider": "openai", "price": {"input": "x"}}}}"#, "\"price\" must be"),
        (#"{"models": {"a": {"provider": "openai", "key_env": "A B"}}}"#, "environment variable name"),
    ])
    func aBadModelsFileSaysWhatIsWrong(text: String, message: String) throws {
        do {
            _ = try ModelsFile.parse(Data(text.utf8), source: "m.json")
            Issue.record("expected an error for \(text)")
        } catch let error as RuntimeError {
            #expect(error.message.contains("m.json"))
            #expect(error.message.contains(message), "\(error.message)")
        }
    }
}

/// The runtime's checks before anything starts, and its single mapping from errors to outcomes.
@Suite("Runtime")
struct RuntimeTests {
    @Test func aCostBudgetWithAnUnpricedModelIsRefusedBeforeTheRun() throws {
        let options = RuntimeOptions(baseURL: "http://127.0.0.1:9/v1", model: "mystery-model-7b", maxCostUSD: 1)
        do {
            _ = try RLMRuntime(options: options, environment: [:]).prepare()
            Issue.record("expected a refusal")
        } catch let error as RuntimeError {
            #expect(error.message.contains("mystery-model-7b"))
            #expect(error.message.contains("--prices"))
            #expect(RunFailure.classify(error).exitCode == 2)
        }
    }

    @Test func aPriceGivenByTheUserOrTheProviderLiftsTheRefusal() throws {
        let prices = try writeFile(#"{"mystery-model-7b": {"input": 0.1, "output": 0.2}}"#)
        let priced = RuntimeOptions(
            baseURL: "http://127.0.0.1:9/v1", model: "mystery-model-7b", pricesFile: prices, maxCostUSD: 1)
        _ = try RLMRuntime(options: priced, environment: [:]).prepare()
        // OpenRouter reports each call's cost: no table needed.
        let openRouter = RuntimeOptions(
            baseURL: "https://openrouter.ai/api/v1", model: "some/unlisted-model", maxCostUSD: 1)
        _ = try RLMRuntime(options: openRouter, environment: ["OPENROUTER_API_KEY": "sk-or"]).prepare()
        // The offline model is free.
        _ = try RLMRuntime(options: RuntimeOptions(provider: .local, maxCostUSD: 1), environment: [:]).prepare()
        // A known model is priced by the bundled table.
        _ = try RLMRuntime(
            options: RuntimeOptions(model: "gpt-4o-mini", maxCostUSD: 1), environment: ["OPENAI_API_KEY": "sk-a"]
        ).prepare()
    }

    @Test func everyDeclaredModelNeedsAPrice() throws {
        let options = RuntimeOptions(
            model: "gpt-4o-mini", allowedModels: ["unknown-judge"], maxCostUSD: 1)
        #expect(throws: RuntimeError.self) {
            try RLMRuntime(options: options, environment: ["OPENAI_API_KEY": "sk-a"]).prepare()
        }
    }

    @Test(arguments: [
        (RunFailure.Kind.usage, Int32(2), 400, -32602),
        (.context, 2, 400, -32602),
        (.setup, 2, 500, -32603),
        (.unauthorized, 2, 502, -32603),
        (.unreachable, 1, 503, -32603),
        (.rateLimited, 1, 429, -32603),
        (.provider, 1, 502, -32603),
        (.sandbox, 1, 500, -32603),
        (.interrupted, 130, 503, -32603),
        (.internal, 1, 500, -32603),
    ])
    func everyFailureHasOneOutcomePerFrontEnd(kind: RunFailure.Kind, exit: Int32, http: Int, rpc: Int) {
        let failure = RunFailure(kind, "x")
        #expect(failure.exitCode == exit)
        #expect(failure.httpStatus == http)
        #expect(failure.jsonRPCCode == rpc)
    }

    @Test func aContextOverTheLimitIs413AndAMissingOne400() throws {
        let big = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-413-\(UUID().uuidString)")
        try String(repeating: "x", count: 2_000).write(to: big, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: big) }
        do {
            _ = try ContextPlanner(maxBytes: 1_000).plan([big.path])
            Issue.record("expected a refusal")
        } catch {
            #expect(RunFailure.classify(error).httpStatus == 413)
        }
        do {
            _ = try ContextPlanner(maxBytes: 1 << 30).plan(["/nonexistent/limit/too large"])
            Issue.record("expected an error")
        } catch {
            #expect(RunFailure.classify(error).httpStatus == 400, "a path holding 'limit' is not a size error")
        }
    }

    @Test func errorsAreClassifiedOnce() {
        #expect(RunFailure.classify(LLMError(.unauthorized, "bad key")).kind == .unauthorized)
        #expect(RunFailure.classify(LLMError(.transport, "no route")).kind == .unreachable)
        #expect(RunFailure.classify(LLMError(.configuration, "no key")).kind == .usage)
        #expect(RunFailure.classify(SandboxError.setup("no bwrap")).kind == .setup)
        #expect(RunFailure.classify(SandboxError.protocolViolation("bad frame")).kind == .sandbox)
        #expect(RunFailure.classify(CancellationError()).kind == .interrupted)
        #expect(RunFailure.classify(RuntimeError.usage("bad flag")).kind == .usage)
    }

    @Test func theTrajectoryRedactsEveryKeyOfTheRun() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let runtime = RLMRuntime(
            options: RuntimeOptions(model: "gpt-4o-mini"), environment: ["OPENAI_API_KEY": "sk-planted-0123456789"])
        let writer = try runtime.openTrajectory(try runtime.prepare(), path: path)
        writer.write(RLMEvent(kind: .note, depth: 0, iteration: 1, data: ["note": "key sk-planted-0123456789 here"]))
        writer.close()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("sk-planted-0123456789"))
        #expect(text.contains("[REDACTED]"))
    }
}

func writeFile(_ text: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-rt-\(UUID().uuidString)").path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
