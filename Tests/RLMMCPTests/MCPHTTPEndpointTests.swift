import Foundation
import MCP
import RLMMCP
import RLMService
import Testing

/// `/mcp`, streamable HTTP: the endpoint driven with plain requests as `rlm serve` hands them over (already
/// authenticated), against a real service.
@Suite("MCP over streamable HTTP", .serialized)
struct MCPHTTPEndpointTests {
    static let initialize =
        #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","#
        + #""capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#

    @Test func initializeOpensASessionWhoseToolsWork() async throws {
        try await Harness.with { harness in
            let endpoint = MCPHTTPEndpoint(service: harness.service, logger: Harness.logger)
            let alice = try await harness.keyCaller("alice")
            let opened = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            #expect(opened.status == 200)
            #expect(opened.headers["Content-Type"] == "text/event-stream")
            let session = try #require(opened.headers["MCP-Session-Id"])
            let initialized = try #require(try await Self.messages(opened).first)
            let result = try #require(initialized["result"] as? [String: Any])
            #expect((result["serverInfo"] as? [String: Any])?["name"] as? String == "swiftrlm")

            let notified = await endpoint.handle(
                Self.post(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, session: session), caller: alice)
            #expect(notified.status == 202)

            let listed = await endpoint.handle(
                Self.post(#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, session: session), caller: alice)
            let tools = try #require(try await Self.messages(listed).first?["result"] as? [String: Any])
            #expect((tools["tools"] as? [Any])?.count == 5)

            let executed = await endpoint.handle(
                Self.post(
                    #"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute_python","#
                        + #""arguments":{"code":"print(6 * 7)"}}}"#, session: session), caller: alice)
            let call = try #require(try await Self.messages(executed).first?["result"] as? [String: Any])
            #expect((call["structuredContent"] as? [String: Any])?["stdout"] as? String == "42\n")
            // The cell's session is the key's: it shows in the key's sessions.
            #expect(harness.service.sessions(caller: alice).count == 1)
            #expect(endpoint.openSessions == 1)
            await endpoint.closeAll()
        }
    }

    @Test func anotherKeysSessionIDIsNotFoundAndDeleteEndsASession() async throws {
        try await Harness.with { harness in
            let endpoint = MCPHTTPEndpoint(service: harness.service, logger: Harness.logger)
            let alice = try await harness.keyCaller("alice")
            let mallory = try await harness.keyCaller("mallory")
            let opened = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            let session = try #require(opened.headers["MCP-Session-Id"])
            _ = try await Self.messages(opened)
            let list = #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#

            let stolen = await endpoint.handle(Self.post(list, session: session), caller: mallory)
            let unknown = await endpoint.handle(Self.post(list, session: "0123456789abcdef"), caller: alice)
            #expect(stolen.status == 404)
            #expect(unknown.status == 404)
            let stolenBody = try JSONSerialization.jsonObject(with: try await Self.body(stolen)) as? NSDictionary
            let unknownBody = try JSONSerialization.jsonObject(with: try await Self.body(unknown)) as? NSDictionary
            #expect(stolenBody != nil && stolenBody == unknownBody)
            let stolenDelete = await endpoint.handle(Self.request("DELETE", session: session), caller: mallory)
            #expect(stolenDelete.status == 404)

            let mine = await endpoint.handle(Self.post(list, session: session), caller: alice)
            #expect(mine.status == 200)
            _ = try await Self.messages(mine)
            let deleted = await endpoint.handle(Self.request("DELETE", session: session), caller: alice)
            #expect(deleted.status == 200)
            #expect(endpoint.openSessions == 0)
            let after = await endpoint.handle(Self.post(list, session: session), caller: alice)
            #expect(after.status == 404)
        }
    }

    @Test func aKeyHoldsABoundedNumberOfSessions() async throws {
        try await Harness.with { harness in
            let endpoint = MCPHTTPEndpoint(
                service: harness.service, configuration: .init(maxSessionsPerCaller: 2), logger: Harness.logger)
            let alice = try await harness.keyCaller("alice")
            let bob = try await harness.keyCaller("bob")
            var sessions = [String]()
            for _ in 0..<2 {
                let opened = await endpoint.handle(Self.post(Self.initialize), caller: alice)
                #expect(opened.status == 200)
                sessions.append(opened.headers["MCP-Session-Id"] ?? "")
                _ = try await Self.messages(opened)
            }
            let refused = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            #expect(refused.status == 429)
            #expect(refused.headers["Retry-After"] != nil)
            // Another key is not held back by alice's sessions.
            let other = await endpoint.handle(Self.post(Self.initialize), caller: bob)
            #expect(other.status == 200)
            _ = try await Self.messages(other)
            _ = await endpoint.handle(Self.request("DELETE", session: sessions[0]), caller: alice)
            let again = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            #expect(again.status == 200)
            _ = try await Self.messages(again)
            await endpoint.closeAll()
        }
    }

    @Test func requestsOutsideASessionAreRefused() async throws {
        try await Harness.with { harness in
            let endpoint = MCPHTTPEndpoint(service: harness.service, logger: Harness.logger)
            let alice = try await harness.keyCaller("alice")
            let list = await endpoint.handle(
                Self.post(#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#), caller: alice)
            #expect(list.status == 400)
            let stream = await endpoint.handle(Self.request("GET"), caller: alice)
            #expect(stream.status == 400)
            let put = await endpoint.handle(Self.request("PUT"), caller: alice)
            #expect(put.status == 405)
            #expect(put.headers["Allow"] == "GET, POST, DELETE")
            var noSSE = Self.post(Self.initialize)
            noSSE.headers["accept"] = "application/json"
            let refused = await endpoint.handle(noSSE, caller: alice)
            #expect(refused.status == 406)
            #expect(endpoint.openSessions == 0)
        }
    }

    @Test func idleSessionsExpireAndCloseAllEndsEverySession() async throws {
        try await Harness.with { harness in
            let endpoint = MCPHTTPEndpoint(
                service: harness.service, configuration: .init(idleTimeout: .milliseconds(300)),
                logger: Harness.logger)
            let alice = try await harness.keyCaller("alice")
            let list = #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#
            let opened = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            let session = try #require(opened.headers["MCP-Session-Id"])
            _ = try await Self.messages(opened)
            try await Task.sleep(for: .milliseconds(600))
            let expired = await endpoint.handle(Self.post(list, session: session), caller: alice)
            #expect(expired.status == 404)
            #expect(endpoint.openSessions == 0)

            let second = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            let secondID = try #require(second.headers["MCP-Session-Id"])
            _ = try await Self.messages(second)
            await endpoint.closeAll()
            #expect(endpoint.openSessions == 0)
            let gone = await endpoint.handle(Self.post(list, session: secondID), caller: alice)
            #expect(gone.status == 404)
            let refused = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            #expect(refused.status == 503)
        }
    }

    @Test func aSessionThatSentItsLimitEndsOnceIdle() async throws {
        try await Harness.with { harness in
            let endpoint = MCPHTTPEndpoint(
                service: harness.service, configuration: .init(maxBytesPerSession: 1000), logger: Harness.logger)
            let alice = try await harness.keyCaller("alice")
            let opened = await endpoint.handle(Self.post(Self.initialize), caller: alice)
            let session = try #require(opened.headers["MCP-Session-Id"])
            _ = try await Self.messages(opened)
            let list = #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#
            let listed = await endpoint.handle(Self.post(list, session: session), caller: alice)
            #expect(listed.status == 200)  // the tool list alone is over 1000 bytes
            _ = try await Self.messages(listed)
            let next = await endpoint.handle(Self.post(list, session: session), caller: alice)
            #expect(next.status == 404)
        }
    }

    // MARK: - Helpers

    static func request(_ method: String, session: String? = nil, body: String = "") -> PlainHTTPRequest {
        var headers = ["accept": "application/json, text/event-stream", "content-type": "application/json"]
        if let session { headers["mcp-session-id"] = session }
        return PlainHTTPRequest(method: method, path: "/mcp", headers: headers, body: Data(body.utf8))
    }

    static func post(_ body: String, session: String? = nil) -> PlainHTTPRequest {
        request("POST", session: session, body: body)
    }

    /// The whole body (a stream read to its end).
    static func body(_ response: PlainHTTPResponse) async throws -> Data {
        switch response.body {
        case .data(let data): return data
        case .stream(let stream):
            var data = Data()
            for try await chunk in stream { data.append(chunk) }
            return data
        }
    }

    /// The JSON-RPC messages of an SSE body (priming events, with no data, left out).
    static func messages(_ response: PlainHTTPResponse) async throws -> [[String: Any]] {
        let text = String(decoding: try await body(response), as: UTF8.self)
        return try text.components(separatedBy: "\n\n").compactMap { event in
            let data = event.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { $0.dropFirst(6) }
                .joined(separator: "\n")
            guard !data.isEmpty else { return nil }
            return try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
        }
    }
}
