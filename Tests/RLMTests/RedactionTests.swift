import Foundation
import RLM
import Testing

/// The trajectory writer redacts whole text first and cuts it second, stamps schema v1 lines, holds several runs,
/// and rotates into numbered parts; the opt-in PII mask catches the common shapes and leaves look-alikes alone.
@Suite("Trajectory redaction, stamping and rotation")
struct RedactionTests {
    static let key = "sk-straddle-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"

    static func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-redaction-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func lines(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// No ten characters of the key's body survive.
    static func expectNoPiece(of secret: String, in text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let body = Array(secret.dropFirst(3))
        for start in 0...(body.count - 10) {
            let piece = String(body[start..<start + 10])
            #expect(!text.contains(piece), "\(piece) survived", sourceLocation: sourceLocation)
        }
    }

    /// A key placed at every offset around the head's end and the tail's start of a cut never survives in part:
    /// a shape (found in the whole text) and an exact secret alike.
    @Test(arguments: [false, true])
    func aSecretStraddlingTheCutIsRedactedWhole(exact: Bool) throws {
        let redactor = SecretRedactor(secrets: exact ? ["straddle-exact-value-0123456789"] : [])
        let secret = exact ? "straddle-exact-value-0123456789" : Self.key
        let limit = 4000
        let half = (limit - 40) / 2
        for offset in stride(from: half - secret.count, through: half + 2, by: 3) {
            let text =
                String(repeating: "a", count: offset) + " " + secret + " " + String(repeating: "b", count: 10_000)
            let written = redactor.redactThenCut(text, limit: limit)
            #expect(written.contains("characters cut"))
            Self.expectNoPiece(of: secret, in: written)
            // And at the tail's start.
            let tailText =
                String(repeating: "a", count: 10_000) + " " + secret + " " + String(repeating: "b", count: offset)
            Self.expectNoPiece(of: secret, in: redactor.redactThenCut(tailText, limit: limit))
        }
    }

    /// Past a MiB only windows around the kept ends are redacted: a key crossing the cut there is still caught.
    @Test func aHugeTextIsRedactedAroundWhatIsKept() {
        let half = (2000 - 40) / 2
        let text =
            String(repeating: "a", count: half - 10) + " " + Self.key + " " + String(repeating: "b", count: 3 << 20)
            + " " + Self.key + " tail"
        let written = SecretRedactor().redactThenCut(text, limit: 2000)
        #expect(written.unicodeScalars.count < 2100)
        #expect(written.hasSuffix("[REDACTED] tail"))
        Self.expectNoPiece(of: Self.key, in: written)
    }

    /// Text already cut upstream (the sandbox caps a cell's output, the engine cuts what the model reads) may hold a
    /// piece of a key glued to the marker, too short for any shape: that piece is redacted too.
    @Test(arguments: ["…", "..."])
    func aPieceOfAKeyGluedToAnUpstreamCutIsRedacted(dots: String) {
        let text = "x sk-straddle-ZYXW\n\(dots) [5000 characters cut] \(dots)\nVUTSRQPONMLKJ tail"
        let written = SecretRedactor().redact(text)
        #expect(!written.contains("straddle-ZYXW") && !written.contains("VUTSRQPONMLKJ"), "\(written)")
        #expect(written.hasPrefix("x [REDACTED]") && written.hasSuffix("[REDACTED] tail"), "\(written)")
    }

    @Test func theWriterRedactsNestedFieldsThenCutsEachToItsLimit() throws {
        let dir = try Self.scratch()
        let path = dir.appendingPathComponent("t.jsonl").path
        let writer = try TrajectoryWriter(path: path, secrets: ["exact-run-secret-value"])
        let long = String(repeating: "x", count: 1965) + "\n" + Self.key + "\n" + String(repeating: "y", count: 9000)
        writer.write(
            RLMEvent(
                kind: .codeResult, depth: 0, iteration: 1,
                data: [
                    "block": 1, "code": "k = 'exact-run-secret-value'", "stdout": .string(long), "stderr": "",
                    "error": ["type": "ValueError", "message": .string(long)], "timed_out": false,
                    "state_lost": false, "duration_ms": 1.5,
                ]))
        writer.close()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        Self.expectNoPiece(of: Self.key, in: text)
        #expect(!text.contains("exact-run-secret-value"))
        let data = try #require(Self.lines(path).first?["data"] as? [String: Any])
        #expect((data["stdout"] as? String)?.unicodeScalars.count ?? 0 <= TrajectoryWriter.limits["stdout"]! + 40)
        #expect(((data["error"] as? [String: Any])?["message"] as? String)?.contains("characters cut") == true)
        #expect(data["block"] as? Int == 1)
        #expect(data["duration_ms"] as? Double == 1.5)
        #expect(data["timed_out"] as? Bool == false)
    }

    @Test func linesAreStampedAndOneFileHoldsSeveralRuns() throws {
        let dir = try Self.scratch()
        let path = dir.appendingPathComponent("conversation.jsonl").path
        let writer = try TrajectoryWriter(path: path)
        #expect(writer.runID == "conversation")
        writer.write(RLMEvent(kind: .note, depth: 0, iteration: 0, data: ["note": "first"]))
        writer.startRun(id: "question-2")
        writer.write(RLMEvent(kind: .note, depth: 0, iteration: 0, data: ["note": "second"]))
        writer.write(RLMEvent.interrupted(signal: "SIGINT", iterations: 2, durationMilliseconds: 12.3))
        writer.close()
        let events = try Self.lines(path)
        #expect(events.map { $0["run"] as? String } == ["conversation", "question-2", "question-2"])
        #expect(events.map { $0["seq"] as? Int } == [0, 1, 2])
        #expect(events.allSatisfy { $0["schema"] as? Int == 1 && $0["scope"] as? String == "root" })
        let finished = try #require(events.last?["data"] as? [String: Any])
        #expect(finished["status"] as? String == "interrupted")
        #expect(finished["signal"] as? String == "SIGINT")
        #expect(finished["iterations"] as? Int == 2)
        #expect(finished["answer"] is NSNull)
    }

    @Test func usageIsSnakeCaseWithTypedNumbers() throws {
        var usage = RunUsage()
        usage.tokens = TokenUsage(inputTokens: 12, outputTokens: 3)
        usage.costUSD = 0.25
        usage.modelCalls = 2
        usage.subcalls = 1
        let event = RLMEvent(kind: .note, depth: 0, iteration: 1, data: ["note": "n"], usage: usage)
        let object = try #require(
            try JSONSerialization.jsonObject(with: JSONEncoder().encode(event)) as? [String: Any])
        let encoded = try #require(object["usage"] as? [String: Any])
        #expect(encoded["input_tokens"] as? Int == 12)
        #expect(encoded["output_tokens"] as? Int == 3)
        #expect(encoded["cost_usd"] as? Double == 0.25)
        #expect(encoded["model_calls"] as? Int == 2)
        #expect(encoded["subcalls"] as? Int == 1)
        let decoded = try JSONDecoder().decode(RLMEvent.self, from: JSONEncoder().encode(event))
        #expect(decoded.usage == usage)
        #expect(decoded.data == event.data)
    }

    /// Past `maxBytes` the writer continues in `<stem>.2.jsonl`, `<stem>.3.jsonl`, …: each part born 0600, each
    /// line whole, the numbering going on.
    @Test func aLargeTrajectoryRotatesIntoNumberedParts() throws {
        let dir = try Self.scratch()
        let path = dir.appendingPathComponent("big.jsonl").path
        let writer = try TrajectoryWriter(path: path, maxBytes: 4096)
        for index in 0..<40 {
            writer.write(
                RLMEvent(
                    kind: .note, depth: 0, iteration: 1, data: ["note": .string(String(repeating: "n", count: 300))],
                    time: Double(index)))
        }
        writer.close()
        let parts = writer.paths
        #expect(parts.count >= 3)
        #expect(parts.first == path)
        #expect(parts.dropFirst().first == dir.appendingPathComponent("big.2.jsonl").path)
        var seqs = [Int]()
        for part in parts {
            let attributes = try FileManager.default.attributesOfItem(atPath: part)
            #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(part)")
            #expect((attributes[.size] as? Int ?? 0) <= 4096)
            seqs += try Self.lines(part).compactMap { $0["seq"] as? Int }
        }
        #expect(seqs == Array(0..<40))
    }

    @Test(arguments: [
        ("write to ada.lovelace+rlm@example.co.uk today", "[EMAIL]"),
        ("card 4111 1111 1111 1111 on file", "[CARD]"),
        ("card 5500-0000-0000-0004 on file", "[CARD]"),
        ("ssn 123-45-6789 here", "[ID]"),
        ("call +1 415 555 2671 now", "[PHONE]"),
        ("call (415) 555-2671 now", "[PHONE]"),
        ("call +44 20 7946 0958 now", "[PHONE]"),
    ])
    func personalDataIsMasked(text: String, mark: String) {
        let masked = SecretRedactor(maskPII: true).redact(text)
        #expect(masked.contains(mark), "\(masked)")
        #expect(masked.filter(\.isNumber).count < 4, "\(masked)")
        #expect(SecretRedactor().redact(text) == text)
    }

    @Test(arguments: [
        "on 2026-11-21 at 10:00:59",
        "version 1.2.3 of 4.5.6",
        "host 192.168.100.200 port 8080",
        "order 4111 1111 1111 1112 is not a card",
        "ids 1234567890123 and 42",
        "req=123456 took 0.25 s",
    ])
    func lookAlikesAreLeftAlone(text: String) {
        #expect(SecretRedactor(maskPII: true).redact(text) == text)
    }

    @Test func luhn() {
        #expect(PIIMask.passesLuhn("4111111111111111"))
        #expect(PIIMask.passesLuhn("4012 8888 8888 1881"))
        #expect(!PIIMask.passesLuhn("4111111111111112"))
        #expect(!PIIMask.passesLuhn("12345"))
    }
}
