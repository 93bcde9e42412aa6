import Foundation
import Logging
import MCP
import RLMService
import Synchronization

/// MCP over streamable HTTP, mounted at `/mcp` on `rlm serve` behind its authentication, `Origin` check, body limit
/// and audit.
///
/// Each MCP session — made by an `initialize` without `Mcp-Session-Id` — has its own transport and ``Server`` and
/// belongs to the API key that made it: a request carrying another key's session id gets the same 404 as one
/// carrying an unknown id. `DELETE` ends a session. A key holds at most
/// ``Configuration/maxSessionsPerCaller`` sessions (429 past it); a session unused for ``Configuration/idleTimeout``
/// with no call in flight ends, and so does one whose answers passed ``Configuration/maxBytesPerSession`` once its
/// calls are answered (the SDK keeps every message it sent, for replay); its next request gets 404, and the client
/// starts a new session.
///
/// ```swift
/// let mcp = MCPHTTPEndpoint(service: service, logger: logger)
/// router.mount("/mcp", mcp)           // the server authenticates, then calls mcp.handle(request, caller:)
/// …
/// await mcp.closeAll()               // at shutdown, before the service stops
/// ```
public final class MCPHTTPEndpoint: PlainHTTPEndpoint {
    /// The limits of MCP sessions.
    public struct Configuration: Sendable {
        /// MCP sessions one caller (API key) may hold at once.
        public var maxSessionsPerCaller: Int
        /// MCP sessions across all callers.
        public var maxSessions: Int
        /// How long a session lives with no request and no call in flight.
        public var idleTimeout: Duration
        /// Bytes of answers a session may send before it is ended (at its next request once its calls are answered).
        public var maxBytesPerSession: Int
        /// The SSE `retry` interval, in milliseconds, suggested to clients that lose a stream; `nil` sends none.
        public var retryInterval: Int?

        /// - Parameters: as the properties.
        public init(
            maxSessionsPerCaller: Int = 8, maxSessions: Int = 256, idleTimeout: Duration = .seconds(1800),
            maxBytesPerSession: Int = 64 << 20, retryInterval: Int? = nil
        ) {
            self.maxSessionsPerCaller = maxSessionsPerCaller
            self.maxSessions = maxSessions
            self.idleTimeout = idleTimeout
            self.maxBytesPerSession = maxBytesPerSession
            self.retryInterval = retryInterval
        }
    }

    private struct Entry: Sendable {
        let owner: String
        var caller: Caller
        let transport: StatefulHTTPServerTransport
        let guarded: GuardedTransport
        let server: Server
        var lastUsed: ContinuousClock.Instant
    }

    private struct State {
        var sessions = [String: Entry]()
        var opening = [String: Int]()
        var closed = false
    }

    /// The configuration.
    public let configuration: Configuration
    private let service: RLMService
    private let logger: Logger
    private let state = Mutex(State())

    /// - Parameters:
    ///   - service: the serving core the tools call.
    ///   - configuration: the limits of MCP sessions.
    ///   - logger: the server's log.
    public init(service: RLMService, configuration: Configuration = Configuration(), logger: Logger) {
        self.service = service
        self.configuration = configuration
        self.logger = logger
    }

    /// MCP sessions open now, of every caller.
    public var openSessions: Int { state.withLock { $0.sessions.count } }

    /// Answers one HTTP request of an authenticated caller: `POST` (JSON-RPC messages, answered as SSE), `GET` (the
    /// session's stream of server messages) or `DELETE` (ends the session).
    public func handle(_ request: PlainHTTPRequest, caller: Caller) async -> PlainHTTPResponse {
        await closeExpired()
        let method = request.method.uppercased()
        let sdkRequest = HTTPRequest(
            method: method, headers: request.headers, body: request.body.isEmpty ? nil : request.body,
            path: request.path)
        guard ["GET", "POST", "DELETE"].contains(method) else {
            return Self.plain(
                .error(
                    statusCode: 405, .invalidRequest("Method Not Allowed: /mcp takes POST, GET and DELETE"),
                    extraHeaders: [HTTPHeaderName.allow: "GET, POST, DELETE"]))
        }
        if let sessionID = sdkRequest.header(HTTPHeaderName.sessionID) {
            return await forward(sdkRequest, to: sessionID, caller: caller)
        }
        guard method == "POST", Self.isInitialize(request.body) else {
            return Self.plain(
                .error(
                    statusCode: 400,
                    .invalidRequest(
                        "Bad Request: send an initialize request first; later requests carry its Mcp-Session-Id")))
        }
        return await open(sdkRequest, caller: caller)
    }

    /// Ends every MCP session (their streams end) and refuses new ones: for shutdown.
    public func closeAll() async {
        let entries = state.withLock { state in
            defer {
                state.sessions = [:]
                state.closed = true
            }
            return Array(state.sessions.values)
        }
        for entry in entries { await entry.server.stop() }
    }

    // MARK: - Sessions

    private func forward(_ request: HTTPRequest, to sessionID: String, caller: Caller) async -> PlainHTTPResponse {
        let entry = state.withLock { state -> Entry? in
            guard var entry = state.sessions[sessionID], entry.owner == caller.owner else { return nil }
            entry.caller = caller
            entry.lastUsed = .now
            state.sessions[sessionID] = entry
            return entry
        }
        guard let entry else { return Self.sessionNotFound }
        if entry.guarded.ledger.bytesSent > configuration.maxBytesPerSession, entry.guarded.ledger.pending == 0 {
            logger.info("an MCP session sent its limit of bytes; ended", metadata: ["rlm.mcp.owner": "\(entry.owner)"])
            await close(sessionID)
            return Self.sessionNotFound
        }
        let response = await entry.transport.handleRequest(request)
        if (request.method == "DELETE" && response.statusCode == 200) || response.statusCode == 404 {
            await close(sessionID)
        }
        return Self.plain(response)
    }

    private func open(_ request: HTTPRequest, caller: Caller) async -> PlainHTTPResponse {
        enum Admission {
            case open
            case stopping
            case full
            case callerFull(Int)
        }
        let admission = state.withLock { state -> Admission in
            guard !state.closed else { return .stopping }
            let opening = state.opening.values.reduce(0, +)
            guard state.sessions.count + opening < configuration.maxSessions else { return .full }
            let held =
                state.sessions.values.filter { $0.owner == caller.owner }.count
                + state.opening[caller.owner, default: 0]
            guard held < configuration.maxSessionsPerCaller else { return .callerFull(held) }
            state.opening[caller.owner, default: 0] += 1
            return .open
        }
        switch admission {
        case .open: break
        case .stopping:
            return Self.plain(
                .error(statusCode: 503, .invalidRequest("Service Unavailable: the server is stopping")))
        case .full:
            return Self.plain(
                .error(
                    statusCode: 503, .invalidRequest("Service Unavailable: too many MCP sessions; retry shortly"),
                    extraHeaders: ["Retry-After": "30"]))
        case .callerFull(let held):
            return Self.plain(
                .error(
                    statusCode: 429,
                    .invalidRequest(
                        "Too Many Requests: this key holds \(held) MCP sessions, its limit; end one (DELETE /mcp with "
                            + "its Mcp-Session-Id) or let one expire"),
                    extraHeaders: ["Retry-After": "60"]))
        }
        defer {
            state.withLock { state in
                let left = state.opening[caller.owner, default: 1] - 1
                state.opening[caller.owner] = left > 0 ? left : nil
            }
        }
        let sessionID = Self.newSessionID()
        let transport = StatefulHTTPServerTransport(
            sessionIDGenerator: FixedSessionID(id: sessionID),
            // Authentication and the Origin check were done by `rlm serve` (with its --cors-origin list).
            validationPipeline: StandardValidationPipeline(validators: [
                AcceptHeaderValidator(mode: .sseRequired), ContentTypeValidator(), ProtocolVersionValidator(),
                SessionValidator(),
            ]),
            retryInterval: configuration.retryInterval, logger: logger)
        let guarded = GuardedTransport(transport, logger: logger)
        let server = await RLMMCPServer.make(
            service: service,
            caller: { [weak self] in
                guard let caller = self?.state.withLock({ $0.sessions[sessionID]?.caller }) else {
                    throw ServiceError.notFound("MCP session: it ended")
                }
                return caller
            }, logger: logger)
        do {
            try await server.start(transport: guarded)
        } catch {
            logger.error("an MCP session could not start: \(error)")
            await server.stop()
            return Self.plain(.error(statusCode: 500, .internalError("Internal error: the session could not start")))
        }
        let added = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.sessions[sessionID] = Entry(
                owner: caller.owner, caller: caller, transport: transport, guarded: guarded, server: server,
                lastUsed: .now)
            return true
        }
        guard added else {
            await server.stop()
            return Self.plain(.error(statusCode: 503, .invalidRequest("Service Unavailable: the server is stopping")))
        }
        let response = await transport.handleRequest(request)
        if case .error = response { await close(sessionID) }
        return Self.plain(response)
    }

    private func close(_ sessionID: String) async {
        let entry = state.withLock { $0.sessions.removeValue(forKey: sessionID) }
        await entry?.server.stop()
    }

    /// Ends sessions idle past the timeout with no call in flight.
    private func closeExpired() async {
        let now = ContinuousClock.now
        let timeout = configuration.idleTimeout
        let expired = state.withLock { state -> [Entry] in
            let ids = state.sessions.filter { _, entry in
                let ledger = entry.guarded.ledger
                return ledger.pending == 0 && now - max(entry.lastUsed, ledger.lastActivity) > timeout
            }.keys
            return ids.compactMap { state.sessions.removeValue(forKey: $0) }
        }
        for entry in expired { await entry.server.stop() }
    }

    // MARK: - Helpers

    private struct FixedSessionID: SessionIDGenerator {
        let id: String
        func generateSessionID() -> String { id }
    }

    /// 32 random hex digits.
    private static func newSessionID() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    private static func isInitialize(_ body: Data) -> Bool {
        guard let message = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return false }
        return message["method"] as? String == Initialize.name && message["id"] != nil
    }

    private static var sessionNotFound: PlainHTTPResponse {
        plain(
            .error(
                statusCode: 404,
                .invalidRequest("Not Found: no such MCP session (it ended or expired); start a new one")))
    }

    private static func plain(_ response: HTTPResponse) -> PlainHTTPResponse {
        let body: PlainHTTPResponse.Body
        if case .stream(let stream, _) = response {
            body = .stream(stream)
        } else {
            body = .data(response.bodyData ?? Data())
        }
        // `Connection` is hop-by-hop: the HTTP server decides it, not the transport.
        let headers = response.headers.filter { $0.key.lowercased() != "connection" }
        return PlainHTTPResponse(status: response.statusCode, headers: headers, body: body)
    }
}
