import Foundation

/// An HTTP request in plain types, for an endpoint one front end mounts on another's server without either
/// importing the other (MCP's `/mcp` on `rlm serve`: the MCP SDK's HTTP types and Hummingbird's collide).
public struct PlainHTTPRequest: Sendable {
    /// `GET`, `POST`, `DELETE`, …
    public var method: String
    /// The path, without the query.
    public var path: String
    /// Header names lowercased; repeated headers joined with `, `.
    public var headers: [String: String]
    /// The body (already size-checked by the server).
    public var body: Data

    /// - Parameters: as the properties.
    public init(method: String, path: String, headers: [String: String], body: Data) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

/// The answer of a ``PlainHTTPEndpoint``.
public struct PlainHTTPResponse: Sendable {
    /// A whole body, or a stream of chunks (Server-Sent Events).
    public enum Body: Sendable {
        /// The whole body.
        case data(Data)
        /// Chunks as they come; the response ends when the stream does.
        case stream(AsyncThrowingStream<Data, any Error>)
    }

    /// The status.
    public var status: Int
    /// Headers to send.
    public var headers: [String: String]
    /// The body.
    public var body: Body

    /// - Parameters: as the properties.
    public init(status: Int, headers: [String: String] = [:], body: Body = .data(Data())) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// An endpoint mounted on `rlm serve` behind its authentication, limits, body limit and audit.
public protocol PlainHTTPEndpoint: Sendable {
    /// Answers one request of an authenticated caller.
    func handle(_ request: PlainHTTPRequest, caller: Caller) async -> PlainHTTPResponse
}
