import Foundation
import RLM
import RLMLocal
import RLMProviders

/// Which models a run uses, resolved from flags and the environment (keys only from the environment or an opt-in
/// .env file). Builds the provider clients; for the local provider, starts (or reuses) the llama.cpp server.
struct ModelSetup {
    enum Kind {
        case openAI(OpenAIChatModel.Configuration)
        case anthropic(AnthropicModel.Configuration)
        case local(model: String)
    }

    var kind: Kind
    var subModelName: String?
    /// Values that must never reach a log or trajectory.
    var secrets: [String]
    /// Said to the user before the run (e.g. why the local model was chosen).
    var note: String?

    var isLocal: Bool {
        if case .local = kind { return true }
        return false
    }

    static func resolve(
        provider: ProviderChoice?, baseURL: String?, model: String?, subModel: String?, contextWindow: Int?,
        envFile: String?, environment: [String: String]
    ) throws -> ModelSetup {
        var dotEnv = [String: String]()
        if let envFile {
            do {
                dotEnv = try DotEnv.load(path: envFile)
            } catch {
                throw LLMError(.configuration, "cannot read the .env file \(envFile): \(error)")
            }
        }
        let openAIKey = try APIKeys.resolve("OPENAI_API_KEY", environment: environment, dotEnv: dotEnv)
        let anthropicKey = try APIKeys.resolve("ANTHROPIC_API_KEY", environment: environment, dotEnv: dotEnv)
        var note: String?
        let chosen: ProviderChoice
        if let provider {
            chosen = provider
        } else if baseURL != nil || openAIKey != nil {
            chosen = .openai
        } else if anthropicKey != nil {
            chosen = .anthropic
        } else {
            chosen = .local
            note =
                "no API key is configured (OPENAI_API_KEY / ANTHROPIC_API_KEY), so the offline local model is used"
        }
        switch chosen {
        case .openai:
            let url = baseURL ?? "https://api.openai.com/v1"
            let isOpenAI = url.contains("api.openai.com")
            if isOpenAI && openAIKey == nil {
                throw LLMError(
                    .configuration,
                    "no OpenAI API key: set OPENAI_API_KEY (or OPENAI_API_KEY_FILE, or use --env-file); "
                        + "keys are never taken from flags")
            }
            var configuration = OpenAIChatModel.Configuration(
                baseURL: url, apiKey: openAIKey, defaultModel: model ?? (isOpenAI ? "gpt-4o-mini" : "default"),
                contextWindow: contextWindow)
            configuration.providerName = isOpenAI ? "openai" : "openai-compatible"
            return ModelSetup(
                kind: .openAI(configuration), subModelName: subModel, secrets: [openAIKey].compactMap { $0 },
                note: note)
        case .anthropic:
            guard let anthropicKey else {
                throw LLMError(
                    .configuration,
                    "no Anthropic API key: set ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY_FILE, or use --env-file); "
                        + "keys are never taken from flags")
            }
            var configuration = AnthropicModel.Configuration(
                baseURL: baseURL ?? "https://api.anthropic.com", apiKey: anthropicKey,
                contextWindow: contextWindow ?? 200_000)
            if let model { configuration.defaultModel = model }
            return ModelSetup(
                kind: .anthropic(configuration), subModelName: subModel, secrets: [anthropicKey], note: note)
        case .local:
            return ModelSetup(
                kind: .local(model: model ?? "qwen2.5-coder-1.5b"), subModelName: subModel, secrets: [], note: note)
        }
    }

    /// Runs `body` with the root and sub models; the local server (if any) lives exactly as long as `body`.
    func withModels<T: Sendable>(
        _ body: (any LanguageModel, (any LanguageModel)?) async throws -> T
    ) async throws -> T {
        switch kind {
        case .openAI(let configuration):
            let root = OpenAIChatModel(configuration: configuration, httpClient: ProviderHTTPClient.shared)
            var sub: OpenAIChatModel?
            if let subModelName {
                var subConfiguration = configuration
                subConfiguration.defaultModel = subModelName
                sub = OpenAIChatModel(configuration: subConfiguration, httpClient: ProviderHTTPClient.shared)
            }
            return try await body(root, sub)
        case .anthropic(let configuration):
            let root = AnthropicModel(configuration: configuration, httpClient: ProviderHTTPClient.shared)
            var sub: AnthropicModel?
            if let subModelName {
                var subConfiguration = configuration
                subConfiguration.defaultModel = subModelName
                sub = AnthropicModel(configuration: subConfiguration, httpClient: ProviderHTTPClient.shared)
            }
            return try await body(root, sub)
        case .local(let name):
            return try await withLocalModel(named: name, body)
        }
    }
}
