extension OpenAIChatModel {
    /// Settings for an OpenAI-compatible chat completions endpoint.
    ///
    /// The key is held privately: set it with ``init(baseURL:apiKey:keySource:defaultModel:contextWindow:maxOutputTokens:temperature:)``
    /// or ``setAPIKey(_:)``; it cannot be read back, and ``description`` shows only whether one is set.
    public struct Configuration: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        /// The server's base URL, with or without `/v1` (`https://api.openai.com/v1`, `http://127.0.0.1:8080`);
        /// ``ProviderBaseURL/openAI(_:)`` turns it into the API root (see ``endpoint`` and ``modelsEndpoint``).
        public var baseURL: String
        /// The provider's short name in ``OpenAIChatModel/name`` (`openai`, or `local` for a llama.cpp server).
        public var providerName: String
        /// The environment variable the key came from, named in errors (`OPENAI_API_KEY`); `nil` to name none.
        public var keySource: String?
        /// The model used when a request names none.
        public var defaultModel: String
        /// The model's context window in tokens, when known.
        public var contextWindow: Int?
        /// `max_tokens` when a request sets none; `nil` sends none (the server's default).
        public var maxOutputTokens: Int?
        /// The sampling temperature when a request sets none; `nil` sends none.
        public var temperature: Double?
        /// The longest wait for a connection (default 10 s). A failing connect is retried by the HTTP client within
        /// this window, so it is not retried again after it.
        public var connectTimeout: Duration
        /// The longest silence between two pieces of a response (default 120 s). Non-streamed calls start counting
        /// at the response head (the server generates the whole answer first); streamed calls at once.
        public var readTimeout: Duration
        /// The longest a call may take, retries and waits included (default 600 s).
        public var totalTimeout: Duration
        /// Retries of 429, 5xx, 529 and connection failures.
        public var retry: RetryPolicy
        /// Whether ``OpenAIChatModel/complete(_:)`` streams under the hood (default `false`). Streaming keeps bytes
        /// flowing, so long generations do not trip idle timeouts of the HTTP client or of proxies.
        public var streamCompletions: Bool
        /// Whether streamed requests ask for a final usage chunk (`stream_options.include_usage`, default `true`).
        /// Turn off for servers that reject the field; tokens are then estimated.
        public var includeStreamUsage: Bool
        /// The name of the output-token limit field: `max_tokens` (default) or `max_completion_tokens` (which
        /// OpenAI's reasoning models require).
        public var maxTokensParameter: String
        /// Extra request headers (an organization id, a gateway's routing header…). They are never logged.
        public var extraHeaders: [String: String]
        /// The largest non-streamed response body accepted (default 32 MiB).
        public var maxResponseBytes: Int
        /// How many requests may run at once through the `HTTPClient` to this host; more wait their turn (within
        /// the total timeout). `nil` (the default) matches the client: ``ProviderHTTPClient/connectionsPerHost``
        /// for a client from ``ProviderHTTPClient``, 8 for any other (`HTTPClient.shared` opens 8). Set it for a
        /// client of your own. Lower only limits concurrency; higher lets requests queue inside the client, where the
        /// connect timeout can fire on them. Models sharing a client and host share the limit (the first model's
        /// value counts).
        public var connectionsPerHost: Int?

        /// Whether requests ask the provider to report each call's cost (`"usage": {"include": true}`), which
        /// OpenRouter answers with `usage.cost` in USD (``Completion/reportedCostUSD``). By default on when
        /// ``baseURL``'s host is `openrouter.ai` or a subdomain of it, and it follows ``baseURL`` until set. Other
        /// servers may refuse the unknown field, so it is off for them.
        public var requestsReportedCost: Bool {
            get { requestsReportedCostSetting ?? ProviderBaseURL.isOpenRouter(baseURL) }
            set { requestsReportedCostSetting = newValue }
        }

        var key: RedactedKey?
        private var requestsReportedCostSetting: Bool?

        /// - Parameters:
        ///   - baseURL: the server's base URL, with or without `/v1` (default `https://api.openai.com/v1`).
        ///   - apiKey: the key, sent as `Authorization: Bearer …`; `nil` sends no header (local servers).
        ///   - keySource: the environment variable named in errors (default `OPENAI_API_KEY`).
        ///   - defaultModel: the model used when a request names none (default `gpt-4o-mini`).
        ///   - contextWindow: the model's context window in tokens, when known.
        ///   - maxOutputTokens: `max_tokens` when a request sets none.
        ///   - temperature: the temperature when a request sets none.
        public init(
            baseURL: String = "https://api.openai.com/v1",
            apiKey: String? = nil,
            keySource: String? = "OPENAI_API_KEY",
            defaultModel: String = "gpt-4o-mini",
            contextWindow: Int? = nil,
            maxOutputTokens: Int? = nil,
            temperature: Double? = nil
        ) {
            self.baseURL = baseURL
            self.providerName = "openai"
            self.keySource = keySource
            self.defaultModel = defaultModel
            self.contextWindow = contextWindow
            self.maxOutputTokens = maxOutputTokens
            self.temperature = temperature
            self.connectTimeout = .seconds(10)
            self.readTimeout = .seconds(120)
            self.totalTimeout = .seconds(600)
            self.retry = RetryPolicy()
            self.streamCompletions = false
            self.includeStreamUsage = true
            self.maxTokensParameter = "max_tokens"
            self.extraHeaders = [:]
            self.maxResponseBytes = 32 << 20
            self.connectionsPerHost = nil
            self.key = RedactedKey.make(apiKey)
        }

        /// Sets or clears the API key.
        /// - Parameter apiKey: the key; `nil` or empty sends none.
        public mutating func setAPIKey(_ apiKey: String?) {
            key = RedactedKey.make(apiKey)
        }

        /// Whether a key is set.
        public var hasAPIKey: Bool { key != nil }

        /// The endpoint completions go to: `{API root}/chat/completions`.
        public var endpoint: String { ProviderBaseURL.join(ProviderBaseURL.openAI(baseURL), "chat/completions") }

        /// The endpoint ``OpenAIChatModel/listModels()`` reads: `{API root}/models`.
        public var modelsEndpoint: String { ProviderBaseURL.join(ProviderBaseURL.openAI(baseURL), "models") }

        /// A summary without the key.
        public var description: String {
            "OpenAIChatModel.Configuration(baseURL: \(baseURL), model: \(defaultModel), apiKey: "
                + "\(hasAPIKey ? "set" : "not set"))"
        }

        /// Same as ``description``.
        public var debugDescription: String { description }

        /// Shows every field but the key.
        public var customMirror: Mirror {
            Mirror(
                self,
                children: [
                    "baseURL": baseURL, "providerName": providerName, "keySource": keySource as Any,
                    "defaultModel": defaultModel, "contextWindow": contextWindow as Any,
                    "maxOutputTokens": maxOutputTokens as Any, "temperature": temperature as Any,
                    "connectTimeout": connectTimeout, "readTimeout": readTimeout, "totalTimeout": totalTimeout,
                    "retry": retry, "streamCompletions": streamCompletions,
                    "requestsReportedCost": requestsReportedCost, "hasAPIKey": hasAPIKey,
                ],
                displayStyle: .struct
            )
        }
    }
}
