import Foundation
import RLM
import RLMSandbox
import RLMTesting
import Synchronization
import Testing

@testable import RLMTasks

@Suite("Bench runner", .serialized)
struct RunnerTests {
    static let counting = TaskSuite.countingTask(
        seed: 5, sizeBytes: 30_000, question: .levelForService(level: "INFO", service: "svc-7"))
    static let needle = TaskSuite.task(seed: 5, index: 1, kind: .needle, sizeBytes: 30_000)

    static func isBaseline(_ messages: [ChatMessage]) -> Bool {
        messages.count == 2 && messages[1].content.hasPrefix("The text")
    }

    /// A model that writes correct code for the two test tasks, and answers the baseline with a shrug.
    static func competentModel(window: Int? = nil) -> ScriptedModel {
        ScriptedModel(contextWindow: window) { messages in
            if isBaseline(messages) { return "I cannot tell from this excerpt." }
            let question = messages[1].content
            let turn = messages.filter { $0.role == .assistant }.count
            if question.contains("How many INFO lines") {
                if turn == 0 {
                    return #"""
                        Let me count the matching lines.
                        ```repl
                        import re
                        hits = [l for l in context.splitlines() if re.match(r"^\S+ INFO svc-7 ", l)]
                        print(len(hits))
                        ```
                        """#
                }
                let output = messages.last?.content ?? ""
                return "FINAL(\(capture(#"```text\n(\d+)"#, in: output) ?? "?"))"
            }
            return #"""
                ```repl
                import re
                q = "\#(needle.query)"
                m = re.match(r"What is the (.+) for (\w+) (\S+)\?", q)
                found = re.search("the %s for %s %s is ([A-Za-z0-9_-]+)" % (m.group(1), m.group(2), re.escape(m.group(3))), context)
                FINAL(found.group(1))
                ```
                """#
        }
    }

    static func configuration(_ model: any LanguageModel) -> RLMConfiguration {
        var configuration = RLMConfiguration(
            rootModel: model, sandbox: sandboxForTests(), budget: Budget(maxIterations: 4))
        configuration.cellTimeout = .seconds(20)
        configuration.cost = { _, usage in Double(usage.totalTokens) / 1_000_000 }
        return configuration
    }

    @Test func runsTasksEndToEndThroughTheEngine() async throws {
        let model = Self.competentModel(window: 4_000)
        let runner = BenchRunner(configuration: Self.configuration(model))
        let calls = Mutex([String]())
        let observer = BenchRunner.Observer(
            started: { task, method, index, total in
                calls.withLock { $0.append("start \(index + 1)/\(total) \(task.id) \(method.rawValue)") }
            },
            finished: { task, outcome in
                calls.withLock { $0.append("done \(task.id) \(outcome.method.rawValue) \(outcome.correct)") }
            })
        let report = try await runner.run([Self.counting, Self.needle], observer: observer)

        #expect(report.tasks.count == 2)
        let counting = try #require(report.tasks[0].rlm)
        #expect(counting.correct, "\(counting)")
        #expect(counting.predicted == Self.counting.answer)
        #expect(Int(Self.counting.answer) ?? 0 > 0)
        #expect(counting.iterations == 2)
        #expect(counting.status == .answered)
        #expect(counting.inputTokens > 0 && counting.outputTokens > 0)
        #expect(counting.costUSD > 0)
        let needle = try #require(report.tasks[1].rlm)
        #expect(needle.correct, "\(needle)")
        #expect(needle.iterations == 1)
        for task in report.tasks {
            let baseline = try #require(task.baseline)
            #expect(!baseline.correct)
            #expect(baseline.status == .answered)
            #expect(baseline.iterations == nil)
            #expect(baseline.detail?.contains("saw the first") == true)
        }

        let summaries = report.summaries
        #expect(summaries.map(\.method) == [.rlm, .baseline])
        #expect(summaries[0].correct == 2 && summaries[0].tasks == 2 && summaries[0].accuracy == 1)
        #expect(summaries[1].correct == 0 && summaries[1].costPerCorrectUSD == nil)
        #expect(summaries[0].costPerCorrectUSD == summaries[0].costUSD / 2)
        #expect(summaries[0].totalTokens == counting.totalTokens + needle.totalTokens)

        let table = report.table()
        #expect(table.contains("2/2 (100%)"))
        #expect(table.contains("0/2 (0%)"))
        #expect(table.contains(Self.counting.id))
        let decoded = try JSONDecoder().decode(BenchReport.self, from: report.json())
        #expect(decoded == report)
        let json = String(decoding: try report.json(), as: UTF8.self)
        #expect(json.contains("\"summaries\""))
        #expect(json.contains("\"cost_per_correct_usd\""))
        // Per kind: counting and needle, each method with its median time and tokens.
        let byKind = report.byKind
        #expect(byKind.map(\.kind) == [Self.counting.kind, Self.counting.kind, Self.needle.kind, Self.needle.kind])
        #expect(byKind[0].summary.correct == 1 && byKind[0].summary.tasks == 1)
        #expect(byKind[0].summary.medianTokens == Double(counting.totalTokens))
        #expect(byKind[0].summary.medianWallSeconds == counting.wallSeconds)
        #expect(json.contains("\"by_kind\"") && json.contains("\"median_wall_seconds\""))
        #expect(table.contains("median time"))

        #expect(
            calls.withLock { $0 } == [
                "start 1/2 \(Self.counting.id) rlm", "done \(Self.counting.id) rlm true",
                "start 1/2 \(Self.counting.id) baseline", "done \(Self.counting.id) baseline false",
                "start 2/2 \(Self.needle.id) rlm", "done \(Self.needle.id) rlm true",
                "start 2/2 \(Self.needle.id) baseline", "done \(Self.needle.id) baseline false",
            ])
        // The baseline's single request fit the 4,000-token window (3 bytes a token) with room for the reply.
        let baselineRequests = model.requests.filter(Self.isBaseline)
        #expect(baselineRequests.count == 2)
        for request in baselineRequests {
            let bytes = request.reduce(0) { $0 + $1.content.utf8.count }
            #expect(bytes <= (4_000 - 256) * 3, "\(bytes) bytes")
            #expect(bytes >= 8_000, "\(bytes) bytes: most of the window is used")
            #expect(request[1].content.hasSuffix("Reply with the answer only."))
        }
    }

    @Test func baselineSeesTheHeadOfTheContextAndTheQuestion() {
        let documents = BenchTask(
            id: "d", kind: .aggregation, sizeBytes: 0, query: "Which customer?",
            context: .documents((0..<200).map { "### ORD-\($0)\nCustomer: C-\($0)\n" }), answer: "C-1",
            answerKind: .text)
        let prompt = BaselinePrompt(task: documents, windowTokens: 2_000, replyTokens: 256)
        let user = prompt.messages[1].content
        #expect(user.contains("### ORD-0\nCustomer: C-0\n\n### ORD-1\n"))
        #expect(!user.contains("ORD-199"))
        #expect(user.hasSuffix("Question: Which customer?\nReply with the answer only."))
        #expect(prompt.contextChars < prompt.totalChars)
        #expect(prompt.messages[0].role == .system)

        let small = BenchTask(
            id: "s", kind: .counting, sizeBytes: 5, query: "q?", context: .text("a\nb\n"), answer: "2",
            answerKind: .integer)
        let whole = BaselinePrompt(task: small, windowTokens: 8_192, replyTokens: 256)
        #expect(whole.contextChars == whole.totalChars)
        #expect(whole.note == "saw the whole context")
        let capped = BaselinePrompt(task: documents, windowTokens: 100_000, replyTokens: 256, maxContextChars: 100)
        #expect(capped.contextChars <= 100)
    }

    @Test func overflowRetriesWithLessContext() async throws {
        let sizes = Mutex([Int]())
        let model = ScriptedModel(contextWindow: 4_000) { messages in
            let size = messages[1].content.count
            sizes.withLock { $0.append(size) }
            if sizes.withLock({ $0.count }) < 3 { throw LLMError(.contextOverflow, "too long") }
            return "42"
        }
        var options = BenchRunner.Options()
        options.runRLM = false
        let runner = BenchRunner(configuration: Self.configuration(model), options: options)
        let report = try await runner.run([Self.counting])
        let seen = sizes.withLock { $0 }
        #expect(seen.count == 3)
        #expect(seen[1] < seen[0] && seen[2] < seen[1])
        #expect(report.tasks[0].baseline?.status == .answered)
    }

    @Test func timeoutsAndErrorsCountAsWrongAndTheRunGoesOn() async throws {
        let calls = Mutex(0)
        let model = ScriptedModel(delay: .milliseconds(50)) { _ in
            let call = calls.withLock { value in
                value += 1
                return value
            }
            if call == 2 { throw LLMError(.server, "the server fell over") }
            return "7"
        }
        let slow = ScriptedModel(delay: .seconds(60)) { _ in "7" }
        var options = BenchRunner.Options()
        options.runRLM = false
        options.taskTimeout = .milliseconds(300)
        let clock = ContinuousClock()
        let start = clock.now
        let timedOut = try await BenchRunner(configuration: Self.configuration(slow), options: options).run([
            Self.counting, Self.needle,
        ])
        #expect(clock.now - start < .seconds(20), "the 300 ms timeout, not the 60 s model")
        #expect(timedOut.tasks.map { $0.baseline?.status } == [.timeout, .timeout])
        #expect(timedOut.tasks.allSatisfy { $0.baseline?.correct == false })

        let mixed = try await BenchRunner(configuration: Self.configuration(model), options: options).run([
            Self.counting, Self.needle, Self.counting,
        ])
        #expect(mixed.tasks.map { $0.baseline?.status } == [.answered, .error, .answered])
        #expect(mixed.tasks[1].baseline?.detail?.contains("fell over") == true)
        #expect(mixed.summaries[0].tasks == 3)
    }

    @Test func anRLMRunPastItsTimeoutIsStoppedAndCounted() async throws {
        let model = ScriptedModel(delay: .seconds(60)) { _ in "```repl\nprint(1)\n```" }
        var options = BenchRunner.Options()
        options.runBaseline = false
        options.taskTimeout = .milliseconds(800)
        let clock = ContinuousClock()
        let start = clock.now
        let report = try await BenchRunner(configuration: Self.configuration(model), options: options).run([
            Self.counting
        ])
        #expect(clock.now - start < .seconds(20), "the 800 ms timeout, not the 60 s model")
        let outcome = try #require(report.tasks[0].rlm)
        #expect(outcome.status == .timeout)
        #expect(!outcome.correct)
        #expect(report.tasks[0].baseline == nil)
        #expect(report.summaries.map(\.method) == [.rlm])
    }

    @Test func credentialErrorsStopTheRun() async throws {
        let model = ScriptedModel { _ in throw LLMError(.unauthorized, "bad key") }
        var options = BenchRunner.Options()
        options.runRLM = false
        await #expect(throws: LLMError.self) {
            _ = try await BenchRunner(configuration: Self.configuration(model), options: options).run([Self.counting])
        }
    }
}

@Suite("Bench report medians")
struct BenchMedianTests {
    @Test func theMedianIsTheMiddleValueOrTheMeanOfTheTwoMiddleOnes() {
        #expect(MethodSummary.median([]) == 0)
        #expect(MethodSummary.median([5]) == 5)
        #expect(MethodSummary.median([9, 1, 5]) == 5)
        #expect(MethodSummary.median([4, 1, 10, 2]) == 3)
    }
}
