import Foundation
import MCP
import RLM
import RLMMCP
import RLMService
import Testing

/// The MCP tools through the SDK's client and an in-memory transport, against a real sandbox and a fake model.
@Suite("MCP tools", .serialized)
struct MCPToolTests {
    @Test func initializeNamesTheServerAndListsTheFiveTools() async throws {
        try await Harness.with { harness in
            let (clientSide, serverSide) = await InMemoryTransport.createConnectedPair()
            let server = await RLMMCPServer.make(
                service: harness.service, caller: { .localUser }, logger: Harness.logger)
            try await server.start(transport: serverSide)
            let client = Client(name: "rlm-tests", version: "1")
            let initialized = try await client.connect(transport: clientSide)
            #expect(initialized.serverInfo.name == "swiftrlm")
            #expect(initialized.serverInfo.version == RLMVersion.string)
            #expect(initialized.capabilities.tools != nil)
            let (tools, _) = try await client.listTools()
            #expect(
                Set(tools.map(\.name)) == [
                    "rlm_query", "execute_python", "load_context", "list_sessions", "close_session",
                ])
            for tool in tools {
                let schema = try #require(tool.inputSchema.objectValue)
                #expect(schema["type"] == "object")
                #expect(schema["additionalProperties"] == false)
                #expect(tool.outputSchema != nil)
            }
            let query = try #require(tools.first { $0.name == "rlm_query" }?.inputSchema.objectValue)
            #expect(query["required"] == ["query"])
            let properties = try #require(query["properties"]?.objectValue)
            #expect(
                Set(properties.keys) == [
                    "query", "context_ids", "paths", "session_id", "max_iterations", "max_depth", "max_tokens",
                    "max_cost", "timeout",
                ])
            await client.disconnect()
            await server.stop()
        }
    }

    @Test func executePythonKeepsStateWithinASession() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                let first = try await client.call("execute_python", ["code": "x = 41\nprint('set')"])
                #expect(!first.isError, "\(first.text)")
                let session = try #require(first.string("session_id"))
                #expect(session.hasPrefix("ses_"))
                #expect(first.string("stdout") == "set\n")
                // The text content is the same object, for clients that read only text.
                let text = try JSONSerialization.jsonObject(with: Data(first.text.utf8)) as? [String: Any]
                #expect(text?["session_id"] as? String == session)

                let second = try await client.call(
                    "execute_python", ["code": "print(x + 1)", "session_id": .string(session)])
                #expect(second.string("stdout") == "42\n")
                #expect(second.string("session_id") == session)
                #expect(second.fields["error"] == .null)
                #expect(second.fields["timed_out"] == false)

                // Without a session id, a new REPL: x is not there.
                let fresh = try await client.call("execute_python", ["code": "print(x)"])
                #expect(!fresh.isError)
                #expect(fresh.string("session_id") != session)
                #expect(fresh.fields["error"]?.objectValue?["type"] == "NameError")

                let listed = try await client.call("list_sessions")
                let ids = listed.fields["sessions"]?.arrayValue?.compactMap { $0.objectValue?["id"]?.stringValue }
                #expect(Set(ids ?? []) == [session, fresh.string("session_id") ?? ""])

                let closed = try await client.call("close_session", ["session_id": .string(session)])
                #expect(!closed.isError)
                #expect(closed.fields["closed"] == true)
                let after = try await client.call(
                    "execute_python", ["code": "print(x)", "session_id": .string(session)])
                #expect(after.isError)
                #expect(after.text.contains("no session"))
            }
        }
    }

    @Test func executePythonGetsCodeExactlyAndReportsWhatItRaised() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                // The SDK alone would decode this string as a data: URL and keep only what follows the comma.
                let annotated = try await client.call(
                    "execute_python", ["code": "data: list = [1, 2]\nprint(sum(data), file=__import__('sys').stderr)"])
                #expect(annotated.string("stderr") == "3\n", "\(annotated.text)")
                let raised = try await client.call("execute_python", ["code": "raise ValueError('boom')"])
                #expect(!raised.isError)
                let error = try #require(raised.fields["error"]?.objectValue)
                #expect(error["type"] == "ValueError")
                #expect(error["message"] == "boom")
            }
        }
    }

    @Test func rlmQueryAnswersOverLoadedText() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                let loaded = try await client.call("load_context", ["text": "hello world", "name": "greeting"])
                #expect(!loaded.isError, "\(loaded.text)")
                let id = try #require(loaded.string("id"))
                #expect(id.hasPrefix("ctx_"))
                #expect(loaded.fields["bytes"] == 11)
                #expect(loaded.string("name") == "greeting")

                let answer = try await client.call(
                    "rlm_query", ["query": "LENGTH?", "context_ids": [.string(id)], "max_iterations": 3])
                #expect(!answer.isError, "\(answer.text)")
                #expect(answer.text == "11")
                #expect(answer.string("status") == "answered")
                #expect(answer.string("answer") == "11")
                #expect(answer.fields["iterations"] == 1)
                #expect(answer.string("trajectory")?.hasPrefix("run-") == true)
                let usage = try #require(answer.fields["usage"]?.objectValue)
                #expect((usage["total_tokens"]?.intValue ?? 0) > 0)

            }
        }
    }

    @Test func rlmQueryReadsPathsBeneathTheRoot() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                let relative = try await client.call("rlm_query", ["query": "ECHO?", "paths": ["notes.txt"]])
                #expect(relative.text == Harness.notes, "\(relative.text)")
                let absolute = try await client.call(
                    "rlm_query",
                    [
                        "query": "ECHO?",
                        "paths": [.string((harness.root as NSString).appendingPathComponent("notes.txt"))],
                    ])
                #expect(absolute.text == Harness.notes, "\(absolute.text)")

                let loaded = try await client.call("load_context", ["path": "docs"])
                #expect(!loaded.isError, "\(loaded.text)")
                #expect(loaded.string("source") == "path")
                let overDirectory = try await client.call(
                    "rlm_query", ["query": "ECHO?", "context_ids": [.string(loaded.string("id") ?? "")]])
                #expect(overDirectory.text.contains("alpha"), "\(overDirectory.text)")
            }
        }
    }

    @Test func pathsThatLeaveTheRootAreRefused() async throws {
        try await Harness.with { harness in
            let escapes = [
                "../outside.txt", "docs/../../outside.txt", harness.outsideFile, "/etc/passwd", "escape.txt",
                (harness.root as NSString).appendingPathComponent("escape.txt"), "missing.txt",
            ]
            try await harness.withClient { client in
                for path in escapes {
                    let loaded = try await client.call("load_context", ["path": .string(path)])
                    #expect(loaded.isError, "load_context \(path): \(loaded.text)")
                    let asked = try await client.call("rlm_query", ["query": "ECHO?", "paths": [.string(path)]])
                    #expect(asked.isError, "rlm_query \(path): \(asked.text)")
                    for answer in [loaded, asked] {
                        #expect(!answer.text.contains(Harness.outside))
                        #expect(!answer.text.contains(harness.directory), "a server path leaked: \(answer.text)")
                        #expect(answer.fields["error"]?.objectValue?["code"] == "invalid_request")
                    }
                }
            }
        }
    }

    @Test func pathsAreRefusedWithoutARoot() async throws {
        try await Harness.with(configure: { $0.roots = [] }) { harness in
            try await harness.withClient { client in
                let loaded = try await client.call("load_context", ["path": "notes.txt"])
                #expect(loaded.isError)
                #expect(loaded.text.contains("--root"))
            }
        }
    }

    @Test(
        arguments: [
            ("rlm_query", [:], "needs 'query'"),
            ("rlm_query", ["query": 5], "'query' must be a string"),
            ("rlm_query", ["query": "   "], "blank"),
            ("rlm_query", ["query": "q", "max_iterations": 0], "'max_iterations' must be 1 to 1000"),
            ("rlm_query", ["query": "q", "max_iterations": 2.5], "'max_iterations' must be an integer"),
            ("rlm_query", ["query": "q", "max_cost": -1], "'max_cost' must be more than 0"),
            ("rlm_query", ["query": "q", "timeout": "soon"], "'timeout' must be a number"),
            ("rlm_query", ["query": "q", "context_ids": "ctx_1"], "'context_ids' must be an array of strings"),
            ("rlm_query", ["query": "q", "paths": [1]], "'paths'[0] must be a non-empty string"),
            ("rlm_query", ["query": "q", "bogus": 1], "no argument 'bogus'"),
            ("rlm_query", ["query": "q", "session_id": "ses_x", "max_depth": 1], "leave max_depth out"),
            ("execute_python", [:], "needs 'code'"),
            ("execute_python", ["code": "1", "session_id": 5], "'session_id' must be a string"),
            ("load_context", [:], "needs 'path'"),
            ("load_context", ["path": "a", "text": "b"], "not both"),
            ("list_sessions", ["all": true], "takes no arguments"),
            ("close_session", [:], "needs 'session_id'"),
            ("close_session", ["session_id": "ses_000000000000000000000000"], "no session"),
        ] as [(String, [String: Value], String)])
    func mistakesAreToolErrorsThatSayWhatIsWrong(tool: String, arguments: [String: Value], says: String) async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                let answer = try await client.call(tool, arguments)
                #expect(answer.isError)
                #expect(answer.text.contains(says), "\(answer.text)")
            }
        }
    }

    @Test func anUnknownToolIsAnInvalidParamsError() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                await #expect(throws: MCPError.self) { _ = try await client.call("rm_rf", [:]) }
                do {
                    _ = try await client.call("rm_rf", [:])
                } catch let error as MCPError {
                    #expect(error.code == -32602)
                }
            }
        }
    }

    @Test func anotherCallersSessionsAndContextsAreNotFound() async throws {
        try await Harness.with { harness in
            var session = ""
            var context = ""
            try await harness.withClient { client in
                session = try await client.call("execute_python", ["code": "x = 1"]).string("session_id") ?? ""
                context = try await client.call("load_context", ["text": "mine"]).string("id") ?? ""
            }
            #expect(!session.isEmpty && !context.isEmpty)
            let other = try await harness.keyCaller("other")
            try await harness.withClient(as: other) { client in
                let executed = try await client.call(
                    "execute_python", ["code": "print(x)", "session_id": .string(session)])
                #expect(executed.isError)
                #expect(executed.text.contains("no session"))
                let closed = try await client.call("close_session", ["session_id": .string(session)])
                #expect(closed.isError)
                let listed = try await client.call("list_sessions")
                #expect(listed.fields["sessions"] == [])
                let asked = try await client.call(
                    "rlm_query", ["query": "ECHO?", "context_ids": [.string(context)]])
                #expect(asked.isError)
                #expect(asked.text.contains("no context"))
                let followUp = try await client.call(
                    "rlm_query", ["query": "RECALL?", "session_id": .string(session)])
                #expect(followUp.isError)
            }
            try await harness.withClient { client in
                let mine = try await client.call(
                    "execute_python", ["code": "print(x)", "session_id": .string(session)])
                #expect(mine.string("stdout") == "1\n", "\(mine.text)")
            }
        }
    }

    @Test func rlmQueryInASessionSeesTheCellsVariables() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                let cell = try await client.call("execute_python", ["code": "secret = 7"])
                let session = try #require(cell.string("session_id"))
                let answer = try await client.call("rlm_query", ["query": "RECALL?", "session_id": .string(session)])
                #expect(answer.text == "7", "\(answer.text)")
                #expect(answer.string("session_id") == session)
            }
        }
    }

    @Test func aSpentBudgetIsAResultThatSaysWhy() async throws {
        try await Harness.with { harness in
            try await harness.withClient { client in
                let answer = try await client.call("rlm_query", ["query": "BUDGET?", "max_iterations": 2])
                #expect(!answer.isError, "\(answer.text)")
                #expect(answer.string("status") == "budget_exhausted")
                #expect(answer.fields["answer"] == .null)
                #expect(answer.fields["iterations"] == 2)
                #expect(answer.text.hasPrefix("No answer"))
            }
        }
    }

    @Test func answersStillGoOutAfterTheClientClosesItsInput() async throws {
        try await Harness.with { harness in
            // Like `printf '…' | rlm mcp`: the calls arrive, the input ends, the answers must still come.
            let transport = LineTransport()
            let serving = Task {
                try await RLMMCPServer.serve(
                    service: harness.service, caller: .localUser, transport: transport, logger: Harness.logger)
            }
            transport.write(LineTransport.initialize)
            transport.write(
                #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"execute_python","#
                    + #""arguments":{"code":"import time\ntime.sleep(1)\nprint('late')"}}}"#)
            transport.closeInput()
            let replies = try await transport.replies(count: 2)
            let call = try #require(replies.first { $0["id"] as? Int == 2 })
            let result = try #require(call["result"] as? [String: Any])
            let structured = try #require(result["structuredContent"] as? [String: Any])
            #expect(structured["stdout"] as? String == "late\n")
            try await serving.value
        }
    }

    @Test func stringsThatLookLikeDataURLsSurviveBothWays() async throws {
        // The SDK alone turns a string such as `data: x, y` into binary data (keeping `y`), arguments and results
        // alike. Read raw, as a client in another language would (the SDK's own client has the same flaw).
        try await Harness.with { harness in
            let transport = LineTransport()
            let serving = Task {
                try await RLMMCPServer.serve(
                    service: harness.service, caller: .localUser, transport: transport, logger: Harness.logger)
            }
            let sse = "data: {\"a\": 1, \"b\": 2}\ndata: [DONE]"
            func call(_ id: Int, _ tool: String, _ arguments: [String: Any]) async throws -> [String: Any] {
                let message: [String: Any] = [
                    "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": ["name": tool, "arguments": arguments],
                ]
                transport.write(String(decoding: try JSONSerialization.data(withJSONObject: message), as: UTF8.self))
                let reply = try #require(try await transport.replies(count: 1).first)
                #expect(reply["id"] as? Int == id)
                return try #require(reply["result"] as? [String: Any])
            }
            transport.write(LineTransport.initialize)
            _ = try await transport.replies(count: 1)
            let loaded = try await call(2, "load_context", ["text": sse])
            let id = try #require((loaded["structuredContent"] as? [String: Any])?["id"] as? String)
            let echoed = try await call(3, "rlm_query", ["query": "ECHO?", "context_ids": [id]])
            let content = try #require((echoed["content"] as? [[String: Any]])?.first)
            #expect(content["text"] as? String == sse)
            #expect((echoed["structuredContent"] as? [String: Any])?["answer"] as? String == sse)
            let cell = try await call(
                4, "execute_python", ["code": "data: list = [1, 2]\nprint('data: x,', sum(data))"])
            #expect((cell["structuredContent"] as? [String: Any])?["stdout"] as? String == "data: x, 3\n")
            let marked = try await call(5, "execute_python", ["code": "print('\u{FFFF}data: kept,', end='')"])
            #expect((marked["structuredContent"] as? [String: Any])?["stdout"] as? String == "\u{FFFF}data: kept,")
            transport.closeInput()
            try await serving.value
        }
    }

    @Test func cancellingTheServerAnswersWhatRunsAndReturns() async throws {
        try await Harness.with(configure: { $0.shutdownGrace = .milliseconds(300) }) { harness in
            let transport = LineTransport()
            let serving = Task {
                try await RLMMCPServer.serve(
                    service: harness.service, caller: .localUser, transport: transport, logger: Harness.logger)
            }
            transport.write(LineTransport.initialize)
            transport.write(
                #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rlm_query","#
                    + #""arguments":{"query":"SLEEP?"}}}"#)
            _ = try await transport.replies(count: 1)
            try await Task.sleep(for: .milliseconds(500))
            let clock = ContinuousClock()
            let start = clock.now
            serving.cancel()
            let replies = try await transport.replies(count: 1)
            try await serving.value
            #expect(clock.now - start < .seconds(10))
            let result = try #require(replies.first?["result"] as? [String: Any])
            #expect(result["isError"] as? Bool == true, "\(result)")
            #expect(harness.service.phase == .stopping)
        }
    }
}

/// A transport whose peer is the test, speaking raw JSON-RPC like stdio: lines in, messages out, and an input the
/// test can close while it keeps reading.
actor LineTransport: Transport {
    nonisolated let logger = Harness.logger
    private nonisolated let input = AsyncThrowingStream<Data, any Error>.makeStream()
    private var sent = [Data]()
    private var read = 0

    static let initialize =
        #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","#
        + #""capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#

    func connect() async throws {}
    func disconnect() async {}
    func send(_ data: Data) async throws { sent.append(data) }
    func receive() -> AsyncThrowingStream<Data, any Error> { input.stream }

    nonisolated func write(_ line: String) { input.continuation.yield(Data(line.utf8)) }
    nonisolated func closeInput() { input.continuation.finish() }

    /// The next `count` messages the server sends (waiting up to a minute for them).
    func next(_ count: Int) async throws -> [Data] {
        let deadline = ContinuousClock.now + .seconds(60)
        while sent.count - read < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let messages = Array(sent[read..<min(sent.count, read + count)])
        read += messages.count
        return messages
    }

    /// The next `count` messages the server sends, as JSON objects.
    nonisolated func replies(count: Int) async throws -> [[String: Any]] {
        try await next(count).map { data in
            try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }
    }
}
