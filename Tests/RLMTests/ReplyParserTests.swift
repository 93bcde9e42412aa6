import Testing

@testable import RLM

@Suite("Reply parser")
struct ReplyParserTests {
    @Test(arguments: [
        ("FINAL(42)", FinalAnswer.value("42")),
        ("The count is done.\nFINAL(42)", .value("42")),
        ("  FINAL(\"Paris\")", .value("Paris")),
        ("FINAL('it''s')", .value("'it''s'")),
        ("FINAL(f(x) + (1, 2))", .value("f(x) + (1, 2)")),
        ("FINAL(\"a ) inside\")", .value("a ) inside")),
        ("FINAL(\"\"\"multi\nline\"\"\")", .value("multi\nline")),
        ("FINAL(first\nsecond)", .value("first\nsecond")),
        ("FINAL_VAR(result)", .variable("result")),
        ("FINAL_VAR('result')", .variable("result")),
        ("**FINAL(7)**", .value("7")),
        ("- FINAL(yes)", .value("yes")),
        ("FINAL(unclosed", .value("unclosed")),
        ("FINAL(\"say \\\"hi\\\"\")", .value("say \"hi\"")),
    ])
    func findsFinalAnswers(text: String, expected: FinalAnswer) {
        #expect(ReplyParser.parse(text).finalAnswer == expected)
    }

    @Test(arguments: [
        "```\nFINAL(wrong)\n```",
        "```text\nFINAL(wrong)\n```",
        "```repl\nFINAL(wrong)\n```",
        "~~~\nFINAL(wrong)\n~~~",
        "I will call FINAL(x) when I know.",
        "Use `FINAL(answer)` later",
        "    ```\n    FINAL(wrong)\n    ```",
        "",
        "FINAL",
        "FINAL_VAR()",
    ])
    func ignoresAnswersInFencesAndProse(text: String) {
        #expect(ReplyParser.parse(text).finalAnswer == nil, "\(text)")
    }

    @Test func fenceTrapFindsTheRealAnswerAfterTheFence() {
        let text = "Example of the format:\n```\nFINAL(wrong)\n```\nNow the real one:\nFINAL(right)"
        #expect(ReplyParser.parse(text).finalAnswer == .value("right"))
    }

    @Test func replBlocksRunAndPythonBlocksOnlyWithoutThem() {
        let both = ReplyParser.parse("```python\na = 1\n```\n```repl\nb = 2\n```")
        #expect(both.codeBlocks == ["b = 2"])
        let python = ReplyParser.parse("```python\na = 1\n```\ntext\n```py\nc = 3\n```")
        #expect(python.codeBlocks == ["a = 1", "c = 3"])
        let bare = ReplyParser.parse("```\nprint(1)\n```")
        #expect(bare.codeBlocks.isEmpty)
        let unclosed = ReplyParser.parse("```repl\nprint(len(context))")
        #expect(unclosed.codeBlocks == ["print(len(context))"])
        let wordLine = ReplyParser.parse("```\nrepl\nprint(2)\n```")
        #expect(wordLine.codeBlocks == ["print(2)"])
        #expect(ReplyParser.bareFinalArgument(in: "FINAL(tk_b3b8)") == "tk_b3b8")
        #expect(ReplyParser.bareFinalArgument(in: "FINAL(len(x))") == nil)
        #expect(ReplyParser.bareFinalArgument(in: "x = 1\nFINAL(y)") == nil)
        let missingOpening = ReplyParser.parse("repl\nprint(1)\n```\nThe REPL prints: 1")
        #expect(missingOpening.codeBlocks == ["print(1)"])
        #expect(ReplyParser.parse("repl is a word\n```").codeBlocks.isEmpty)
        let labelAboveFence = ReplyParser.parse("repl\n```python\nprint(3)\n```\nThe REPL prints: 3")
        #expect(labelAboveFence.codeBlocks == ["print(3)"])
        let longFence = ReplyParser.parse("````repl\nx = '```'\n````")
        #expect(longFence.codeBlocks == ["x = '```'"])
    }

    @Test func hostileInputsDoNotCrash() {
        let inputs = [
            String(repeating: "(", count: 100_000), "FINAL(" + String(repeating: "(", count: 50_000),
            String(repeating: "```\n", count: 10_001), "FINAL(\"" + String(repeating: "\\", count: 999),
            "\u{0}FINAL(\u{0})", "FINAL(🙂)\u{202E}", String(repeating: "FINAL_VAR(", count: 1000),
        ]
        for input in inputs {
            _ = ReplyParser.parse(input)
        }
        #expect(ReplyParser.parse("FINAL(🙂)").finalAnswer == .value("🙂"))
    }
}
