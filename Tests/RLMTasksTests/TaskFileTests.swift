import Foundation
import RLM
import RLMSandbox
import RLMTasks
import Testing

@Suite("Task files")
struct TaskFileTests {
    @Test func roundTripsEveryKindAndContextShape() throws {
        var tasks = TaskSuite.generate(seed: 11, count: 4, sizes: [8_000])
        tasks.append(
            BenchTask(
                id: "hand-json", kind: TaskKind(rawValue: "structured"), sizeBytes: 0, query: "How many users?",
                context: .json(.object(["users": .array([.string("a"), .string("b")])])), answer: "2",
                answerKind: .integer))
        let data = try TaskFile(tasks: tasks, seed: 11).encoded()
        let decoded = try TaskFile.decode(data)
        #expect(decoded.tasks == tasks)
        #expect(decoded.seed == 11)
        #expect(decoded.tasks.last?.kind.rawValue == "structured")
        #expect(try decoded.encoded() == data)
    }

    @Test func theFormatIsSnakeCaseJSON() throws {
        let task = BenchTask(
            id: "t1", kind: .needle, sizeBytes: 5, query: "q?", context: .text("hello"), answer: "x",
            answerKind: .text)
        let text = String(decoding: try TaskFile(tasks: [task], seed: 3).encoded(), as: UTF8.self)
        #expect(
            text == #"{"format":"swiftrlm-tasks","seed":3,"tasks":[{"answer":"x","answer_kind":"text","#
                + #""context":{"text":"hello","type":"text"},"id":"t1","kind":"needle","query":"q?","size_bytes":5}],"#
                + #""version":1}"#)
    }

    @Test func aHandWrittenFileLoads() throws {
        // A bare array, documents, and no size (computed from the context).
        let json = """
            [{"id": "h1", "kind": "aggregation", "query": "Total?", "answer": "12", "answer_kind": "number",
              "context": {"type": "documents", "documents": ["### A\\nTotal: $5", "### B\\nTotal: $7"]}}]
            """
        let file = try TaskFile.decode(Data(json.utf8))
        #expect(file.tasks.count == 1)
        #expect(file.tasks[0].sizeBytes == 30)
        #expect(file.tasks[0].context == .documents(["### A\nTotal: $5", "### B\nTotal: $7"]))
    }

    @Test(arguments: [
        (#"{"tasks": [{"id": "a"}]}"#, "missing"),
        (#"{"tasks": []"#, "not a task file"),
        (#"{"version": 99, "tasks": []}"#, "newer"),
        (
            #"[{"id":"a","kind":"x","query":"q","answer":"1","answer_kind":"integer","context":{"type":"text","text":""}},"#
                + #"{"id":"a","kind":"x","query":"q","answer":"1","answer_kind":"integer","context":{"type":"text","text":""}}]"#,
            "twice"
        ),
        (
            #"[{"id":"a","kind":"x","query":"q","answer":"1","answer_kind":"integer","context":{"type":"pdf"}}]"#,
            "unknown context type"
        ),
        (
            #"[{"id":"a","kind":"x","query":"q","answer":"1","answer_kind":"fuzzy","context":{"type":"text","text":""}}]"#,
            "not a task file"
        ),
    ])
    func badFilesSayWhatIsWrong(json: String, message: String) {
        #expect {
            _ = try TaskFile.decode(Data(json.utf8))
        } throws: { error in
            String(describing: error).contains(message)
        }
    }
}
