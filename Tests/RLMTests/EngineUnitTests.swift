import Foundation
import RLMTesting
import Synchronization
import Testing

@testable import RLM

/// The engine with the scripted model and the in-memory sandbox: loop, answers, sub-model routing and cost, with no
/// bubblewrap, no Python and no HTTP.
@Suite("Engine (in-memory sandbox)")
struct EngineUnitTests {
    /// A cell script that performs the sub-call encoded in the code (`CALL kind model prompt`) and reports the reply
    /// as the cell's output, or sets the final answer for `FINAL x`.
    static func interpreter() -> InMemorySandbox {
        InMemorySandbox { cell in
            let words = cell.code.split(separator: " ", maxSplits: 3).map(String.init)
            switch words.first {
            case "FINAL": return CellResult(finalAnswer: words.dropFirst().joined(separator: " "))
            case "LLM":
                let model = words[1] == "-" ? nil : words[1]
                let reply = try await cell.subcall(.llmQuery(prompt: words[2], model: model))
                guard case .text(let text) = reply else { return CellResult(stdout: "bad reply") }
                return CellResult(stdout: text + "\n")
            case "BATCH":
                let model = words[1] == "-" ? nil : words[1]
                let reply = try await cell.subcall(.llmQueryBatched(prompts: [words[2], words[2]], model: model))
                guard case .batch(let texts) = reply else { return CellResult(stdout: "bad reply") }
                return CellResult(stdout: texts.joined(separator: "|") + "\n")
            case "RLM":
                let model = words[1] == "-" ? nil : words[1]
                let reply = try await cell.subcall(.rlmQuery(prompt: words[2], context: nil, model: model))
                guard case .text(let text) = reply else { return CellResult(stdout: "bad reply") }
                return CellResult(stdout: text + "\n")
            default:
                return CellResult(stdout: "ran: \(cell.code)\n")
            }
        }
    }

    static func fence(_ code: String) -> String { "```repl\n\(code)\n```" }

    @Test func answersFromAFinalSetInACell() async throws {
        let root = ScriptedModel(replies: [Self.fence("FINAL 42")])
        let sandbox = Self.interpreter()
        let result = try await RLMEngine(configuration: RLMConfiguration(rootModel: root, sandbox: sandbox))
            .run(query: "q", context: .text("ctx"))
        #expect(result.answer == "42")
        #expect(result.iterations == 1)
        #expect(sandbox.cellsRun == ["FINAL 42"])
        #expect(sandbox.liveSessions == 0, "the engine shuts its session down")
    }

    @Test func aDeclaredModelReceivesTheCallAndAnUndeclaredOneNothing() async throws {
        let root = ScriptedModel(
            name: "root",
            replies: [
                Self.fence("LLM judge is-it-spam"), Self.fence("LLM ghost is-it-spam"), Self.fence("LLM - plain"),
                "FINAL(done)",
            ])
        let judge = ScriptedModel(name: "judge") { _ in "judge says yes" }
        let sub = ScriptedModel(name: "sub") { _ in "sub says hi" }
        var configuration = RLMConfiguration(rootModel: root, subModel: sub, sandbox: Self.interpreter())
        configuration.callableModels = ["root": root, "sub": sub, "judge": judge]
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == "done")
        #expect(judge.requests.count == 1)
        #expect(judge.requests.first?.last?.content == "is-it-spam")
        #expect(sub.requests.count == 1, "model=None goes to the sub-model")
        let outputs = root.requests.dropFirst().compactMap { $0.last?.content }
        #expect(outputs.contains { $0.contains("judge says yes") })
        let refusal = try #require(outputs.first { $0.contains("'ghost'") })
        #expect(refusal.contains("not declared"))
        #expect(refusal.contains("'judge'"))
        #expect(result.usage.subcalls == 2, "a refused call is not a sub-call")
    }

    @Test func batchedAndRecursiveCallsHonourTheModelName() async throws {
        // A batch to `judge`, then an rlm_query whose child RLM `judge` drives, then the answer.
        let root = ScriptedModel(
            name: "root", replies: [Self.fence("BATCH judge x"), Self.fence("RLM judge child-question"), "FINAL(ok)"])
        let judge = ScriptedModel(name: "judge") { messages in
            messages.contains { $0.role == .system } ? "FINAL(from-judge-child)" : "J"
        }
        var configuration = RLMConfiguration(
            rootModel: root, sandbox: Self.interpreter(), budget: Budget(maxIterations: 5, maxDepth: 1))
        configuration.callableModels = ["judge": judge]
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == "ok")
        let outputs = root.requests.compactMap { $0.last?.content }
        #expect(outputs.contains { $0.contains("J|J") }, "the batch went to judge")
        #expect(outputs.contains { $0.contains("from-judge-child") }, "the child RLM was driven by judge")
        #expect(judge.requests.count == 3)
    }

    @Test func everyModelIsCountedAtItsOwnPrice() async throws {
        let root = ScriptedModel(name: "root", reportedCostUSD: 0.5) { messages in
            messages.contains { $0.role == .assistant } ? "FINAL(x)" : Self.fence("LLM cheap hi")
        }
        let cheap = ScriptedModel(name: "cheap", reportedCostUSD: 0.01) { _ in "ok" }
        var configuration = RLMConfiguration(rootModel: root, sandbox: Self.interpreter())
        configuration.callableModels = ["cheap": cheap]
        configuration.cost = { _, _ in 1000 }  // never used: both models report their cost
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == "x")
        #expect(abs(result.usage.costUSD - (0.5 + 0.5 + 0.01)) < 1e-9)
    }

    @Test func aModelWithoutAReportedCostIsPricedByTheTable() async throws {
        let root = ScriptedModel(name: "root") { messages in
            guard messages.contains(where: { $0.role == .system }) else { return "sub-call reply" }
            return messages.contains { $0.role == .assistant } ? "FINAL(x)" : Self.fence("LLM - hi")
        }
        var configuration = RLMConfiguration(rootModel: root, sandbox: Self.interpreter())
        let seen = Mutex<[String]>([])
        configuration.cost = { model, _ in
            seen.withLock { $0.append(model) }
            return 0.25
        }
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(abs(result.usage.costUSD - 0.75) < 1e-9)
        #expect(seen.withLock { $0 } == ["root", "root", "root"])
    }

    @Test func iterationsRunOutWithoutAnAnswer() async throws {
        let root = ScriptedModel(name: "root") { _ in Self.fence("print(1)") }
        let configuration = RLMConfiguration(
            rootModel: root, sandbox: Self.interpreter(), budget: Budget(maxIterations: 2))
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == nil)
        guard case .budgetExhausted(let reason) = result.status else {
            Issue.record("expected a spent budget, got \(result.status)")
            return
        }
        #expect(reason.limit == .iterations)
    }

    @Test func aTimedOutCellTellsTheModelItTimedOut() async throws {
        let root = ScriptedModel(name: "root", replies: [Self.fence("while True: pass"), "FINAL(ok)"])
        let sandbox = InMemorySandbox { _ in
            CellResult(
                error: CellError(
                    type: "TimeoutError", message: "the cell ran past its 1 s timeout and was interrupted",
                    traceback: "Traceback (most recent call last):\nKeyboardInterrupt\n"),
                timedOut: true)
        }
        _ = try await RLMEngine(configuration: RLMConfiguration(rootModel: root, sandbox: sandbox))
            .run(query: "q", context: nil)
        let shown = root.requests.last?.last?.content ?? ""
        #expect(shown.contains("KeyboardInterrupt"))
        #expect(shown.contains("ran past its 1 s timeout"), "\(shown)")
    }

    @Test func rlmQueryWithAnUndeclaredModelIsRefusedAndStartsNothing() async throws {
        let root = ScriptedModel(name: "root", replies: [Self.fence("RLM ghost hello"), "FINAL(done)"])
        let sandbox = Self.interpreter()
        var configuration = RLMConfiguration(rootModel: root, sandbox: sandbox)
        configuration.callableModels = ["root": root]
        let result = try await RLMEngine(configuration: configuration).run(query: "q", context: nil)
        #expect(result.answer == "done")
        #expect(sandbox.sessionsStarted == 1, "no child sandbox for a refused model")
        #expect(root.requests.count == 2)
        #expect(root.requests.last?.last?.content.contains("'ghost' is not declared") == true)
    }
}

/// The pure parts of the small-model helps: which strings a cell searched for, when a step found nothing, and when
/// an answer is backed by output.
@Suite("Small-model helps (pure)")
struct SmallModelHelpUnitTests {
    @Test func searchLiteralsAreTheQuotedStringsLongestFirst() {
        let code = #"""
            hits = [l for l in context.splitlines() if "status=503" in l and 'svc-7' in l]
            data = open('x', encoding="utf-8")
            print(f"found {len(hits)} for svc")
            print("\n")
            """#
        #expect(ContextProbe.searchLiterals(in: code) == ["found for svc", "status=503", "svc-7"])
    }

    @Test(arguments: [
        ("0\n", true), ("[]", true), ("Count: 0\n[]\n", true), ("", true), ("None", true), ("total = 0.0", true),
        ("3", false), ("['a']", false), ("0\n5", false),
    ])
    func foundNothingReadsEmptyOutputs(stdout: String, empty: Bool) {
        #expect(ContextProbe.foundNothing([CellResult(stdout: stdout)]) == empty)
    }

    @Test func aSilentSetupCellFoundNothingOnlyIfItWasAskedToPrint() {
        let silent = CellResult(stdout: "")
        #expect(!ContextProbe.foundNothing([silent], code: ["rows = [l for l in context.splitlines()]"]))
        #expect(
            ContextProbe.foundNothing([silent], code: ["for l in context.splitlines():\n    if 'x' in l: print(l)"]))
    }

    @Test func foundNothingReadsTheErrorsOfAnEmptySelection() {
        let index = CellResult(error: CellError(type: "IndexError", message: "list index out of range"))
        let empty = CellResult(error: CellError(type: "ValueError", message: "max() arg is an empty sequence"))
        let syntax = CellResult(error: CellError(type: "SyntaxError", message: "invalid syntax"))
        #expect(ContextProbe.foundNothing([index]))
        #expect(ContextProbe.foundNothing([empty]))
        #expect(!ContextProbe.foundNothing([syntax]))
        #expect(!ContextProbe.foundNothing([]))
    }

    @Test(arguments: [
        ("243776", ["total: 243776.0"], true), ("12.35", ["12.3456"], true), ("12.4", ["12.3456"], false),
        ("$1,024", ["1024"], true), ("42 lines", ["found 42"], true), ("7", ["svc-7 ERROR"], false),
        ("tk_9b2c", ["key=TK_9B2C"], true), ("invented", ["nothing here"], false),
        ("a, b and c", ["a\nb\nc"], false), ("a, b, c", ["c b a"], true), ("", ["x"], false),
    ])
    func answerSupport(answer: String, outputs: [String], supported: Bool) {
        #expect(AnswerSupport.isSupported(answer, by: outputs) == supported)
    }
}

/// What a question names, and the two checks on it.
@Suite("Question terms")
struct QuestionTermsTests {
    @Test func termsAreIdsPathsNumbersQuotedValuesAndUpperCaseWords() {
        #expect(
            QuestionTerms.terms(of: "How many requests to /api/payments returned status 503?")
                == ["/api/payments", "503"])
        #expect(
            QuestionTerms.terms(
                of: #"What is the average `payment.amount` of records with status "shipped", rounded to 2 decimals?"#)
                == ["payment.amount", "shipped"])
        #expect(QuestionTerms.terms(of: "How many ERROR lines for svc-7?") == ["ERROR", "svc-7"])
        #expect(QuestionTerms.terms(of: "Which ticket says the package was lost?") == [])
    }

    @Test func untestedTermsAreThoseNoCodeMentions() {
        let terms = ["/api/payments", "503", "payment.amount"]
        let code = #"hits = [l for l in context.splitlines() if "503" in l and r["payment"]["amount"] > 0]"#
        #expect(QuestionTerms.untested(terms, in: code) == ["/api/payments"])
        #expect(QuestionTerms.untested(terms, in: code + #" and "payments" in l"#) == [])
    }

    @Test func textThatLowercasesLongerDoesNotBreakTheNearMissSearch() {
        // "İ" lowercases to two scalars: indices of a lowercased copy would run past the original.
        let output = String(repeating: "İ", count: 50) + " svc-1x and SVC-1 İİ svc-12"
        let misses = QuestionTerms.nearMisses(of: ["svc-1"], in: output)
        #expect(misses.first?.seen == ["svc-1x", "svc-12"])
    }

    @Test func formatWordsAndAbbreviationsAreNoTerms() {
        #expect(QuestionTerms.terms(of: "In the JSON and CSV files (e.g. the API log), how many U.S orders?") == [])
    }

    @Test func theHelpsAreOffInTheLibraryAndOnForSmallModels() {
        var configuration = RLMConfiguration(
            rootModel: ScriptedModel(replies: []), sandbox: InMemorySandbox(results: []))
        #expect(!configuration.describeContextFormat && !configuration.showLinesWhenNothingFound)
        #expect(!configuration.refuseUnsupportedAnswers && !configuration.checkQuestionTerms)
        #expect(configuration.resampleTemperature == nil)
        configuration.tuneForSmallModels()
        #expect(configuration.refuseUnsupportedAnswers && configuration.checkQuestionTerms)
        #expect(configuration.resampleTemperature == 0.8)
    }

    @Test func conditionsCopiedFromTheOutputAreThoseTheQuestionNeverNames() {
        let previous = #"hits = [l for l in lines if "status=503" in l and "/api/pay" in l]"#
        let output = #"['... path=/api/pay status=503 msg="circuit breaker open"']"#
        let next =
            #"hits = [l for l in lines if "status=503" in l and "/api/pay" in l and "circuit breaker open" in l]"#
        let question = "How many requests to /api/pay returned 503?"
        #expect(
            QuestionTerms.copiedConditions(in: next, previousCode: previous, previousOutput: output, question: question)
                == ["circuit breaker open"])
        let asked = #"hits = [l for l in lines if "status=503" in l and "/api/pay" in l and "breaker" in l]"#
        #expect(
            QuestionTerms.copiedConditions(
                in: asked, previousCode: previous, previousOutput: output, question: "How many breaker errors?"
            ).isEmpty)
    }

    @Test func aCapitalizedLiteralSearchedInLowercasedTextIsACaseMismatch() {
        let mismatch = ContextProbe.caseMismatch(in: #"n = sum(1 for d in context if "Redis" in d.lower())"#)
        #expect(mismatch?.literal == "Redis" && mismatch?.fixed == "redis")
        #expect(ContextProbe.caseMismatch(in: #"n = sum(1 for d in context if "redis" in d.lower())"#) == nil)
        #expect(ContextProbe.caseMismatch(in: #"n = sum(1 for d in context if "ERROR" in d)"#) == nil)
        #expect(ContextProbe.caseMismatch(in: #"n = [d for d in context if "error" in d.upper()]"#)?.fixed == "ERROR")
    }

    @Test func nearMissesAreLongerNamesTheOutputHolds() {
        let output = """
            the access token for tenant initech-3530 is tk_1
            the access token for tenant initech-353 is tk_2
            svc-10 ERROR x-initech-353
            """
        let misses = QuestionTerms.nearMisses(of: ["initech-353", "svc-1", "503"], in: output)
        #expect(misses.map(\.term) == ["initech-353", "svc-1"])
        #expect(misses.first?.seen == ["initech-3530", "x-initech-353"])
        #expect(QuestionTerms.nearMisses(of: ["initech-353"], in: "tenant initech-353 is tk_2").isEmpty)
    }
}
