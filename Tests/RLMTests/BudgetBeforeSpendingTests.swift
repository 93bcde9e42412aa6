import Foundation
import RLM
import RLMTesting
import Synchronization
import Testing

/// Budgets are enforced before spending: a call that would cross the remaining budget is never sent; concurrent
/// calls reserve their share first, so a batch cannot overshoot by its width; children beyond the live-sandbox cap
/// wait their turn.
@Suite("Budgets before spending")
struct BudgetBeforeSpendingTests {
    static func fence(_ code: String) -> String { "```repl\n\(code)\n```" }

    /// Runs one cell that makes `request`, showing the replies; then answers.
    static func engine(
        root: ScriptedModel, sub: ScriptedModel, budget: Budget, request: SubcallRequest,
        configure: (inout RLMConfiguration) -> Void = { _ in }
    ) -> (RLMEngine, InMemorySandbox) {
        let sandbox = InMemorySandbox { cell in
            guard cell.code == "CALL" else { return CellResult(stdout: "?") }
            switch try await cell.subcall(request) {
            case .text(let text): return CellResult(stdout: text)
            case .batch(let texts): return CellResult(stdout: texts.joined(separator: "\n"))
            }
        }
        var configuration = RLMConfiguration(rootModel: root, subModel: sub, sandbox: sandbox, budget: budget)
        configure(&configuration)
        return (RLMEngine(configuration: configuration), sandbox)
    }

    static func rootCallingOnce() -> ScriptedModel {
        ScriptedModel(name: "root") { messages in
            messages.contains { $0.role == .assistant } ? "FINAL(done)" : fence("CALL")
        }
    }

    @Test func aHugePromptIsNeverSent() async throws {
        let root = Self.rootCallingOnce()
        let sub = ScriptedModel(name: "sub") { _ in "ok" }
        let huge = String(repeating: "x", count: 3_000_000)
        let (engine, _) = Self.engine(
            root: root, sub: sub, budget: Budget(maxTokens: 100_000), request: .llmQuery(prompt: huge, model: nil))
        let result = try await engine.run(query: "q", context: nil)
        #expect(sub.requests.isEmpty, "the prompt went out")
        #expect(result.usage.tokens.totalTokens <= 100_000)
        let shown = root.requests.last?.last?.content ?? ""
        #expect(shown.contains("was not sent"), "\(shown.prefix(300))")
        #expect(shown.contains("token budget"))
        #expect(result.answer == "done", "the run goes on: the refusal is a string in the cell")
    }

    @Test func aWideBatchCannotOvershootByItsWidth() async throws {
        let root = Self.rootCallingOnce()
        let sub = ScriptedModel(name: "sub", delay: .milliseconds(30)) { _ in "short" }
        let prompt = String(repeating: "y", count: 30_000)  // about 10,000 tokens each, reserved with the reply cap
        let budget = Budget(maxTokens: 45_000)
        let (engine, _) = Self.engine(
            root: root, sub: sub, budget: budget,
            request: .llmQueryBatched(prompts: Array(repeating: prompt, count: 8), model: nil)
        ) { configuration in
            configuration.batchConcurrency = 8
        }
        let result = try await engine.run(query: "q", context: nil)
        #expect(sub.requests.count >= 1)
        #expect(sub.requests.count <= 4, "\(sub.requests.count) prompts went out of 8")
        #expect(result.usage.tokens.totalTokens <= 45_000, "\(result.usage.tokens.totalTokens) tokens used")
        for request in sub.completionRequests {
            #expect(request.maxOutputTokens != nil, "a token budget caps every reply")
        }
    }

    @Test func aCostBudgetReservesTheWorstCaseOfEachCall() async throws {
        let root = Self.rootCallingOnce()
        let sub = ScriptedModel(name: "sub", delay: .milliseconds(30)) { _ in "short" }
        let (engine, _) = Self.engine(
            root: root, sub: sub, budget: Budget(maxCostUSD: 0.05),
            request: .llmQueryBatched(prompts: Array(repeating: "p", count: 8), model: nil)
        ) { configuration in
            configuration.batchConcurrency = 8
            // $10 per million tokens: a sub-call may cost up to ~$0.041 with a 4,096-token reply.
            configuration.cost = { _, usage in Double(usage.totalTokens) * 10 / 1e6 }
        }
        let result = try await engine.run(query: "q", context: nil)
        // The first call reserves its worst case ($0.041 with a 4,096-token reply); the second gets a reply cap that
        // the remaining $0.009 pays for; the rest are refused.
        #expect(sub.requests.count == 2, "\(sub.requests.count) calls went out")
        let caps = sub.completionRequests.compactMap(\.maxOutputTokens).sorted()
        #expect(caps.count == 2 && caps[0] < 1000 && caps[1] == 4096, "\(caps)")
        #expect(result.usage.costUSD <= 0.05)
    }

    @Test func childrenBeyondTheCapWaitTheirTurn() async throws {
        let peak = Mutex((live: 0, peak: 0))
        let sandbox = InMemorySandbox { cell in
            if cell.code == "FANOUT" {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<6 {
                        group.addTask {
                            _ = try await cell.subcall(.rlmQuery(prompt: "child \(i)", context: nil, model: nil))
                        }
                    }
                    try await group.waitForAll()
                }
                return CellResult(stdout: "fanned out")
            }
            // A child's cell: count the sessions alive at once.
            peak.withLock { value in
                value.live += 1
                value.peak = max(value.peak, value.live)
            }
            try await Task.sleep(for: .milliseconds(40))
            peak.withLock { $0.live -= 1 }
            return CellResult(finalAnswer: "child done")
        }
        let root = ScriptedModel(name: "root") { messages in
            let isChild = messages.contains { $0.content.contains("child ") && $0.role == .user }
            if isChild { return Self.fence("WORK") }
            return messages.contains { $0.role == .assistant } ? "FINAL(done)" : Self.fence("FANOUT")
        }
        var configuration = RLMConfiguration(
            rootModel: root, sandbox: sandbox, budget: Budget(maxDepth: 1, maxLiveSandboxes: 3))
        configuration.cellTimeout = .seconds(30)
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == "done")
        #expect(sandbox.sessionsStarted == 7, "the root's and six children's")
        #expect(peak.withLock { $0.peak } <= 2, "at most 2 children alive beside the root")
        #expect(peak.withLock { $0.peak } >= 1)
        #expect(sandbox.liveSessions == 0)
    }
}

extension BudgetBeforeSpendingTests {
    /// A model with no known price under a cost budget: its calls go out one at a time, so a wide batch overshoots
    /// by at most one call.
    @Test func anUnpricedModelUnderACostBudgetGoesOneCallAtATime() async throws {
        let root = Self.rootCallingOnce()
        let inFlight = Mutex((now: 0, peak: 0))
        let sub = ScriptedModel(name: "sub", reportedCostUSD: 0.02) { _ in
            inFlight.withLock { value in
                value.now += 1
                value.peak = max(value.peak, value.now)
            }
            Thread.sleep(forTimeInterval: 0.02)
            inFlight.withLock { $0.now -= 1 }
            return "ok"
        }
        let (engine, _) = Self.engine(
            root: root, sub: sub, budget: Budget(maxCostUSD: 0.05),
            request: .llmQueryBatched(prompts: Array(repeating: "p", count: 8), model: nil)
        ) { configuration in
            configuration.batchConcurrency = 8
            configuration.cost = { _, _ in nil }  // no price known
        }
        let result = try await engine.run(query: "q", context: nil)
        #expect(inFlight.withLock { $0.peak } == 1)
        #expect(sub.requests.count == 3, "the third call crossed $0.05 and stopped the rest")
        #expect(result.usage.costUSD <= 0.05 + 0.02)
    }

    /// A child RLM whose first call would cross the budget stops; the run goes on and the parent's cell reads why.
    @Test func aChildsRefusedCallEndsTheChildNotTheRun() async throws {
        let sandbox = InMemorySandbox { cell in
            guard cell.code == "SPAWN" else { return CellResult(stdout: "?") }
            let huge = String(repeating: "z", count: 300_000)
            guard case .text(let reply) = try await cell.subcall(.rlmQuery(prompt: huge, context: nil, model: nil))
            else { return CellResult(stdout: "?") }
            return CellResult(stdout: reply)
        }
        let root = ScriptedModel(name: "root") { messages in
            messages.contains { $0.role == .assistant } ? "FINAL(parent)" : Self.fence("SPAWN")
        }
        let configuration = RLMConfiguration(
            rootModel: root, sandbox: sandbox, budget: Budget(maxDepth: 1, maxTokens: 60_000))
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == "parent")
        let shown = root.requests.last?.last?.content ?? ""
        #expect(shown.contains("sub-RLM stopped"), "\(shown.prefix(300))")
        #expect(root.requests.count == 2, "the child's oversized call was never sent")
    }
}
