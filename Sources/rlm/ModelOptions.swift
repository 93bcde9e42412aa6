import ArgumentParser
import Foundation
import RLM
import RLMRuntime

extension ProviderKind: ExpressibleByArgument {}

/// The provider, model and budget options `rlm run` and `rlm bench tasks` share: one definition, so the two cannot
/// drift apart. They become ``RuntimeOptions``; the runtime does the rest.
struct ModelOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "openai (any OpenAI-compatible server), anthropic, or local (offline llama.cpp).",
            discussion: """
                Without --provider: with --base-url, its host's wire format when the host says it \
                (api.anthropic.com: anthropic; api.openai.com, openrouter.ai: openai), else anthropic when only \
                ANTHROPIC_API_KEY is set, else openai; otherwise OPENAI_BASE_URL / ANTHROPIC_BASE_URL name their own \
                wire format (both set: OpenAI's unless only ANTHROPIC_API_KEY is set); otherwise openai when \
                OPENAI_API_KEY is set, else anthropic when ANTHROPIC_API_KEY is, else local.
                """))
    var provider: ProviderKind?

    @Option(
        help: "API base URL, with or without /v1 (default: OPENAI_BASE_URL / ANTHROPIC_BASE_URL, else the provider's).")
    var baseURL: String?

    @Option(
        help:
            "Root model name (default: gpt-4o-mini on OpenAI; the server's only model on other OpenAI-compatible servers)."
    )
    var model: String?

    @Option(help: "Model for llm_query sub-calls without model= (default: the root model).")
    var subModel: String?

    @Option(help: "Another model code may name with model= (repeatable).")
    var allowModel: [String] = []

    @Option(
        help:
            "A JSON file placing models on other providers: {\"models\": {NAME: {provider, base_url, model, key_env, price}}}."
    )
    var models: String?

    @Option(help: "The model's context window in tokens (for servers that do not say).")
    var contextWindow: Int?

    @Option(help: "Read keys from this .env file (opt-in).")
    var envFile: String?

    @Option(
        help: ArgumentHelp(
            "The environment variable whose key is sent to --base-url (the variable's name, never the key).",
            discussion: """
                Without it OPENAI_API_KEY goes only to api.openai.com or to OPENAI_BASE_URL, ANTHROPIC_API_KEY only to \
                api.anthropic.com or ANTHROPIC_BASE_URL, and OPENROUTER_API_KEY to openrouter.ai.
                """))
    var apiKeyEnv: String?

    @Option(
        help:
            "A JSON price table merged over the bundled one: {\"model\": {\"input\": USD per 1M, \"output\": USD per 1M}}."
    )
    var prices: String?

    @Option(help: "Local model for --provider local.")
    var localModel: String = "qwen2.5-coder-1.5b"

    @Option(help: "Python interpreter inside the sandbox (the process backend's).")
    var python: String = "/usr/bin/python3"

    @OptionGroup(title: "Sandbox") var backendOptions: BackendOptions

    @Option(help: "Root iterations.")
    var maxIterations: Int = 20

    @Option(help: "Recursion depth for rlm_query (0: plain llm_query).")
    var maxDepth: Int = 1

    @Option(help: "Wall-clock limit per code cell in seconds.")
    var cellTimeout: Double = 60

    @Option(help: "Concurrent prompts per llm_query_batched.")
    var batchConcurrency: Int = 16

    @Option(help: "Sandboxes alive at once in a run: the root's plus its rlm_query children's (children beyond wait).")
    var maxSandboxes: Int = 5

    func validate() throws {
        _ = try seconds(cellTimeout, flag: "--cell-timeout")
        guard maxSandboxes >= 1 else { throw ValidationError("--max-sandboxes must be at least 1") }
    }

    /// The runtime's options, with the budgets only `rlm run` has.
    func runtimeOptions(
        maxTokens: Int? = nil, maxCost: Double? = nil, timeout: Double? = nil, maxSubcalls: Int? = nil
    ) throws -> RuntimeOptions {
        try RuntimeOptions(
            provider: provider, baseURL: baseURL, model: model, subModel: subModel, allowedModels: allowModel,
            modelsFile: models, contextWindow: contextWindow, envFile: envFile, apiKeyVariable: apiKeyEnv,
            pricesFile: prices,
            localModel: localModel, python: python, maxIterations: maxIterations, maxDepth: maxDepth,
            maxTokens: maxTokens, maxCostUSD: maxCost, timeout: timeout.flatMap { Duration(userSeconds: $0) },
            maxSubcalls: maxSubcalls,
            cellTimeout: Duration(userSeconds: cellTimeout) ?? .seconds(60),
            batchConcurrency: batchConcurrency, maxLiveSandboxes: maxSandboxes,
            sandboxBackend: backendOptions.resolve())
    }
}

/// A number of seconds from a flag, as a `Duration`: positive, finite and at most a year, or a usage error naming
/// the flag (so `inf` or `1e300` never reach a conversion that would trap).
func seconds(_ value: Double, flag: String) throws -> Duration {
    guard let duration = Duration(userSeconds: value) else {
        throw ValidationError("\(flag) must be a positive number of seconds (at most a year), not \(value)")
    }
    return duration
}
