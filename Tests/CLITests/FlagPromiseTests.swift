import Foundation
import RLM
import RLMTesting
import Testing

/// The promises `rlm run` makes with a flag, each kept over the real binary, a real sandbox and the fake server:
/// `--prices`, `--max-cost`, `--timeout`, `--cell-timeout`, `--max-depth`, `--max-subcalls`, `--env-file`; and the
/// key kept out of the sandbox and out of the trajectory. `runRLM` checks after every run that no sandbox is left.
@Suite("rlm run flags keep their promises", .serialized)
struct FlagPromiseTests {
    static let key = ["OPENAI_API_KEY": "sk-test-0123456789"]

    func run(_ server: FakeLLMServer, _ arguments: [String], environment: [String: String] = key) async throws
        -> (CLIResult, Duration)
    {
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await runRLM(
            ["run", "--base-url", server.openAIBaseURL, "--json"] + arguments, environment: environment)
        return (result, clock.now - start)
    }

    static func roots(_ requests: [FakeLLMServer.Request]) -> [FakeLLMServer.Request] {
        requests.filter { $0.messages.first?.role == .system }
    }

    static func subcalls(_ requests: [FakeLLMServer.Request]) -> [FakeLLMServer.Request] {
        requests.filter { $0.messages.first?.role != .system }
    }

    @Test func pricesFromAFileGiveTheRunItsCost() async throws {
        let prices = try writeTemporary(#"{"house-model": {"input": 2, "output": 4}}"#, name: "prices.json")
        let steps = ["```repl\nprint(6 * 7)\n```", "FINAL(42)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let (result, _) = try await run(server, ["--model", "house-model", "--prices", prices, "q"])
            #expect(result.status == 0, "\(result.stderr)")
            let usage = try #require(result.json?["usage"] as? [String: Any])
            let input = try #require(usage["input_tokens"] as? Int)
            let output = try #require(usage["output_tokens"] as? Int)
            let cost = try #require(usage["cost_usd"] as? Double)
            #expect(input > 0 && output > 0)
            #expect(abs(cost - (Double(input) * 2 + Double(output) * 4) / 1e6) < 1e-9, "\(usage)")
        }
    }

    /// A model priced by `--prices` under `--max-cost`: the run stops with exit 3 at the budget, never past it.
    /// (Without a price the same run is refused before it starts: `RunOutcomeTests.anUnpricedModelUnderACostBudgetIsRefused`.)
    @Test func maxCostStopsTheRunAtTheBudget() async throws {
        let prices = try writeTemporary(#"{"house-model": {"input": 10, "output": 10}}"#, name: "prices.json")
        let steps = (0..<30).map { "```repl\nprint('step', \($0))\n```" }
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let (result, _) = try await run(
                server, ["--model", "house-model", "--prices", prices, "--max-cost", "0.1", "q"])
            #expect(result.status == 3, "\(result.stderr)")
            let json = try #require(result.json, "\(result.stdout)")
            #expect(json["limit"] as? String == "cost")
            let cost = try #require((json["usage"] as? [String: Any])?["cost_usd"] as? Double)
            #expect(cost > 0 && cost <= 0.1, "spent \(cost) of 0.1")
            #expect(await server.requests.count >= 2, "it ran until the budget, not before")
        }
    }

    @Test func timeoutEndsTheRunAndKillsItsSandbox() async throws {
        let steps = ["```repl\nimport time\ntime.sleep(60)\n```", "FINAL(never)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let (result, elapsed) = try await run(server, ["--model", "m", "--timeout", "2", "q"])
            #expect(result.status == 3, "\(result.stderr)")
            #expect(result.json?["limit"] as? String == "wall_time")
            #expect(elapsed < .seconds(15), "\(elapsed) for a 2 s budget and a 60 s cell")
        }
    }

    @Test func cellTimeoutInterruptsTheCellAndTheRunGoesOn() async throws {
        let steps = [
            "```repl\nkept = 'state'\nimport time\ntime.sleep(60)\n```", "```repl\nprint(kept)\n```", "FINAL(done)",
        ]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let (result, elapsed) = try await run(server, ["--model", "m", "--cell-timeout", "1", "q"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.json?["answer"] as? String == "done")
            #expect(elapsed < .seconds(20), "\(elapsed)")
            let shown = Self.roots(await server.requests).map { $0.lastUserMessage ?? "" }
            #expect(shown.count == 3)
            // The cell was stopped by the interrupt the timeout sends (the model is shown its traceback).
            let stopped = shown.dropFirst().first ?? ""
            #expect(stopped.contains("KeyboardInterrupt") || stopped.contains("timeout"), "\(stopped)")
            #expect(shown.last?.contains("state") == true, "the interrupted cell's state was kept")
        }
    }

    /// `--max-depth 1` runs `rlm_query` as a child RLM (its own system prompt, its own sandbox, its code run);
    /// `--max-depth 0` makes it a plain sub-model call.
    @Test(arguments: [0, 1])
    func maxDepthDecidesWhetherRlmQueryRecurses(depth: Int) async throws {
        let handler = FakeLLMServer.Handler { request in
            guard request.messages.first?.role == .system else { return .text("plain reply") }
            let question = request.messages.count > 1 ? request.messages[1].content : ""
            let turn = request.messages.filter { $0.role == .assistant }.count
            if question.contains("child question") {
                return .text(turn == 0 ? "```repl\nprint('child ran code')\n```" : "FINAL(child reply)")
            }
            if turn == 0 { return .text("```repl\nprint(rlm_query('child question', context='abc'))\n```") }
            return .text("FINAL(done)")
        }
        try await FakeLLMServer.withServer(handler) { server in
            let (result, _) = try await run(server, ["--model", "m", "--max-depth", "\(depth)", "q"])
            #expect(result.status == 0, "\(result.stderr)")
            let requests = await server.requests
            let children = Self.roots(requests).filter {
                $0.messages.count > 1 && $0.messages[1].content.contains("child question")
            }
            let rootShown =
                Self.roots(requests).filter { !$0.messages[1].content.contains("child question") }.last?
                .lastUserMessage ?? ""
            if depth == 0 {
                #expect(children.isEmpty)
                #expect(Self.subcalls(requests).count == 1)
                #expect(rootShown.contains("plain reply"))
            } else {
                #expect(children.count == 2, "the child asked twice: code, then its answer")
                #expect(children.last?.lastUserMessage?.contains("child ran code") == true)
                #expect(Self.subcalls(requests).isEmpty)
                #expect(rootShown.contains("child reply"))
            }
        }
    }

    @Test func maxSubcallsRefusesABatchThatWouldPassIt() async throws {
        let steps = ["```repl\nprint(llm_query_batched(['a'] * 10))\n```", "FINAL(never)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let (result, _) = try await run(server, ["--model", "m", "--max-subcalls", "3", "q"])
            #expect(result.status == 3, "\(result.stderr)")
            #expect(result.json?["limit"] as? String == "subcalls")
            #expect(Self.subcalls(await server.requests).isEmpty, "nothing of the batch was sent")
        }
    }

    /// The code dumps every environment it can see: its own, and every `/proc/*/environ` readable.
    static let dumpEnvironments = """
        ```repl
        import os
        seen = []
        for pid in os.listdir('/proc'):
            if pid.isdigit():
                try:
                    seen.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))
                except OSError:
                    pass
        print('environments read:', len(seen) + 1)
        print(dict(os.environ))
        print('\\n'.join(seen))
        ```
        """

    /// `--env-file` is where the key comes from when the environment has none; the key reaches the server and
    /// nothing else — not the sandbox (whose environments the code dumps), not the trajectory.
    @Test func envFileSuppliesTheKeyAndTheSandboxNeverSeesIt() async throws {
        let secret = "sk-envfile-key-0123456789"
        let envFile = try writeTemporary("# keys\nOPENAI_API_KEY=\(secret)\n", name: ".env")
        var configuration = FakeLLMServer.Configuration()
        configuration.expectedAPIKey = secret
        let steps = [Self.dumpEnvironments, "FINAL(ok)"]
        try await FakeLLMServer.withServer(configuration: configuration, scriptedHandler(steps: steps)) { server in
            let trajectory = envFile + ".jsonl"
            let (result, _) = try await run(
                server,
                [
                    "--model", "m", "--env-file", envFile, "--api-key-env", "OPENAI_API_KEY", "--trajectory",
                    trajectory, "q",
                ], environment: [:])
            #expect(result.status == 0, "\(result.stderr)")
            let shown = Self.roots(await server.requests).last?.lastUserMessage ?? ""
            #expect(shown.contains("environments read:") && shown.contains("'PATH'"), "the dump ran: \(shown)")
            #expect(!shown.contains(secret))
            let recorded = try String(contentsOfFile: trajectory, encoding: .utf8)
            #expect(recorded.contains("environments read:"))
            #expect(!recorded.contains(secret))
            #expect(!(result.stdout + result.stderr).contains(secret))

            let (without, _) = try await run(server, ["--model", "m", "q"], environment: [:])
            #expect(without.status == 2, "without --env-file there is no key: \(without.stderr)")
        }
    }

    /// A key in the environment that then turns up in the model's reply and in a cell's output is written to the
    /// trajectory as `[REDACTED]`, never as itself.
    @Test func theTrajectoryRedactsAKeyWhereverItAppears() async throws {
        let secret = "sk-planted-redact-0123456789"
        let steps = ["Trying the key \(secret).\n```repl\nprint('key:', '\(secret)')\n```", "FINAL(done)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let trajectory = try writeTemporary("", name: "t") + ".jsonl"
            let (result, _) = try await run(
                server, ["--model", "m", "--trajectory", trajectory, "q"], environment: ["OPENAI_API_KEY": secret])
            #expect(result.status == 0, "\(result.stderr)")
            // The key really went round: the model wrote it and the cell printed it back to the model.
            #expect(Self.roots(await server.requests).last?.lastUserMessage?.contains("key: \(secret)") == true)
            let recorded = try String(contentsOfFile: trajectory, encoding: .utf8)
            #expect(!recorded.contains(secret))
            #expect(recorded.components(separatedBy: "[REDACTED]").count - 1 >= 2, "reply and cell output redacted")
            #expect(recorded.contains("key: [REDACTED]"))
        }
    }
}
