import Foundation
import Glibc
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

/// Trajectory files are private from the first byte.
@Suite("Trajectory files")
struct TrajectoryFileTests {
    @Test func aTrajectoryIsBorn0600InA0700Directory() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-tf-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let path = root.appendingPathComponent("trajectories/run.jsonl").path
        let writer = try TrajectoryWriter(path: path)
        writer.close()
        let file = try FileManager.default.attributesOfItem(atPath: path)
        #expect((file[.posixPermissions] as? Int) == 0o600)
        let directory = try FileManager.default.attributesOfItem(
            atPath: root.appendingPathComponent("trajectories").path)
        #expect((directory[.posixPermissions] as? Int) == 0o700)
    }

    @Test func aLooserExistingFileIsTightenedAndALinkIsRefused() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-tf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let loose = root.appendingPathComponent("loose.jsonl").path
        FileManager.default.createFile(
            atPath: loose, contents: Data("old".utf8), attributes: [.posixPermissions: 0o644])
        try TrajectoryWriter(path: loose).close()
        #expect((try FileManager.default.attributesOfItem(atPath: loose)[.posixPermissions] as? Int) == 0o600)
        let target = root.appendingPathComponent("elsewhere").path
        FileManager.default.createFile(atPath: target, contents: Data("keep".utf8))
        let link = root.appendingPathComponent("link.jsonl").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        #expect(throws: (any Error).self) { try TrajectoryWriter(path: link) }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep")
        // A FIFO planted at the path neither hangs the run nor is written.
        let fifo = root.appendingPathComponent("fifo.jsonl").path
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: (any Error).self) { try TrajectoryWriter(path: fifo) }
        // Someone else's file is not truncated or written (as root: a file owned by nobody).
        if geteuid() == 0 {
            let theirs = root.appendingPathComponent("theirs.jsonl").path
            FileManager.default.createFile(
                atPath: theirs, contents: Data("theirs".utf8), attributes: [.posixPermissions: 0o666])
            #expect(chown(theirs, 65534, 65534) == 0)
            #expect(throws: (any Error).self) { try TrajectoryWriter(path: theirs) }
            #expect(try String(contentsOfFile: theirs, encoding: .utf8) == "theirs")
        }
    }
}
