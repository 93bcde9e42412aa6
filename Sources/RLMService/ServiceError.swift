import Foundation
import RLMRuntime

/// A refusal or failure of the serving core, said once for both front ends: the HTTP status, OpenAI's error `type`
/// and `code`, a message safe to show (no stack trace, no server path, no key), and when to retry.
public struct ServiceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The HTTP status.
    public var status: Int
    /// OpenAI's error type: `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, …
    public var type: String
    /// A stable machine-readable code (`invalid_api_key`, `rate_limit_exceeded`, `not_found`, …).
    public var code: String
    /// What happened and what to do.
    public var message: String
    /// The request field at fault, if one is.
    public var param: String?
    /// Seconds after which a retry can succeed (the `Retry-After` header), for 429 and 503.
    public var retryAfter: Int?

    /// - Parameters: as the properties.
    public init(
        status: Int, type: String, code: String, message: String, param: String? = nil, retryAfter: Int? = nil
    ) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.param = param
        self.retryAfter = retryAfter
    }

    public var description: String { message }

    /// The JSON-RPC error code MCP answers with: invalid params for the caller's mistakes, internal error otherwise.
    public var jsonRPCCode: Int { status < 500 ? -32602 : -32603 }

    /// A malformed request (400).
    public static func invalid(_ message: String, param: String? = nil) -> ServiceError {
        ServiceError(
            status: 400, type: "invalid_request_error", code: "invalid_request", message: message, param: param)
    }

    /// No key, a malformed key, an unknown or revoked one: the same answer for all (401).
    public static let unauthorized = ServiceError(
        status: 401, type: "invalid_request_error", code: "invalid_api_key",
        message: "a valid API key is required: send it as 'Authorization: Bearer KEY' (rlm keys create NAME makes one)")

    /// Something that does not exist, or belongs to another key: the two are never told apart (404).
    public static func notFound(_ what: String, param: String? = nil) -> ServiceError {
        let kind = what.prefix { $0 != " " }
        let code = ["context", "session", "model"].contains(kind) ? "\(kind)_not_found" : "not_found"
        return ServiceError(
            status: 404, type: "invalid_request_error", code: code, message: "no \(what)", param: param)
    }

    /// A body over the limit (413).
    public static func tooLarge(_ message: String, code: String = "context_too_large") -> ServiceError {
        ServiceError(status: 413, type: "invalid_request_error", code: code, message: message)
    }

    /// A per-key limit reached (429 with `Retry-After`).
    public static func rateLimited(_ code: String, _ message: String, retryAfter: Int?) -> ServiceError {
        ServiceError(status: 429, type: "rate_limit_error", code: code, message: message, retryAfter: retryAfter)
    }

    /// The server cannot take the request now: starting, stopping, or at capacity (503).
    public static func unavailable(_ message: String, retryAfter: Int? = nil) -> ServiceError {
        ServiceError(status: 503, type: "server_error", code: "unavailable", message: message, retryAfter: retryAfter)
    }

    /// A failure the caller cannot fix (500); the message is generic, the details go to the server's log.
    public static let internalError = ServiceError(
        status: 500, type: "server_error", code: "internal_error",
        message: "the server failed to handle the request; its log has the details")

    /// A run's failure, as the runtime classified it.
    /// - Parameter failure: from `RunFailure.classify`.
    public init(_ failure: RunFailure) {
        let code: String
        switch failure.kind {
        case .usage: code = "invalid_request"
        case .context: code = failure.tooLarge ? "context_too_large" : "invalid_context"
        case .setup: code = "setup_error"
        case .unauthorized: code = "upstream_unauthorized"
        case .unreachable: code = "upstream_unreachable"
        case .rateLimited: code = "upstream_rate_limited"
        case .provider: code = "upstream_error"
        case .sandbox: code = "sandbox_error"
        case .interrupted: code = "interrupted"
        case .internal: code = "internal_error"
        }
        self.init(
            status: failure.httpStatus, type: failure.openAIErrorType, code: code,
            message: failure.kind == .internal
                ? "the run failed inside the server; its log has the details" : Self.withoutPaths(failure.message),
            retryAfter: failure.kind == .rateLimited || failure.kind == .unreachable ? 5 : nil)
    }

    /// `text` with every absolute path of the server's (two components or more) replaced by `<path>`: a message may
    /// quote a file the server could not write, and a client has no business knowing its layout.
    public static func withoutPaths(_ text: String) -> String {
        text.replacing(#/(^|[^\w.:/])/(?!v1/)(?:[\w.@+-]+/)+[\w.@+-]*/#) { match in "\(match.output.1)<path>" }
    }
}
