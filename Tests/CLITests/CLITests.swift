import Foundation
import RLM
import RLMTesting
import Testing

/// `rlm run` end to end: the real binary, a real sandbox, and a fake LLM server speaking the real wire formats.
@Suite("rlm run against a fake server", .serialized)
struct CLITests {
    static let log = (1...400).map { i in
        "2026-11-21T10:00:\(String(format: "%02d", i % 60))Z \(i % 9 == 0 ? "ERROR" : "INFO") svc-\(i % 4) req=\(i)"
    }.joined(separator: "\n")
    static var errorCount: Int { log.split(separator: "\n").filter { $0.contains(" ERROR ") }.count }
    static let countCode = "```repl\nn = sum(1 for l in context.splitlines() if ' ERROR ' in l)\nprint(n)\n```"

    @Test(arguments: [FakeLLMServer.WireFormat.openAI, .anthropic])
    func answersOverBothWireFormats(format: FakeLLMServer.WireFormat) async throws {
        let context = try writeTemporary(Self.log)
        let trajectoryPath = context + ".trajectory.jsonl"
        try await FakeLLMServer.withServer(scriptedHandler(steps: [Self.countCode, "FINAL(\(Self.errorCount))"])) {
            server in
            let result = try await runRLM(
                [
                    "run", "--trajectory", trajectoryPath, "--provider", format == .openAI ? "openai" : "anthropic",
                    "--base-url",
                    server.baseURL(for: format), "--model", "test-model", "--context", context, "--json",
                    "How many ERROR lines?",
                ],
                environment: [format == .openAI ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY": "sk-planted-key-0123456789"])
            #expect(result.status == 0, "\(result.stderr)")
            let json = try #require(result.json, "\(result.stdout)")
            #expect(json["answer"] as? String == "\(Self.errorCount)")
            #expect(json["iterations"] as? Int == 2)
            let usage = try #require(json["usage"] as? [String: Any])
            #expect((usage["input_tokens"] as? Int ?? 0) > 0)
            let trajectory = try #require(json["trajectory"] as? String)
            #expect(trajectory == trajectoryPath)
            let lines = try String(contentsOfFile: trajectory, encoding: .utf8).split(separator: "\n")
            #expect(lines.count >= 4)
            for line in lines {
                let event = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(event?["kind"] is String)
            }
            let all = try String(contentsOfFile: trajectory, encoding: .utf8) + result.stdout + result.stderr
            #expect(!all.contains("sk-planted-key-0123456789"))
            let requests = await server.requests
            #expect(requests.allSatisfy { $0.format == format })
            #expect(requests.first?.model == "test-model")
        }
    }

    @Test func plainOutputIsTheAnswerAlone() async throws {
        let context = try writeTemporary(Self.log)
        try await FakeLLMServer.withServer(scriptedHandler(steps: [Self.countCode, "FINAL(\(Self.errorCount))"])) {
            server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--context", context, "How many ERROR lines?"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(result.status == 0)
            #expect(result.stdout == "\(Self.errorCount)\n")
        }
    }

    @Test func batchedSubcallsAreRoutedToTheServer() async throws {
        let steps = [
            """
            ```repl
            parts = [context[i:i+2000] for i in range(0, len(context), 2000)]
            replies = llm_query_batched([f"count ERROR in: {p}" for p in parts])
            print(len(replies), sum(int(r) for r in replies))
            ```
            """,
            "FINAL_VAR(replies)",
        ]
        let context = try writeTemporary(Self.log)
        try await FakeLLMServer.withServer(
            scriptedHandler(steps: steps) { prompt in "\(prompt.components(separatedBy: " ERROR ").count - 1)" }
        ) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context, "--json", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(result.status == 0, "\(result.stderr)")
            let parts = (Self.log.count + 1999) / 2000
            let subcalls = await server.requests.filter { !$0.messages.contains { $0.role == .system } }
            #expect(subcalls.count == parts)
            let usage = try #require(result.json?["usage"] as? [String: Any])
            #expect(usage["subcalls"] as? Int == parts)
            // The root saw the real sum that came back through the sandbox.
            let characters = Array(Self.log)
            // Each prompt's own "count ERROR in:" prefix adds one per part.
            let expectedSum = stride(from: 0, to: characters.count, by: 2000).reduce(parts) { sum, start in
                let piece = String(characters[start..<min(start + 2000, characters.count)])
                return sum + piece.components(separatedBy: " ERROR ").count - 1
            }
            let root = await server.requests.filter { $0.messages.contains { $0.role == .system } }
            #expect(
                root.last?.lastUserMessage?.contains("\(parts) \(expectedSum)") == true,
                "\(root.last?.lastUserMessage ?? "")")
        }
    }

    @Test func fenceTrapAnswersRight() async throws {
        let steps = [
            "Example:\n```\nFINAL(wrong)\n```\nLet me check.\n```repl\nprint(len(context))\n```", "FINAL(right)",
        ]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--context", "-", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"], stdin: "some text")
            #expect(result.stdout == "right\n")
        }
    }

    @Test func budgetExhaustionExitsThree() async throws {
        let steps = (0..<10).map { "```repl\nprint('still looking', \($0))\n```" }
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--max-iterations", "2", "--json", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(result.status == 3)
            let json = try #require(result.json)
            #expect(json["answer"] is NSNull)
            #expect(json["status"] as? String == "budget_exhausted")
            #expect(json["limit"] as? String == "iterations")
            // The last request asked for the answer as a user message.
            let last = await server.requests.last
            #expect(last?.messages.last?.role == .user)
        }
    }

    @Test func tokenBudgetStopsTheRun() async throws {
        let steps = (0..<20).map { "```repl\nprint('x' * \($0 + 100))\n```" }
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--max-tokens", "3000", "--json", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(result.status == 3)
            #expect(result.json?["limit"] as? String == "tokens")
        }
    }

    @Test func retriesAfterRateLimitAndServerErrors() async throws {
        let replies: [FakeLLMServer.Reply] = [
            .rateLimited(retryAfter: "0"), .serverError, .text("FINAL(ok)"),
        ]
        try await FakeLLMServer.withServer(.scripted(replies)) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "ok\n")
            #expect(await server.requests.count == 3)
        }
    }

    @Test func wrongKeyIsASetupErrorThatNamesTheVariable() async throws {
        var configuration = FakeLLMServer.Configuration()
        configuration.expectedAPIKey = "sk-right-key-000000"
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("FINAL(x)"))) { server in
            let result = try await runRLM(
                ["run", "--model", "m", "q"],
                environment: ["OPENAI_API_KEY": "sk-wrong-key-1111111", "OPENAI_BASE_URL": server.openAIBaseURL])
            #expect(result.status == 2)
            #expect(result.stderr.contains("OPENAI_API_KEY"))
            #expect(!result.stderr.contains("sk-wrong-key-1111111"))
        }
    }

    @Test func unreachableEndpointSaysWhere() async throws {
        let result = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:9/v1", "q"], environment: ["OPENAI_API_KEY": "sk-x"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("127.0.0.1:9"))
    }

    @Test func keysAreNeverTakenFromFlags() async throws {
        let result = try await runRLM(["run", "--api-key", "sk-flag", "q"])
        #expect(result.status == 2)
        let missing = try await runRLM(["run", "--provider", "openai", "q"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("OPENAI_API_KEY"))
    }

    @Test func keyFileVariableWorks() async throws {
        let keyFile = try writeTemporary("sk-from-file-22222222\n", name: "key")
        var configuration = FakeLLMServer.Configuration()
        configuration.expectedAPIKey = "sk-from-file-22222222"
        try await FakeLLMServer.withServer(configuration: configuration, .always(.text("FINAL(yes)"))) { server in
            let result = try await runRLM(
                ["run", "--model", "m", "q"],
                environment: ["OPENAI_API_KEY_FILE": keyFile, "OPENAI_BASE_URL": server.openAIBaseURL])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "yes\n")
        }
    }

    @Test func badContextsAreClearUsageErrors() async throws {
        let missing = try await runRLM(["run", "--base-url", "http://127.0.0.1:9/v1", "--context", "/nope", "q"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("/nope"))
        let json = try writeTemporary("{not json", name: "data.json")
        // Decoding happens in the sandbox, which builds the context before the first model call.
        let malformed = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--context", json, "q"])
        #expect(malformed.status == 2, "\(malformed.stderr)")
        #expect(malformed.stderr.contains("not valid JSON"))
        let binary = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-bin-\(UUID().uuidString)")
        try Data([0, 1, 2, 0xff]).write(to: binary)
        let refused = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--context", binary.path, "q"])
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("offset 3"), "names where it stops being text: \(refused.stderr)")
    }

    @Test func directoryContextsBecomeDocumentsWithPaths() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-tree-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: dir.appendingPathComponent("src"), withIntermediateDirectories: true)
        try "def a(): pass\n".write(to: dir.appendingPathComponent("src/a.py"), atomically: true, encoding: .utf8)
        try "def b(): pass\n".write(to: dir.appendingPathComponent("b.py"), atomically: true, encoding: .utf8)
        try Data([0, 0, 1]).write(to: dir.appendingPathComponent("blob.bin"))
        let steps = ["```repl\nFINAL(str(len(context)) + ' ' + context[1].splitlines()[0])\n```"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--context", dir.path, "--verbose", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "2 ### \(dir.path)/src/a.py\n")
            #expect(result.stderr.contains("blob.bin: binary file"), "\(result.stderr)")
        }
    }
}
