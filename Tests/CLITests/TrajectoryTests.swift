import Foundation
import Glibc
import RLM
import RLMTesting
import Testing

/// The trajectory `rlm run` writes (schema v1, `docs/TRAJECTORY.md`): every line validates against
/// `docs/trajectory.schema.json`, the sub-call tree can be rebuilt from it, and nothing the run wrote — trajectory,
/// stdout, stderr — holds a planted secret, even one that straddles a cut. Also what the run prints while it works.
@Suite("rlm run: trajectory, redaction, progress", .serialized)
struct TrajectoryTests {
    /// The run's own key: exact-value redaction.
    static let runKey = "sk-planted-runkey-0123456789abcdefghijABCDEFGH"
    /// An AWS access key id in the context: shape redaction.
    static let awsKey = "AKIAIOSFODNN7EXAMPLE"
    /// A GitHub token in a sub-call's reply from the fake server.
    static let githubToken = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    /// A key of no one's, printed so that it crosses the cut of `stdout` (4000 characters: head 1980).
    static let straddling = "sk-straddle-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"

    static let hasJSONSchema: Bool = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import jsonschema"]
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }()

    static var schemaPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/trajectory.schema.json").path
    }

    /// The root runs one cell with an `llm_query` and an `rlm_query`, then answers; the child runs one cell, then
    /// answers; sub-calls answer with a GitHub token.
    static func handler() -> FakeLLMServer.Handler {
        let rootCell = """
            ```repl
            print(len(context))
            print("a" * 1960 + " \(straddling) " + "b" * 10000)
            key = "\(runKey)"
            r = llm_query("summarize please")
            print(r)
            c = rlm_query("CHILD-QUESTION: how long is it?")
            print("child said", c)
            ```
            """
        let childCell = "```repl\nprint('in the child')\n```"
        return FakeLLMServer.Handler { request in
            guard request.messages.contains(where: { $0.role == .system }) else {
                return .text("the summary, with a token \(githubToken) in it")
            }
            let turn = request.messages.filter { $0.role == .assistant }.count
            let isChild = request.messages.contains { $0.role == .user && $0.content.contains("CHILD-QUESTION") }
            if isChild { return .text(turn == 0 ? childCell : "FINAL(child-done)") }
            return .text(turn == 0 ? rootCell : "FINAL(done)")
        }
    }

    static func lines(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], "\($0)")
        }
    }

    @Test func aRunWritesSchemaV1LinesThatRebuildTheTreeAndHoldNoSecret() async throws {
        let context = try writeTemporary("log line\naws \(Self.awsKey) in the context\n")
        let trajectory = context + ".jsonl"
        try await FakeLLMServer.withServer(Self.handler()) { server in
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context, "--trajectory",
                    trajectory, "--verbose", "q",
                ],
                environment: ["OPENAI_API_KEY": Self.runKey])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "done\n")

            let events = try Self.lines(trajectory)
            let stem = URL(fileURLWithPath: trajectory).deletingPathExtension().lastPathComponent
            for (index, event) in events.enumerated() {
                #expect(event["schema"] as? Int == 1)
                #expect(event["seq"] as? Int == index)
                #expect(event["run"] as? String == stem)
            }
            func data(_ event: [String: Any]) -> [String: Any] { event["data"] as? [String: Any] ?? [:] }
            let kinds = events.compactMap { $0["kind"] as? String }
            for kind in [
                "run_started", "context_loaded", "model_request", "model_response", "code_started", "code_result",
                "subcall_started", "subcall", "final_answer", "run_finished",
            ] {
                #expect(kinds.contains(kind), "no \(kind) in \(kinds)")
            }
            #expect(kinds.first == "run_started" && kinds.last == "run_finished")

            // The sub-call tree: each call carries its cell's iteration (1) and a unique id; the child's events are
            // scoped by its rlm_query's id, one level deeper.
            let subcalls = events.filter { $0["kind"] as? String == "subcall" }
            #expect(subcalls.count == 2)
            #expect(Set(subcalls.compactMap { data($0)["call_id"] as? String }).count == 2)
            for call in subcalls {
                #expect(call["iteration"] as? Int == 1, "\(call)")
                #expect(call["depth"] as? Int == 0)
                #expect(call["scope"] as? String == "root")
                #expect((data(call)["latency_ms"] as? Double ?? -1) >= 0)
            }
            let llm = try #require(subcalls.first { data($0)["call"] as? String == "llm_query" })
            #expect((data(llm)["reply"] as? String)?.contains("the summary") == true)
            #expect((data(llm)["input_tokens"] as? Int ?? 0) > 0)
            let rlm = try #require(subcalls.first { data($0)["call"] as? String == "rlm_query" })
            #expect(data(rlm)["reply"] as? String == "child-done")
            #expect((data(rlm)["output_tokens"] as? Int ?? 0) > 0, "the child's tokens: \(data(rlm))")
            let childID = try #require(data(rlm)["call_id"] as? String)
            let child = events.filter { ($0["depth"] as? Int ?? 0) > 0 }
            #expect(child.count >= 5)
            #expect(child.allSatisfy { $0["scope"] as? String == childID && $0["depth"] as? Int == 1 })
            #expect(child.contains { $0["kind"] as? String == "code_result" })
            let started = try #require(
                events.firstIndex {
                    $0["kind"] as? String == "subcall_started" && data($0)["call_id"] as? String == childID
                })
            let ended = try #require(
                events.firstIndex { $0["kind"] as? String == "subcall" && data($0)["call_id"] as? String == childID })
            #expect(
                events.indices.filter { events[$0]["scope"] as? String == childID }.allSatisfy {
                    $0 > started && $0 < ended
                })

            // Typed fields.
            let request = try #require(events.first { $0["kind"] as? String == "model_request" })
            let delta = try #require(data(request)["delta"] as? [[String: Any]])
            #expect(delta.map { $0["role"] as? String } == ["system", "user"])
            let second = try #require(
                events.filter { $0["kind"] as? String == "model_request" && $0["scope"] as? String == "root" }
                    .dropFirst().first)
            #expect(
                (data(second)["delta"] as? [[String: Any]])?.map { $0["role"] as? String } == ["assistant", "user"])
            let loaded = try #require(events.first { $0["kind"] as? String == "context_loaded" })
            #expect(data(loaded)["skipped"] as? [Any] != nil)
            let first = try #require(events.first)
            #expect((data(first)["budget"] as? [String: Any])?["max_iterations"] is Int)
            let usage = try #require(events.last?["usage"] as? [String: Any])
            #expect((usage["input_tokens"] as? Int ?? 0) > 0)
            #expect(usage["subcalls"] as? Int == 2)
            let finished = data(try #require(events.last))
            #expect(finished["status"] as? String == "answered")
            #expect(finished["iterations"] as? Int == 2)

            // Nothing the run wrote holds a secret, whole or in part; the cut marker shows the text was cut.
            let written = try String(contentsOfFile: trajectory, encoding: .utf8) + result.stdout + result.stderr
            #expect(written.contains("characters cut"))
            #expect(written.contains("[REDACTED]"))
            for secret in [Self.runKey, Self.awsKey, Self.githubToken, Self.straddling] {
                let body = Array(secret.dropFirst(4))
                for start in stride(from: 0, through: body.count - 10, by: 1) {
                    let piece = String(body[start..<start + 10])
                    #expect(!written.contains(piece), "a piece of \(secret) survived: \(piece)")
                }
            }
            // --verbose streamed the code and the outputs (redacted) even in a pipe.
            #expect(result.stderr.contains("in the child"))
            #expect(result.stderr.contains("llm_query(\"summarize please\")"))

        }
    }

    /// Every line of a run with a context, a cell, an `llm_query` and an `rlm_query` child validates against
    /// `docs/trajectory.schema.json` (with Python's `jsonschema`).
    @Test(.enabled(if: hasJSONSchema, "python3's jsonschema is not installed (pip install jsonschema)"))
    func everyLineValidatesAgainstTheSchema() async throws {
        let context = try writeTemporary("log line\naws \(Self.awsKey) in the context\n")
        let trajectory = context + ".jsonl"
        try await FakeLLMServer.withServer(Self.handler()) { server in
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context, "--trajectory",
                    trajectory, "q",
                ],
                environment: ["OPENAI_API_KEY": Self.runKey])
            #expect(result.status == 0, "\(result.stderr)")
        }
        #expect(try Self.lines(trajectory).count > 20)
        let check = try runPython(Self.validator, Self.schemaPath, trajectory)
        #expect(check.status == 0 && check.stdout.isEmpty, "\(check.stdout)\(check.stderr)")
    }

    static let validator = """
        import json, sys, jsonschema
        schema = json.load(open(sys.argv[1]))
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        for number, line in enumerate(open(sys.argv[2]), 1):
            for error in validator.iter_errors(json.loads(line)):
                print(f"line {number}: {error.json_path}: {error.message}")
        """

    @Test(.enabled(if: hasJSONSchema, "python3's jsonschema is not installed (pip install jsonschema)"))
    func theSchemaRejectsAWrongLine() throws {
        let path = try writeTemporary(
            #"{"schema":1,"run":"r","seq":0,"time":1,"kind":"subcall","depth":0,"scope":"root","iteration":1,"data":{"call":"llm_query"}}"#
                + "\n", name: "bad.jsonl")
        let check = try runPython(
            """
            import json, sys, jsonschema
            jsonschema.Draft202012Validator(json.load(open(sys.argv[1]))).validate(json.loads(open(sys.argv[2]).read()))
            """, Self.schemaPath, path)
        #expect(check.status != 0)
    }

    @Test func personalDataIsMaskedOnlyWhenAsked() async throws {
        let pii = "mail ada@example.org card 4111 1111 1111 1111 ssn 123-45-6789 phone +1 415 555 2671"
        let context = try writeTemporary(pii + "\n")
        let code = "```repl\nprint(context)\n```"
        for masked in [true, false] {
            let trajectory = context + "\(masked).jsonl"
            try await FakeLLMServer.withServer(scriptedHandler(steps: [code, "FINAL(ok)"])) { server in
                let result = try await runRLM(
                    [
                        "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context,
                        "--trajectory", trajectory, "--verbose", "q",
                    ] + (masked ? ["--redact-pii"] : []),
                    environment: ["OPENAI_API_KEY": Self.runKey])
                #expect(result.status == 0, "\(result.stderr)")
                let written = try String(contentsOfFile: trajectory, encoding: .utf8)
                for sink in [written, result.stderr] {
                    if masked {
                        for mark in ["[EMAIL]", "[CARD]", "[ID]", "[PHONE]"] { #expect(sink.contains(mark), "\(sink)") }
                        for value in ["ada@example.org", "4111 1111", "123-45-6789", "415 555 2671"] {
                            #expect(!sink.contains(value), "\(value) survived")
                        }
                    } else {
                        #expect(sink.contains("ada@example.org") && sink.contains("123-45-6789"))
                    }
                }
            }
        }
    }

    @Test func aPipeGetsNoProgressAndQuietPrintsOnlyErrors() async throws {
        let context = try writeTemporary("x\n")
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["```repl\nprint(1)\n```", "FINAL(1)"])) { server in
            let plain = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context, "q"],
                environment: ["OPENAI_API_KEY": Self.runKey])
            #expect(plain.status == 0)
            #expect(!plain.stderr.contains("\r") && !plain.stderr.contains("\u{1B}["), "\(plain.stderr)")
            #expect(!plain.stderr.contains("[rlm] step"))
            #expect(plain.stderr.contains("rlm: trajectory:"))
            let quiet = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context, "--quiet", "q"],
                environment: ["OPENAI_API_KEY": Self.runKey])
            #expect(quiet.status == 0)
            #expect(quiet.stdout == "1\n")
            #expect(quiet.stderr.isEmpty, "\(quiet.stderr)")
        }
        let failed = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--quiet", "q"],
            environment: ["OPENAI_API_KEY": Self.runKey])
        #expect(failed.status != 0)
        #expect(failed.stderr.hasPrefix("rlm: "), "\(failed.stderr)")
        #expect(!failed.stderr.contains("note"))
    }

    /// On a terminal the status line is redrawn every second while nothing happens: a model that takes three
    /// seconds shows `waiting for the model` at several elapsed times.
    @Test func theStatusLineTicksEverySecondOnATerminal() async throws {
        var configuration = FakeLLMServer.Configuration()
        configuration.latency = .milliseconds(3200)
        try await FakeLLMServer.withServer(configuration: configuration, scriptedHandler(steps: ["FINAL(7)"])) {
            server in
            let check = try runPython(
                """
                import os, subprocess, sys, select
                main, sub = os.openpty()
                env = {"PATH": "/usr/bin:/bin", "HOME": sys.argv[3], "XDG_STATE_HOME": sys.argv[3],
                       "OPENAI_API_KEY": sys.argv[4]}
                p = subprocess.Popen([sys.argv[1], "run", "--base-url", sys.argv[2], "--model", "m", "q"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sub, env=env)
                os.close(sub)
                seen = b""
                while True:
                    ready, _, _ = select.select([main], [], [], 30)
                    if not ready: break
                    try:
                        chunk = os.read(main, 4096)
                    except OSError:
                        break
                    if not chunk: break
                    seen += chunk
                out = p.communicate()[0]
                sys.stdout.write(repr(out) + "\\n" + seen.decode("utf-8", "replace"))
                """, try rlmBinary(), server.openAIBaseURL, FileManager.default.temporaryDirectory.path, Self.runKey)
            let lines = check.stdout.components(separatedBy: "\r\u{1B}[2K").filter {
                $0.contains("waiting for the model")
            }
            let seconds = Set(lines.compactMap { $0.split(separator: "·").last?.trimmingCharacters(in: .whitespaces) })
            #expect(seconds.count >= 3, "the line was not redrawn each second: \(check.stdout) \(check.stderr)")
            #expect(check.stdout.hasPrefix("b'7\\n'"), "\(check.stdout)")
        }
    }
}

/// Runs `python3 -c script args…` (the first `python3` on PATH).
func runPython(_ script: String, _ arguments: String...) throws -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script] + arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CLIResult(
        status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
        stderr: String(decoding: stderr, as: UTF8.self))
}
