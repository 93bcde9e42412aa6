import Foundation
import Testing

/// Contract 2: `rlm sandbox exec`, `rlm sandbox repl` and `rlm doctor` as scripts call them.
@Suite("rlm sandbox and doctor", .serialized)
struct SandboxCLITests {
    @Test(arguments: [
        ("print('hi')", Int32(0), "hi\n", ""),
        (
            "import sys\nprint('out')\nprint('err', file=sys.stderr)\nraise ValueError('boom')", 1, "out\n",
            "ValueError: boom"
        ),
        ("import sys\nsys.exit(0)", 0, "", ""),
        ("import sys\nsys.exit(3)", 1, "", "SystemExit"),
        ("while True:\n    pass", 124, "", "TimeoutError"),
        ("x = bytearray(4 << 30)", 137, "", "MemoryError"),
    ])
    func execExitCodes(code: String, status: Int32, stdout: String, stderrContains: String) async throws {
        let result = try await runRLM(["sandbox", "exec", "--timeout", "1", "--memory", "256", "-"], stdin: code)
        #expect(result.status == status, "\(code): \(result.stderr)")
        #expect(result.stdout == stdout)
        if !stderrContains.isEmpty { #expect(result.stderr.contains(stderrContains), "\(result.stderr)") }
    }

    @Test func execJSONHasTheContractFields() async throws {
        let file = try writeTemporary("import sys\nprint('a')\nprint('b', file=sys.stderr)\n1/0\n", name: "prog.py")
        let result = try await runRLM(["sandbox", "exec", "--json", file])
        #expect(result.status == 1)
        let json = try #require(result.json, "\(result.stdout)")
        #expect(Set(json.keys) == ["stdout", "stderr", "error", "timed_out", "duration_ms"])
        #expect(json["stdout"] as? String == "a\n")
        #expect((json["stderr"] as? String)?.hasPrefix("b\n") == true)
        let error = try #require(json["error"] as? [String: Any])
        #expect(error["type"] as? String == "ZeroDivisionError")
        #expect(error["message"] as? String == "division by zero")
        #expect(json["timed_out"] as? Bool == false)
        #expect((json["duration_ms"] as? Double ?? -1) >= 0)

        let ok = try await runRLM(["sandbox", "exec", "--json", "-"], stdin: "pass")
        #expect(ok.status == 0)
        #expect(ok.json?["error"] is NSNull)
        let slow = try await runRLM(
            ["sandbox", "exec", "--json", "--timeout", "0.5", "-"], stdin: "import time\ntime.sleep(9)")
        #expect(slow.status == 124)
        #expect(slow.json?["timed_out"] as? Bool == true)
    }

    @Test func execUsageAndSetupErrorsExitTwo() async throws {
        #expect(try await runRLM(["sandbox", "exec", "--bogus"]).status == 2)
        #expect(try await runRLM(["sandbox", "exec", "--timeout", "-1", "-"], stdin: "1").status == 2)
        let missing = try await runRLM(["sandbox", "exec", "/nonexistent/file.py"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("/nonexistent/file.py"))
        let backend = try await runRLM(
            ["sandbox", "exec", "--backend", "wasm", "--wasm-runtime", "/no/such.wasm", "-"], stdin: "1")
        #expect(backend.status == 2)
        #expect(backend.stderr.contains("/no/such.wasm"), "\(backend.stderr)")
        let python = try await runRLM(["sandbox", "exec", "--python", "/nonexistent/python3", "-"], stdin: "1")
        #expect(python.status == 2)
        #expect(python.stderr.contains("apt-get install -y python3"))
    }

    @Test func replKeepsStateAcrossCells() async throws {
        let result = try await runRLM(
            ["sandbox", "repl"], stdin: "x = 20\ndef double(v):\n    return v * 2\n\nprint(double(x) + 2)\nFINAL(x)\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("42\n"))
        #expect(result.stdout.contains("FINAL: 20"))
    }

    @Test func doctorReportsEachFeature() async throws {
        let result = try await runRLM(["doctor", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let checks = try #require(
            try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        let byFeature = Dictionary(
            uniqueKeysWithValues: checks.compactMap { check in
                (check["feature"] as? String).map { ($0, check["status"] as? String ?? "") }
            })
        for feature in [
            "unprivileged uid", "net namespace", "seccomp", "empty environment", "rlimits", "host-side kill",
        ] {
            #expect(byFeature[feature] == "in force", "\(feature): \(byFeature[feature] ?? "absent")")
        }
        #expect(byFeature["landlock"] != nil)
    }
}
