import Foundation
import RLM
import RLMTasks
import Testing

@Suite("Answer scorer")
struct ScorerTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var predicted: String?
        var expected: String
        var kind: AnswerKind
        var correct: Bool
        var testDescription: String { "\(predicted.map { "\"\($0)\"" } ?? "nil") vs \"\(expected)\" (\(kind))" }
    }

    static let integerCases: [Case] = [
        Case(predicted: "42", expected: "42", kind: .integer, correct: true),
        Case(predicted: " 42\n", expected: "42", kind: .integer, correct: true),
        Case(predicted: "42.", expected: "42", kind: .integer, correct: true),
        Case(predicted: "\"42\"", expected: "42", kind: .integer, correct: true),
        Case(predicted: "`42`", expected: "42", kind: .integer, correct: true),
        Case(predicted: "'42'.", expected: "42", kind: .integer, correct: true),
        Case(predicted: "**42**", expected: "42", kind: .integer, correct: true),
        Case(predicted: "```\n42\n```", expected: "42", kind: .integer, correct: true),
        Case(predicted: "42.0", expected: "42", kind: .integer, correct: true),
        Case(predicted: "256623.0", expected: "256623", kind: .integer, correct: true),
        Case(predicted: "1,024", expected: "1024", kind: .integer, correct: true),
        Case(predicted: "$1,024", expected: "1024", kind: .integer, correct: true),
        Case(predicted: "42 lines", expected: "42", kind: .integer, correct: true),
        Case(predicted: "There are 42 ERROR lines.", expected: "42", kind: .integer, correct: true),
        Case(predicted: "svc-7 has 42", expected: "42", kind: .integer, correct: true),
        Case(predicted: "The count is 1,024.", expected: "1024", kind: .integer, correct: true),
        Case(predicted: "(42)", expected: "42", kind: .integer, correct: true),
        Case(predicted: "+42", expected: "42", kind: .integer, correct: true),
        Case(predicted: "41 or 42", expected: "42", kind: .integer, correct: false),
        Case(predicted: "42 of 13,000 lines", expected: "42", kind: .integer, correct: false),
        Case(predicted: "43", expected: "42", kind: .integer, correct: false),
        Case(predicted: "42.5", expected: "42", kind: .integer, correct: false),
        Case(predicted: "-42", expected: "42", kind: .integer, correct: false),
        Case(predicted: "420", expected: "42", kind: .integer, correct: false),
        Case(predicted: "4,2", expected: "42", kind: .integer, correct: false),
        Case(predicted: "42,0", expected: "42", kind: .integer, correct: false),
        Case(predicted: "1,0240", expected: "10240", kind: .integer, correct: false),
        Case(predicted: "forty-two", expected: "42", kind: .integer, correct: false),
        Case(predicted: "svc-42", expected: "42", kind: .integer, correct: false),
        Case(predicted: "42nd", expected: "42", kind: .integer, correct: false),
        Case(predicted: "", expected: "42", kind: .integer, correct: false),
        Case(predicted: "  ", expected: "42", kind: .integer, correct: false),
        Case(predicted: nil, expected: "42", kind: .integer, correct: false),
        Case(predicted: "0", expected: "0", kind: .integer, correct: true),
        Case(predicted: "none", expected: "0", kind: .integer, correct: false),
        Case(predicted: "1e3", expected: "1000", kind: .integer, correct: false),
    ]

    static let numberCases: [Case] = [
        Case(predicted: "256623", expected: "256623", kind: .number, correct: true),
        Case(predicted: "256623.00", expected: "256623", kind: .number, correct: true),
        Case(predicted: "$256,623.00", expected: "256623", kind: .number, correct: true),
        Case(predicted: "$256623", expected: "256623", kind: .number, correct: true),
        Case(predicted: "The total is $256,623.", expected: "256623", kind: .number, correct: true),
        Case(predicted: "256623.5", expected: "256623", kind: .number, correct: false),
        Case(predicted: "256,62", expected: "25662", kind: .number, correct: false),
        Case(predicted: "12.5", expected: "12.50", kind: .number, correct: true),
        Case(predicted: "C-0421 spent 256623", expected: "256623", kind: .number, correct: true),
        Case(predicted: "256623 (from 37 orders)", expected: "256623", kind: .number, correct: false),
        Case(predicted: "$ 256623", expected: "256623", kind: .number, correct: true),
    ]

    static let textCases: [Case] = [
        Case(predicted: "QX-4821-ZT", expected: "QX-4821-ZT", kind: .text, correct: true),
        Case(predicted: "qx-4821-zt", expected: "QX-4821-ZT", kind: .text, correct: true),
        Case(predicted: "\"QX-4821-ZT\".", expected: "QX-4821-ZT", kind: .text, correct: true),
        Case(predicted: "`QX-4821-ZT`", expected: "QX-4821-ZT", kind: .text, correct: true),
        Case(predicted: "\u{201C}QX-4821-ZT\u{201D}", expected: "QX-4821-ZT", kind: .text, correct: true),
        Case(predicted: "The key is QX-4821-ZT", expected: "QX-4821-ZT", kind: .text, correct: false),
        Case(predicted: "QX-4821-ZT or QX-4821-ZU", expected: "QX-4821-ZT", kind: .text, correct: false),
        Case(predicted: "QX-4821", expected: "QX-4821-ZT", kind: .text, correct: false),
        Case(predicted: "QX4821ZT", expected: "QX-4821-ZT", kind: .text, correct: false),
        Case(predicted: "C-0421", expected: "C-0421", kind: .text, correct: true),
        Case(predicted: "C-421", expected: "C-0421", kind: .text, correct: false),
        Case(predicted: "C-0421 (37 orders)", expected: "C-0421", kind: .text, correct: false),
        Case(predicted: "new  york", expected: "New York", kind: .text, correct: true),
        Case(predicted: "'", expected: "x", kind: .text, correct: false),
    ]

    static let pathCases: [Case] = [
        Case(predicted: "src/net/http.py", expected: "src/net/http.py", kind: .path, correct: true),
        Case(predicted: "./src/net/http.py", expected: "src/net/http.py", kind: .path, correct: true),
        Case(predicted: "### src/net/http.py", expected: "src/net/http.py", kind: .path, correct: true),
        Case(predicted: "`src/net/http.py`", expected: "src/net/http.py", kind: .path, correct: true),
        Case(predicted: "\"./src/net/http.py\".", expected: "src/net/http.py", kind: .path, correct: true),
        Case(predicted: "src/net/http.py", expected: "./src/net/http.py", kind: .path, correct: true),
        Case(predicted: "src/net/http", expected: "src/net/http.py", kind: .path, correct: false),
        Case(predicted: "http.py", expected: "src/net/http.py", kind: .path, correct: false),
        Case(predicted: "src/net/http.py:42", expected: "src/net/http.py", kind: .path, correct: false),
        Case(predicted: "SRC/net/http.py", expected: "src/net/http.py", kind: .path, correct: false),
        Case(predicted: "tests/net/http.py", expected: "src/net/http.py", kind: .path, correct: false),
        Case(predicted: "src/net/http.py, src/net/pool.py", expected: "src/net/http.py", kind: .path, correct: false),
    ]

    static let listCases: [Case] = [
        Case(predicted: "svc-3, svc-7, svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "svc-3,svc-7,svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "SVC-3 , Svc-7 ,svc-12.", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "svc-3, svc-7 and svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "svc-3, svc-7, and svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "\"svc-3, svc-7, svc-12\"", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "`svc-3`, `svc-7`, `svc-12`", expected: "svc-3, svc-7, svc-12", kind: .list, correct: true),
        Case(predicted: "Desk lamp, usb-c cable", expected: "Desk lamp, USB-C cable", kind: .list, correct: true),
        Case(predicted: "svc-7, svc-3, svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "svc-3, svc-7", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "svc-3, svc-7, svc-12, svc-4", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "svc-3, svc-7, svc-1", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "svc-3 svc-7 svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "svc-3, , svc-7, svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "svc-3; svc-7; svc-12", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "", expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: nil, expected: "svc-3, svc-7, svc-12", kind: .list, correct: false),
        Case(predicted: "/api/cart, /api/login", expected: "/api/cart, /api/login", kind: .list, correct: true),
        Case(predicted: "C-1055 and C-7693", expected: "C-1055, C-7693", kind: .list, correct: true),
    ]

    @Test(arguments: listCases) func lists(_ item: Case) {
        #expect(
            AnswerScorer.isCorrect(predicted: item.predicted, expected: item.expected, kind: item.kind) == item.correct)
    }

    @Test(arguments: integerCases) func integers(_ item: Case) {
        #expect(
            AnswerScorer.isCorrect(predicted: item.predicted, expected: item.expected, kind: item.kind) == item.correct)
    }

    @Test(arguments: numberCases) func numbers(_ item: Case) {
        #expect(
            AnswerScorer.isCorrect(predicted: item.predicted, expected: item.expected, kind: item.kind) == item.correct)
    }

    @Test(arguments: textCases) func texts(_ item: Case) {
        #expect(
            AnswerScorer.isCorrect(predicted: item.predicted, expected: item.expected, kind: item.kind) == item.correct)
    }

    @Test(arguments: pathCases) func paths(_ item: Case) {
        #expect(
            AnswerScorer.isCorrect(predicted: item.predicted, expected: item.expected, kind: item.kind) == item.correct)
    }

    @Test func normalizationIsIdempotentAndStripsLayers() {
        #expect(AnswerScorer.normalize("  \"`42`\".  ") == "42")
        #expect(AnswerScorer.normalize(AnswerScorer.normalize("'x'.")) == "x")
        #expect(AnswerScorer.normalize("a.b") == "a.b")
        #expect(AnswerScorer.normalize("\"unbalanced") == "\"unbalanced")
    }

    @Test func numbersParseStrictly() {
        #expect(AnswerScorer.parseNumber("1,234,567") == Decimal(1_234_567))
        #expect(AnswerScorer.parseNumber("-$12.50") == Decimal(string: "-12.5"))
        #expect(AnswerScorer.parseNumber("12,34") == nil)
        #expect(AnswerScorer.parseNumber("1.") == nil)
        #expect(AnswerScorer.parseNumber(".5") == nil)
        #expect(AnswerScorer.parseNumber("0x10") == nil)
        #expect(AnswerScorer.singleNumber(in: "C-0421 placed 12 orders") == Decimal(12))
        #expect(AnswerScorer.singleNumber(in: "between 3 and 4") == nil)
    }

    /// A non-numeric expected answer under a numeric kind (a hand-written task file) falls back to text comparison.
    @Test func nonNumericExpectationFallsBackToText() {
        #expect(AnswerScorer.isCorrect(predicted: "n/a", expected: "N/A", kind: .integer))
        #expect(!AnswerScorer.isCorrect(predicted: "0", expected: "N/A", kind: .integer))
    }
}
