import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import RLMServer
import RLMService
import RLMStore
import Testing

/// The HTTP layer in process (Hummingbird's router test mode, and one live socket for a chunked body): every error
/// in OpenAI's JSON shape, authentication, body limits, request parsing, CORS, health and metrics, and the request
/// audit lines.
@Suite("HTTP server")
struct HTTPServerTests {
    // MARK: Authentication

    @Test func everyInvalidKeyGetsTheSame401WithWWWAuthenticate() async throws {
        try await withServer { fixture in
            let (secret, id) = try await fixture.key("live")
            let revoked = try await fixture.key("revoked")
            _ = try await fixture.store.revokeKey(revoked.id)
            let headers: [HTTPFields] = [
                [:],
                [.authorization: ""],
                [.authorization: "Basic dXNlcjpwYXNz"],
                [.authorization: "Token \(secret)"],
                [.authorization: secret],
                [.authorization: "Bearer"],
                [.authorization: "Bearer not-a-key"],
                [.authorization: "Bearer rlm_" + String(repeating: "0", count: 16) + secret.dropFirst(20)],
                [.authorization: "Bearer " + secret.dropLast() + (secret.last == "a" ? "b" : "a")],
                bearer(revoked.secret),
            ]
            try await fixture.application().test(.router) { client in
                var bodies = Set<String>()
                for header in headers {
                    let response = try await client.execute(uri: "/v1/models", method: .get, headers: header)
                    expectOpenAIError(response, status: 401, code: "invalid_api_key")
                    #expect(response.headers[.wwwAuthenticate] == "Bearer")
                    bodies.insert(response.text)
                }
                #expect(bodies.count == 1, "the 401s differ: \(bodies)")

                let ok = try await client.execute(uri: "/v1/models", method: .get, headers: bearer(secret))
                #expect(ok.status == .ok)
                #expect(ok.object["object"] as? String == "list")
                #expect(ok.headers[.wwwAuthenticate] == nil)
            }
            // Every request is audited: who (the key's id, or nobody), what, and the status; never the key.
            let lines = fixture.requestLines()
            #expect(lines.filter { $0["status"] as? Int == 401 }.count == headers.count)
            #expect(lines.filter { $0["status"] as? Int == 401 }.allSatisfy { $0["principal"] is NSNull })
            let ok = lines.first { $0["status"] as? Int == 200 }
            #expect((ok?["principal"] as? [String: Any])?["id"] as? String == id)
            #expect(ok?["method"] as? String == "GET")
            #expect(ok?["path"] as? String == "/v1/models")
            let audit = (try? String(contentsOfFile: fixture.auditLogPath, encoding: .utf8)) ?? ""
            #expect(!audit.contains(secret) && !audit.contains(revoked.secret))
        }
    }

    @Test func theRequestPastTheRateIs429WithRetryAfter() async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("limited", APIKeyLimits(requestsPerMinute: 2))
            try await fixture.application().test(.router) { client in
                for _ in 0..<2 {
                    let response = try await client.execute(uri: "/v1/models", method: .get, headers: bearer(secret))
                    #expect(response.status == .ok)
                }
                let refused = try await client.execute(uri: "/v1/models", method: .get, headers: bearer(secret))
                expectOpenAIError(refused, status: 429, code: "rate_limit_exceeded")
                let retry = try #require(refused.headers[.retryAfter].flatMap { Int($0) })
                #expect((1...60).contains(retry))
            }
        }
    }

    // MARK: Errors

    @Test func anUnknownRouteIsAnOpenAI404ButOnlyForAKey() async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                let missing = try await client.execute(uri: "/v1/nothing-here", method: .get, headers: bearer(secret))
                expectOpenAIError(missing, status: 404, code: "not_found")
                // Without a key nothing is told, not even whether the route exists.
                let anonymous = try await client.execute(uri: "/v1/nothing-here", method: .get)
                expectOpenAIError(anonymous, status: 401, code: "invalid_api_key")
            }
        }
    }

    @Test func aBodyOverMaxBodyIs413ByContentLength() async throws {
        try await withServer(settings: HTTPServerSettings(maxBodyBytes: 1 << 20)) { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                let big = ByteBuffer(repeating: UInt8(ascii: " "), count: (1 << 20) + 1)
                let response = try await client.execute(
                    uri: "/v1/chat/completions", method: .post, headers: bearer(secret), body: big)
                expectOpenAIError(response, status: 413, code: "body_too_large")
                #expect((response.error?["message"] as? String)?.contains("1 MiB") == true)
            }
        }
    }

    @Test func aChunkedBodyOverMaxBodyIs413() async throws {
        try await withServer(settings: HTTPServerSettings(maxBodyBytes: 1 << 20)) { fixture in
            let (secret, _) = try await fixture.key("k")
            // Straight to the responder: the test clients always add a Content-Length, and this body has none.
            let app = try fixture.application()
            func send(_ chunks: [ByteBuffer]) async throws -> CollectedResponse {
                var headers = bearer(secret)
                headers[.transferEncoding] = "chunked"
                headers[.contentType] = "application/json"
                let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
                for chunk in chunks { continuation.yield(chunk) }
                continuation.finish()
                let request = Request(
                    head: HTTPRequest(
                        method: .post, scheme: "http", authority: "localhost", path: "/v1/chat/completions",
                        headerFields: headers),
                    body: RequestBody(asyncSequence: stream))
                #expect(request.headers[.contentLength] == nil)
                return try await respond(app, request)
            }
            let chunk = ByteBuffer(repeating: UInt8(ascii: " "), count: 64 << 10)
            let big = try await send(Array(repeating: chunk, count: 17))  // 1 MiB + 64 KiB, as it arrives
            expectOpenAIError(big, status: 413, code: "body_too_large")
            // Under the limit, the same chunked request is read (and refused for what it says, not its size).
            let small = try await send([chunk, json("{}")])
            expectOpenAIError(small, status: 400, code: "invalid_request", param: "model")
        }
    }

    static let badBodies: [(body: String, param: String?)] = [
        ("{not json", nil),
        ("", nil),
        ("[1, 2]", nil),
        (#"{"messages": [{"role": "user", "content": "hi"}]}"#, "model"),
        (#"{"model": 7, "messages": [{"role": "user", "content": "hi"}]}"#, "model"),
        (#"{"model": "fake"}"#, "messages"),
        (#"{"model": "fake", "messages": []}"#, "messages"),
        (#"{"model": "fake", "messages": "hi"}"#, "messages"),
        (#"{"model": "fake", "messages": [{"content": "hi"}]}"#, "messages[0]"),
        (#"{"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}"#, "messages[0].role"),
        (#"{"model": "fake", "messages": [{"role": "user", "content": 5}]}"#, "messages[0].content"),
        (#"{"model": "fake", "messages": [{"role": "system", "content": "only a system"}]}"#, "messages"),
        (#"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#, "stream"),
        (#"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": 5}"#, "rlm"),
        (
            #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": {"max_iterations": "ten"}}"#,
            "rlm.max_iterations"
        ),
        (
            #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": {"max_depth": 1.5}}"#,
            "rlm.max_depth"
        ),
        (
            #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": {"max_cost": "1"}}"#,
            "rlm.max_cost"
        ),
        (
            #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": {"contexts": "ctx_1"}}"#,
            "rlm.contexts"
        ),
        (
            #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": {"contexts": [1]}}"#,
            "rlm.contexts"
        ),
        (
            #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}], "rlm": {"session": 3}}"#,
            "rlm.session"
        ),
    ]

    @Test(arguments: badBodies)
    func malformedChatRequestsAre400(_ body: String, _ param: String?) async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                var headers = bearer(secret)
                headers[.contentType] = "application/json"
                let response = try await client.execute(
                    uri: "/v1/chat/completions", method: .post, headers: headers, body: json(body))
                expectOpenAIError(response, status: 400, code: "invalid_request", param: param)
            }
        }
    }

    @Test func aValidRequestWhileStartingIs503WithRetryAfter() async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                let body = #"{"model": "fake", "messages": [{"role": "user", "content": "hi"}]}"#
                let response = try await client.execute(
                    uri: "/v1/chat/completions", method: .post, headers: bearer(secret), body: json(body))
                expectOpenAIError(response, status: 503, code: "unavailable")
                #expect(response.headers[.retryAfter] != nil)
            }
        }
    }

    // MARK: Contexts over HTTP

    @Test func contextsAreUploadedOwnedAndLimited() async throws {
        try await withServer(configure: { $0.maxContextBytes = 1000 }) { fixture in
            let (owner, ownerID) = try await fixture.key("owner")
            let (stranger, _) = try await fixture.key("stranger")
            try await fixture.application().test(.router) { client in
                let uploaded = try await client.execute(
                    uri: "/v1/contexts?name=notes", method: .post, headers: bearer(owner),
                    body: ByteBuffer(string: "alpha beta gamma"))
                #expect(uploaded.status == .ok, "\(uploaded.text)")
                let id = try #require(uploaded.object["id"] as? String)
                #expect(uploaded.object["bytes"] as? Int == 16)
                #expect(uploaded.object["name"] as? String == "notes")

                let mine = try await client.execute(uri: "/v1/contexts/\(id)", method: .get, headers: bearer(owner))
                #expect(mine.status == .ok)
                #expect(mine.object["id"] as? String == id)

                let missingID = "ctx_" + String(repeating: "0a", count: 12)
                let theirs = try await client.execute(
                    uri: "/v1/contexts/\(id)", method: .get, headers: bearer(stranger))
                let missing = try await client.execute(
                    uri: "/v1/contexts/\(missingID)", method: .get, headers: bearer(stranger))
                expectOpenAIError(theirs, status: 404, code: "context_not_found")
                #expect(
                    theirs.text.replacingOccurrences(of: id, with: "ID")
                        == missing.text.replacingOccurrences(of: missingID, with: "ID"))
                let deleted = try await client.execute(
                    uri: "/v1/contexts/\(id)", method: .delete, headers: bearer(stranger))
                expectOpenAIError(deleted, status: 404, code: "context_not_found")
                let list = try await client.execute(uri: "/v1/contexts", method: .get, headers: bearer(stranger))
                #expect((list.object["data"] as? [Any])?.isEmpty == true)

                let tooBig = try await client.execute(
                    uri: "/v1/contexts", method: .post, headers: bearer(owner),
                    body: ByteBuffer(repeating: 65, count: 1001))
                expectOpenAIError(tooBig, status: 413, code: "context_too_large")
                let files = try FileManager.default.contentsOfDirectory(
                    atPath: StoreLocation(directory: fixture.directory).contextsDirectory + "/" + ownerID)
                #expect(files == [id])
            }
        }
    }

    @Test func aKnownPathWithAnotherMethodIs405WithAllow() async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                let response = try await client.execute(
                    uri: "/v1/chat/completions", method: .get, headers: bearer(secret))
                expectOpenAIError(response, status: 405, code: "method_not_allowed")
                #expect(response.headers[.allow] == "POST")
                let context = try await client.execute(
                    uri: "/v1/contexts/ctx_1", method: .post, headers: bearer(secret), body: json("{}"))
                expectOpenAIError(context, status: 405, code: "method_not_allowed")
                #expect(context.headers[.allow] == "GET, DELETE")
            }
        }
    }

    @Test func aMultipartUploadStoresItsFileFieldOnly() async throws {
        try await withServer(configure: { $0.maxContextBytes = 1000 }) { fixture in
            let (secret, id) = try await fixture.key("owner")
            try await fixture.application().test(.router) { client in
                func form(_ file: String) -> ByteBuffer {
                    ByteBuffer(
                        string: "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
                            + "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../app.log\"\r\n"
                            + "Content-Type: text/plain\r\n\r\n\(file)\r\n--XyZ--\r\n")
                }
                var headers = bearer(secret)
                headers[.contentType] = "multipart/form-data; boundary=XyZ"
                let stored = try await client.execute(
                    uri: "/v1/contexts", method: .post, headers: headers, body: form("ERROR one\nINFO two"))
                #expect(stored.status == .ok, "\(stored.text)")
                #expect(stored.object["bytes"] as? Int == 18)
                #expect(stored.object["name"] as? String == "app.log")  // a label, never a path
                let contextID = try #require(stored.object["id"] as? String)
                let file = StoreLocation(directory: fixture.directory).contextsDirectory + "/\(id)/\(contextID)"
                #expect(try String(contentsOfFile: file, encoding: .utf8) == "ERROR one\nINFO two")

                let tooBig = try await client.execute(
                    uri: "/v1/contexts", method: .post, headers: headers,
                    body: form(String(repeating: "x", count: 1001)))
                expectOpenAIError(tooBig, status: 413, code: "context_too_large")
                let files = try FileManager.default.contentsOfDirectory(
                    atPath: StoreLocation(directory: fixture.directory).contextsDirectory + "/" + id)
                #expect(files == [contextID])
            }
        }
    }

    @Test
    func aMultipartFormOverTheContextLimitSaysTheContextLimit() async throws {
        try await withServer(configure: { $0.maxContextBytes = 1000 }) { fixture in
            let (secret, _) = try await fixture.key("owner")
            try await fixture.application().test(.router) { client in
                // A small file beside a large other field: the form is over --max-context + 64 KiB.
                let body = ByteBuffer(
                    string: "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                        + String(repeating: "p", count: 70_000) + "\r\n"
                        + "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n"
                        + "small\r\n--XyZ--\r\n")
                var headers = bearer(secret)
                headers[.contentType] = "multipart/form-data; boundary=XyZ"
                let response = try await client.execute(
                    uri: "/v1/contexts", method: .post, headers: headers, body: body)
                if response.status != .ok {
                    // An upload's limit is --max-context, not --max-body (which uploads are not under).
                    expectOpenAIError(response, status: 413, code: "context_too_large")
                    let message = response.error?["message"] as? String ?? ""
                    #expect(!message.contains("--max-body"), "\(message)")
                    #expect(message.contains("--max-context"), "\(message)")
                }
            }
        }
    }

    // MARK: CORS

    @Test func withoutAnAllowlistNoCORSHeaderIsEverSent() async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                let origin: HTTPFields = [.origin: "https://app.example"]
                var keyed = bearer(secret)
                keyed[.origin] = "https://app.example"
                let health = try await client.execute(uri: "/healthz", method: .get, headers: origin)
                #expect(health.status == .ok)
                #expect(health.corsHeaders.isEmpty)
                let denied = try await client.execute(uri: "/v1/models", method: .get, headers: origin)
                #expect(denied.status == .unauthorized)
                #expect(denied.corsHeaders.isEmpty)
                let models = try await client.execute(uri: "/v1/models", method: .get, headers: keyed)
                #expect(models.status == .ok)
                #expect(models.corsHeaders.isEmpty)
                var preflight = origin
                preflight[.accessControlRequestMethod] = "POST"
                let options = try await client.execute(
                    uri: "/v1/chat/completions", method: .options, headers: preflight)
                #expect(options.status == .forbidden)
                #expect(options.corsHeaders.isEmpty)
            }
        }
    }

    @Test func anAllowedOriginIsEchoedAndOthersAreNot() async throws {
        let settings = HTTPServerSettings(corsOrigins: ["https://app.example"])
        try await withServer(settings: settings) { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                var allowed = bearer(secret)
                allowed[.origin] = "https://app.example"
                let ok = try await client.execute(uri: "/v1/models", method: .get, headers: allowed)
                #expect(ok.status == .ok)
                #expect(ok.headers[.accessControlAllowOrigin] == "https://app.example")
                #expect(ok.headers[.vary]?.contains("Origin") == true)
                // Errors carry it too, so the page can read them.
                let denied = try await client.execute(
                    uri: "/v1/models", method: .get, headers: [.origin: "https://app.example"])
                #expect(denied.status == .unauthorized)
                #expect(denied.headers[.accessControlAllowOrigin] == "https://app.example")

                var other = bearer(secret)
                other[.origin] = "https://evil.example"
                let foreign = try await client.execute(uri: "/v1/models", method: .get, headers: other)
                #expect(foreign.corsHeaders.isEmpty)
                // A look-alike is another origin.
                other[.origin] = "https://app.example.evil.example"
                #expect(try await client.execute(uri: "/v1/models", method: .get, headers: other).corsHeaders.isEmpty)

                // Preflights need no key: 204 for the allowed origin, 403 for others.
                let preflight: HTTPFields = [
                    .origin: "https://app.example", .accessControlRequestMethod: "POST",
                    .accessControlRequestHeaders: "authorization, content-type",
                ]
                let yes = try await client.execute(uri: "/v1/chat/completions", method: .options, headers: preflight)
                #expect(yes.status == .noContent)
                #expect(yes.headers[.accessControlAllowOrigin] == "https://app.example")
                #expect(yes.headers[.accessControlAllowMethods]?.contains("POST") == true)
                #expect(yes.headers[.accessControlAllowHeaders]?.lowercased().contains("authorization") == true)
                var foreignPreflight = preflight
                foreignPreflight[.origin] = "https://evil.example"
                let no = try await client.execute(
                    uri: "/v1/chat/completions", method: .options, headers: foreignPreflight)
                #expect(no.status == .forbidden)
                #expect(no.corsHeaders.isEmpty)
            }
        }
    }

    // MARK: Health and metrics

    @Test func healthNeedsNoKeyAndMetricsNeedOne() async throws {
        try await withServer { fixture in
            let (secret, _) = try await fixture.key("k")
            try await fixture.application().test(.router) { client in
                let health = try await client.execute(uri: "/healthz", method: .get)
                #expect(health.status == .ok)
                #expect(health.object["status"] as? String == "ok")
                let ready = try await client.execute(uri: "/readyz", method: .get)
                #expect(ready.status == .serviceUnavailable)
                #expect(ready.object["status"] as? String == "starting")

                let anonymous = try await client.execute(uri: "/metrics", method: .get)
                expectOpenAIError(anonymous, status: 401, code: "invalid_api_key")
                let metrics = try await client.execute(uri: "/metrics", method: .get, headers: bearer(secret))
                #expect(metrics.status == .ok)
                #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
            }
            // Successful health checks are not audited; the refused /metrics and the keyed one are.
            let paths = fixture.requestLines().compactMap { $0["path"] as? String }
            #expect(!paths.contains("/healthz"))
            #expect(paths.filter { $0 == "/metrics" }.count == 2)
        }
    }

    @Test func publicMetricsNeedNoKey() async throws {
        try await withServer(settings: HTTPServerSettings(publicMetrics: true)) { fixture in
            try await fixture.application().test(.router) { client in
                let metrics = try await client.execute(uri: "/metrics", method: .get)
                #expect(metrics.status == .ok)
                #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
                // Only /metrics: the API still needs a key.
                let models = try await client.execute(uri: "/v1/models", method: .get)
                expectOpenAIError(models, status: 401, code: "invalid_api_key")
            }
        }
    }
}
