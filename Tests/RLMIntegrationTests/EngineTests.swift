import Foundation
import RLM
import RLMSandbox
import RLMTesting
import Testing

@testable import RLM

@Suite("Engine", .serialized, .noSandboxLeftBehind)
struct EngineTests {
    static let log = (1...300).map { i in
        "2026-11-21 10:\(i % 60) \(i % 7 == 0 ? "ERROR" : "INFO") svc-\(i % 5) op=\(i)"
    }
    .joined(separator: "\n")

    @Test func countsWithCodeThenAnswersInText() async throws {
        let root = ScriptedModel(replies: [
            "Let me count.\n```repl\nn = sum(1 for line in context.splitlines() if ' ERROR ' in line)\nprint(n)\n```",
            "FINAL(42)",
        ])
        let result = try await engine(root: root).run(query: "How many ERROR lines?", context: .text(Self.log))
        #expect(result.answer == "42")
        #expect(result.status == .answered)
        #expect(result.iterations == 2)
        // The model saw the real output of its code in the second request.
        let second = try #require(root.requests.dropFirst().first)
        #expect(second.last?.role == .user)
        #expect(second.last?.content.contains("42") == true)
        // The first request told it what `context` is and showed a sample.
        #expect(root.requests[0][0].content.contains("str of"))
        #expect(root.requests[0][1].content.contains("svc-1"))
    }

    @Test func finalFromCodeEndsTheRun() async throws {
        let root = ScriptedModel(replies: ["```repl\nFINAL(len(context))\n```"])
        let result = try await engine(root: root).run(query: "length?", context: .text("abcdef"))
        #expect(result.answer == "6")
        #expect(result.iterations == 1)
    }

    @Test func finalVarReadsTheREPL() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nwords = context.split()\nanswer_text = words[-1].upper()\n```", "FINAL_VAR(answer_text)",
        ])
        let result = try await engine(root: root).run(query: "last word?", context: .text("alpha beta gamma"))
        #expect(result.answer == "GAMMA")
    }

    @Test func finalVarOfAMissingVariableAsksAgain() async throws {
        let root = ScriptedModel(replies: ["FINAL_VAR(nope)", "FINAL(fixed)"])
        let result = try await engine(root: root).run(query: "q", context: .text("x"))
        #expect(result.answer == "fixed")
        #expect(root.requests[1].last?.content.contains("no variable named `nope`") == true)
    }

    @Test func answerDictWorks() async throws {
        let root = ScriptedModel(replies: ["```repl\nanswer['content'] = context[::-1]\nanswer['ready'] = True\n```"])
        let result = try await engine(root: root).run(query: "reverse", context: .text("abc"))
        #expect(result.answer == "cba")
    }

    @Test func fenceTrapIsNotAnAnswer() async throws {
        let root = ScriptedModel(replies: [
            "Format example:\n```text\nFINAL(wrong)\n```\nI still need to look.\n```repl\nprint(context)\n```",
            "```\nFINAL(wrong)\n```\nFINAL(right)",
        ])
        let result = try await engine(root: root).run(query: "q", context: .text("data"))
        #expect(result.answer == "right")
    }

    @Test func pythonFencesRunWhenThereIsNoReplBlock() async throws {
        let root = ScriptedModel(replies: ["```python\nprint(context.count('a'))\n```", "FINAL(3)"])
        let result = try await engine(root: root).run(query: "q", context: .text("banana"))
        #expect(result.answer == "3")
        #expect(root.requests[1].last?.content.contains("REPL output:\n```text\n3") == true)
    }

    @Test func recoversFromATraceback() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(undefined_name)\n```", "```repl\nprint(len(context))\n```", "FINAL(4)",
        ])
        let result = try await engine(root: root).run(query: "q", context: .text("abcd"))
        #expect(result.answer == "4")
        #expect(root.requests[1].last?.content.contains("NameError") == true)
    }

    @Test func batchedSubcallsReachTheSubModel() async throws {
        let sub = ScriptedModel(name: "sub") { messages in
            let prompt = messages.last?.content ?? ""
            return prompt.contains("ERROR") ? "yes" : "no"
        }
        let root = ScriptedModel(replies: [
            """
            ```repl
            chunks = [context[i:i+500] for i in range(0, len(context), 500)]
            answers = llm_query_batched([f"Does this mention ERROR? {c}" for c in chunks])
            print(len(chunks), answers.count('yes'))
            ```
            """,
            "FINAL(done)",
        ])
        let result = try await engine(root: root, sub: sub).run(query: "q", context: .text(Self.log))
        #expect(result.answer == "done")
        let chunks = (Self.log.count + 499) / 500
        #expect(sub.requests.count == chunks)
        #expect(result.usage.subcalls == chunks)
        #expect(root.requests[1].last?.content.contains("\(chunks) ") == true)
    }

    @Test func rlmQueryStartsAChildOneLevelDeeper() async throws {
        // The same scripted model plays root and child: it tells them apart by the question.
        let root = ScriptedModel { messages in
            let first = messages.count > 1 ? messages[1].content : ""
            if first.contains("child question") {
                return messages.count == 2 ? "```repl\nprint(context.upper())\n```" : "FINAL(child saw PIECE)"
            }
            if messages.count == 2 {
                return "```repl\nr = rlm_query('child question', context='piece')\nprint(r)\n```"
            }
            return "FINAL(\(messages.last?.content.contains("child saw PIECE") == true ? "ok" : "bad"))"
        }
        let events = EventLog()
        let result = try await engine(root: root) { $0.onEvent = events.handler }
            .run(query: "parent question", context: .text("whole"))
        #expect(result.answer == "ok")
        #expect(events.all.contains { $0.depth == 1 && $0.kind == .codeResult })
    }

    /// A child's context streams from the parent's sandbox to the child's as JSON (a list here), and the child's
    /// prompt describes what its own sandbox measured.
    @Test func aChildContextIsBuiltInTheChildsSandbox() async throws {
        let root = ScriptedModel { messages in
            let first = messages.count > 1 ? messages[1].content : ""
            if first.contains("child question") {
                let described = messages[0].content.contains("`context` is a list of 3 items")
                return messages.count == 2
                    ? "```repl\nprint(sum(len(x) for x in context), \(described ? "'described'" : "'not described'"))\n```"
                    : "FINAL(\(messages.last?.content.contains("6 described") == true ? "child ok" : "child bad"))"
            }
            if messages.count == 2 {
                return "```repl\nprint(rlm_query('child question', context=['a', 'bb', 'ccc']))\n```"
            }
            return "FINAL(\(messages.last?.content.contains("child ok") == true ? "ok" : "bad"))"
        }
        let result = try await engine(root: root).run(query: "parent question", context: .text("whole"))
        #expect(result.answer == "ok")
    }

    @Test func rlmQueryAtMaxDepthIsAPlainQuery() async throws {
        let sub = ScriptedModel(name: "sub") { messages in "plain: \(messages.last?.content ?? "")" }
        let root = ScriptedModel(replies: ["```repl\nprint(rlm_query('q2', context='ctx'))\n```", "FINAL(x)"])
        _ = try await engine(root: root, sub: sub, budget: Budget(maxDepth: 0)).run(query: "q", context: .text("c"))
        #expect(sub.requests.count == 1)
        #expect(root.requests[1].last?.content.contains("plain: q2") == true)
        #expect(root.requests[1].last?.content.contains("ctx") == true)
    }

    @Test func oversizedSubcallPromptReturnsAnErrorString() async throws {
        let sub = ScriptedModel(name: "sub", contextWindow: 2048) { _ in "should not be called" }
        let root = ScriptedModel(replies: ["```repl\nr = llm_query(context)\nprint(r[:60])\n```", "FINAL(ok)"])
        let result = try await engine(root: root, sub: sub).run(
            query: "q", context: .text(String(repeating: "word ", count: 10_000)))
        #expect(result.answer == "ok")
        #expect(sub.requests.isEmpty)
        #expect(root.requests[1].last?.content.contains("Error: this prompt is about") == true)
    }

    @Test func iterationsRunOutWithALastUserRequest() async throws {
        let root = ScriptedModel(replies: (0..<3).map { "```repl\nprint(\($0))\n```" } + ["no idea"])
        let result = try await engine(root: root, budget: Budget(maxIterations: 3)).run(query: "q", context: .text("c"))
        #expect(result.answer == nil)
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected budget exhaustion, got \(result.status)")
            return
        }
        #expect(reason.limit == .iterations)
        #expect(root.requests.count == 4)
        #expect(root.requests[3].last?.role == .user)
        #expect(root.requests[3].last?.content.contains("no steps left") == true)
        #expect(result.usage.tokens.totalTokens > 0)
    }

    @Test func lastChanceAnswerCounts() async throws {
        let root = ScriptedModel(replies: ["```repl\nprint(1)\n```", "FINAL(late)"])
        let result = try await engine(root: root, budget: Budget(maxIterations: 1)).run(query: "q", context: nil)
        #expect(result.answer == "late")
    }

    @Test func costBudgetRefusesCallsBeforeTheyOvershoot() async throws {
        let sub = ScriptedModel(name: "sub", delay: .milliseconds(20)) { _ in "x" }
        let root = ScriptedModel(replies: [
            "```repl\nfor i in range(1000):\n    r = llm_query(f'call {i}')\nprint(r)\n```", "FINAL(done)",
        ])
        let result = try await engine(root: root, sub: sub, budget: Budget(maxCostUSD: 0.01)) {
            $0.cost = { model, _ in model == "sub" ? 0.001 : 0 }
        }.run(query: "q", context: .text("c"))
        // Each call reserves its cost first: the ones that would cross the budget are never sent, and the cell
        // reads why instead.
        #expect(result.usage.costUSD <= 0.01 + 1e-9, "spent \(result.usage.costUSD)")
        #expect(sub.requests.count <= 10)
        #expect(sub.requests.count >= 9)
        let shown = root.requests.last?.last?.content ?? ""
        #expect(shown.contains("was not sent"), "\(shown.prefix(300))")
    }

    @Test func subcallBudgetAndWallTimeAreEnforced() async throws {
        let sub = ScriptedModel(name: "sub") { _ in "x" }
        let root = ScriptedModel(replies: ["```repl\nllm_query_batched(['a'] * 50)\n```", "FINAL(never)"])
        let result = try await engine(root: root, sub: sub, budget: Budget(maxSubcalls: 10)).run(
            query: "q", context: nil)
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected budget exhaustion")
            return
        }
        #expect(reason.limit == .subcalls)

        let slow = ScriptedModel(replies: ["```repl\nimport time\ntime.sleep(30)\n```", "FINAL(never)"])
        let clock = ContinuousClock()
        let start = clock.now
        let timed = try await engine(root: slow, budget: Budget(maxWallTime: .seconds(1))).run(
            query: "q", context: nil)
        #expect(clock.now - start < .seconds(15), "the 1 s budget, not the 30 s cell")
        guard case .budgetExhausted(let wall) = timed.status else {
            Issue.record("expected wall-time exhaustion")
            return
        }
        #expect(wall.limit == .wallTime)
    }

    @Test func consecutiveErrorsStopTheRun() async throws {
        let root = ScriptedModel(replies: (0..<10).map { "```repl\n1/0  # attempt \($0)\n```" })
        let result = try await engine(root: root, budget: Budget(maxConsecutiveErrors: 3)).run(
            query: "q", context: nil)
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected exhaustion")
            return
        }
        #expect(reason.limit == .consecutiveErrors)
        #expect(root.requests.count == 3)
    }

    @Test func confirmModeAsksAgainWhenCodeAndAnswerComeTogether() async throws {
        let root = ScriptedModel(replies: ["```repl\nprint(len(context))\n```\nFINAL(999)", "FINAL(4)"])
        let result = try await engine(root: root) { $0.confirmAnswersWrittenWithCode = true }
            .run(query: "q", context: .text("abcd"))
        #expect(result.answer == "4")
        let eager = ScriptedModel(replies: ["```repl\nprint(len(context))\n```\nFINAL(999)"])
        #expect(try await engine(root: eager).run(query: "q", context: .text("abcd")).answer == "999")
    }

    @Test func sessionsKeepStateAndHistoryAcrossQuestions() async throws {
        let root = ScriptedModel(replies: [
            "```repl\ncounted = len(context.split())\nprint(counted)\n```", "FINAL(3)",
            "```repl\nprint(counted * 2)\n```", "FINAL(6)",
        ])
        var configuration = RLMConfiguration(rootModel: root, sandbox: sandboxForTests())
        configuration.cellTimeout = .seconds(20)
        let session = RLMSession(configuration: configuration, context: .text("one two three"))
        let first = try await session.ask("How many words?")
        let second = try await session.ask("And twice that?")
        await session.close()
        #expect(first.answer == "3")
        #expect(second.answer == "6")
        // The follow-up request carries the earlier exchange.
        let last = try #require(root.requests.last)
        #expect(last.contains { $0.content.contains("How many words?") })
        #expect(last.contains { $0.content == "FINAL(3)" })
    }

    @Test func historyIsTrimmedToTheWindow() {
        var messages: [ChatMessage] = [.system("s"), .user("first question")]
        for i in 0..<50 {
            messages.append(.assistant("reply \(i) " + String(repeating: "x", count: 3000)))
            messages.append(.user("output \(i) " + String(repeating: "y", count: 3000)))
        }
        let fitted = RLMLoop.fit(messages, windowTokens: 8192, reserveTokens: 1024)
        #expect(fitted.reduce(0) { $0 + estimateTokens($1.content) } < 7200)
        #expect(fitted[0].role == .system)
        #expect(fitted[1].content.hasPrefix("first question"))
        #expect(fitted.last?.content.hasPrefix("output 49") == true)
        for (a, b) in zip(fitted.dropFirst(), fitted.dropFirst(2)) { #expect(a.role != b.role) }
    }

    @Test func repeatedCodeIsNotRunAgainAndEndsTheLoopEarly() async throws {
        let same = "```repl\nprint('counting')\n```"
        let root = ScriptedModel(replies: [same, same, same, "FINAL(7)"])
        let result = try await engine(root: root).run(query: "q", context: .text("c"))
        #expect(result.answer == "7")
        #expect(root.requests.count == 4)
        #expect(root.requests[2].last?.content.contains("You already ran exactly this code") == true)
        #expect(root.requests[3].last?.content.contains("no steps left") == true)
    }

    @Test func bareLastAnswerInTheWrongCaseIsUnwrapped() async throws {
        let root = ScriptedModel(replies: ["```repl\nprint(1)\n```", "Final(11)"])
        let result = try await engine(root: root, budget: Budget(maxIterations: 1)) { $0.acceptBareLastAnswer = true }
            .run(query: "q", context: nil)
        #expect(result.answer == "11")
    }

    @Test func bareWordFinalInCodeIsTheAnswer() async throws {
        let root = ScriptedModel(replies: ["```repl\nFINAL(QX-17)\n```"])
        // `QX-17` parses as `QX - 17`: NameError for QX; the model meant the text.
        #expect(try await engine(root: root).run(query: "q", context: nil).answer == "QX-17")
        let word = ScriptedModel(replies: ["```repl\nFINAL(tk_9b2cfa04e7ba)\n```"])
        #expect(try await engine(root: word).run(query: "q", context: nil).answer == "tk_9b2cfa04e7ba")
    }

    @Test func documentsContextIsAList() async throws {
        let root = ScriptedModel(replies: ["```repl\nFINAL(f'{type(context).__name__} {len(context)}')\n```"])
        let result = try await engine(root: root).run(query: "q", context: .documents(["a", "b"]))
        #expect(result.answer == "list 2")
        #expect(root.requests[0][0].content.contains("list of 2 str documents"))
    }
}
