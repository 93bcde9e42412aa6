import Foundation
import HTTPTypes
import Hummingbird
import Metrics
import MultipartKit
import NIOCore
import Prometheus
import RLM
import RLMService
import RLMStore
import Synchronization

/// The API's routes over the serving core.
struct Routes: Sendable {
    let service: RLMService
    let settings: HTTPServerSettings
    let metrics: PrometheusCollectorRegistry?
    let mcp: (any PlainHTTPEndpoint)?

    func register(on router: Router<ServerContext>) {
        router.get("/healthz") { _, _ in JSONBody.response(["status": "ok"]) }
        router.get("/readyz") { _, _ in
            let phase = service.phase
            return JSONBody.response(
                ["status": phase == .ready ? "ready" : phase.rawValue],
                status: phase == .ready ? .ok : .serviceUnavailable)
        }
        router.get("/metrics") { _, _ in metricsText() }
        router.get("/v1/models") { _, _ in models() }
        router.post("/v1/chat/completions") { request, context in
            try await chatCompletion(request, caller: try context.requireCaller())
        }
        router.post("/v1/contexts") { request, context in
            try await upload(request, caller: try context.requireCaller())
        }
        router.get("/v1/contexts") { _, context in
            let caller = try context.requireCaller()
            let list = try await service.contexts(caller: caller)
            return JSONBody.response(["object": "list", "data": list.map(Self.contextObject)])
        }
        router.get("/v1/contexts/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            let record = try await service.context(caller: try context.requireCaller(), id: id)
            return JSONBody.response(Self.contextObject(record))
        }
        router.delete("/v1/contexts/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            try await service.deleteContext(caller: try context.requireCaller(), id: id)
            return JSONBody.response(["id": id, "object": "context", "deleted": true])
        }
        router.post("/v1/sessions") { request, context in
            try await openSession(request, caller: try context.requireCaller())
        }
        router.get("/v1/sessions") { _, context in
            let list = service.sessions(caller: try context.requireCaller())
            return JSONBody.response(["object": "list", "data": list.map(Self.sessionObject)])
        }
        router.delete("/v1/sessions/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            try await service.closeSession(caller: try context.requireCaller(), id: id)
            return JSONBody.response(["id": id, "object": "session", "deleted": true])
        }
        if mcp != nil {
            for method in [HTTPRequest.Method.get, .post, .delete] {
                router.on("/mcp", method: method) { request, context in
                    try await mountedMCP(request, caller: try context.requireCaller())
                }
            }
        }
    }

    // MARK: - Chat completions

    private func chatCompletion(_ request: Request, caller: Caller) async throws -> Response {
        let body = try await JSONBody.object(request, limit: settings.maxBodyBytes)
        let parsed = try ChatCompletions.parse(body)
        let id = ChatCompletions.newID()
        let created = Int(Date().timeIntervalSince1970)
        guard parsed.stream else {
            let outcome = try await service.run(parsed.run, caller: caller)
            return JSONBody.response(ChatCompletions.completion(outcome, id: id, created: created))
        }
        // Refusals (a bad model, a spent limit, a busy server) are still plain HTTP errors: the stream starts only
        // once the run was admitted.
        let events = AsyncStream<RLMEvent>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let admitted = AsyncStream<Result<Void, ServiceError>>.makeStream()
        let service = service
        let run = Task { () async throws -> RunOutcome in
            do {
                let outcome = try await service.run(parsed.run, caller: caller) { event in
                    if event.kind == .runStarted, event.depth == 0 { admitted.continuation.yield(.success(())) }
                    events.continuation.yield(event)
                }
                events.continuation.finish()
                admitted.continuation.yield(.success(()))
                return outcome
            } catch {
                events.continuation.finish()
                let failure = error as? ServiceError ?? .internalError
                admitted.continuation.yield(.failure(failure))
                throw failure
            }
        }
        for await first in admitted.stream {
            if case .failure(let error) = first {
                // Failed before a single event: an ordinary error response.
                _ = await run.result
                throw error
            }
            break
        }
        let model = parsed.model
        let includeUsage = parsed.includeUsage
        let headers: HTTPFields = [
            .contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "keep-alive",
        ]
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                do {
                    try await writer.write(
                        ChatCompletions.sse(
                            ChatCompletions.chunk(
                                id: id, created: created, model: model, delta: ["role": "assistant", "content": ""])))
                    try await Self.forward(events.stream, to: &writer, id: id, created: created, model: model)
                    let outcome = try await run.value
                    if let answer = outcome.result.answer {
                        try await writer.write(
                            ChatCompletions.sse(
                                ChatCompletions.chunk(
                                    id: id, created: created, model: model, delta: ["content": answer])))
                    }
                    try await writer.write(
                        ChatCompletions.sse(
                            ChatCompletions.chunk(
                                id: id, created: created, model: model, delta: [:],
                                finish: outcome.result.answer == nil ? "length" : "stop",
                                extra: ["rlm": ChatCompletions.summary(outcome)])))
                    if includeUsage {
                        var last = ChatCompletions.chunk(id: id, created: created, model: model, delta: [:])
                        last["choices"] = [Any]()
                        last["usage"] = ChatCompletions.usage(outcome)
                        try await writer.write(ChatCompletions.sse(last))
                    }
                } catch let error as ServiceError {
                    try? await writer.write(ChatCompletions.sse(["error": JSONBody.errorObject(error)]))
                } catch {
                    // The client went away (a write failed): the run is cancelled, its sandboxes killed.
                    run.cancel()
                    _ = await run.result
                    throw error
                }
                var done = ByteBuffer()
                done.writeString("data: [DONE]\n\n")
                try await writer.write(done)
                try await writer.finish(nil)
            })
    }

    /// Writes a progress chunk per event that says something, and a comment every 10 s so proxies keep the
    /// connection (and a gone client is noticed).
    private static func forward(
        _ events: AsyncStream<RLMEvent>, to writer: inout any ResponseBodyWriter, id: String, created: Int,
        model: String
    ) async throws {
        var last = ContinuousClock.now
        for await event in events {
            if let progress = ChatCompletions.progress(event) {
                try await writer.write(
                    ChatCompletions.sse(
                        ChatCompletions.chunk(
                            id: id, created: created, model: model, delta: [:], extra: ["rlm": progress])
                    ))
                last = .now
            } else if ContinuousClock.now - last > .seconds(10) {
                var comment = ByteBuffer()
                comment.writeString(": working\n\n")
                try await writer.write(comment)
                last = .now
            }
        }
    }

    // MARK: - Contexts

    private func upload(_ request: Request, caller: Caller) async throws -> Response {
        var name = request.uri.queryParameters.get("name")
        let declared = request.headers[.contentLength].flatMap(Int.init)
        let contentType = request.headers[.contentType] ?? ""
        let upload: ContextUpload
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            guard let boundary = Self.boundary(of: contentType) else {
                throw ServiceError.invalid("a multipart upload needs a boundary in its Content-Type")
            }
            // The form's overhead (boundaries, part headers) is small: a declared length far past the context
            // limit is refused before a byte is read.
            if let declared, declared > service.configuration.maxContextBytes + 64 << 10 {
                throw ServiceError.tooLarge(
                    "the upload is \(declared >> 20) MiB, more than this server's context limit of "
                        + "\(service.configuration.maxContextBytes >> 20) MiB (--max-context)")
            }
            upload = try service.beginUpload(caller: caller, name: nil, expectedBytes: nil)
            let form = MultipartFile(boundary: boundary, upload: upload)
            do {
                for try await chunk in request.body { try form.feed(chunk) }
                try form.end()
            } catch {
                upload.abort()
                throw error
            }
            name = name ?? form.filename
            guard form.sawFile else {
                upload.abort()
                throw ServiceError.invalid("the multipart form has no 'file' field", param: "file")
            }
            return try await finishUpload(upload, caller: caller, name: name)
        }
        upload = try service.beginUpload(caller: caller, name: name, expectedBytes: declared)
        do {
            for try await chunk in request.body {
                try chunk.withUnsafeReadableBytes { try upload.write($0) }
            }
        } catch {
            upload.abort()
            throw error
        }
        return try await finishUpload(upload, caller: caller, name: name)
    }

    private func finishUpload(_ upload: ContextUpload, caller: Caller, name: String?) async throws -> Response {
        do {
            if let name { try upload.name(name) }
            return JSONBody.response(Self.contextObject(try await upload.finish()))
        } catch {
            upload.abort()
            throw error
        }
    }

    static func boundary(of contentType: String) -> String? {
        for part in contentType.split(separator: ";").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == "boundary" {
                let value = pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                return value.isEmpty || value.count > 200 ? nil : value
            }
        }
        return nil
    }

    static func contextObject(_ record: ContextRecord) -> [String: Any] {
        [
            "id": record.id, "object": "context", "bytes": record.bytes, "name": record.name ?? NSNull(),
            "created": Int(record.created.timeIntervalSince1970),
        ]
    }

    // MARK: - Sessions

    private func openSession(_ request: Request, caller: Caller) async throws -> Response {
        let data = try await JSONBody.collect(request, limit: settings.maxBodyBytes)
        let body = data.isEmpty ? [:] : try JSONBody.object(data)
        var options = RunRequest(query: "")
        try ChatCompletions.apply(body, to: &options, prefix: "", alsoAllowed: ["model"])
        switch body["model"] {
        case nil, .null?: break
        case .string(let model)?: options.model = model
        default: throw ServiceError.invalid("'model' must be a string", param: "model")
        }
        let summary = try await service.openSession(
            caller: caller, contextIDs: options.contextIDs, paths: [], budgets: options)
        return JSONBody.response(Self.sessionObject(summary))
    }

    static func sessionObject(_ summary: SessionSummary) -> [String: Any] {
        [
            "id": summary.id, "object": "session", "created": Int(summary.created.timeIntervalSince1970),
            "expires_at": Int(summary.expires.timeIntervalSince1970), "contexts": summary.contextIDs,
            "turns": summary.turns, "busy": summary.busy,
        ]
    }

    // MARK: - Models, metrics, MCP

    private func models() -> Response {
        let created = Int(Date().timeIntervalSince1970)
        let data = service.models.map { name -> [String: Any] in
            ["id": name, "object": "model", "created": created, "owned_by": "swiftrlm"]
        }
        return JSONBody.response(["object": "list", "data": data])
    }

    private func metricsText() -> Response {
        Metrics.Gauge(label: "rlm_runs_in_flight").record(service.runsInFlight)
        Metrics.Gauge(label: "rlm_sessions_open").record(service.openSessions)
        var buffer = [UInt8]()
        metrics?.emit(into: &buffer)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
    }

    private func mountedMCP(_ request: Request, caller: Caller) async throws -> Response {
        guard let mcp else { throw ServiceError.notFound("such endpoint") }
        if let origin = request.headers[.origin], !settings.corsOrigins.contains(origin) {
            throw ServiceError(
                status: 403, type: "invalid_request_error", code: "origin_not_allowed",
                message: "requests from this Origin are not allowed; start the server with --cors-origin to allow it")
        }
        let body = try await JSONBody.collect(request, limit: settings.maxBodyBytes)
        var headers = [String: String]()
        for field in request.headers {
            let name = field.name.canonicalName
            headers[name] = headers[name].map { $0 + ", " + field.value } ?? field.value
        }
        let reply = await mcp.handle(
            PlainHTTPRequest(method: request.method.rawValue, path: "/mcp", headers: headers, body: body),
            caller: caller)
        var fields = HTTPFields()
        for (name, value) in reply.headers {
            if let name = HTTPField.Name(name) { fields[name] = value }
        }
        switch reply.body {
        case .data(let data):
            return Response(
                status: HTTPResponse.Status(code: reply.status), headers: fields,
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        case .stream(let stream):
            return Response(
                status: HTTPResponse.Status(code: reply.status), headers: fields,
                body: ResponseBody { writer in
                    for try await chunk in stream { try await writer.write(ByteBuffer(bytes: chunk)) }
                    try await writer.finish(nil)
                })
        }
    }
}

/// A multipart form read as it streams: the `file` field's bytes go to the upload, every other field is skipped.
final class MultipartFile: @unchecked Sendable {
    // Used by one request's handler, in order.
    private let parser: MultipartParser
    private let upload: ContextUpload
    private var headers = [String: String]()
    private var inFile = false
    private(set) var sawFile = false
    private(set) var filename: String?
    private var failure: (any Error)?

    init(boundary: String, upload: ContextUpload) {
        self.parser = MultipartParser(boundary: boundary)
        self.upload = upload
        parser.onHeader = { [unowned self] field, value in headers[field.lowercased()] = value }
        parser.onBody = { [unowned self] buffer in
            guard failure == nil else { return }
            if !inFile, let disposition = headers["content-disposition"], Self.field(disposition, "name") == "file" {
                guard !sawFile else {
                    failure = ServiceError.invalid("the multipart form has more than one 'file' field", param: "file")
                    return
                }
                inFile = true
                sawFile = true
                filename = Self.field(disposition, "filename").map { ($0 as NSString).lastPathComponent }
                    .flatMap { $0.isEmpty ? nil : String($0.prefix(200)) }
            }
            guard inFile else { return }
            do {
                try buffer.withUnsafeReadableBytes { try upload.write($0) }
            } catch {
                failure = error
            }
        }
        parser.onPartComplete = { [unowned self] in
            if headers["content-disposition"].flatMap({ Self.field($0, "name") }) == "file", !sawFile {
                sawFile = true  // an empty file
                filename = headers["content-disposition"].flatMap { Self.field($0, "filename") }
                    .map { ($0 as NSString).lastPathComponent }
            }
            inFile = false
            headers = [:]
        }
    }

    func feed(_ chunk: ByteBuffer) throws {
        do {
            try parser.execute(chunk)
        } catch {
            throw ServiceError.invalid("the multipart body is malformed")
        }
        if let failure { throw failure }
    }

    func end() throws {
        if let failure { throw failure }
    }

    /// `name="file"` → `file` from a Content-Disposition value.
    static func field(_ disposition: String, _ key: String) -> String? {
        for part in disposition.split(separator: ";").dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == key {
                return pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        return nil
    }
}
