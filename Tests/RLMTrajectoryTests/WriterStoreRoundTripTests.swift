import Foundation
import RLM
import RLMTrajectory
import Testing

/// What the writer writes, the store reads: a rotated, two-run trajectory is listed whole and deleted whole.
@Suite("Trajectory writer and store together")
struct WriterStoreRoundTripTests {
    @Test func aRotatedConversationIsListedAndDeletedWhole() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-rt-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent(
            TrajectoryWriter.defaultPath(environment: [:]).split(separator: "/")
                .last.map(String.init) ?? "run-20260101-000000-x.jsonl"
        ).path
        let writer = try TrajectoryWriter(path: path, maxBytes: 2_000)
        for question in 1...2 {
            writer.startRun(id: "q\(question)")
            writer.write(
                RLMEvent(
                    kind: .runStarted, depth: 0, iteration: 0, data: ["query": "question \(question)", "model": "m"]))
            for step in 1...10 {
                writer.write(
                    RLMEvent(
                        kind: .codeResult, depth: 0, iteration: step,
                        data: [
                            "block": 1, "code": "print(\(step))", "stdout": .string(String(repeating: "x", count: 300)),
                        ]))
            }
            writer.write(
                RLMEvent(
                    kind: .runFinished, depth: 0, iteration: 10,
                    data: ["status": "answered", "answer": "42", "iterations": 10, "duration_ms": 5]))
        }
        writer.close()
        #expect(writer.paths.count > 1, "the writer rotated: \(writer.paths)")

        let store = try TrajectoryStore(directory: directory.path)
        let entries = try store.list()
        #expect(entries.count == 1)
        let entry = try #require(entries.first)
        #expect(entry.parts.count == writer.paths.count)
        #expect(entry.runs == 2)
        #expect(entry.status == "answered")
        #expect(entry.answer == "42")
        #expect(entry.query == "question 1")
        let deleted = try store.delete(entry.id)
        #expect(deleted.count == writer.paths.count)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }
}
