import Foundation
import RLM

/// Which wire format (and which kind of server) a model is reached through.
public enum ProviderKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// OpenAI-compatible chat completions: OpenAI, OpenRouter, Ollama, vLLM, llama.cpp, LM Studio, …
    case openai
    /// Anthropic's Messages API.
    case anthropic
    /// The offline model: llama.cpp's server on a pulled GGUF, started (or reused) by SwiftRLM.
    case local
}

/// Everything a front end says about which models answer and how much they may spend — the options `rlm run`,
/// `rlm bench tasks` and the servers share. Keys are never here: they come from the environment, `*_FILE`
/// variables or an opt-in `.env` file.
public struct RuntimeOptions: Sendable, Hashable {
    /// The provider; `nil` infers it (see ``ProviderResolver``).
    public var provider: ProviderKind?
    /// The API base URL; `nil` uses `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`, else the provider's own.
    public var baseURL: String?
    /// The root model's name; `nil` asks the server (OpenAI-compatible), or uses the provider's default.
    public var model: String?
    /// The model `llm_query` uses by default; `nil` is the root model.
    public var subModel: String?
    /// More model names code may pass as `model=` (on the root's provider unless the models file places them).
    public var allowedModels: [String]
    /// A JSON file naming models on other providers (see ``ModelsFile``).
    public var modelsFile: String?
    /// The root model's context window in tokens, for servers that do not say.
    public var contextWindow: Int?
    /// An opt-in `.env` file to read keys from.
    public var envFile: String?
    /// The environment variable whose key is sent to the base URL (`--api-key-env`). Without it, `OPENAI_API_KEY`
    /// and `ANTHROPIC_API_KEY` go only to their providers' own hosts or to the `*_BASE_URL` set beside them.
    public var apiKeyVariable: String?
    /// A JSON price table merged over the bundled one.
    public var pricesFile: String?
    /// The offline model used by the local provider.
    public var localModel: String
    /// The Python interpreter inside the sandbox (the process backend's).
    public var python: String
    /// Which sandbox runs the model's code (`--backend`).
    public var sandboxBackend: SandboxBackend

    /// Root iterations.
    public var maxIterations: Int
    /// Recursion depth for `rlm_query`.
    public var maxDepth: Int
    /// Tokens (input + output) for the whole run.
    public var maxTokens: Int?
    /// USD for the whole run.
    public var maxCostUSD: Double?
    /// Wall time for the whole run.
    public var timeout: Duration?
    /// Sub-calls for the whole run (each batched prompt counts).
    public var maxSubcalls: Int?
    /// Wall-clock limit per code cell.
    public var cellTimeout: Duration
    /// Concurrent prompts per `llm_query_batched`.
    public var batchConcurrency: Int
    /// Sandboxes alive at once in a run (the root's and its children's).
    public var maxLiveSandboxes: Int

    /// - Parameters: as the properties; every one has the CLI's default.
    public init(
        provider: ProviderKind? = nil, baseURL: String? = nil, model: String? = nil, subModel: String? = nil,
        allowedModels: [String] = [], modelsFile: String? = nil, contextWindow: Int? = nil, envFile: String? = nil,
        apiKeyVariable: String? = nil,
        pricesFile: String? = nil, localModel: String = "qwen2.5-coder-1.5b", python: String = "/usr/bin/python3",
        maxIterations: Int = 20, maxDepth: Int = 1, maxTokens: Int? = nil, maxCostUSD: Double? = nil,
        timeout: Duration? = nil, maxSubcalls: Int? = nil, cellTimeout: Duration = .seconds(60),
        batchConcurrency: Int = 16, maxLiveSandboxes: Int = 5, sandboxBackend: SandboxBackend = .process
    ) {
        self.sandboxBackend = sandboxBackend
        self.maxLiveSandboxes = maxLiveSandboxes
        self.provider = provider
        self.baseURL = baseURL
        self.model = model
        self.subModel = subModel
        self.allowedModels = allowedModels
        self.modelsFile = modelsFile
        self.contextWindow = contextWindow
        self.envFile = envFile
        self.apiKeyVariable = apiKeyVariable
        self.pricesFile = pricesFile
        self.localModel = localModel
        self.python = python
        self.maxIterations = maxIterations
        self.maxDepth = maxDepth
        self.maxTokens = maxTokens
        self.maxCostUSD = maxCostUSD
        self.timeout = timeout
        self.maxSubcalls = maxSubcalls
        self.cellTimeout = cellTimeout
        self.batchConcurrency = batchConcurrency
    }

    /// The budget these options describe.
    public var budget: Budget {
        Budget(
            maxIterations: maxIterations, maxDepth: maxDepth, maxTokens: maxTokens, maxCostUSD: maxCostUSD,
            maxWallTime: timeout, maxSubcalls: maxSubcalls, maxLiveSandboxes: maxLiveSandboxes)
    }

    /// Checks the values a user typed; the message names the flag.
    /// - Throws: ``RuntimeError`` of kind `.usage`.
    public func validate() throws {
        guard maxIterations >= 1 else { throw RuntimeError.usage("--max-iterations must be at least 1") }
        guard maxDepth >= 0 else { throw RuntimeError.usage("--max-depth must be 0 or more") }
        if let maxTokens, maxTokens < 1 { throw RuntimeError.usage("--max-tokens must be at least 1") }
        if let maxCostUSD, !(maxCostUSD > 0 && maxCostUSD.isFinite && maxCostUSD <= 1e9) {
            throw RuntimeError.usage("--max-cost must be a positive amount of USD (at most 1e9)")
        }
        if let timeout, timeout <= .zero { throw RuntimeError.usage("--timeout must be positive") }
        if let maxSubcalls, maxSubcalls < 0 { throw RuntimeError.usage("--max-subcalls must be 0 or more") }
        guard cellTimeout > .zero else { throw RuntimeError.usage("--cell-timeout must be positive") }
        guard batchConcurrency >= 1 else { throw RuntimeError.usage("--batch-concurrency must be at least 1") }
        guard maxLiveSandboxes >= 1 else { throw RuntimeError.usage("--max-sandboxes must be at least 1") }
        if let contextWindow, contextWindow < 256 {
            throw RuntimeError.usage("--context-window must be at least 256 tokens")
        }
        if let variable = apiKeyVariable,
            variable.isEmpty || variable.contains(where: { !($0.isLetter || $0.isNumber || $0 == "_") })
        {
            throw RuntimeError.usage("--api-key-env must name an environment variable, such as OPENROUTER_API_KEY")
        }
        for name in allowedModels + [model, subModel].compactMap({ $0 })
        where name.isEmpty || name.count > 200 || name.contains(where: \.isNewline) {
            throw RuntimeError.usage("model names must be 1–200 characters on one line: '\(name.prefix(40))'")
        }
    }
}
