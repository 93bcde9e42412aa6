import AsyncHTTPClient
import NIOCore
import RLM
import Synchronization

/// `HTTPClient`s set up for LLM calls, better suited than `HTTPClient.shared`.
///
/// `HTTPClient.shared` retries a failing connect inside the client until the provider's connect timeout gives up,
/// and then cannot say why it failed; it also opens at most 8 connections per host, so the engine's batched
/// sub-calls queue behind each other. A client from here fails a connect at once with the real reason ("connection
/// refused") and lets the provider retry with backoff as its ``RetryPolicy`` says; it opens up to
/// ``connectionsPerHost`` connections per host, sets no client read timeout (providers enforce their own idle and
/// total timeouts) and follows no redirects (a redirected POST is a misconfigured base URL).
///
/// Models notice a client from here (``shared`` or one from ``withHTTPClient(connectTimeout:_:)``) and allow
/// ``connectionsPerHost`` requests at once through it; see `connectionsPerHost` on the model configurations.
///
/// ```swift
/// let model = OpenAIChatModel(configuration: configuration, httpClient: ProviderHTTPClient.shared, logger: logger)
/// ```
public enum ProviderHTTPClient {
    /// How many HTTP/1.1 connections a client from here opens to one host.
    public static let connectionsPerHost = 64

    /// How many connections `HTTPClient.shared` opens to one host.
    static let sharedClientConnectionsPerHost = 8

    /// A process-wide client with ``configuration(connectTimeout:)``'s settings and a 10 s connect timeout. Like
    /// `HTTPClient.shared`, it lives as long as the process and is never shut down.
    public static let shared: HTTPClient = {
        let client = HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup,
            configuration: configuration()
        )
        register(client)
        return client
    }()

    /// The client configuration.
    /// - Parameter connectTimeout: the longest a TCP (and TLS) connect may take (default 10 s).
    /// - Returns: a configuration for `HTTPClient(eventLoopGroup:configuration:)`.
    public static func configuration(connectTimeout: Duration = .seconds(10)) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(
            connect: .nanoseconds(Int64(connectTimeout.inSeconds * 1e9)),
            read: nil
        )
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connectionsPerHost
        configuration.redirectConfiguration = .disallow
        return configuration
    }

    /// Runs `body` with a new client made from ``configuration(connectTimeout:)`` and shuts it down afterwards.
    /// - Parameters:
    ///   - connectTimeout: the longest a connect may take.
    ///   - body: uses the client; share it among all models of the run.
    /// - Returns: what `body` returns.
    public static func withHTTPClient<T>(
        connectTimeout: Duration = .seconds(10),
        _ body: (HTTPClient) async throws -> T
    ) async throws -> T {
        try await HTTPClient.withHTTPClient(configuration: configuration(connectTimeout: connectTimeout)) { client in
            register(client)
            defer { unregister(client) }
            return try await body(client)
        }
    }

    /// How many requests at once a model lets through `client` to one host when its configuration does not say.
    static func defaultConnectionsPerHost(for client: HTTPClient) -> Int {
        clients.withLock { $0.contains(ObjectIdentifier(client)) }
            ? connectionsPerHost : sharedClientConnectionsPerHost
    }

    private static let clients = Mutex<Set<ObjectIdentifier>>([])
    private static func register(_ client: HTTPClient) { _ = clients.withLock { $0.insert(ObjectIdentifier(client)) } }
    private static func unregister(_ client: HTTPClient) {
        _ = clients.withLock { $0.remove(ObjectIdentifier(client)) }
    }
}
