import Foundation
import RLM
import RLMProviders

/// Where one model lives: a provider's configuration (key included, redacted in every description), or the offline
/// model by name.
public enum ModelEndpoint: Sendable {
    /// An OpenAI-compatible server.
    case openAI(OpenAIChatModel.Configuration)
    /// Anthropic's Messages API (or a server speaking it).
    case anthropic(AnthropicModel.Configuration)
    /// The offline model, started or reused by the runtime.
    case local(model: String)

    /// The model name sent to the server.
    public var modelName: String {
        switch self {
        case .openAI(let configuration): return configuration.defaultModel
        case .anthropic(let configuration): return configuration.defaultModel
        case .local(let model): return model
        }
    }

    /// The provider kind.
    public var provider: ProviderKind {
        switch self {
        case .openAI: return .openai
        case .anthropic: return .anthropic
        case .local: return .local
        }
    }

    /// The same place with another model name (for `--sub-model` and `--allow-model` on the root's provider).
    func withModel(_ name: String) -> ModelEndpoint {
        switch self {
        case .openAI(var configuration):
            configuration.defaultModel = name
            return .openAI(configuration)
        case .anthropic(var configuration):
            configuration.defaultModel = name
            return .anthropic(configuration)
        case .local:
            return .local(model: name)
        }
    }

    /// Whether the provider reports each call's cost itself (OpenRouter), so no price table is needed.
    var reportsCost: Bool {
        if case .openAI(let configuration) = self { return configuration.requestsReportedCost }
        return false
    }
}

/// The models of a run, resolved from options, the environment, key files and the models file.
public struct ResolvedModels: Sendable {
    /// The model that drives the loop, under the name the user gave it.
    public var root: (name: String, endpoint: ModelEndpoint)
    /// The model `llm_query` uses without `model=`; `nil` is the root.
    public var sub: (name: String, endpoint: ModelEndpoint)?
    /// Every model code may name with `model=`, by that name (root and sub included).
    public var callable: [String: ModelEndpoint]
    /// Prices given for particular names (models file), USD per 1M tokens.
    public var prices: [String: ModelPricing.Price]
    /// Values that must never reach a log or trajectory: every key read.
    public var secrets: [String]
    /// Said to the user before the run (why the local model was chosen, which model the server offered).
    public var notes: [String]
    /// The root model has no fixed name yet: ask the server which it serves (an OpenAI-compatible base URL without
    /// `--model`).
    var rootNeedsDiscovery: Bool

    /// Whether the root model is the offline one.
    public var isLocal: Bool {
        if case .local = root.endpoint { return true }
        return false
    }
}

/// Turns ``RuntimeOptions`` and the environment into ``ResolvedModels``.
///
/// Which provider, when `--provider` is not given:
/// 1. With `--base-url`: the URL's wire format when the host says it (`api.anthropic.com` is Anthropic;
///    `api.openai.com`, `openrouter.ai` are OpenAI-compatible), else Anthropic when only `ANTHROPIC_API_KEY` is set,
///    else OpenAI-compatible.
/// 2. Else `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` name their own wire format (both set: OpenAI's, unless only
///    `ANTHROPIC_API_KEY` is set).
/// 3. Else OpenAI when `OPENAI_API_KEY` is set, Anthropic when `ANTHROPIC_API_KEY` is, else the offline model (and a
///    note says so).
///
/// Which key goes where: `OPENAI_API_KEY` only to api.openai.com or `OPENAI_BASE_URL`, `ANTHROPIC_API_KEY` only to
/// api.anthropic.com or `ANTHROPIC_BASE_URL`, `OPENROUTER_API_KEY` to openrouter.ai, and any variable named by
/// `--api-key-env` to the base URL.
public enum ProviderResolver {
    /// Resolves the run's models. Reads keys from `environment` (and the `.env` file when the options name one);
    /// makes no network call.
    /// - Parameters:
    ///   - options: the flags.
    ///   - environment: the process environment.
    /// - Throws: ``RuntimeError`` or ``LLMError`` (`.configuration`) naming what to set.
    public static func resolve(_ options: RuntimeOptions, environment: [String: String]) throws -> ResolvedModels {
        var dotEnv = [String: String]()
        if let envFile = options.envFile {
            do {
                dotEnv = try DotEnv.load(path: envFile)
            } catch {
                throw RuntimeError.usage("cannot read the .env file \(envFile): \(error)")
            }
        }
        func value(_ name: String) -> String? {
            (environment[name] ?? dotEnv[name]).flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
        }
        let openAIKey = try APIKeys.resolve("OPENAI_API_KEY", environment: environment, dotEnv: dotEnv)
        let anthropicKey = try APIKeys.resolve("ANTHROPIC_API_KEY", environment: environment, dotEnv: dotEnv)
        let openAIBase = value("OPENAI_BASE_URL")
        let anthropicBase = value("ANTHROPIC_BASE_URL")
        var notes = [String]()
        var secrets = [openAIKey, anthropicKey].compactMap { $0 }

        let provider: ProviderKind
        if let chosen = options.provider {
            provider = chosen
        } else if let url = options.baseURL {
            provider = wireFormat(of: url) ?? (anthropicKey != nil && openAIKey == nil ? .anthropic : .openai)
        } else if openAIBase != nil && (anthropicBase == nil || openAIKey != nil || anthropicKey == nil) {
            provider = .openai
        } else if anthropicBase != nil {
            provider = .anthropic
        } else if openAIKey != nil {
            provider = .openai
        } else if anthropicKey != nil {
            provider = .anthropic
        } else {
            provider = .local
            notes.append(
                "no API key is configured (OPENAI_API_KEY / ANTHROPIC_API_KEY), so the offline local model is used")
        }

        var rootNeedsDiscovery = false
        let rootEndpoint: ModelEndpoint
        let rootName: String
        // A key goes only where it belongs: to its provider's own host, to the base URL configured beside it
        // (`OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`), or wherever `--api-key-env NAME` sends it. An OpenAI key in the
        // environment is never sent to a `--base-url` that merely points at some other server (an Ollama on the LAN,
        // a proxy over plain HTTP).
        let namedKey = try options.apiKeyVariable.map { variable -> String in
            guard let key = try APIKeys.resolve(variable, environment: environment, dotEnv: dotEnv) else {
                throw RuntimeError.usage("--api-key-env \(variable): \(variable) (or \(variable)_FILE) is not set")
            }
            secrets.append(key)
            return key
        }
        switch provider {
        case .openai:
            let url = options.baseURL ?? openAIBase ?? "https://api.openai.com/v1"
            let host = Self.host(of: url)
            let isOpenAI = host == "api.openai.com"
            let isOpenRouter = host == "openrouter.ai" || host.hasSuffix(".openrouter.ai")
            var key: String?
            var keySource: String?
            if let namedKey {
                (key, keySource) = (namedKey, options.apiKeyVariable)
            } else if isOpenRouter {
                key = try APIKeys.resolve("OPENROUTER_API_KEY", environment: environment, dotEnv: dotEnv)
                keySource = "OPENROUTER_API_KEY"
                if let key { secrets.append(key) }
            } else if isOpenAI || options.baseURL == nil {
                (key, keySource) = (openAIKey, "OPENAI_API_KEY")
            } else if openAIKey != nil {
                notes.append(
                    "OPENAI_API_KEY is not sent to \(host) (only to api.openai.com or OPENAI_BASE_URL); "
                        + "pass --api-key-env OPENAI_API_KEY to send it")
            }
            if (isOpenAI || isOpenRouter) && key == nil {
                let variable = isOpenRouter ? "OPENROUTER_API_KEY" : "OPENAI_API_KEY"
                throw LLMError(
                    .configuration,
                    "no API key for \(host): set \(variable) (or \(variable)_FILE, or use --env-file); "
                        + "keys are never taken from flags")
            }
            rootName = options.model ?? (isOpenAI ? "gpt-4o-mini" : "")
            rootNeedsDiscovery = options.model == nil && !isOpenAI
            var configuration = OpenAIChatModel.Configuration(
                baseURL: url, apiKey: key, keySource: keySource, defaultModel: rootName,
                contextWindow: options.contextWindow)
            configuration.providerName = isOpenAI ? "openai" : "openai-compatible"
            rootEndpoint = .openAI(configuration)
        case .anthropic:
            let url = options.baseURL ?? anthropicBase ?? "https://api.anthropic.com"
            let host = Self.host(of: url)
            let isAnthropic = host == "api.anthropic.com"
            var key: String?
            var keySource: String?
            if let namedKey {
                (key, keySource) = (namedKey, options.apiKeyVariable)
            } else if isAnthropic || options.baseURL == nil {
                (key, keySource) = (anthropicKey, "ANTHROPIC_API_KEY")
            } else if anthropicKey != nil {
                notes.append(
                    "ANTHROPIC_API_KEY is not sent to \(host) (only to api.anthropic.com or ANTHROPIC_BASE_URL); "
                        + "pass --api-key-env ANTHROPIC_API_KEY to send it")
            }
            if isAnthropic && key == nil {
                throw LLMError(
                    .configuration,
                    "no Anthropic API key: set ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY_FILE, or use --env-file); "
                        + "keys are never taken from flags")
            }
            var configuration = AnthropicModel.Configuration(
                baseURL: url, apiKey: key, keySource: keySource, contextWindow: options.contextWindow ?? 200_000)
            if let model = options.model { configuration.defaultModel = model }
            rootName = configuration.defaultModel
            rootEndpoint = .anthropic(configuration)
        case .local:
            rootName = options.model ?? options.localModel
            rootEndpoint = .local(model: rootName)
        }

        var callable = [String: ModelEndpoint]()
        var prices = [String: ModelPricing.Price]()
        if let path = options.modelsFile {
            let file = try ModelsFile.load(path: path)
            for entry in file.entries.values {
                let endpoint = try endpoint(for: entry, environment: environment, dotEnv: dotEnv, secrets: &secrets)
                callable[entry.name] = endpoint
                if let price = entry.price { prices[entry.model] = price }
            }
        }
        // A name the models file places lives there; any other declared name is served by the root's provider.
        func place(_ name: String) -> ModelEndpoint { callable[name] ?? rootEndpoint.withModel(name) }
        let root = (name: rootName, endpoint: options.model.flatMap { callable[$0] } ?? rootEndpoint)
        if options.model.flatMap({ callable[$0] }) != nil { rootNeedsDiscovery = false }
        let sub = options.subModel.map { (name: $0, endpoint: place($0)) }
        for name in options.allowedModels { callable[name] = place(name) }
        // The offline provider serves one model per run (one llama.cpp server, one CPU thread): any other name must
        // live elsewhere, in the models file.
        if case .local = root.endpoint {
            let strays =
                ([sub.map { ("--sub-model", $0.name, $0.endpoint) }].compactMap { $0 }
                + options.allowedModels.map { ("--allow-model", $0, callable[$0]!) })
                .filter { _, name, endpoint in
                    if case .local = endpoint { return name != rootName }
                    return false
                }
            if let (flag, name, _) = strays.first {
                throw RuntimeError.usage(
                    "\(flag) \(name): the offline model serves one model per run (\(rootName)); place '\(name)' on "
                        + "another provider with a models file (--models FILE) or drop \(flag)")
            }
        }
        if !rootName.isEmpty { callable[rootName] = root.endpoint }
        if let sub { callable[sub.name] = sub.endpoint }
        return ResolvedModels(
            root: root, sub: sub, callable: callable, prices: prices, secrets: secrets, notes: notes,
            rootNeedsDiscovery: rootNeedsDiscovery)
    }

    /// The wire format a base URL's host implies, when it implies one.
    /// - Parameter url: a base URL.
    public static func wireFormat(of url: String) -> ProviderKind? {
        let host = host(of: url)
        if host == "api.anthropic.com" || host.hasSuffix(".anthropic.com") { return .anthropic }
        let openAIHosts = ["api.openai.com", "openrouter.ai", "generativelanguage.googleapis.com", "api.groq.com"]
        if openAIHosts.contains(host) || host.hasSuffix(".openrouter.ai") { return .openai }
        return nil
    }

    static func host(of url: String) -> String {
        (URLComponents(string: url.trimmingCharacters(in: .whitespaces))?.host ?? "").lowercased()
    }

    private static func endpoint(
        for entry: ModelsFile.Entry, environment: [String: String], dotEnv: [String: String],
        secrets: inout [String]
    ) throws -> ModelEndpoint {
        let key = try entry.keyVariable.flatMap {
            try APIKeys.resolve($0, environment: environment, dotEnv: dotEnv)
        }
        if let variable = entry.keyVariable, key == nil {
            throw RuntimeError.usage(
                "model '\(entry.name)' of the models file reads its key from \(variable), which is not set "
                    + "(set \(variable) or \(variable)_FILE)")
        }
        if let key { secrets.append(key) }
        switch entry.provider {
        case .openai, .local:  // ModelsFile refuses `local`; the case is here for exhaustiveness only
            var configuration = OpenAIChatModel.Configuration(
                baseURL: entry.baseURL ?? "https://api.openai.com/v1", apiKey: key, keySource: entry.keyVariable,
                defaultModel: entry.model, contextWindow: entry.contextWindow)
            configuration.providerName = "openai-compatible"
            return .openAI(configuration)
        case .anthropic:
            let configuration = AnthropicModel.Configuration(
                baseURL: entry.baseURL ?? "https://api.anthropic.com", apiKey: key, keySource: entry.keyVariable,
                defaultModel: entry.model, contextWindow: entry.contextWindow ?? 200_000)
            return .anthropic(configuration)
        }
    }
}
