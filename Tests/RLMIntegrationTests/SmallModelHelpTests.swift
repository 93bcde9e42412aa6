import Foundation
import RLM
import RLMSandbox
import RLMTesting
import Testing

@testable import RLM

/// What the engine does for a model that cannot see the data's form or sticks to a guess, through the real sandbox:
/// the format probe, the real lines shown when a search finds nothing, the refusal of an answer no output shows, and
/// the hotter second try of a stuck reply.
@Suite("Engine helps for small models", .serialized, .noSandboxLeftBehind)
struct SmallModelHelpTests {
    static let records = (0..<400).map { i in
        let country = ["NO", "SE", "DE"][i % 3]
        let shipping = i % 5 == 0 ? "" : #", "shipping": {"country": "\#(country)", "express": \#(i % 2 == 0)}"#
        return #"{"id": "r-\#(i)", "status": "\#(["open", "closed"][i % 2])", "items": [{"sku": "A\#(i % 9)", "#
            + #""qty": \#(i % 4 + 1)}]\#(shipping), "total": \#(Double(i) * 1.5)}"#
    }
    .joined(separator: "\n")

    static let csv =
        "order_id,customer,amount,note\n"
        + (0..<300).map { i in "\(i),C-\(i % 40),\(Double(i) / 4),\"late, again\"" }.joined(separator: "\n")

    static let log = (0..<600).map { i in
        "2026-11-21T10:00:\(i % 60)Z \(["INFO", "WARN", "ERROR"][i % 3]) svc-\(i % 4) req=\(i) "
            + "method=\(["GET", "POST"][i % 2]) path=/api/\(["cart", "pay"][i % 2]) status=\([200, 503][i % 2])"
    }
    .joined(separator: "\n")

    /// The first request of a run whose model answers at once; the probe ran before it.
    func firstPrompt(for context: ContextValue) async throws -> String {
        let root = ScriptedModel(replies: ["FINAL(x)"])
        _ = try await engine(root: root) { $0.describeContextFormat = true }.run(query: "q", context: context)
        return try #require(root.requests.first?.last?.content)
    }

    @Test func jsonLinesAreDescribedWithNestedPathsValuesAndHowToParse() async throws {
        let prompt = try await firstPrompt(for: .text(Self.records))
        #expect(prompt.contains("JSON lines"))
        #expect(prompt.contains("shipping.country"))
        #expect(prompt.contains(#""NO""#) && prompt.contains(#""DE""#))
        #expect(prompt.contains("missing in 20% of records"))
        #expect(prompt.contains("items[].qty: int"))
        #expect(prompt.contains("json.loads(l) for l in context.splitlines()"))
        #expect(prompt.contains(#"r["shipping"]["country"]"#))
    }

    @Test func theQuestionsTermsAreShownInTheFormTheDataGivesThem() async throws {
        let root = ScriptedModel(replies: ["FINAL(x)"])
        _ = try await engine(root: root) { $0.describeContextFormat = true }
            .run(query: "How many requests to /api/pay returned 503 for SVC-2 or svc-9?", context: .text(Self.log))
        let prompt = try #require(root.requests.first?.last?.content)
        #expect(prompt.contains("/api/pay: as path=/api/pay (300 times)"), "\(prompt)")
        #expect(prompt.contains("503: as status=503 (300 times)"))
        #expect(prompt.contains("SVC-2: not as written; only in another case, as svc-2"))
        #expect(prompt.contains("svc-9: nowhere as written, in any case"))
    }

    @Test func csvIsDescribedByItsHeaderAndColumns() async throws {
        let prompt = try await firstPrompt(for: .text(Self.csv))
        #expect(prompt.contains("CSV (comma-separated)"))
        #expect(prompt.contains("amount: number"))
        #expect(prompt.contains(#"note: always "late, again""#))
        #expect(prompt.contains("csv.DictReader(io.StringIO(context))"))
    }

    @Test func logLinesShowTheirKeysAndFewValuedWordsExactly() async throws {
        let prompt = try await firstPrompt(for: .text(Self.log))
        #expect(prompt.contains("Lines of key=value fields; those with few values:"))
        #expect(prompt.contains("word 2 is"))
        #expect(prompt.contains("ERROR") && prompt.contains("WARN"))
        #expect(prompt.contains("status=200, 503") || prompt.contains("status=503, 200"))
    }

    @Test func aFolderShowsItsFileTypesAndEachFilesFormat() async throws {
        let prompt = try await firstPrompt(
            for: .documents(["### data/orders.csv\n" + Self.csv, "### data/events.jsonl\n" + Self.records]))
        #expect(prompt.contains("File types: 1 .csv, 1 .jsonl"))
        #expect(prompt.contains("context[0] (data/orders.csv"))
        #expect(prompt.contains(#"csv.DictReader(io.StringIO(context[0].split("\n", 1)[1]))"#))
        #expect(prompt.contains(#"context[1].split("\n", 1)[1].splitlines()"#))
    }

    @Test func documentsWithNamedFieldsListTheNamesAsWritten() async throws {
        let invoices = (0..<60).map { i in
            "### INV-\(i)\nClient: K-\(i % 7)\nStatus: \(["paid", "overdue"][i % 2])\nAmount due: $\(i).50\n\nThanks."
        }
        let prompt = try await firstPrompt(for: .documents(invoices))
        #expect(prompt.contains(#"Status: "paid", "overdue""#) || prompt.contains(#"Status: "overdue", "paid""#))
        #expect(prompt.contains("Amount due: money"))
        #expect(prompt.contains("Parse each document: for doc in context: f = dict("))
    }

    @Test func theProbeLeavesNoVariableBehindAndTheModelCodeStillRuns() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sorted(k for k in globals() if '_rlm_' in k))\n```", "FINAL(ok)",
        ])
        let result = try await engine(root: root) { $0.describeContextFormat = true }
            .run(query: "q", context: .text(Self.records))
        #expect(result.answer == "ok")
        let output = try #require(root.requests[1].last?.content)
        #expect(output.contains("[]"), "\(output)")
        #expect(root.requests[0].last?.content.contains("JSON lines") == true, "the probe ran")
    }

    @Test func aSearchThatFindsNothingIsShownTheRealLines() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nhits = [l for l in context.splitlines() if '[error]' in l and 'Svc-2' in l]\nprint(len(hits))\n```",
            "FINAL(0)",
        ])
        let result = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "How many errors for svc-2?", context: .text(Self.log))
        #expect(result.answer == "0")
        let shown = try #require(root.requests[1].last?.content)
        #expect(shown.contains("Your code found nothing"))
        #expect(shown.contains("'Svc-2' occurs only in another case or form"))
        #expect(shown.contains("ERROR svc-2"), "a real line, in its exact form")
        #expect(shown.contains("'[error]' occurs nowhere, in any case; lines with 'error'"))
    }

    @Test func aSearchedPhraseThatFindsNothingPointsAtQuestionsOfMeaning() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint([l for l in context.splitlines() if 'the cart was very slow' in l])\n```", "FINAL(0)",
        ])
        _ = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "q", context: .text(Self.log))
        let shown = try #require(root.requests[1].last?.content)
        #expect(shown.contains("The data does not use the question's wording (\"the cart was very slow\")"))
        #expect(shown.contains("lines with 'cart'"))
    }

    @Test func aWordOfTheQuestionTheDataNeverUsesPointsAtMeaningToo() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sum(1 for l in context.splitlines() if 'cart' in l and 'complaint' in l.lower()))\n```",
            "FINAL(0)",
        ])
        _ = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "How many cart requests are complaints?", context: .text(Self.log))
        let shown = try #require(root.requests[1].last?.content)
        #expect(shown.contains("The data does not use the question's wording (\"complaint\")"), "\(shown)")
        #expect(shown.contains("select candidates by a word it does use (such as \"cart\")"))
    }

    @Test func anIndexErrorOnAnEmptySelectionAlsoShowsLines() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint([l for l in context.splitlines() if 'status: 503' in l][0])\n```", "FINAL(0)",
        ])
        _ = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "q", context: .text(Self.log))
        #expect(root.requests[1].last?.content.contains("lines with 'status'") == true)
    }

    @Test func aSearchThatFindsSomethingShowsNoLines() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sum(1 for l in context.splitlines() if ' ERROR ' in l))\n```", "FINAL(200)",
        ])
        _ = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "q", context: .text(Self.log))
        #expect(root.requests[1].last?.content.contains("found nothing") == false)
    }

    @Test func anAnswerNoOutputShowsIsRefusedOnceThenAccepted() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sum(1 for l in context.splitlines() if ' WARN ' in l))\n```", "FINAL(123)", "FINAL(123)",
        ])
        let result = try await engine(root: root) { $0.refuseUnsupportedAnswers = true }
            .run(query: "How many WARN lines?", context: .text(Self.log))
        #expect(result.answer == "123")
        #expect(root.requests.count == 3)
        #expect(root.requests[2].last?.content.contains("No REPL output so far shows `123`") == true)
    }

    @Test func anAnswerTheOutputShowsIsAcceptedAtOnce() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sum(1 for l in context.splitlines() if ' WARN ' in l) / 7)\n```", "FINAL(28.57)",
        ])
        let result = try await engine(root: root) { $0.refuseUnsupportedAnswers = true }
            .run(query: "How many WARN lines, over 7, to 2 decimals?", context: .text(Self.log))
        #expect(result.answer == "28.57", "28.5714… rounds to it")
        #expect(root.requests.count == 2)
    }

    @Test func zeroAfterASearchThatFoundNothingIsRefusedOnce() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(len([l for l in context.splitlines() if 'FATAL' in l]))\n```", "FINAL(0)",
            "```repl\nprint(len([l for l in context.splitlines() if ' ERROR ' in l]))\n```", "FINAL(200)",
        ])
        let result = try await engine(root: root) { $0.refuseUnsupportedAnswers = true }
            .run(query: "How many error lines?", context: .text(Self.log))
        #expect(result.answer == "200")
    }

    @Test func aStuckReplyIsAskedAgainHotterWithoutKeepingIt() async throws {
        let same = "```repl\nprint(len(context))\n```"
        let root = ScriptedModel(replies: [same, same, "FINAL(\(Self.log.count))"])
        let result = try await engine(root: root) {
            $0.temperature = 0.2
            $0.resampleTemperature = 0.8
        }
        .run(query: "q", context: .text(Self.log))
        #expect(result.answer == "\(Self.log.count)")
        let temperatures = root.completionRequests.map(\.temperature)
        #expect(temperatures == [0.2, 0.2, 0.8])
        // The stuck reply is not in the history the hotter request carries.
        #expect(root.requests[2].filter { $0.role == .assistant }.count == 1)
    }

    @Test func aReplyWithoutCodeOrAnswerIsAlsoAskedAgainHotter() async throws {
        let root = ScriptedModel(replies: ["Let me think about the data.", "FINAL(done)"])
        let result = try await engine(root: root) {
            $0.temperature = 0.2
            $0.resampleTemperature = 0.8
        }
        .run(query: "q", context: .text("abc"))
        #expect(result.answer == "done")
        #expect(root.completionRequests.map(\.temperature) == [0.2, 0.8])
    }

    @Test func untestedTermsAndNearMissesAreNamedAfterTheOutput() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint([l for l in context.splitlines() if 'svc-1' in l][-2:])\n```",
            "FINAL(done)",
        ])
        _ = try await engine(root: root) { $0.checkQuestionTerms = true }
            .run(query: "How many requests of svc-1 went to /api/pay?", context: .text(Self.log + "\nx svc-12 y"))
        let shown = try #require(root.requests[1].last?.content)
        #expect(shown.contains("the question names `/api/pay`, which your code does not test yet"))
        #expect(shown.contains("`svc-1` also matched `svc-12`"), "\(shown)")
    }

    @Test func aStepThatTestsEveryConditionAfterTheWarningIsToldSo() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sum(1 for l in context.splitlines() if 'status=503' in l))\n```",
            "```repl\nprint(sum(1 for l in context.splitlines() if 'status=503' in l and 'path=/api/pay' in l))\n```",
            "FINAL(300)",
        ])
        _ = try await engine(root: root) { $0.checkQuestionTerms = true }
            .run(query: "How many requests to /api/pay returned 503?", context: .text(Self.log))
        #expect(root.requests[1].last?.content.contains("does not test yet") == true)
        let second = try #require(root.requests[2].last?.content)
        #expect(second.contains("Your code now tests every condition the question names (`/api/pay`, `503`)"))
    }

    @Test func aFinalNamingAVariableGivesItsValue() async throws {
        let root = ScriptedModel(replies: ["```repl\ntotal_amount = 41 + 1\nprint('done')\n```", "FINAL(total_amount)"])
        let result = try await engine(root: root) { $0.refuseUnsupportedAnswers = true }
            .run(query: "q", context: .text(Self.log))
        #expect(result.answer == "42")
    }

    @Test func theNearProbeIgnoresNamesTheModelRebound() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint = None\nlen = 3\njson = 5\nlist = dict\nisinstance = 0\n```",
            "```repl\nimport builtins\nbuiltins.print(sum(1 for l in context.splitlines() if 'FATAL' in l))\n```",
            "FINAL(0)",
        ])
        _ = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "q", context: .text(Self.log))
        let shown = try #require(root.requests[2].last?.content)
        #expect(shown.contains("'FATAL' occurs nowhere, in any case"), "\(shown)")
    }

    @Test func aContextOfOneHugeLineIsDescribedQuickly() async throws {
        let line = String(repeating: "a1b2c3", count: 40_000)
        let root = ScriptedModel(replies: ["FINAL(x)"])
        let started = ContinuousClock.now
        _ = try await engine(root: root) { $0.describeContextFormat = true }
            .run(query: "How many x-1 are there?", context: .text(line + "\n" + line))
        #expect(ContinuousClock.now - started < .seconds(20), "the probe's regexes stay linear")
        let prompt = try #require(root.requests.first?.last?.content)
        #expect(prompt.contains("x-1: nowhere as written, in any case"), "\(prompt)")
    }

    @Test func aStuckReplyOnTheLastStepIsKeptSoRolesAlternate() async throws {
        let same = "```repl\nprint(len(context))\n```"
        let root = ScriptedModel(replies: [same, same, "FINAL(5)"])
        let result = try await engine(root: root, budget: Budget(maxIterations: 2)) {
            $0.temperature = 0.2
            $0.resampleTemperature = 0.8
        }
        .run(query: "q", context: .text("abcde"))
        #expect(result.answer == "5")
        for request in root.requests {
            for (a, b) in zip(request.dropFirst(), request.dropFirst(2)) { #expect(a.role != b.role) }
        }
        #expect(root.completionRequests.allSatisfy { $0.temperature == 0.2 }, "no hotter retry on the last step")
    }

    @Test func anAnswerComputedFromANearMissIsAskedAgainOnce() async throws {
        let log = Self.log + "\nthe key of tenant acme-35 is k1\nthe key of tenant acme-350 is k2"
        let root = ScriptedModel(replies: [
            "```repl\nhits = [l for l in context.splitlines() if 'acme-35' in l]\nprint(hits)\n```",
            "```repl\nFINAL([l for l in hits if 'acme-350' in l][0].split()[-1])\n```",
            "```repl\nFINAL([l for l in hits if l.split()[-3] == 'acme-35'][0].split()[-1])\n```",
        ])
        let result = try await engine(root: root) {
            $0.checkQuestionTerms = true
            $0.refuseUnsupportedAnswers = true
        }
        .run(query: "What is the key of tenant acme-35?", context: .text(log))
        #expect(result.answer == "k1")
        #expect(root.requests[1].last?.content.contains("`acme-35` also matched `acme-350`") == true)
        let second = try #require(root.requests[2].last?.content)
        #expect(second.contains("your code uses `acme-350`, another name than the `acme-35`"), "\(second)")
        #expect(second.contains("Your code gave FINAL(k2), but it worked on another name"))
    }

    @Test func rareTermsAreShownWithTheirLinesAndTheFileThatHoldsThem() async throws {
        let root = ScriptedModel(replies: ["FINAL(x)"])
        _ = try await engine(root: root) { $0.describeContextFormat = true }
            .run(
                query: "Which file defines `load_rules`?",
                context: .documents([
                    "### src/a.py\nfrom b import load_rules\n", "### src/b.py\ndef load_rules(path):\n",
                ]))
        let prompt = try #require(root.requests.first?.last?.content)
        #expect(prompt.contains("load_rules: in 2 lines, exactly:"))
        #expect(prompt.contains("src/b.py: def load_rules(path):"))
    }

    @Test func aConditionCopiedFromTheOutputIsPointedOut() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nhits = [l for l in context.splitlines() if 'status=503' in l]\nprint(len(hits), hits[:1])\n```",
            "```repl\nprint(len([l for l in hits if 'status=503' in l and 'method=POST' in l]))\n```", "FINAL(300)",
        ])
        _ = try await engine(root: root) { $0.checkQuestionTerms = true }
            .run(query: "How many requests returned 503?", context: .text(Self.log))
        let shown = try #require(root.requests[2].last?.content)
        #expect(shown.contains("your code now also tests `method=POST`, copied from the output above"), "\(shown)")
    }

    @Test func aCaseMismatchThatFoundNothingIsNamed() async throws {
        let root = ScriptedModel(replies: [
            "```repl\nprint(sum(1 for l in context.splitlines() if 'Cart' in l.lower()))\n```", "FINAL(0)",
        ])
        _ = try await engine(root: root) { $0.showLinesWhenNothingFound = true }
            .run(query: "q", context: .text(Self.log))
        let shown = try #require(root.requests[1].last?.content)
        #expect(shown.contains("Your code looks for \"Cart\" in text it changed the case of"), "\(shown)")
    }
}
