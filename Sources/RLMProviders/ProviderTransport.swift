import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RLM
import Synchronization

/// Timeouts, retries and limits for one provider, taken from its configuration.
struct CallSettings: Sendable {
    var connectTimeout: Duration
    var readTimeout: Duration
    var totalTimeout: Duration
    var retry: RetryPolicy
    var maxResponseBytes: Int
    var connectionsPerHost: Int
}

/// The HTTP machinery both providers share: one POST (a completion) or GET (the model list) with connect, read (idle)
/// and total timeouts enforced here (AsyncHTTPClient's deadline only covers the response head), retries with backoff,
/// and error mapping.
struct ProviderTransport: Sendable {
    var httpClient: HTTPClient
    var logger: Logger
    var providerName: String
    var endpoint: String
    var headers: HTTPHeaders
    /// The header that carries the key (`authorization` with prefix `Bearer `, or `x-api-key`). Added to each
    /// request as it is built, so the key sits in no stored header set that could be printed.
    var authentication: (header: String, prefix: String, key: RedactedKey)?
    var settings: CallSettings
    var errors: ErrorMapper

    /// Identifies the HTTP client's connection pool for this endpoint.
    var poolKey: String {
        let url = URL(string: endpoint)
        let scheme = url?.scheme ?? "http"
        let port = url?.port ?? (scheme == "https" ? 443 : 80)
        return "\(ObjectIdentifier(httpClient).hashValue)|\(scheme)://\(url?.host ?? endpoint):\(port)"
    }

    /// Error bodies are read only this far: enough for any server's message.
    static let maxErrorBodyBytes = 64 << 10
    static let retryableStatuses: Set<Int> = [429, 500, 502, 503, 504, 529]
    /// How often the watchdog looks at an attempt that has no response head yet.
    static let phasePollInterval: Duration = .milliseconds(25)

    /// What an attempt's body reader gets to report progress and read the response.
    struct Attempt: Sendable {
        let monitor: AttemptMonitor
        let response: HTTPClientResponse
        let errors: ErrorMapper
        let maxResponseBytes: Int

        /// Whether the server answered with a JSON body (not an event stream).
        var isJSON: Bool {
            let type = response.headers.first(name: "content-type")?.lowercased() ?? ""
            return type.contains("json")
        }

        /// Reads the whole body, capped.
        func collect(limit: Int? = nil) async throws -> [UInt8] {
            let limit = limit ?? maxResponseBytes
            var bytes: [UInt8] = []
            for try await buffer in response.body {
                monitor.markActivity()
                guard bytes.count + buffer.readableBytes <= limit else {
                    throw errors.invalidResponse("a response body larger than \(limit) bytes; refusing to read it")
                }
                bytes.append(contentsOf: buffer.readableBytesView)
            }
            return bytes
        }
    }

    /// This transport aimed at another URL of the same server (the model list), with errors naming that URL.
    /// - Parameter endpoint: the full URL.
    func with(endpoint: String) -> ProviderTransport {
        var copy = self
        copy.endpoint = endpoint
        copy.errors.endpoint = endpoint
        return copy
    }

    /// Runs one POST with retries.
    /// - Parameters:
    ///   - body: the JSON request body.
    ///   - streaming: whether the response is an event stream (the read timeout then starts at once).
    ///   - canRetry: whether a retry is still allowed (false once a stream has yielded text).
    ///   - consume: reads a 2xx response.
    func post<T: Sendable>(
        body: [UInt8],
        streaming: Bool,
        canRetry: @escaping @Sendable () -> Bool = { true },
        consume: @escaping @Sendable (Attempt) async throws -> T
    ) async throws -> T {
        try await send(method: .POST, body: body, streaming: streaming, canRetry: canRetry, consume: consume)
    }

    /// Runs one GET with retries, with the same timeouts and error mapping as a POST.
    /// - Parameter consume: reads a 2xx response.
    func get<T: Sendable>(consume: @escaping @Sendable (Attempt) async throws -> T) async throws -> T {
        try await send(method: .GET, body: nil, streaming: false, canRetry: { true }, consume: consume)
    }

    private func send<T: Sendable>(
        method: HTTPMethod,
        body: [UInt8]?,
        streaming: Bool,
        canRetry: @escaping @Sendable () -> Bool,
        consume: @escaping @Sendable (Attempt) async throws -> T
    ) async throws -> T {
        let clock = ContinuousClock()
        let callDeadline = clock.now + settings.totalTimeout
        let policy = settings.retry
        var attempt = 0
        var logger = self.logger
        logger[metadataKey: "rlm.provider"] = "\(providerName)"

        while true {
            attempt += 1
            try Task.checkCancellation()
            logger.debug(
                "rlm.provider.request",
                metadata: ["rlm.provider.attempt": "\(attempt)", "rlm.provider.stream": "\(streaming)"]
            )
            let outcome = await runAttempt(
                method: method, body: body, streaming: streaming, callDeadline: callDeadline, consume)
            try Task.checkCancellation()

            var finalError: any Error
            var retryAfter: Duration?
            var retryable = false
            switch outcome {
            case .success(let value):
                return value
            case .httpError(let status, let headers, let errorBody):
                logger.debug("rlm.provider.http_error", metadata: ["rlm.http.status": "\(status)"])
                let mapped = errors.httpError(status: status, body: errorBody)
                finalError = mapped
                retryable = Self.retryableStatuses.contains(status) && mapped.kind != .contextOverflow
                retryAfter = RetryPolicy.retryAfter(from: headers)
            case .timedOut(let kind, let workError):
                logger.debug("rlm.provider.timeout", metadata: ["rlm.provider.timeout": "\(kind)"])
                switch kind {
                case .total:
                    throw errors.timeout(.total, after: settings.totalTimeout)
                case .connect, .response:
                    // An HTTP client that retries failing connects (as `HTTPClient.shared` does) keeps trying until
                    // cancelled and then reports only the cancellation. It already retried, so we do not.
                    if let workError, case .connection(let reason) = TransportFailure(workError) {
                        throw errors.transport(reason)
                    }
                    // Without a body nothing marks the connection as made (see ConnectSignallingBody), so the
                    // connect timeout lasted until the response head: say only that nothing answered.
                    throw errors.timeout(body == nil ? .response : .connect, after: settings.connectTimeout)
                case .read:
                    finalError = errors.timeout(.read, after: settings.readTimeout)
                    retryable = true
                }
            case .failed(let error):
                if error is CancellationError {
                    // Not our caller's cancellation (that was checked above): the HTTP client gave up on the
                    // request, as it does when its connection pool shuts down.
                    finalError = errors.transport("the HTTP client cancelled the request")
                    retryable = true
                } else if let error = error as? LLMError {
                    finalError = error
                    retryable = error.kind == .server || error.kind == .rateLimited
                } else if let error = error as? SSEParser.Error {
                    throw errors.invalidResponse("an invalid event stream: \(error)")
                } else {
                    switch TransportFailure(error) {
                    case .connection(let reason):
                        logger.debug("rlm.provider.connection_error", metadata: ["rlm.provider.reason": "\(reason)"])
                        finalError = errors.transport(reason)
                        retryable = true
                    case .timedOut(let reason):
                        finalError = LLMError(
                            .timeout,
                            "\(endpoint) timed out (\(reason)); the HTTP client's own timeouts fired, raise them or "
                                + "use streaming"
                        )
                        retryable = true
                    case .other(let reason):
                        throw errors.transport(errors.sanitize(reason, limit: 200))
                    }
                }
            }

            guard retryable, attempt < policy.maxAttempts, canRetry() else { throw finalError }
            let delay = policy.delay(afterAttempt: attempt, retryAfter: retryAfter)
            guard clock.now + delay < callDeadline else { throw finalError }
            logger.debug(
                "rlm.provider.retry",
                metadata: [
                    "rlm.provider.attempt": "\(attempt)",
                    "rlm.provider.delay_ms": "\(Int(delay.inSeconds * 1000))",
                ]
            )
            try await Task.sleep(for: delay, clock: clock)
        }
    }

    enum Outcome<T: Sendable>: Sendable {
        case success(T)
        case httpError(status: Int, headers: HTTPHeaders, body: [UInt8])
        case timedOut(TimeoutKind, workError: (any Error)?)
        case failed(any Error)
    }

    private enum Child<T: Sendable>: Sendable {
        case work(Outcome<T>)
        case watchdogFired(TimeoutKind)
        case watchdogStopped
    }

    /// One attempt: the request raced against a watchdog that enforces the three timeouts.
    private func runAttempt<T: Sendable>(
        method: HTTPMethod,
        body: [UInt8]?,
        streaming: Bool,
        callDeadline: ContinuousClock.Instant,
        _ consume: @escaping @Sendable (Attempt) async throws -> T
    ) async -> Outcome<T> {
        // Wait here, not in the HTTP client's queue, for a connection to be free (see ConnectionGate).
        let gate = ConnectionGate.gate(for: poolKey, limit: settings.connectionsPerHost)
        do {
            guard try await gate.acquire(until: callDeadline) else { return .timedOut(.total, workError: nil) }
        } catch {
            return .failed(error)
        }
        defer { gate.release() }
        let monitor = AttemptMonitor(readTimeoutBeforeHead: streaming)
        var request = HTTPClientRequest(url: endpoint)
        request.method = method
        request.headers = headers
        if let authentication {
            request.headers.replaceOrAdd(
                name: authentication.header, value: authentication.prefix + authentication.key.value)
        }
        if let body {
            request.body = .stream(
                ConnectSignallingBody(bytes: ByteBuffer(bytes: body), onStart: { monitor.markConnected() }),
                length: .known(Int64(body.count))
            )
        } else {
            request.headers.remove(name: "content-type")
        }
        let preparedRequest = request
        let settings = self.settings
        let httpClient = self.httpClient
        let logger = self.logger
        let errors = self.errors
        // AsyncHTTPClient's own deadline covers the head only; ours fires first and says which timeout it was.
        let remaining = callDeadline - ContinuousClock.now
        let headDeadline = NIODeadline.now() + .nanoseconds(Int64(max(remaining.inSeconds, 0) * 1e9)) + .seconds(5)

        return await withTaskGroup(of: Child<T>.self) { group in
            group.addTask {
                do {
                    let response = try await httpClient.execute(preparedRequest, deadline: headDeadline, logger: logger)
                    monitor.markHead()
                    let attempt = Attempt(
                        monitor: monitor,
                        response: response,
                        errors: errors,
                        maxResponseBytes: settings.maxResponseBytes
                    )
                    guard (200..<300).contains(Int(response.status.code)) else {
                        let errorBody = try await attempt.collect(limit: Self.maxErrorBodyBytes)
                        return .work(
                            .httpError(status: Int(response.status.code), headers: response.headers, body: errorBody)
                        )
                    }
                    return .work(.success(try await consume(attempt)))
                } catch {
                    return .work(.failed(error))
                }
            }
            group.addTask {
                await Self.watchdog(monitor: monitor, settings: settings, callDeadline: callDeadline)
            }
            let first = await group.next() ?? .watchdogStopped
            group.cancelAll()
            switch first {
            case .work(let outcome):
                return outcome
            case .watchdogFired(let kind):
                var workError: (any Error)?
                while let next = await group.next() {
                    if case .work(.failed(let error)) = next { workError = error }
                }
                return .timedOut(kind, workError: workError)
            case .watchdogStopped:
                // The caller was cancelled: the request sees the same cancellation and ends.
                var result: Outcome<T> = .failed(CancellationError())
                while let next = await group.next() {
                    if case .work(let outcome) = next { result = outcome }
                }
                if Task.isCancelled { return .failed(CancellationError()) }
                return result
            }
        }
    }

    private static func watchdog<T>(
        monitor: AttemptMonitor,
        settings: CallSettings,
        callDeadline: ContinuousClock.Instant
    ) async -> Child<T> {
        let start = ContinuousClock.now
        while true {
            let state = monitor.snapshot()
            var deadline = callDeadline
            var kind = TimeoutKind.total
            if !state.connected {
                if start + settings.connectTimeout < deadline {
                    deadline = start + settings.connectTimeout
                    kind = .connect
                }
            } else if state.headReceived || monitor.readTimeoutBeforeHead {
                if state.lastActivity + settings.readTimeout < deadline {
                    deadline = state.lastActivity + settings.readTimeout
                    kind = .read
                }
            }
            let now = ContinuousClock.now
            if now >= deadline { return .watchdogFired(kind) }
            // Until the response head, a phase change can bring the deadline forward (the read timeout starts):
            // look again soon. After it, activity only pushes the deadline back, so sleeping until it is exact.
            let wake = state.headReceived ? deadline : min(deadline, now + Self.phasePollInterval)
            do {
                try await Task.sleep(until: wake, clock: .continuous)
            } catch {
                return .watchdogStopped
            }
        }
    }
}

/// Progress of one attempt, shared between the request and its watchdog.
final class AttemptMonitor: Sendable {
    struct State {
        var connected = false
        var headReceived = false
        var lastActivity = ContinuousClock.now
    }

    let readTimeoutBeforeHead: Bool
    private let state = Mutex(State())

    init(readTimeoutBeforeHead: Bool) {
        self.readTimeoutBeforeHead = readTimeoutBeforeHead
    }

    func snapshot() -> State { state.withLock { $0 } }

    func markConnected() {
        state.withLock {
            $0.connected = true
            $0.lastActivity = .now
        }
    }

    func markHead() {
        state.withLock {
            $0.connected = true
            $0.headReceived = true
            $0.lastActivity = .now
        }
    }

    func markActivity() {
        state.withLock { $0.lastActivity = .now }
    }
}

/// The request body as a one-element async sequence. AsyncHTTPClient starts reading it only once the request is on a
/// connection, which is the one signal it gives that the connect phase is over.
struct ConnectSignallingBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    let bytes: ByteBuffer
    let onStart: @Sendable () -> Void

    struct AsyncIterator: AsyncIteratorProtocol {
        var bytes: ByteBuffer?
        let onStart: @Sendable () -> Void
        var started = false

        mutating func next() async -> ByteBuffer? {
            if !started {
                started = true
                onStart()
            }
            defer { bytes = nil }
            return bytes
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bytes: bytes, onStart: onStart) }
}

/// Set once a stream has yielded text: from then on a failure cannot be retried without repeating text.
final class YieldFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}

/// Rough token count for servers that report none: one token per four characters.
func estimatedTokens(characters: Int) -> Int { (characters + 3) / 4 }
