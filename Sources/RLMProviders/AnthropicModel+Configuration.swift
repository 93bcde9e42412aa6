extension AnthropicModel {
    /// Settings for the Anthropic Messages API.
    ///
    /// The key is held privately: set it with the initializer or ``setAPIKey(_:)``; it cannot be read back, and
    /// ``description`` shows only whether one is set.
    public struct Configuration: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        /// The server's base URL, with or without `/v1` (default `https://api.anthropic.com`);
        /// ``ProviderBaseURL/anthropic(_:)`` turns it into the API root (see ``endpoint`` and ``modelsEndpoint``).
        public var baseURL: String
        /// The provider's short name in ``AnthropicModel/name`` (default `anthropic`).
        public var providerName: String
        /// The environment variable the key came from, named in errors (`ANTHROPIC_API_KEY`); `nil` to name none.
        public var keySource: String?
        /// The model used when a request names none.
        public var defaultModel: String
        /// The model's context window in tokens, when known.
        public var contextWindow: Int?
        /// `max_tokens` when a request sets none; Anthropic requires one (default 4096).
        public var maxOutputTokens: Int
        /// The sampling temperature when a request sets none; `nil` sends none.
        public var temperature: Double?
        /// The `anthropic-version` header (default `2023-06-01`).
        public var apiVersion: String
        /// The user message inserted when a conversation would otherwise start with the assistant or have no
        /// message at all (Anthropic requires a user message first), and used for empty messages.
        public var placeholderUserMessage: String
        /// The longest wait for a connection (default 10 s). A failing connect is retried by the HTTP client within
        /// this window, so it is not retried again after it.
        public var connectTimeout: Duration
        /// The longest silence between two pieces of a response (default 120 s). Non-streamed calls start counting
        /// at the response head; streamed calls at once.
        public var readTimeout: Duration
        /// The longest a call may take, retries and waits included (default 600 s).
        public var totalTimeout: Duration
        /// Retries of 429, 5xx, 529 (overloaded) and connection failures.
        public var retry: RetryPolicy
        /// Whether ``AnthropicModel/complete(_:)`` streams under the hood (default `false`). Anthropic recommends
        /// streaming for long generations.
        public var streamCompletions: Bool
        /// Extra request headers (`anthropic-beta`…). They are never logged.
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

        var key: RedactedKey?

        /// - Parameters:
        ///   - baseURL: the server's base URL, with or without `/v1` (default `https://api.anthropic.com`).
        ///   - apiKey: the key, sent as `x-api-key`.
        ///   - keySource: the environment variable named in errors (default `ANTHROPIC_API_KEY`).
        ///   - defaultModel: the model used when a request names none (default `claude-sonnet-4-20250514`).
        ///   - contextWindow: the model's context window in tokens, when known.
        ///   - maxOutputTokens: `max_tokens` when a request sets none (default 4096).
        ///   - temperature: the temperature when a request sets none.
        public init(
            baseURL: String = "https://api.anthropic.com",
            apiKey: String? = nil,
            keySource: String? = "ANTHROPIC_API_KEY",
            defaultModel: String = "claude-sonnet-4-20250514",
            contextWindow: Int? = nil,
            maxOutputTokens: Int = 4096,
            temperature: Double? = nil
        ) {
            self.baseURL = baseURL
            self.providerName = "anthropic"
            self.keySource = keySource
            self.defaultModel = defaultModel
            self.contextWindow = contextWindow
            self.maxOutputTokens = maxOutputTokens
            self.temperature = temperature
            self.apiVersion = "2023-06-01"
            self.placeholderUserMessage = "Continue."
            self.connectTimeout = .seconds(10)
            self.readTimeout = .seconds(120)
            self.totalTimeout = .seconds(600)
            self.retry = RetryPolicy()
            self.streamCompletions = false
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

        /// The endpoint messages go to: `{API root}/messages`, normally `…/v1/messages`.
        public var endpoint: String { ProviderBaseURL.join(ProviderBaseURL.anthropic(baseURL), "messages") }

        /// The endpoint ``AnthropicModel/listModels()`` reads: `{API root}/models`.
        public var modelsEndpoint: String { ProviderBaseURL.join(ProviderBaseURL.anthropic(baseURL), "models") }

        /// A summary without the key.
        public var description: String {
            "AnthropicModel.Configuration(baseURL: \(baseURL), model: \(defaultModel), apiKey: "
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
                    "maxOutputTokens": maxOutputTokens, "temperature": temperature as Any,
                    "apiVersion": apiVersion, "connectTimeout": connectTimeout, "readTimeout": readTimeout,
                    "totalTimeout": totalTimeout, "retry": retry, "streamCompletions": streamCompletions,
                    "hasAPIKey": hasAPIKey,
                ],
                displayStyle: .struct
            )
        }
    }
}
