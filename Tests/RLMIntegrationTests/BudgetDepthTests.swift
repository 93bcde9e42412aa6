import Foundation
import RLM
import RLMTesting
import Synchronization
import Testing

/// A sub-model that takes `delay` to answer and counts the calls that started, finished and were cancelled.
final class SlowModel: LanguageModel {
    let name = "slow"
    let delay: Duration
    private let counts = Mutex((started: 0, finished: 0, cancelled: 0))

    init(delay: Duration) { self.delay = delay }

    var started: Int { counts.withLock { $0.started } }
    var finished: Int { counts.withLock { $0.finished } }
    var cancelled: Int { counts.withLock { $0.cancelled } }

    func complete(_ request: CompletionRequest) async throws -> Completion {
        counts.withLock { $0.started += 1 }
        do {
            try await Task.sleep(for: delay)
        } catch {
            counts.withLock { $0.cancelled += 1 }
            throw error
        }
        counts.withLock { $0.finished += 1 }
        return Completion(text: "slow answer", usage: TokenUsage(inputTokens: 10, outputTokens: 2), model: name)
    }
}

/// Budgets and recursion through the engine and the real sandbox: a spent budget ends the run at once (sandbox
/// killed, sub-calls in flight cancelled), recursion goes as deep as allowed and no deeper, token budgets count each
/// direction, and sub-calls forged on the channel are counted like honest ones.
@Suite("Engine budgets and depth", .serialized, .noSandboxLeftBehind)
struct BudgetDepthTests {
    @Test func aSpentBudgetKillsTheSandboxAndCancelsSubcallsInFlight() async throws {
        let sub = SlowModel(delay: .seconds(300))
        let root = ScriptedModel(replies: [
            "```repl\nimport time\nanswers = llm_query_batched(['a', 'b', 'c', 'd'])\ntime.sleep(600)\n```",
            "FINAL(never)",
        ])
        let clock = ContinuousClock()
        let start = clock.now
        // 45 s: room for the sandbox to start and the calls to go out even when the whole suite (a thousand-session
        // churn among it) runs in parallel on two cores — 20 s was not, in CI run 19 — while the calls (300 s) and the
        // cell (600 s) would take far longer.
        let result = try await engine(root: root, sub: sub, budget: Budget(maxWallTime: .seconds(45))) {
            $0.cellTimeout = .seconds(120)  // the budget, not the cell timeout, must end this run
        }.run(query: "q", context: .text("c"))
        let elapsed = clock.now - start
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected the wall-time budget to end the run, got \(result.status)")
            return
        }
        #expect(reason.limit == .wallTime)
        // The run ended at its budget, not when the calls (300 s) or the cell (600 s) would have.
        #expect(elapsed < .seconds(90), "\(elapsed)")
        #expect(sub.started == 4, "all four calls were in flight")
        #expect(sub.finished == 0)
        // Cancellation reaches every call in flight (give the cancelled tasks a moment to unwind).
        for _ in 0..<100 where sub.cancelled < 4 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(sub.cancelled == 4, "calls cancelled: \(sub.cancelled)")
        // And the sandbox is gone already, not when the test ends.
        #expect(SessionLog.current.all.count == 1)
        try await expectNoSandboxLeftBehind(SessionLog.current)
    }

    /// `maxDepth: 2`: the root starts a child, the child a grandchild (each in its own sandbox), and the
    /// grandchild's `rlm_query` is a plain sub-model call.
    @Test func recursionGoesAsDeepAsAllowedAndNoDeeper() async throws {
        let model = ScriptedModel { messages in
            guard messages.first?.role == .system else { return "plain: \(messages.last?.content ?? "")" }
            let question = messages.count > 1 ? messages[1].content : ""
            let (tag, next) =
                question.contains("grandchild q")
                ? ("grand", "deeper q") : question.contains("child q") ? ("child", "grandchild q") : ("root", "child q")
            guard let output = messages.last?.content, messages.count > 2 else {
                return "```repl\nprint('got:', rlm_query('\(next)'))\n```"
            }
            let got = output.components(separatedBy: "got: ").dropFirst().first?.split(separator: "\n").first ?? "?"
            return "FINAL(\(tag)[\(got)])"
        }
        let events = EventLog()
        let result = try await engine(root: model, budget: Budget(maxDepth: 2)) { $0.onEvent = events.handler }
            .run(query: "root q", context: .text("c"))
        #expect(result.status == .answered)
        let depths = Set(events.all.filter { $0.kind == .codeResult }.map(\.depth))
        #expect(depths == [0, 1, 2], "cells ran at depths \(depths)")
        // The grandchild's rlm_query became a plain call: a request without a system prompt.
        let plain = model.requests.filter { $0.first?.role != .system }
        #expect(plain.count == 1)
        #expect(plain.first?.last?.content.contains("deeper q") == true)
        #expect(result.answer == "root[child[grand[plain: deeper q]]]")
        #expect(SessionLog.current.all.count == 3, "one sandbox per level")
    }

    @Test func inputTokensAreBudgetedOnTheirOwn() async throws {
        let root = ScriptedModel(replies: (0..<20).map { "```repl\nprint('x' * 2000, \($0))\n```" })
        let result = try await engine(root: root, budget: Budget(maxInputTokens: 8000))
            .run(query: "q", context: .text("c"))
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected the input-token budget to end the run, got \(result.status)")
            return
        }
        #expect(reason.limit == .inputTokens)
        #expect(result.usage.tokens.inputTokens <= 8000, "never past the input budget")
        #expect(result.usage.tokens.outputTokens < 1000, "outputs stayed small: this was the input side")
        #expect(root.requests.count >= 2)
    }

    @Test func outputTokensAreBudgetedOnTheirOwn() async throws {
        let long = String(repeating: "word ", count: 200)  // ~250 tokens of output a reply
        let root = ScriptedModel(replies: (0..<20).map { "```repl\nprint(\($0))\n```\n\(long)" })
        let result = try await engine(root: root, budget: Budget(maxOutputTokens: 600))
            .run(query: "q", context: .text("c"))
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected the output-token budget to end the run, got \(result.status)")
            return
        }
        #expect(reason.limit == .outputTokens)
        #expect(root.requests.count == 3, "250 tokens a reply: the third passes 600")
        #expect(result.usage.tokens.outputTokens >= 600)
    }

    /// Code that writes a sub-call frame itself (it shares the worker's process) is counted by the same budget:
    /// ten forged prompts against a budget of five end the run, and nothing reaches the sub-model.
    @Test func forgedSubcallsAreCountedLikeHonestOnes() async throws {
        let sub = ScriptedModel(name: "sub") { _ in "answer" }
        let forge = """
            ```repl
            import json
            g = llm_query.__globals__
            payload = json.dumps({'type': 'subcall', 'id': 'w900', 'call': 'llm_query_batched',
                                  'prompts': ['forged'] * 10, 'model': None}).encode()
            with g['_SEND_LOCK']:
                g['_write_all'](len(payload).to_bytes(4, 'big') + payload)
            import time
            time.sleep(5)
            ```
            """
        let root = ScriptedModel(replies: [forge, "FINAL(never)"])
        let result = try await engine(root: root, sub: sub, budget: Budget(maxSubcalls: 5))
            .run(query: "q", context: .text("c"))
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected the sub-call budget to end the run, got \(result.status)")
            return
        }
        #expect(reason.limit == .subcalls)
        #expect(sub.requests.isEmpty)
    }
}
