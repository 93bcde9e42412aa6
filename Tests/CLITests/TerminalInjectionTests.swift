import Foundation
import RLM
import RLMTesting
import Testing

/// Model- and sandbox-written text reaches a terminal only with its control characters made visible; `--raw` gives
/// the bytes; `--json` stays exact and escaped. Each attack leaves a host-observable mark if it works: the raw
/// escape bytes in what the terminal received.
@Suite("Terminal injection", .serialized)
struct TerminalInjectionTests {
    /// Clipboard write (OSC 52), clear screen, window title, an 8-bit CSI, and a carriage return that would overwrite.
    static let payload = "A\u{1B}]52;c;cHduZWQ=\u{07}B\u{1B}[2JC\u{1B}]0;pwned\u{07}D\u{9B}31mE\rF"
    static let pythonPayload =
        #"'A\x1b]52;c;cHduZWQ=\x07B\x1b[2JC\x1b]0;pwned\x07D\u009b31mE\rF'"#

    /// Runs `rlm` with one stream on a pseudo-terminal and returns the bytes that terminal received.
    func onTerminal(
        _ stream: String, _ arguments: [String], environment: [String: String] = [:]
    ) async throws -> (status: Int32, bytes: [UInt8]) {
        let helper = """
            import os, pty, subprocess, sys
            stream = sys.argv[1]
            master, slave = pty.openpty()
            out = {'stdout': slave, 'stderr': subprocess.DEVNULL} if stream == 'stdout' else \\
                  {'stdout': subprocess.DEVNULL, 'stderr': slave}
            p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, **out)
            os.close(slave)
            data = b''
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            sys.stdout.buffer.write(data)
            sys.exit(p.wait())
            """
        let script = try writeTemporary(helper, name: "on_terminal.py")
        let result = try await runProgram(
            "/usr/bin/python3", [script, stream, try rlmBinary()] + arguments, environment: environment)
        return (result.status, Array(result.stdout.utf8))
    }

    static func containsRawControls(_ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        // A pty turns "\n" into "\r\n", so only the payload's own bare carriage return ("E\rF") counts.
        return text.contains("\u{1B}]52") || text.contains("\u{1B}[2J") || text.contains("\u{1B}]0;")
            || text.unicodeScalars.contains { $0.value == 0x9B } || text.contains("E\rF")
    }

    @Test func sandboxOutputIsNeutralisedOnATerminal() async throws {
        let code = try writeTemporary("import sys\nprint(\(Self.pythonPayload))", name: "attack.py")
        let shown = try await onTerminal("stdout", ["sandbox", "exec", code])
        #expect(shown.status == 0)
        #expect(!Self.containsRawControls(shown.bytes))
        let text = String(decoding: shown.bytes, as: UTF8.self)
        #expect(text.contains(#"A\x1b]52;c;cHduZWQ=\x07B"#), "\(text)")
        #expect(text.contains(#"\u009b31m"#))
        #expect(text.contains(#"E\rF"#))

        let stderrCode = try writeTemporary(
            "import sys\nprint(\(Self.pythonPayload), file=sys.stderr)\nraise ValueError(\(Self.pythonPayload))",
            name: "attack2.py")
        let errors = try await onTerminal("stderr", ["sandbox", "exec", stderrCode])
        #expect(errors.status == 1)
        #expect(!Self.containsRawControls(errors.bytes))
        let errorText = String(decoding: errors.bytes, as: UTF8.self)
        #expect(
            errorText.contains(#"A\x1b]52;c;cHduZWQ=\x07B"#), "the payload reached stderr, made visible: \(errorText)")
        #expect(errorText.contains("ValueError"))
    }

    @Test func rawGivesTheBytes() async throws {
        let code = try writeTemporary("print(\(Self.pythonPayload))", name: "attack.py")
        let shown = try await onTerminal("stdout", ["sandbox", "exec", "--raw", code])
        #expect(Self.containsRawControls(shown.bytes))
    }

    @Test func aFinalAnswerIsNeutralisedOnATerminalAndExactInJSON() async throws {
        let answer = Self.payload.replacingOccurrences(of: "\r", with: "")
        let steps = ["FINAL(\"\(answer)\")"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let shown = try await onTerminal(
                "stdout", ["run", "--base-url", server.openAIBaseURL, "--model", "m", "q"],
                environment: ["OPENAI_API_KEY": "sk-x", "HOME": NSTemporaryDirectory()])
            #expect(shown.status == 0)
            #expect(!Self.containsRawControls(shown.bytes))
            #expect(String(decoding: shown.bytes, as: UTF8.self).contains(#"\x1b]52;c;"#))

            let json = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--json", "q"],
                environment: ["OPENAI_API_KEY": "sk-x"])
            #expect(json.status == 0)
            #expect(!Self.containsRawControls(Array(json.stdout.utf8)))
            #expect(json.json?["answer"] as? String == answer, "JSON carries the exact answer, escaped")
        }
    }

    /// A file name is model-independent but attacker-controlled (a repository someone else wrote): the "skipped" note
    /// shows its escape codes as text.
    @Test func aFileNameInANoteIsNeutralised() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-names-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try "text".write(to: dir.appendingPathComponent("ok.txt"), atomically: true, encoding: .utf8)
        try Data([0, 1, 2]).write(to: dir.appendingPathComponent("evil\u{1B}]0;pwned\u{07}\u{1B}[2J.bin"))
        let shown = try await onTerminal(
            "stderr",
            ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--context", dir.path, "--verbose", "q"],
            environment: ["HOME": NSTemporaryDirectory()])
        let text = String(decoding: shown.bytes, as: UTF8.self)
        #expect(text.contains("binary file"), "\(text)")
        #expect(!Self.containsRawControls(shown.bytes))
        #expect(text.contains(#"evil\x1b]0;pwned\x07\x1b[2J.bin"#))
    }
}
