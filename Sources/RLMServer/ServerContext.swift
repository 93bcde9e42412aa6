import Foundation
import HTTPTypes
import Hummingbird
import RLM
import RLMService

/// The request context of `rlm serve`: the authenticated caller, once the front middleware has checked the key.
public struct ServerContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The caller; `nil` on the public endpoints (`/healthz`, `/readyz`).
    public var caller: Caller?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    /// The authenticated caller.
    /// - Throws: ``ServiceError/unauthorized`` on a route that forgot to require one (never expected).
    func requireCaller() throws -> Caller {
        guard let caller else { throw ServiceError.unauthorized }
        return caller
    }
}

/// JSON bodies of the API: encoded with sorted keys and unescaped slashes, errors in OpenAI's shape.
enum JSONBody {
    static func response(
        _ object: [String: Any], status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]
    ) -> Response {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data(
                #"{"error":{"message":"the reply could not be encoded","type":"server_error","code":"internal_error","param":null}}"#
                    .utf8)
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// `{"error": {"message", "type", "code", "param"}}` with the error's status (and `Retry-After`).
    static func error(_ error: ServiceError) -> Response {
        var headers = HTTPFields()
        if let retry = error.retryAfter { headers[.retryAfter] = String(retry) }
        if error.status == 401 { headers[.wwwAuthenticate] = "Bearer" }
        return response(
            ["error": errorObject(error)], status: HTTPResponse.Status(code: error.status), headers: headers)
    }

    static func errorObject(_ error: ServiceError) -> [String: Any] {
        [
            "message": error.message, "type": error.type, "code": error.code,
            "param": error.param ?? NSNull(),
        ]
    }

    /// Reads a JSON object body of at most `limit` bytes.
    /// - Throws: ``ServiceError`` 413 past the limit, 400 when it is not a JSON object.
    static func object(_ request: Request, limit: Int) async throws -> [String: JSONValue] {
        let data = try await collect(request, limit: limit)
        guard !data.isEmpty else { throw ServiceError.invalid("the request needs a JSON body") }
        return try object(data)
    }

    static func object(_ data: Data) throws -> [String: JSONValue] {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw ServiceError.invalid("the body is not valid JSON")
        }
        guard case .object(let dictionary) = value else { throw ServiceError.invalid("the body must be a JSON object") }
        return dictionary
    }

    /// The whole body, refused past `limit` bytes (by its declared length at once, else as it arrives).
    static func collect(_ request: Request, limit: Int) async throws -> Data {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            throw tooLarge(limit)
        }
        var data = Data()
        for try await chunk in request.body {
            guard data.count + chunk.readableBytes <= limit else { throw tooLarge(limit) }
            data.append(contentsOf: chunk.readableBytesView)
        }
        return data
    }

    static func tooLarge(_ limit: Int) -> ServiceError {
        ServiceError.tooLarge(
            "the request body is over this server's limit of \(limit >> 20) MiB (--max-body); upload large contexts "
                + "with POST /v1/contexts and refer to them by id",
            code: "body_too_large")
    }
}

extension HTTPField.Name {
    static let retryAfter = HTTPField.Name("Retry-After")!
    static let accessControlAllowOrigin = HTTPField.Name("Access-Control-Allow-Origin")!
    static let accessControlAllowMethods = HTTPField.Name("Access-Control-Allow-Methods")!
    static let accessControlAllowHeaders = HTTPField.Name("Access-Control-Allow-Headers")!
    static let accessControlExposeHeaders = HTTPField.Name("Access-Control-Expose-Headers")!
    static let accessControlMaxAge = HTTPField.Name("Access-Control-Max-Age")!
    static let mcpSessionID = HTTPField.Name("Mcp-Session-Id")!
    static let vary = HTTPField.Name("Vary")!
}
