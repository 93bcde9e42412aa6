import Foundation
import NIOCore
import NIOHTTP1
import RLM

/// What a connection does after a response.
enum AfterResponse {
    /// Read the next request (keep-alive).
    case keepAlive
    /// Close the connection.
    case close
    /// Send nothing more; close once the client goes away.
    case stall
}

/// The connection is to be closed abruptly.
struct DropConnection: Error {}

/// Collects one request at a time from the HTTP pipeline and answers it in a task. `HTTPServerPipelineHandler`
/// (before this handler) holds back a pipelined next request until the response ends.
final class ConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: FakeLLMServer
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private var reply: Task<Void, Never>?

    init(server: FakeLLMServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            tooLarge = false
        case .body(let buffer):
            if body.count + buffer.readableBytes > server.configuration.maxRequestBodyBytes {
                tooLarge = true
                body = []
            } else if !tooLarge {
                body.append(contentsOf: buffer.readableBytesView)
            }
        case .end:
            guard let head else { return }
            let body = self.body
            let tooLarge = self.tooLarge
            let channel = context.channel
            let server = self.server
            self.head = nil
            self.body = []
            reply = server.startReply {
                await server.answer(head: head, body: body, tooLarge: tooLarge, channel: channel)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away (or shutdown closed the connection): a delayed or stalled reply ends here.
        reply?.cancel()
        reply = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension FakeLLMServer {
    func answer(head: HTTPRequestHead, body: [UInt8], tooLarge: Bool, channel: any Channel) async {
        let writer = ResponseWriter(channel: channel, keepAlive: head.isKeepAlive && !tooLarge)
        do {
            switch try await respond(head: head, body: body, tooLarge: tooLarge, writer: writer) {
            case .keepAlive:
                break
            case .close:
                try? await channel.close()
            case .stall:
                // Ends when the client gives up and closes, or at shutdown.
                try? await channel.closeFuture.get()
            }
        } catch {
            // A dropped reply, a client that went away, or shutdown.
            try? await channel.close()
        }
    }

    private func respond(
        head: HTTPRequestHead,
        body: [UInt8],
        tooLarge: Bool,
        writer: ResponseWriter
    ) async throws -> AfterResponse {
        let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
        let format: WireFormat
        // Gateways mount the API under a prefix (OpenRouter's `/api/v1`): the route is the path's last segments.
        switch (head.method, path) {
        case (.POST, _) where path.hasSuffix("/chat/completions"):
            format = .openAI
        case (.POST, _) where path.hasSuffix("/messages"):
            format = .anthropic
        case (.GET, _) where path.hasSuffix("/models"):
            return try await listModels(head: head, path: path, writer: writer)
        case (.GET, "/health"):
            return try await writer.json(status: 200, #"{"status":"ok"}"#)
        default:
            return try await writer.json(
                status: 404,
                WireRenderer.errorBody(
                    format: .openAI,
                    status: 404,
                    type: nil,
                    message: "Unknown request URL: \(head.method.rawValue) \(path)",
                    code: "unknown_url"
                )
            )
        }

        let headers = head.headers.map { (name: $0.name, value: $0.value) }
        let (decoded, invalid) = RequestDecoder.decode(
            format: format,
            method: head.method.rawValue,
            path: path,
            headers: headers,
            body: body,
            index: nextRequestIndex(),
            strict: configuration.strict
        )
        let request = record(decoded)

        if tooLarge {
            let message = "request body exceeds \(configuration.maxRequestBodyBytes) bytes"
            return try await writer.json(
                status: 413,
                WireRenderer.errorBody(format: format, status: 413, type: nil, message: message, code: nil)
            )
        }
        if let expected = configuration.expectedAPIKey, let refusal = authRefusal(request, expected: expected) {
            return try await writer.json(status: 401, refusal)
        }
        if let invalid, configuration.strict || invalid.message.contains("JSON") {
            return try await writer.json(
                status: 400,
                WireRenderer.errorBody(format: format, status: 400, type: nil, message: invalid.message, code: nil)
            )
        }

        let reply = await handler.respond(request)
        let pause = configuration.latency + reply.delay
        if pause > .zero { try await Task.sleep(for: pause) }
        let renderer = WireRenderer(
            request: request,
            model: request.model ?? configuration.defaultModel,
            writer: writer,
            reportedCostUSD: configuration.reportedCostUSD
        )
        return try await renderer.render(reply)
    }

    /// `GET /v1/models` in the caller's format: Anthropic's shape when the request carries `anthropic-version`,
    /// OpenAI's otherwise. Checks the key like the completion endpoints, and is recorded like them.
    private func listModels(head: HTTPRequestHead, path: String, writer: ResponseWriter) async throws -> AfterResponse {
        let headers = head.headers.map { (name: $0.name, value: $0.value) }
        let format: WireFormat = head.headers.contains(name: "anthropic-version") ? .anthropic : .openAI
        let request = record(
            Request.envelope(
                format: format, method: head.method.rawValue, path: path, headers: headers, body: [], index: 0))
        if let expected = configuration.expectedAPIKey, let refusal = authRefusal(request, expected: expected) {
            return try await writer.json(status: 401, refusal)
        }
        if let reply = configuration.modelListReply {
            let pause = configuration.latency + reply.delay
            if pause > .zero { try await Task.sleep(for: pause) }
            let renderer = WireRenderer(request: request, model: configuration.defaultModel, writer: writer)
            return try await renderer.render(reply)
        }
        if configuration.latency > .zero { try await Task.sleep(for: configuration.latency) }
        let ids = configuration.modelIDs ?? [configuration.defaultModel]
        let body: [String: Any]
        switch format {
        case .openAI:
            body = [
                "object": "list",
                "data": ids.map { ["id": $0, "object": "model", "created": 1_700_000_000, "owned_by": "fake"] },
            ]
        case .anthropic:
            // Anthropic pages its list: `limit` ids after `after_id`, and says whether more follow.
            let query = Self.query(of: head.uri)
            let asked = min(max(query["limit"].flatMap { Int($0) } ?? 20, 1), 1000)
            let limit = max(min(asked, configuration.modelListPageSize), 1)
            var start = 0
            if let after = query["after_id"], let position = ids.firstIndex(of: after) { start = position + 1 }
            let page = Array(ids[min(start, ids.count)...].prefix(limit))
            body = [
                "data": page.map {
                    ["type": "model", "id": $0, "display_name": $0, "created_at": "2025-01-01T00:00:00Z"]
                },
                "has_more": start + page.count < ids.count,
                "first_id": page.first.map { $0 as Any } ?? NSNull(),
                "last_id": page.last.map { $0 as Any } ?? NSNull(),
            ]
        }
        return try await writer.json(status: 200, FakeJSON.string(body))
    }

    /// The query parameters of a request URI, percent-decoded.
    private static func query(of uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        var result: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? "" }
            if let name = parts.first { result[name] = parts.count > 1 ? parts[1] : "" }
        }
        return result
    }

    /// The 401 body for a request whose key is missing or wrong, in the real APIs' words; `nil` when it is right.
    private func authRefusal(_ request: Request, expected: String) -> String? {
        switch request.format {
        case .openAI:
            guard let header = request.header("authorization") else {
                return WireRenderer.errorBody(
                    format: .openAI,
                    status: 401,
                    type: "invalid_request_error",
                    message: "You didn't provide an API key. You need to provide your API key in an Authorization "
                        + "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    code: nil
                )
            }
            guard header == "Bearer \(expected)" else {
                return WireRenderer.errorBody(
                    format: .openAI,
                    status: 401,
                    type: "invalid_request_error",
                    message: "Incorrect API key provided. You can find your API key in your account settings.",
                    code: "invalid_api_key"
                )
            }
            return nil
        case .anthropic:
            guard let key = request.header("x-api-key") else {
                return WireRenderer.errorBody(
                    format: .anthropic,
                    status: 401,
                    type: "authentication_error",
                    message: "x-api-key header is required",
                    code: nil
                )
            }
            guard key == expected else {
                return WireRenderer.errorBody(
                    format: .anthropic,
                    status: 401,
                    type: "authentication_error",
                    message: "invalid x-api-key",
                    code: nil
                )
            }
            return nil
        }
    }
}

/// Writes one response on a connection, each part flushed and awaited so ordering and timing are exact.
struct ResponseWriter: Sendable {
    let channel: any Channel
    let keepAlive: Bool

    private var after: AfterResponse { keepAlive ? .keepAlive : .close }

    private func write(_ part: HTTPServerResponsePart) async throws {
        try Task.checkCancellation()
        try await channel.writeAndFlush(part).get()
    }

    func head(status: Int, headers extra: [(String, String)], contentLength: Int?) async throws {
        var headers = HTTPHeaders()
        for (name, value) in extra { headers.add(name: name, value: value) }
        if let contentLength { headers.replaceOrAdd(name: "content-length", value: String(contentLength)) }
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        headers.replaceOrAdd(name: "server", value: "FakeLLMServer")
        try await write(
            .head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))
        )
    }

    func write(_ text: String) async throws {
        try await write(.body(.byteBuffer(ByteBuffer(string: text))))
    }

    func end() async throws {
        try await write(.end(nil))
    }

    /// A whole response.
    func send(status: Int, headers: [(String, String)], body: [UInt8]) async throws -> AfterResponse {
        try await head(status: status, headers: headers, contentLength: body.count)
        if !body.isEmpty { try await write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        try await end()
        return after
    }

    /// A whole JSON response.
    func json(status: Int, _ body: String, headers: [(String, String)] = []) async throws -> AfterResponse {
        try await send(
            status: status,
            headers: [("content-type", "application/json")] + headers,
            body: Array(body.utf8)
        )
    }

    /// The end of a streamed response.
    func finishStream() async throws -> AfterResponse {
        try await end()
        return after
    }
}

/// JSON text from Foundation objects, with sorted keys so bodies are reproducible.
enum FakeJSON {
    static func string(_ object: Any) -> String {
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: object,
                options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]
            )
        else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}
