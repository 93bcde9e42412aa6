import Foundation
import RLM
import RLMTesting
import Testing

/// `rlm run` as scripts use it: one JSON object on stdout for every outcome, sub-model routing by name, budgets that
/// refuse what they cannot count, and providers reached in one line.
@Suite("rlm run outcomes", .serialized)
struct RunOutcomeTests {
    static let key = ["OPENAI_API_KEY": "sk-test-0123456789"]

    /// A free loopback port nobody listens on.
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                guard bind(fd, raw, length) == 0, getsockname(fd, raw, &length) == 0 else {
                    throw CLIError(description: "cannot bind a probe socket")
                }
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func expectJSONError(_ result: CLIResult, kind: String, status: Int32, mentions: String) throws {
        #expect(result.status == status, "\(result.stderr)")
        let json = try #require(result.json, "stdout must be one JSON object: \(result.stdout)")
        #expect(json["status"] as? String == "error")
        let error = try #require(json["error"] as? [String: Any])
        #expect(error["kind"] as? String == kind)
        #expect((error["message"] as? String ?? "").contains(mentions), "\(error)")
        #expect(result.stdout.split(separator: "\n").count == 1)
    }

    @Test func anUnreachableEndpointIsJSON() async throws {
        let port = try Self.closedPort()
        let result = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:\(port)/v1", "--model", "m", "--json", "q"],
            environment: Self.key)
        try expectJSONError(result, kind: "unreachable", status: 1, mentions: "127.0.0.1:\(port)")
    }

    /// A server whose error message quotes the key (some gateways echo the Authorization header) and another
    /// credential: the message reaches the user, neither secret does — in `--json` and on stderr.
    @Test func anErrorMessageQuotingTheKeyIsRedacted() async throws {
        let key = "sk-echoed-0123456789abcdefghijklmnopqrst"
        let handler = FakeLLMServer.Handler { _ in
            .error(
                status: 400,
                message: "bad request with Authorization: Bearer \(key) from ghp_abcdefghijklmnopqrstuvwxyz0123456789")
        }
        try await FakeLLMServer.withServer(handler) { server in
            for json in [true, false] {
                let result = try await runRLM(
                    ["run", "--base-url", server.openAIBaseURL, "--api-key-env", "MY_KEY", "--model", "m"]
                        + (json ? ["--json"] : []) + ["q"],
                    environment: ["MY_KEY": key])
                #expect(result.status != 0)
                #expect(result.stdout.contains("bad request") || result.stderr.contains("bad request"))
                #expect(
                    !(result.stdout + result.stderr).contains("0123456789abcdef"), "\(result.stdout)\(result.stderr)")
            }
        }
    }

    @Test func aRefusedKeyIsJSON() async throws {
        var configuration = FakeLLMServer.Configuration()
        configuration.expectedAPIKey = "sk-the-right-one"
        try await FakeLLMServer.withServer(configuration: configuration, .echo()) { server in
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--api-key-env", "OPENAI_API_KEY", "--model", "m",
                    "--json",
                    "q",
                ],
                environment: Self.key)
            try expectJSONError(result, kind: "unauthorized", status: 2, mentions: "OPENAI_API_KEY")
            #expect(!result.stdout.contains("sk-test-0123456789"))
        }
    }

    @Test func anAmbientKeyIsNotSentToAnotherServer() async throws {
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(1)"])) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "q"], environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("OPENAI_API_KEY is not sent"))
            let sent = await server.requests.flatMap(\.headers).filter { $0.name.lowercased() == "authorization" }
            #expect(sent.isEmpty, "\(sent)")
            #expect(
                !(await server.requests.contains { $0.headers.contains { $0.value.contains("sk-test-0123456789") } }))
        }
        // Named, it is sent.
        var configuration = FakeLLMServer.Configuration()
        configuration.expectedAPIKey = "sk-test-0123456789"
        try await FakeLLMServer.withServer(configuration: configuration, scriptedHandler(steps: ["FINAL(1)"])) {
            server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--api-key-env", "OPENAI_API_KEY", "--model", "m", "q"],
                environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
        }
    }

    @Test(arguments: [
        (["run", "--json"], "query"),
        (["run", "--max-tokens", "abc", "--json", "q"], "max-tokens"),
        (["run", "--timeout", "inf", "--json", "q"], "--timeout"),
        (["run", "--cell-timeout", "1e300", "--json", "q"], "--cell-timeout"),
        (["run", "--json", "   "], "empty"),
    ])
    func everyUsageErrorIsOneJSONObject(arguments: [String], mentions: String) async throws {
        let result = try await runRLM(arguments, environment: Self.key)
        try expectJSONError(result, kind: "usage", status: 2, mentions: mentions)
    }

    @Test func aSpentBudgetIsJSONWithExitThree() async throws {
        let steps = ["```repl\nprint(1)\n```", "```repl\nprint(2)\n```", "FINAL(late)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--max-tokens", "50", "--json", "q"],
                environment: Self.key)
            #expect(result.status == 3, "\(result.stderr)")
            let json = try #require(result.json, "\(result.stdout)")
            #expect(json["status"] as? String == "budget_exhausted")
            #expect(json["limit"] as? String == "tokens")
            #expect(result.stdout.split(separator: "\n").count == 1, "exactly one line of JSON")
        }
    }

    @Test func aUsageErrorIsJSON() async throws {
        let result = try await runRLM(["run", "--max-iterations", "0", "--json", "q"], environment: Self.key)
        try expectJSONError(result, kind: "usage", status: 2, mentions: "--max-iterations")
    }

    @Test func anUnpricedModelUnderACostBudgetIsRefused() async throws {
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(1)"])) { server in
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "house-model", "--max-cost", "0.5", "--json",
                    "q",
                ],
                environment: Self.key)
            try expectJSONError(result, kind: "usage", status: 2, mentions: "house-model")
            #expect(await server.requests.isEmpty, "nothing is sent before the refusal")
        }
    }

    @Test func codeReachesADeclaredModelByNameAndNeverAnUndeclaredOne() async throws {
        let steps = [
            """
            ```repl
            print(llm_query('classify this', model='judge'))
            print(llm_query('and this', model='ghost'))
            print(llm_query_batched(['a', 'b'], model='judge'))
            ```
            """,
            "FINAL(done)",
        ]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps) { prompt in "reply to \(prompt)" }) {
            server in
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "root-model", "--sub-model", "small",
                    "--allow-model", "judge", "--json", "q",
                ],
                environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
            let requests = await server.requests
            let subcalls = requests.filter { request in !request.messages.contains { $0.role == .system } }
            #expect(subcalls.compactMap(\.model).sorted() == ["judge", "judge", "judge"])
            #expect(!requests.contains { $0.model == "ghost" })
            let roots = requests.filter { request in request.messages.contains { $0.role == .system } }
            #expect(roots.allSatisfy { $0.model == "root-model" })
            let shown = roots.last?.messages.last?.content ?? ""
            #expect(shown.contains("reply to classify this"))
            #expect(shown.contains("'ghost' is not declared"))
        }
    }

    @Test func aModelsFilePutsANamedModelOnAnotherServerWithItsOwnKey() async throws {
        let steps = ["```repl\nprint(llm_query('hello', model='remote'))\n```", "FINAL(done)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { root in
            var other = FakeLLMServer.Configuration()
            other.expectedAPIKey = "sk-remote-key-987654321"
            try await FakeLLMServer.withServer(configuration: other, .always(.text("from the other server"))) {
                remote in
                let file = try writeTemporary(
                    """
                    {"models": {"remote": {"provider": "anthropic", "base_url": "\(remote.anthropicBaseURL)",
                     "model": "claude-remote", "key_env": "REMOTE_KEY"}}}
                    """, name: "models.json")
                let trajectory = file + ".jsonl"
                let result = try await runRLM(
                    [
                        "run", "--base-url", root.openAIBaseURL, "--model", "m", "--models", file, "--trajectory",
                        trajectory, "q",
                    ],
                    environment: Self.key.merging(["REMOTE_KEY": "sk-remote-key-987654321"]) { $1 })
                #expect(result.status == 0, "\(result.stderr)")
                let received = await remote.requests
                #expect(received.count == 1)
                #expect(received.first?.format == .anthropic)
                #expect(received.first?.model == "claude-remote")
                let recorded = try String(contentsOfFile: trajectory, encoding: .utf8)
                #expect(recorded.contains("from the other server"))
                #expect(!recorded.contains("sk-remote-key-987654321"))
            }
        }
    }

    @Test func withoutAModelTheServersOnlyModelIsUsedAndSeveralMustBeChosen() async throws {
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(7)"])) { server in
            let result = try await runRLM(["run", "--base-url", server.openAIBaseURL, "q"], environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "7\n")
            let served = FakeLLMServer.Configuration().defaultModel
            #expect(await server.requests.last?.model == served)
        }
        var several = FakeLLMServer.Configuration()
        several.modelIDs = ["alpha-7b", "beta-13b"]
        try await FakeLLMServer.withServer(configuration: several, scriptedHandler(steps: ["FINAL(7)"])) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--json", "q"], environment: Self.key)
            try expectJSONError(result, kind: "usage", status: 2, mentions: "alpha-7b, beta-13b")
        }
    }
}
