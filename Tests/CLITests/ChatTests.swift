import Foundation
import Glibc
import RLM
import RLMTesting
import Testing

/// `rlm chat` as a person and a script use it: one context load for many questions, whose REPL variables persist;
/// line editing and history on a real pseudo-terminal; Ctrl-C stops one question, not the conversation; the terminal
/// is put back however the conversation ends; without a terminal, answers only, one per question.
@Suite("rlm chat", .serialized)
struct ChatTests {
    static let key = ["OPENAI_API_KEY": "sk-test-0123456789"]

    /// A scratch XDG state directory, the history's home.
    static func stateDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-chat-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func chatArguments(_ server: FakeLLMServer, context: String, trajectory: String) -> [String] {
        ["chat", "--base-url", server.openAIBaseURL, "--model", "m", "--context", context, "--trajectory", trajectory]
    }

    /// The user messages the root model was sent, every request's last one.
    static func questionsSeen(_ server: FakeLLMServer) async -> [String] {
        await server.requests.compactMap { $0.messages.contains { $0.role == .system } ? $0.lastUserMessage : nil }
    }

    /// Each line's `field`.
    static func trajectoryField(_ field: String, of path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return object?[field] as? String
        }
    }

    @Test func twoQuestionsShareOneContextLoadAndTheirVariables() async throws {
        let steps = [
            "```repl\nx = 41\nprint(len(context))\n```", "FINAL(x is set)",
            "```repl\nFINAL(str(x + 1))\n```",
        ]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let context = try writeTemporary("the secret is 7\n")
            let trajectory = context + ".jsonl"
            let state = try Self.stateDirectory()
            let session = try await runInTerminal(
                Self.chatArguments(server, context: context, trajectory: trajectory),
                environment: Self.key.merging(["XDG_STATE_HOME": state]) { $1 },
                steps: [
                    .expect("rlm> "), .send("set x\r"), .expect("x is set"),
                    .expect("rlm> "), .send("what is x plus one\r"), .expect("42"),
                    .expect("rlm> "), .send("\u{04}"), .waitForExit,
                ])
            #expect(session.status == 0, "\(session.output)")
            #expect(session.terminalRestored, "\(session.output)")
            let seen = await Self.questionsSeen(server)
            #expect(seen.contains { $0.contains("set x") })
            // The second question continues the first conversation in the same REPL.
            #expect(seen.contains { $0.contains("A new question about the same `context`") && $0.contains("plus one") })
            let kinds = try Self.trajectoryField("kind", of: trajectory)
            #expect(kinds.filter { $0 == "context_loaded" }.count == 1, "\(kinds)")
            #expect(kinds.filter { $0 == "run_started" }.count == 2, "\(kinds)")
            #expect(kinds.filter { $0 == "code_result" }.count == 2, "\(kinds)")
            // One file, one run per question.
            let runs = try Self.trajectoryField("run", of: trajectory)
            let stem = URL(fileURLWithPath: trajectory).deletingPathExtension().lastPathComponent
            let distinct = runs.reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } }
            #expect(distinct == [stem + "-q1", stem + "-q2"], "\(runs)")
            // The history: both questions, in a private file in a private directory.
            let history = state + "/swiftrlm/history/chat"
            #expect(try String(contentsOfFile: history, encoding: .utf8) == "set x\nwhat is x plus one\n")
            #expect(try Self.mode(of: history) == 0o600)
            #expect(try Self.mode(of: state + "/swiftrlm/history") == 0o700)
        }
    }

    @Test func upRecallsLeftEditsAndCtrlCClearsTheLine() async throws {
        let steps = ["FINAL(ans-1)", "FINAL(ans-2)", "FINAL(ans-3)", "FINAL(ans-4)", "FINAL(ans-5)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let context = try writeTemporary("ctx\n")
            let wide = "長い質問: " + String(repeating: "あいうえお", count: 8) + " 🙂 end"
            let session = try await runInTerminal(
                Self.chatArguments(server, context: context, trajectory: context + ".jsonl"),
                environment: Self.key.merging(["XDG_STATE_HOME": try Self.stateDirectory()]) { $1 }, columns: 40,
                steps: [
                    .expect("rlm> "), .send("the first question\r"), .expect("ans-1"),
                    // Up recalls it; Enter sends it again.
                    .expect("rlm> "), .send("\u{1B}[A"), .pause(0.3), .send("\r"), .expect("ans-2"),
                    // Left nine times, then an insertion; Ctrl-A and End (xterm and VT100 forms).
                    .expect("rlm> "), .send("ask abot editing"),
                    .send(String(repeating: "\u{1B}[D", count: 9)), .send("u"), .send("\u{01}please "),
                    .send("\u{1B}OF!"), .send("\r"), .expect("ans-3"),
                    // Wider than the 40-column terminal, with wide characters: edited at both ends.
                    .expect("rlm> "), .send(wide), .send("\u{1B}[H"), .send("X"), .send("\u{1B}[F"), .send("Y\r"),
                    .expect("ans-4"),
                    // Ctrl-C drops the line typed; Backspace, Ctrl-W and Ctrl-U edit the next.
                    .expect("rlm> "), .send("never sent"), .send("\u{03}"), .expect("^C"), .expect("rlm> "),
                    .send("junk words\u{17}\u{17}kept\u{7F}p"), .send("\r"), .expect("ans-5"),
                    .expect("rlm> "), .send("\u{04}"), .waitForExit,
                ])
            #expect(session.status == 0, "\(session.output)")
            #expect(session.terminalRestored)
            let seen = await Self.questionsSeen(server)
            #expect(seen.filter { $0.contains("the first question") }.count == 2, "\(seen)")
            #expect(seen.contains { $0.hasSuffix("please ask about editing!") }, "\(seen)")
            #expect(seen.contains { $0.hasSuffix("X" + wide + "Y") }, "\(seen)")
            #expect(seen.contains { $0.hasSuffix(": kepp") }, "\(seen)")
            #expect(!seen.contains { $0.contains("never sent") }, "\(seen)")
        }
    }

    @Test func ctrlCStopsTheRunningQuestionAndTheNextIsAnswered() async throws {
        let steps = [
            "```repl\nx = 1\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)\n```",
            "```repl\nprint(len(context))\nFINAL('after: ' + str('x' in globals()))\n```",
        ]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let context = try writeTemporary("ctx\n")
            let trajectory = context + ".jsonl"
            let started = ContinuousClock.now
            let session = try await runInTerminal(
                Self.chatArguments(server, context: context, trajectory: trajectory),
                environment: Self.key.merging(["XDG_STATE_HOME": try Self.stateDirectory()]) { $1 },
                steps: [
                    .expect("rlm> "), .send("sleep a minute\r"),
                    .waitForFile(trajectory, containing: "model_response"), .pause(1.0), .send("\u{03}"),
                    .expect("interrupted"), .expect("rlm> "), .send("are you still there\r"),
                    // A fresh sandbox: the context is there again, the earlier variable is not.
                    .expect("after: False"), .expect("rlm> "), .send("\u{04}"), .waitForExit,
                ])
            #expect(ContinuousClock.now - started < .seconds(50), "the sleeping cell was not stopped")
            #expect(session.status == 0, "\(session.output)")
            #expect(session.terminalRestored)
            let lines = try String(contentsOfFile: trajectory, encoding: .utf8).split(separator: "\n")
            #expect(lines.contains { $0.contains("\"interrupted\"") && $0.contains("SIGINT") }, "\(lines)")
            #expect(lines.last?.contains("answered") == true, "\(lines.last ?? "")")
        }
    }

    @Test(arguments: [SIGTERM, SIGHUP])
    func aSignalAtThePromptEndsTheConversationAndRestoresTheTerminal(signal: Int32) async throws {
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(ans-1)"])) { server in
            let context = try writeTemporary("ctx\n")
            let session = try await runInTerminal(
                Self.chatArguments(server, context: context, trajectory: context + ".jsonl"),
                environment: Self.key.merging(["XDG_STATE_HOME": try Self.stateDirectory()]) { $1 },
                steps: [
                    .expect("rlm> "), .send("q\r"), .expect("ans-1"), .expect("rlm> "), .send("half typed"),
                    .pause(0.3), .signal(signal), .waitForExit,
                ])
            #expect(session.status == 128 + signal, "\(session.output)")
            #expect(session.terminalRestored, "raw mode was left on")
        }
    }

    @Test func aQuestionWithoutAnAnswerDoesNotEndTheConversation() async throws {
        let steps = ["```repl\nprint(1)\n```", "```repl\nprint(2)\n```", "FINAL(late)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let context = try writeTemporary("ctx\n")
            let session = try await runInTerminal(
                Self.chatArguments(server, context: context, trajectory: context + ".jsonl") + ["--max-tokens", "50"],
                environment: Self.key.merging(["XDG_STATE_HOME": try Self.stateDirectory()]) { $1 },
                steps: [
                    .expect("rlm> "), .send("q\r"), .expect("no answer"), .expect("rlm> "), .send("\u{04}"),
                    .waitForExit,
                ])
            #expect(session.status == 0, "Ctrl-D ends a conversation cleanly: \(session.output)")
            #expect(session.terminalRestored)
        }
    }

    @Test func theHistoryKeepsTheLastThousandLinesAcrossSessions() async throws {
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(ans-a)", "FINAL(ans-b)"])) { server in
            let context = try writeTemporary("ctx\n")
            let state = try Self.stateDirectory()
            let directory = state + "/swiftrlm/history"
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let old = (0..<1005).map { "old question \($0)" }
            try (old.joined(separator: "\n") + "\n").write(
                toFile: directory + "/chat", atomically: false, encoding: .utf8)
            chmod(directory + "/chat", 0o600)
            let session = try await runInTerminal(
                Self.chatArguments(server, context: context, trajectory: context + ".jsonl"),
                environment: Self.key.merging(["XDG_STATE_HOME": state]) { $1 },
                steps: [
                    .expect("rlm> "), .send("a new question\r"), .expect("ans-a"),
                    .expect("rlm> "), .send("\u{1B}[A\u{1B}[A"), .pause(0.3), .send("\r"), .expect("ans-b"),
                    .expect("rlm> "), .send("exit\r"), .waitForExit,
                ])
            #expect(session.status == 0, "\(session.output)")
            let seen = await Self.questionsSeen(server)
            #expect(seen.contains { $0.hasSuffix("old question 1004") }, "\(seen)")
            let lines = try String(contentsOfFile: directory + "/chat", encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 1000)
            #expect(lines.suffix(3) == ["a new question", "old question 1004", "exit"])
        }
    }

    @Test func withoutATerminalAnswersArePrintedOnePerLine() async throws {
        let steps = ["```repl\ny = 20\n```", "FINAL(one)", "```repl\nFINAL(str(y + 1))\n```"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let context = try writeTemporary("ctx\n")
            let state = try Self.stateDirectory()
            let result = try await runRLM(
                Self.chatArguments(server, context: context, trajectory: context + ".jsonl"),
                environment: Self.key.merging(["XDG_STATE_HOME": state]) { $1 },
                stdin: "first question\n\nsecond question\n")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "one\n21\n")
            #expect(!result.stderr.contains("rlm> "))
            #expect(!FileManager.default.fileExists(atPath: state + "/swiftrlm/history"), "no history without a tty")
            // Each answer is a run: one audit line each.
            let audit = (try? String(contentsOfFile: state + "/swiftrlm/audit.jsonl", encoding: .utf8)) ?? ""
            #expect(audit.split(separator: "\n").count == 2, "\(audit)")
            #expect(audit.components(separatedBy: "\"outcome\":\"answered\"").count == 3, "\(audit)")
        }
    }

    @Test func withoutATerminalAFailedQuestionSetsTheStatus() async throws {
        let steps = ["```repl\nprint(1)\n```", "```repl\nprint(2)\n```", "FINAL(late)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let context = try writeTemporary("ctx\n")
            let result = try await runRLM(
                Self.chatArguments(server, context: context, trajectory: context + ".jsonl")
                    + ["--max-tokens", "50"],
                environment: Self.key, stdin: "q1\n")
            #expect(result.status == 3, "\(result.stderr)")
            #expect(result.stderr.contains("no answer"), "\(result.stderr)")
        }
    }

    @Test func theContextCannotComeFromStdin() async throws {
        let result = try await runRLM(["chat", "--context", "-"], environment: Self.key)
        #expect(result.status == 2)
        #expect(result.stderr.contains("reads its questions from stdin"), "\(result.stderr)")
    }

    static func mode(of path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.posixPermissions] as? Int ?? 0) & 0o777
    }
}

// MARK: - A pseudo-terminal driver

/// One step of a scripted terminal session.
enum TerminalStep {
    /// Waits (up to `timeout` seconds) until `text` appears in the output after the previous match.
    case expect(String, timeout: Double = 40)
    /// Types `text` (control characters and escape sequences included).
    case send(String)
    case pause(Double)
    /// Waits until the file exists and contains `text`.
    case waitForFile(String, containing: String)
    /// Sends a signal to the program.
    case signal(Int32)
    /// Waits for the program to exit.
    case waitForExit

    var json: [String: Any] {
        switch self {
        case .expect(let text, let timeout): return ["expect": text, "timeout": timeout]
        case .send(let text): return ["send": text]
        case .pause(let seconds): return ["sleep": seconds]
        case .waitForFile(let path, let text): return ["wait_file": path, "contains": text]
        case .signal(let number): return ["signal": Int(number)]
        case .waitForExit: return ["wait_exit": 40]
        }
    }
}

/// How a terminal session ended.
struct TerminalSession {
    /// The exit status (128 + N for signal N); `nil` when the program had to be killed.
    var status: Int32?
    /// Everything the program wrote to the terminal.
    var output: String
    /// Whether the terminal's settings after the program were exactly those before it.
    var terminalRestored: Bool
}

/// Runs `rlm` on a fresh pseudo-terminal (its controlling terminal, `columns` wide) with exactly `environment` (plus
/// PATH, HOME and TERM) and plays `steps`; records an issue for a step that failed. Then checks that no sandbox was
/// left behind.
func runInTerminal(
    _ arguments: [String], environment: [String: String], columns: Int = 80, steps: [TerminalStep],
    sourceLocation: SourceLocation = #_sourceLocation
) async throws -> TerminalSession {
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-pty-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let driver = scratch.appendingPathComponent("pty_driver.py").path
    try ptyDriver.write(toFile: driver, atomically: true, encoding: .utf8)
    var env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch.path, "TERM": "xterm"]
    env.merge(environment) { _, new in new }
    let spec: [String: Any] = [
        "argv": [try rlmBinary()] + arguments, "env": env, "columns": columns, "steps": steps.map(\.json),
    ]
    let specPath = scratch.appendingPathComponent("spec.json").path
    try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: specPath))
    let started = Date()
    let result = try await runProgram("/usr/bin/python3", [driver, specPath], checkLeftovers: false)
    let report = try #require(
        try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
        "the pty driver failed: \(result.stderr)", sourceLocation: sourceLocation)
    let output = report["output"] as? String ?? ""
    if let failure = report["error"] as? String {
        Issue.record("\(failure)\n--- terminal output ---\n\(output)", sourceLocation: sourceLocation)
    }
    if let pid = report["pid"] as? Int {
        try await expectNoSandboxLeftBehind(rlmPID: Int32(pid), since: started, sourceLocation: sourceLocation)
    }
    return TerminalSession(
        status: (report["status"] as? Int).map(Int32.init), output: output,
        terminalRestored: report["restored"] as? Bool ?? false)
}

/// The driver: a pty pair, the program on its slave side as session leader with it as controlling terminal (so
/// Ctrl-C typed there is SIGINT), and the steps played on the master side while all output is drained.
private let ptyDriver = #"""
    import fcntl, json, os, re, select, signal, struct, subprocess, sys, termios, time

    spec = json.load(open(sys.argv[1]))
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, spec["columns"], 0, 0))
    before = termios.tcgetattr(slave)

    def become_session_leader():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(spec["argv"], stdin=slave, stdout=slave, stderr=slave, env=spec["env"],
                            preexec_fn=become_session_leader, close_fds=True)
    output = bytearray()
    mark = 0
    error = None

    def drain(seconds):
        end = time.time() + seconds
        while True:
            left = end - time.time()
            ready, _, _ = select.select([master], [], [], max(0, min(left, 0.05)))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                output.extend(data)
            if time.time() >= end:
                return

    def text():
        return output.decode("utf-8", "replace")

    for step in spec["steps"]:
        if "expect" in step:
            end = time.time() + step["timeout"]
            while True:
                found = text().find(step["expect"], mark)
                if found >= 0:
                    mark = found + len(step["expect"])
                    break
                if time.time() > end:
                    error = "timed out waiting for %r" % step["expect"]
                    break
                drain(0.05)
        elif "send" in step:
            # Typed key by key; an escape sequence is one key.
            for key in re.findall(r"\x1b(?:\[[0-9;]*[A-Za-z~]|O.)|.", step["send"], re.S):
                os.write(master, key.encode("utf-8"))
                drain(0.01)
        elif "sleep" in step:
            drain(step["sleep"])
        elif "wait_file" in step:
            end = time.time() + 40
            while True:
                try:
                    if step["contains"] in open(step["wait_file"], encoding="utf-8", errors="replace").read():
                        break
                except OSError:
                    pass
                if time.time() > end:
                    error = "timed out waiting for %s to contain %r" % (step["wait_file"], step["contains"])
                    break
                drain(0.05)
        elif "signal" in step:
            proc.send_signal(step["signal"])
        elif "wait_exit" in step:
            end = time.time() + step["wait_exit"]
            while proc.poll() is None and time.time() < end:
                drain(0.05)
            if proc.poll() is None:
                error = "the program did not exit"
        if error:
            break

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        end = time.time() + 15
        while proc.poll() is None and time.time() < end:
            drain(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    drain(0.2)
    status = proc.returncode
    status = 128 - status if status < 0 else status
    after = termios.tcgetattr(slave)
    json.dump({"status": status, "output": text(), "pid": proc.pid, "restored": after == before, "error": error},
              sys.stdout)
    """#
