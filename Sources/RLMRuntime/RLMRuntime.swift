import AsyncHTTPClient
import Foundation
import Logging
import RLM
import RLMLocal
import RLMProviders
import RLMSandbox

/// The composition every front end shares: resolves the provider from options, environment and key files; starts or
/// reuses the offline model; loads prices and refuses a cost budget it cannot keep; builds the clients (one per
/// declared model, each at its own price), the sandbox and the engine configuration; opens the trajectory with every
/// key redacted. Errors become outcomes in one place: ``RunFailure/classify(_:)``.
///
/// ```swift
/// let runtime = RLMRuntime(options: options, environment: ProcessInfo.processInfo.environment, logger: logger)
/// let plan = try runtime.prepare()
/// let result = try await runtime.withConfiguration(plan) { configuration in
///     try await RLMEngine(configuration: configuration).run(query: query, context: context)
/// }
/// ```
public struct RLMRuntime: Sendable {
    /// What happens while the offline model is made ready (a first pull is a 1 GB download).
    public enum LocalActivity: Sendable {
        /// The model is not installed: it is being pulled.
        case pulling(model: String, sizeBytes: Int64)
        /// Download and verification progress.
        case pull(PullProgress)
        /// The server is starting (or being reused).
        case server(ServerProgress)
    }

    /// A run resolved and checked, before anything is started.
    public struct Plan: Sendable {
        /// The models.
        public var models: ResolvedModels
        /// The price table (bundled, merged with `--prices`).
        public var pricing: ModelPricing
        /// Things to tell the user before the run.
        public var notes: [String] { models.notes }
        /// Every secret of the run, for redaction.
        public var secrets: [String] { models.secrets }
    }

    /// The options.
    public let options: RuntimeOptions
    /// The process environment (read here, at the entry point, and nowhere else).
    public let environment: [String: String]
    /// Receives the runtime's logs.
    public let logger: Logger
    /// Receives local-model activity (for a progress line).
    public let onLocalActivity: (@Sendable (LocalActivity) -> Void)?
    /// The HTTP client every provider call goes through.
    public let httpClient: HTTPClient
    /// Receives notes decided during the run's setup (which model a server offered).
    public let onNote: (@Sendable (String) -> Void)?

    /// - Parameters:
    ///   - options: the flags.
    ///   - environment: the process environment.
    ///   - logger: receives the runtime's logs (and the providers' and the local model's); silent by default.
    ///   - httpClient: the client for provider calls (default: the shared one).
    ///   - onLocalActivity: receives local-model activity.
    ///   - onNote: receives notes decided during setup (which model a server offered).
    public init(
        options: RuntimeOptions, environment: [String: String],
        logger: Logger = Logger(label: "rlm.runtime", factory: { _ in SwiftLogNoOpLogHandler() }),
        httpClient: HTTPClient = ProviderHTTPClient.shared,
        onLocalActivity: (@Sendable (LocalActivity) -> Void)? = nil,
        onNote: (@Sendable (String) -> Void)? = nil
    ) {
        self.onNote = onNote
        self.options = options
        self.environment = environment
        self.logger = logger
        self.httpClient = httpClient
        self.onLocalActivity = onLocalActivity
    }

    /// Resolves the models and prices and checks the options; starts nothing and makes no network call.
    /// - Throws: ``RuntimeError``, ``LLMError`` — classify with ``RunFailure/classify(_:)``.
    public func prepare() throws -> Plan {
        try options.validate()
        let models = try ProviderResolver.resolve(options, environment: environment)
        var pricing = ModelPricing.defaults
        if let path = options.pricesFile {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw RuntimeError.usage("cannot read the price table \(path): \(error.localizedDescription)")
            }
            do {
                pricing = pricing.merging(try ModelPricing.parse(json: text))
            } catch {
                throw RuntimeError.usage("the price table \(path) is not valid: \(error)")
            }
        }
        pricing = pricing.merging(ModelPricing(models.prices))
        let plan = Plan(models: models, pricing: pricing)
        if !models.rootNeedsDiscovery { try checkPrices(plan, rootName: models.root.endpoint.modelName) }
        return plan
    }

    /// With `--max-cost`, every model the run may call needs a price, unless it is local (free) or its provider
    /// reports each call's cost. A budget that cannot be counted is refused rather than silently kept at zero.
    func checkPrices(_ plan: Plan, rootName: String) throws {
        guard options.maxCostUSD != nil else { return }
        var endpoints = Array(plan.models.callable.values)
        endpoints.append(plan.models.root.endpoint.withModel(rootName))
        if let sub = plan.models.sub { endpoints.append(sub.endpoint) }
        for endpoint in endpoints {
            if case .local = endpoint { continue }
            if endpoint.reportsCost { continue }
            let name = endpoint.modelName
            if name.isEmpty || plan.pricing.price(for: name) == nil {
                throw RuntimeError.usage(
                    "--max-cost needs the price of model '\(name)', which the price table does not know: give it "
                        + "with --prices FILE ({\"\(name)\": {\"input\": USD per 1M tokens, \"output\": USD per 1M "
                        + "tokens}}) or a \"price\" in the models file, or drop --max-cost")
            }
        }
    }

    /// Runs `body` with the engine configuration for this plan: clients built and priced, the offline server
    /// started (or reused) for exactly as long as `body` runs, the root model's name asked of the server when the
    /// user gave none.
    /// - Parameters:
    ///   - plan: from ``prepare()``.
    ///   - sandbox: where code runs; `nil` builds the process sandbox with the options' Python.
    ///   - body: receives the configuration (set `onEvent` on it as needed).
    public func withConfiguration<T: Sendable>(
        _ plan: Plan, sandbox: (any Sandbox)? = nil, _ body: (RLMConfiguration) async throws -> T
    ) async throws -> T {
        let sandbox = sandbox ?? options.sandboxBackend.sandbox(Self.sandboxLimits(python: options.python))
        switch plan.models.root.endpoint {
        case .local(let name):
            return try await withLocalModel(named: name) { localClient in
                let configuration = try configuration(plan, root: localClient, sandbox: sandbox)
                return try await body(configuration)
            }
        default:
            var plan = plan
            if plan.models.rootNeedsDiscovery {
                let name = try await discoverRootModel(plan.models.root.endpoint)
                onNote?("\(Self.baseURL(of: plan.models.root.endpoint)) serves one model, \(name): using it")
                plan.models.root = (name: name, endpoint: plan.models.root.endpoint.withModel(name))
                plan.models.callable[name] = plan.models.root.endpoint
                try checkPrices(plan, rootName: name)
            }
            let root = client(for: plan.models.root.endpoint, pricing: plan.pricing)
            return try await body(try configuration(plan, root: root, sandbox: sandbox))
        }
    }

    /// The sandbox limits' defaults, with the given interpreter for the process backend.
    /// - Parameter python: the interpreter inside the process backend's sandbox.
    public static func sandboxLimits(python: String) -> ProcessSandbox.Configuration {
        var configuration = ProcessSandbox.Configuration()
        configuration.pythonPath = python
        return configuration
    }

    /// Opens the run's trajectory file with every secret of the run redacted. The default path is under the XDG
    /// state directory.
    /// - Parameters:
    ///   - plan: from ``prepare()`` (its secrets are redacted).
    ///   - path: the file; `nil` picks a new default path.
    ///   - maskPII: also mask personal data in it (`--redact-pii`, see `PIIMask`).
    public func openTrajectory(_ plan: Plan, path: String?, maskPII: Bool = false) throws -> TrajectoryWriter {
        let path = path ?? TrajectoryWriter.defaultPath(environment: environment)
        do {
            return try TrajectoryWriter(
                path: path, secrets: plan.secrets, maskPII: maskPII, settings: Self.trajectorySettings(plan, maskPII))
        } catch {
            throw RuntimeError.setup("cannot write the trajectory to \(path): \(error.localizedDescription)")
        }
    }

    // MARK: - Assembly

    private func configuration(
        _ plan: Plan, root: any LanguageModel, sandbox: any Sandbox
    ) throws -> RLMConfiguration {
        let models = plan.models
        let sub = models.sub.map { sub in
            sub.name == models.root.name ? root : client(for: sub.endpoint, pricing: plan.pricing)
        }
        var configuration = RLMConfiguration(
            rootModel: root, subModel: sub, sandbox: sandbox, budget: options.budget)
        var callable = [String: any LanguageModel]()
        for (name, endpoint) in models.callable {
            if name == models.root.name {
                callable[name] = root
            } else if let sub, name == models.sub?.name {
                callable[name] = sub
            } else if case .local = endpoint {
                continue  // one offline model per run: only the root can be local
            } else {
                callable[name] = client(for: endpoint, pricing: plan.pricing)
            }
        }
        configuration.callableModels = callable
        configuration.cellTimeout = options.cellTimeout
        configuration.batchConcurrency = options.batchConcurrency
        // Every front end describes the context's format and shows real lines when a search finds nothing: one cheap
        // cell each, and the model matches the data's exact form instead of guessing it.
        configuration.describeContextFormat = true
        configuration.showLinesWhenNothingFound = true
        if models.isLocal { configuration.tuneForSmallModels() }
        let pricing = plan.pricing
        configuration.cost = { model, usage in pricing.cost(of: usage, model: model) }
        return configuration
    }

    private func client(for endpoint: ModelEndpoint, pricing: ModelPricing) -> any LanguageModel {
        switch endpoint {
        case .openAI(let configuration):
            return PricedModel(
                base: OpenAIChatModel(configuration: configuration, httpClient: httpClient, logger: logger),
                price: pricing.price(for: configuration.defaultModel))
        case .anthropic(let configuration):
            return PricedModel(
                base: AnthropicModel(configuration: configuration, httpClient: httpClient, logger: logger),
                price: pricing.price(for: configuration.defaultModel))
        case .local:
            preconditionFailure("local models are connected by withLocalModel")
        }
    }

    /// What `run_started` records of the front end's setup: the provider and its base URL (scheme, host, port and
    /// path only: user info and query can hold credentials), and whether personal data is masked. Never a key.
    static func trajectorySettings(_ plan: Plan, _ maskPII: Bool) -> [String: JSONValue] {
        let endpoint = plan.models.root.endpoint
        let provider: String
        switch endpoint {
        case .openAI: provider = "openai"
        case .anthropic: provider = "anthropic"
        case .local: provider = "local"
        }
        var settings: [String: JSONValue] = ["provider": .string(provider), "redact_pii": .bool(maskPII)]
        if case .local = endpoint {
            settings["base_url"] = nil
        } else if var parts = URLComponents(string: baseURL(of: endpoint)) {
            parts.user = nil
            parts.password = nil
            parts.query = nil
            parts.fragment = nil
            settings["base_url"] = .string(parts.string ?? "")
        }
        return settings
    }

    static func baseURL(of endpoint: ModelEndpoint) -> String {
        switch endpoint {
        case .openAI(let configuration): return configuration.baseURL
        case .anthropic(let configuration): return configuration.baseURL
        case .local(let model): return model
        }
    }

    /// Asks an OpenAI-compatible server which models it serves: one is used, several must be chosen with `--model`.
    private func discoverRootModel(_ endpoint: ModelEndpoint) async throws -> String {
        guard case .openAI(let configuration) = endpoint else { return endpoint.modelName }
        let ids = try await OpenAIChatModel(configuration: configuration, httpClient: httpClient, logger: logger)
            .listModels()
        switch ids.count {
        case 0:
            throw RuntimeError.usage(
                "\(configuration.modelsEndpoint) lists no models; name one with --model")
        case 1:
            return ids[0]
        default:
            let shown = ids.prefix(20).joined(separator: ", ")
            throw RuntimeError.usage(
                "\(configuration.baseURL) serves \(ids.count) models; pick one with --model: \(shown)"
                    + (ids.count > 20 ? ", …" : ""))
        }
    }

    /// Starts (or reuses) the offline server for `name`, pulling the model first when it is missing; the server this
    /// call starts stops when `body` returns.
    private func withLocalModel<T: Sendable>(
        named name: String, _ body: (any LanguageModel) async throws -> T
    ) async throws -> T {
        var storeConfiguration = LocalModelStore.Configuration()
        if let directory = environment["RLM_MODEL_DIR"].flatMap({ $0.isEmpty ? nil : $0 }) {
            storeConfiguration.directory = URL(fileURLWithPath: directory, isDirectory: true)
        }
        let store = LocalModelStore(configuration: storeConfiguration, logger: logger)
        let model = try store.model(named: name)
        if !store.isInstalled(model) {
            onLocalActivity?(.pulling(model: name, sizeBytes: model.sizeBytes))
            try await store.pull(model) { progress in onLocalActivity?(.pull(progress)) }
        }
        return try await LocalModelServer.withServer(
            model: model, store: store, logger: logger,
            progress: { progress in onLocalActivity?(.server(progress)) }
        ) { server in
            var configuration = OpenAIChatModel.Configuration(
                baseURL: server.baseURL.absoluteString, apiKey: nil, keySource: nil, defaultModel: server.modelName,
                contextWindow: server.contextWindow)
            configuration.providerName = "local"
            // One CPU thread generates ~10 tokens/s: a long reply takes minutes, not seconds.
            configuration.readTimeout = .seconds(900)
            configuration.totalTimeout = .seconds(1800)
            let client = OpenAIChatModel(configuration: configuration, httpClient: httpClient, logger: logger)
            return try await body(PricedModel(base: client, price: .free))
        }
    }
}
