import Foundation
import RLM
import Testing

/// JSON written for people (`--json`, trajectories) carries no byte a terminal could obey, and the same value.
@Suite("JSON text")
struct JSONTextTests {
    @Test func c1ControlsAndDELAreEscapedAndTheValueIsUnchanged() throws {
        let value = "a\u{9B}31m b\u{7F} c\u{85} é ✓ \u{1B}[2J"
        let data = try JSONSerialization.data(withJSONObject: ["v": value])
        let text = JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self))
        #expect(!text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
        #expect(text.contains(#"\u009b"#))
        let decoded = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String]
        #expect(decoded?["v"] == value)
    }

    @Test func aTrajectoryLineHoldsNoRawControls() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-jt-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: path) }
        let writer = try TrajectoryWriter(path: path.path)
        writer.write(RLMEvent(kind: .note, depth: 0, iteration: 1, data: ["note": "x\u{9B}2J\u{1B}]52;c;AA\u{07}"]))
        writer.close()
        let text = try String(contentsOf: path, encoding: .utf8)
        #expect(!text.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value) })
    }
}
