import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import RLM
import RLMService

/// What every request passes first: CORS (off unless an origin is allowed), authentication and the per-key request
/// rate on everything but the public endpoints, errors turned into OpenAI's error shape (never a stack trace or a
/// path), one audit line per request with its key id, and the request metrics.
struct FrontMiddleware: RouterMiddleware {
    typealias Context = ServerContext

    let service: RLMService
    let settings: HTTPServerSettings
    let logger: Logger

    func handle(
        _ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response
    ) async throws -> Response {
        let start = ContinuousClock.now
        let path = request.uri.path
        var context = context
        let origin = request.headers[.origin]
        let allowedOrigin = origin.flatMap { settings.corsOrigins.contains($0) ? $0 : nil }
        var response: Response
        if request.method == .options, origin != nil, request.headers[.accessControlRequestMethod] != nil {
            // A CORS preflight: answered here, without a key (browsers send none), and only for allowed origins.
            response = Response(status: allowedOrigin == nil ? .forbidden : .noContent)
            if allowedOrigin != nil {
                response.headers[.accessControlAllowMethods] = "GET, POST, DELETE, OPTIONS"
                response.headers[.accessControlAllowHeaders] =
                    "Authorization, Content-Type, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID"
                response.headers[.accessControlMaxAge] = "600"
            }
        } else {
            do {
                if !settings.isPublic(path) {
                    let caller = try await service.authenticate(authorization: request.headers[.authorization])
                    context.caller = caller
                    try service.admitRequest(caller)
                }
                response = try await next(request, context)
            } catch let error as ServiceError {
                response = JSONBody.error(error)
            } catch let error as any HTTPResponseError {
                let allowed = error.status == .notFound ? settings.methods(for: path) : []
                if !allowed.isEmpty {
                    // A known path, another method: 405 with the methods it takes.
                    response = JSONBody.error(
                        ServiceError(
                            status: 405, type: "invalid_request_error", code: "method_not_allowed",
                            message: "\(path) takes \(allowed.joined(separator: ", ")), not \(request.method.rawValue)")
                    )
                    response.headers[.allow] = allowed.joined(separator: ", ")
                } else {
                    response = JSONBody.error(Self.serviceError(error.status))
                }
            } catch is CancellationError {
                response = JSONBody.error(.unavailable("the request was cancelled"))
            } catch {
                logger.error("request failed", metadata: ["path": .string(path), "error": .string("\(error)")])
                response = JSONBody.error(.internalError)
            }
        }
        if let allowedOrigin {
            response.headers[.accessControlAllowOrigin] = allowedOrigin
            response.headers[.accessControlExposeHeaders] = "Retry-After, Mcp-Session-Id"
            response.headers[.vary] = "Origin"
        }
        let duration = ContinuousClock.now - start
        let status = Int(response.status.code)
        if !(settings.isPublic(path) && status < 400) {
            // Health checks are not audited (a load balancer polls them every second); their failures are.
            service.auditRequest(
                caller: context.caller, method: request.method.rawValue, path: String(path.prefix(256)),
                status: status, duration: duration)
        }
        let route = settings.routeLabel(path)
        Counter(label: "rlm_http_requests_total", dimensions: [("route", route), ("status", String(status))])
            .increment()
        Metrics.Timer(label: "rlm_http_request_duration_seconds", dimensions: [("route", route)])
            .recordNanoseconds(Int64(duration.inMilliseconds * 1_000_000))
        return response
    }

    /// A Hummingbird error (an unknown route, a method not allowed) in the service's terms.
    static func serviceError(_ status: HTTPResponse.Status) -> ServiceError {
        switch status.code {
        case 404: return .notFound("such endpoint; see docs/openapi.json")
        case 405:
            return ServiceError(
                status: 405, type: "invalid_request_error", code: "method_not_allowed",
                message: "this endpoint does not take that method")
        case 413: return JSONBody.tooLarge(0)
        case 400..<500:
            return ServiceError(
                status: Int(status.code), type: "invalid_request_error", code: "invalid_request",
                message: status.reasonPhrase)
        default: return .internalError
        }
    }
}

/// The server's settings that requests see.
public struct HTTPServerSettings: Sendable {
    /// Origins allowed by CORS (`--cors-origin`); empty: no CORS header is ever sent.
    public var corsOrigins: Set<String>
    /// The largest API request body (`--max-body`).
    public var maxBodyBytes: Int
    /// `/metrics` without a key (`--public-metrics`).
    public var publicMetrics: Bool

    /// - Parameters: as the properties.
    public init(corsOrigins: Set<String> = [], maxBodyBytes: Int = 8 << 20, publicMetrics: Bool = false) {
        self.corsOrigins = corsOrigins
        self.maxBodyBytes = maxBodyBytes
        self.publicMetrics = publicMetrics
    }

    func isPublic(_ path: String) -> Bool {
        path == "/healthz" || path == "/readyz" || (publicMetrics && path == "/metrics")
    }

    /// The methods a path takes (empty for a path that is not the API's).
    func methods(for path: String) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        switch path {
        case "/healthz", "/readyz", "/metrics", "/v1/models": return ["GET"]
        case "/v1/chat/completions": return ["POST"]
        case "/v1/contexts", "/v1/sessions": return ["GET", "POST"]
        case "/mcp": return ["GET", "POST", "DELETE"]
        default:
            if parts.count == 4, parts[1] == "v1", !parts[3].isEmpty {
                if parts[2] == "contexts" { return ["GET", "DELETE"] }
                if parts[2] == "sessions" { return ["DELETE"] }
            }
            return []
        }
    }

    /// The route a path belongs to, for metrics (ids never become label values).
    func routeLabel(_ path: String) -> String {
        for route in ["/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics", "/mcp"]
        where path == route {
            return route
        }
        if path.hasPrefix("/v1/contexts") { return "/v1/contexts" }
        if path.hasPrefix("/v1/sessions") { return "/v1/sessions" }
        return "other"
    }
}
