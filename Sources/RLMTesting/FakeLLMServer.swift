import NIOCore
import NIOHTTP1
import NIOPosix
import RLM
import Synchronization

/// A scripted LLM server over real HTTP/1.1 on 127.0.0.1, speaking both the OpenAI chat completions and the
/// Anthropic Messages wire formats, streamed (server-sent events with the real event shapes) and not.
///
/// The test decides every reply with a ``Handler``; the server records every request. It serves many concurrent
/// requests and keeps connections alive, like the real thing.
///
/// ```swift
/// try await FakeLLMServer.withServer(.scripted([.rateLimited(retryAfter: "0"), .text("Paris")])) { server in
///     let model = OpenAIChatModel(configuration: .init(baseURL: server.openAIBaseURL, defaultModel: "m"))
///     let completion = try await model.complete(CompletionRequest(messages: [.user("Capital of France?")]))
///     #expect(completion.text == "Paris")
///     #expect(await server.requests.count == 2)
/// }
/// ```
///
/// Endpoints: `POST /v1/chat/completions` and `POST /chat/completions` (OpenAI), `POST /v1/messages` (Anthropic),
/// `GET /v1/models` (``Configuration/modelIDs``, in Anthropic's shape when the request carries `anthropic-version`,
/// OpenAI's otherwise) and `GET /health` (for readiness checks). Anything else gets a 404.
public final class FakeLLMServer: Sendable {
    /// Server settings.
    public struct Configuration: Sendable {
        /// The address to bind (default `127.0.0.1`).
        public var host: String
        /// The port (default 0: an ephemeral port, read it from ``FakeLLMServer/port``).
        public var port: Int
        /// A pause before every reply, on top of the reply's own delay (for benchmarks).
        public var latency: Duration
        /// When set, requests must carry this key (`Authorization: Bearer …` for OpenAI, `x-api-key` for
        /// Anthropic); others get the format's real-shaped 401 and never reach the handler.
        public var expectedAPIKey: String?
        /// Whether to refuse requests the real APIs refuse (default `true`): a missing model or messages; for
        /// Anthropic a missing `max_tokens` or `anthropic-version`, a first message that is not the user's, roles
        /// that do not alternate (stricter than the real API, which merges them), a `system` role inside
        /// `messages`, empty content. Refused requests get a 400 and never reach the handler.
        public var strict: Bool
        /// The largest request body accepted (default 64 MiB); bigger gets a 413.
        public var maxRequestBodyBytes: Int
        /// The model named in replies when the request names none.
        public var defaultModel: String
        /// The model ids `GET /v1/models` lists, in order; `nil` (the default) lists ``defaultModel`` alone.
        public var modelIDs: [String]?
        /// When set, `GET /v1/models` answers with this instead of the list: a `.raw` body, an `.error`, `.stall`…
        public var modelListReply: Reply?
        /// The most ids one Anthropic-style list page holds, whatever the request's `limit` asks (default 1000, the
        /// real API's largest page). Set it lower to make a client follow pages (`has_more`, `after_id`).
        public var modelListPageSize: Int
        /// When set, OpenAI-format completions whose request asks for it (`"usage": {"include": true}`) report this
        /// cost in USD as `usage.cost`, in the whole reply or the final usage chunk, as OpenRouter does.
        public var reportedCostUSD: Double?

        /// - Parameters:
        ///   - host: the address to bind.
        ///   - port: the port; 0 for an ephemeral one.
        ///   - latency: a pause before every reply.
        ///   - expectedAPIKey: the key requests must carry, or `nil` to check none.
        ///   - strict: whether to refuse requests the real APIs refuse.
        ///   - modelIDs: the ids `GET /v1/models` lists; `nil` lists the default model alone.
        ///   - reportedCostUSD: the cost to report in `usage.cost` when a request asks for it; `nil` reports none.
        public init(
            host: String = "127.0.0.1",
            port: Int = 0,
            latency: Duration = .zero,
            expectedAPIKey: String? = nil,
            strict: Bool = true,
            modelIDs: [String]? = nil,
            reportedCostUSD: Double? = nil
        ) {
            self.host = host
            self.port = port
            self.latency = latency
            self.expectedAPIKey = expectedAPIKey
            self.strict = strict
            self.maxRequestBodyBytes = 64 << 20
            self.defaultModel = "fake-model"
            self.modelIDs = modelIDs
            self.modelListReply = nil
            self.modelListPageSize = 1000
            self.reportedCostUSD = reportedCostUSD
        }
    }

    private struct State {
        var port: Int?
        var serverChannel: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var replies: [Int: Task<Void, Never>] = [:]
        var nextReplyID = 0
        var requests: [Request] = []
        var connectionCount = 0
        var started = false
        var stopped = false
    }

    /// The settings the server runs with.
    public let configuration: Configuration
    let handler: Handler
    private let state = Mutex(State())

    /// Makes a server; call ``start()`` before use and ``shutdown()`` after (or use ``withServer(configuration:_:_:)``).
    /// - Parameters:
    ///   - configuration: address, latency, auth and strictness.
    ///   - handler: decides the reply to each request.
    public init(configuration: Configuration = Configuration(), handler: Handler) {
        self.configuration = configuration
        self.handler = handler
    }

    /// Makes a server whose replies come from a closure.
    /// - Parameters:
    ///   - configuration: address, latency, auth and strictness.
    ///   - respond: returns the reply to a request.
    public convenience init(
        configuration: Configuration = Configuration(),
        respond: @escaping @Sendable (Request) async -> Reply
    ) {
        self.init(configuration: configuration, handler: Handler(respond))
    }

    /// Binds the port and starts serving.
    /// - Throws: when the address cannot be bound, or the server was already started.
    public func start() async throws {
        try state.withLock { state in
            guard !state.started else { throw FakeLLMServerError("FakeLLMServer.start() was called twice") }
            state.started = true
        }
        let serverChannel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(server: self))
                    self.track(connection: channel)
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        let port = serverChannel.localAddress?.port ?? configuration.port
        state.withLock { state in
            state.port = port
            state.serverChannel = serverChannel
        }
    }

    /// Stops serving: closes the listening socket and every connection, ending stalled and delayed replies.
    /// Calling it again does nothing.
    public func shutdown() async {
        let (serverChannel, connections) = state.withLock { state in
            state.stopped = true
            let result = (state.serverChannel, Array(state.connections.values))
            state.serverChannel = nil
            return result
        }
        try? await serverChannel?.close()
        for connection in connections { try? await connection.close() }
        // Replies see their connection close and end; wait for them so nothing outlives the server.
        while let reply = state.withLock({ $0.replies.values.first }) {
            reply.cancel()
            await reply.value
        }
    }

    /// Runs `body` with a started server, and shuts it down afterwards, also when `body` throws.
    /// - Parameters:
    ///   - configuration: address, latency, auth and strictness.
    ///   - handler: decides the reply to each request.
    ///   - body: the test.
    /// - Returns: what `body` returns.
    public static func withServer<T>(
        configuration: Configuration = Configuration(),
        _ handler: Handler,
        _ body: (FakeLLMServer) async throws -> T
    ) async throws -> T {
        let server = FakeLLMServer(configuration: configuration, handler: handler)
        try await server.start()
        do {
            let result = try await body(server)
            await server.shutdown()
            return result
        } catch {
            await server.shutdown()
            throw error
        }
    }

    /// Runs `body` with a started server whose replies come from a closure; see
    /// ``withServer(configuration:_:_:)``.
    /// - Parameters:
    ///   - configuration: address, latency, auth and strictness.
    ///   - respond: returns the reply to a request.
    ///   - body: the test.
    /// - Returns: what `body` returns.
    public static func withServer<T>(
        configuration: Configuration = Configuration(),
        respond: @escaping @Sendable (Request) async -> Reply,
        _ body: (FakeLLMServer) async throws -> T
    ) async throws -> T {
        try await withServer(configuration: configuration, Handler(respond), body)
    }

    /// The bound port. Only valid after ``start()``.
    public var port: Int {
        guard let port = state.withLock({ $0.port }) else {
            preconditionFailure("FakeLLMServer.port was read before start()")
        }
        return port
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL for an OpenAI-compatible client.
    public var openAIBaseURL: String { "http://\(configuration.host):\(port)/v1" }

    /// `http://127.0.0.1:PORT`, the base URL for an Anthropic client.
    public var anthropicBaseURL: String { "http://\(configuration.host):\(port)" }

    /// The base URL for a client of `format`.
    /// - Parameter format: the wire format.
    public func baseURL(for format: WireFormat) -> String {
        format == .openAI ? openAIBaseURL : anthropicBaseURL
    }

    /// Every request received so far, in arrival order (including refused ones).
    public var requests: [Request] {
        get async { state.withLock { $0.requests } }
    }

    /// How many connections were accepted so far (with keep-alive, fewer than requests).
    public var connectionCount: Int {
        get async { state.withLock { $0.connectionCount } }
    }

    // MARK: - Serving

    private func track(connection channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let refused = state.withLock { state in
            state.connectionCount += 1
            guard !state.stopped else { return true }
            state.connections[id] = channel
            return false
        }
        if refused {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [self] _ in
            _ = state.withLock { $0.connections.removeValue(forKey: id) }
        }
    }

    /// Runs one reply in a task the server can wait for at shutdown.
    func startReply(_ work: @escaping @Sendable () async -> Void) -> Task<Void, Never> {
        state.withLock { state in
            let id = state.nextReplyID
            state.nextReplyID += 1
            let task = Task { [self] in
                await work()
                self.replyFinished(id)
            }
            state.replies[id] = task
            return task
        }
    }

    private func replyFinished(_ id: Int) {
        _ = state.withLock { $0.replies.removeValue(forKey: id) }
    }

    func record(_ request: Request) -> Request {
        state.withLock { state in
            var request = request
            request.index = state.requests.count
            state.requests.append(request)
            return request
        }
    }

    func nextRequestIndex() -> Int { state.withLock { $0.requests.count } }
}

/// A misuse of ``FakeLLMServer``.
public struct FakeLLMServerError: Error, CustomStringConvertible {
    /// What went wrong.
    public var description: String

    init(_ description: String) { self.description = description }
}
