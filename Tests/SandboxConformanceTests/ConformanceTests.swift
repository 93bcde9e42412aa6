import Foundation
import RLM
import Testing

@testable import RLMSandbox

/// One suite, every backend present (issue 14): the same cells must behave the same whatever holds the worker —
/// state, capture, errors, timeouts, limits, contexts, sub-calls, and what the code inside can reach.
@Suite("Sandbox conformance, every backend")
struct ConformanceTests {
    @Test(
        "the backends absent on this machine, and why",
        .enabled(if: BackendUnderTest.all.contains { $0.absentBecause != nil }))
    func absent() {
        for backend in BackendUnderTest.all {
            if let reason = backend.absentBecause { print("conformance: \(backend.name) backend absent: \(reason)") }
        }
        #expect(BackendUnderTest.present.contains { $0.name == "process" })
    }

    @Test("state persists across cells, and a cell that raised keeps it", arguments: BackendUnderTest.present)
    func state(_ backend: BackendUnderTest) async throws {
        try await withSession(backend) { session in
            _ = try await session.run("x = 41\ndef f(a): return a + 1")
            let raised = try await session.run("y = f(x)\nraise ValueError('boom ' + str(y))")
            #expect(raised.error?.type == "ValueError")
            #expect(raised.error?.message.contains("boom 42") == true)
            #expect(raised.error?.traceback.contains("ValueError") == true)
            let after = try await session.run("print(f(y))")
            #expect(after.stdout == "43\n")
            #expect(after.error == nil)
            let y = try await session.variable(named: "y")
            #expect(y?.value == "42" && y?.typeName == "int")
            let missing = try await session.variable(named: "missing")
            #expect(missing == nil)
        }
    }

    @Test("stdout and stderr are captured per cell, and cut to the output limit", arguments: BackendUnderTest.present)
    func capture(_ backend: BackendUnderTest) async throws {
        try await withSession(backend) { session in
            let result = try await session.run("import sys\nprint('out')\n_ = sys.stderr.write('err\\n')")
            #expect(result.stdout == "out\n")
            #expect(result.stderr == "err\n")
            let next = try await session.run("print('second')")
            #expect(next.stdout == "second\n", "output of one cell leaks into the next")
            let big = try await session.run("print('a' * 100000 + 'END')")
            #expect(big.stdout.count < 25000, "the default output limit is 20,000 characters per stream")
            #expect(big.stdout.contains("END"), "the tail is kept")
            #expect(big.stdout.contains("characters cut") || big.stdout.contains("truncated"))
        }
    }

    @Test("FINAL and FINAL_VAR end with an answer", arguments: BackendUnderTest.present)
    func finalAnswer(_ backend: BackendUnderTest) async throws {
        try await withSession(backend) { session in
            let direct = try await session.run("FINAL(6 * 7)")
            #expect(direct.finalAnswer == "42")
            let named = try await session.run("answer_text = 'done'\nFINAL_VAR('answer_text')")
            #expect(named.finalAnswer == "done")
        }
    }

    @Test(
        "a cell past its timeout stops; the session says whether its state survived",
        arguments: BackendUnderTest.present)
    func timeout(_ backend: BackendUnderTest) async throws {
        try await withSession(backend) { session in
            _ = try await session.run("kept = 'yes'")
            let started = ContinuousClock.now
            let spin = try await session.run("while True:\n    pass", timeout: .seconds(2))
            #expect(spin.timedOut)
            #expect(ContinuousClock.now - started < .seconds(30))
            if backend.interruptsCells {
                #expect(!spin.stateLost)
                let after = try await session.run("print(kept)")
                #expect(after.stdout == "yes\n")
            } else if !spin.stateLost {
                let after = try await session.run("print(kept)")
                #expect(after.stdout == "yes\n")
            }
        }
        try await withSession(backend) { session in
            let sleeper = try await session.run("import time\ntime.sleep(3600)", timeout: .seconds(2))
            #expect(sleeper.timedOut)
        }
    }

    @Test(
        "memory past the limit is an error or a memory kill, never the host's problem",
        arguments: BackendUnderTest.present)
    func memory(_ backend: BackendUnderTest) async throws {
        try await withSession(backend, conformanceConfiguration(memoryMB: 256)) { session in
            // 256 MiB: also the shared sessions' limit.
            let bomb = try await session.run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))")
            #expect(bomb.memoryExceeded || bomb.error?.type == "MemoryError", "\(String(describing: bomb.error))")
        }
    }

    @Test("contexts load as text, documents and JSON", arguments: BackendUnderTest.present)
    func contexts(_ backend: BackendUnderTest) async throws {
        try await withSession(backend) { session in
            let text = String(repeating: "line of text\n", count: 50_000)
            let summary = try await session.loadContext(.text(text))
            #expect(summary.characters == text.count)
            let measured = try await session.run("print(len(context), context.count('\\n'))")
            #expect(measured.stdout == "\(text.count) 50000\n")
            _ = try await session.loadContext(.documents(["alpha", "beta gamma"]), name: "docs")
            let docs = try await session.run("print(len(docs), docs[1].endswith('beta gamma'))")
            #expect(docs.stdout == "2 True\n")
            _ = try await session.loadContext(.json(.object(["k": .array([.int(1), .int(2)])])), name: "data")
            let data = try await session.run("print(data['k'][1])")
            #expect(data.stdout == "2\n")
            let first = try await session.run("print(len(context))")
            #expect(first.stdout == "\(text.count)\n", "the first context is kept")
        }
    }

    @Test(
        "llm_query, llm_query_batched and rlm_query with a context reach the host", arguments: BackendUnderTest.present)
    func subcalls(_ backend: BackendUnderTest) async throws {
        try await withSession(backend) { session in
            let one = try await session.run("print(llm_query('hi'))")
            #expect(one.stdout == "echo:hi\n", "\(String(describing: one.error))")
            let many = try await session.run("print(llm_query_batched(['a', 'b', 'c']))")
            #expect(many.stdout == "['echo:a', 'echo:b', 'echo:c']\n")
            let child = try await session.run("print(rlm_query('q', context='x' * 300000))")
            #expect(child.stdout == "child:q:300000\n", "\(String(describing: child.error))")
            let after = try await session.run("print('still here')")
            #expect(after.stdout == "still here\n")
        }
    }

    @Test("the code inside sees no network, no secrets and no writable root", arguments: BackendUnderTest.present)
    func isolation(_ backend: BackendUnderTest) async throws {
        setenv("RLM_CONFORMANCE_FAKE_SECRET", "sk-conformance-\(UInt32.random(in: 0...UInt32.max))", 1)
        let secret = String(cString: getenv("RLM_CONFORMANCE_FAKE_SECRET"))
        try await withSession(backend) { session in
            let probe = try await session.run(
                """
                import os, socket
                print('secret' if any('sk-conformance' in v for v in os.environ.values()) else 'clean')
                try:
                    socket.create_connection(('1.1.1.1', 53), timeout=2); print('connected')
                except Exception:  # OSError; in WASI the socket module has no connect at all (AttributeError)
                    print('no network')
                try:
                    open('/usr/rlm-conformance', 'w'); print('root writable')
                except OSError:
                    print('root read-only')
                """)
            #expect(
                probe.stdout == "clean\nno network\nroot read-only\n",
                "\(probe.stdout) \(String(describing: probe.error))")
            #expect(!probe.stdout.contains(secret))
        }
    }
}

@Suite("Command backend")
struct CommandBackendTests {
    @Test("a command line splits like a shell's, without expanding anything")
    func parse() throws {
        #expect(
            try CommandSandbox.parse(#"kubectl exec -i 'my pod' -- python3 -I "a \"b\"" c\ d $HOME"#)
                == ["kubectl", "exec", "-i", "my pod", "--", "python3", "-I", #"a "b""#, "c d", "$HOME"])
        #expect(throws: SandboxError.self) { try CommandSandbox.parse("python3 'unterminated") }
        #expect(throws: SandboxError.self) { try CommandSandbox.arguments([]) }
    }

    @Test("{bootstrap} is replaced in place, {bootstrap_sh} shell-quoted, else -c CODE is appended")
    func placeholders() throws {
        let appended = try CommandSandbox.arguments(["python3", "-I"])
        #expect(appended.count == 4 && appended[2] == "-c" && appended[3] == LaunchPlan.bootstrap)
        let placed = try CommandSandbox.arguments(["sh", "-c", "exec python3 -I -c \"$1\"", "x", "{bootstrap}"])
        #expect(placed.last == LaunchPlan.bootstrap && placed.count == 5)
        let quoted = try CommandSandbox.arguments(["ssh", "host", "python3", "-I", "-c", "{bootstrap_sh}"])
        #expect(quoted.last?.hasPrefix("'") == true && quoted.last?.hasSuffix("'") == true)
        // The quoted form goes through a shell back to the code itself.
        let echoed = try ChildProcess.runToCompletion(
            ["/bin/sh", "-c", "printf %s " + (quoted.last ?? "")], timeout: .seconds(10))
        #expect(String(decoding: echoed.stdout, as: UTF8.self) == LaunchPlan.bootstrap)
    }

    @Test("a command that runs a shell works through {bootstrap}, and the command's secrets stay on the host")
    func throughAShell() async throws {
        setenv("OPENAI_API_KEY", "sk-command-backend-planted", 1)
        defer { unsetenv("OPENAI_API_KEY") }
        let sandbox = CommandSandbox(
            command: [
                "/bin/sh", "-c", "echo \"${OPENAI_API_KEY:-none}\" >&2; exec /usr/bin/python3 -I -c \"$1\"", "sh",
                "{bootstrap}",
            ], configuration: conformanceConfiguration())
        try await sandbox.withSession { session in
            let result = try await session.run("import os\nprint(os.environ.get('OPENAI_API_KEY'))")
            #expect(result.stdout == "None\n")
        }
    }

    @Test("a command that does not start a worker is a start failure that says what the command must do")
    func notAWorker() async throws {
        let sandbox = CommandSandbox(command: ["/bin/echo", "hello"], configuration: conformanceConfiguration())
        let error = await #expect(throws: SandboxError.self) { try await sandbox.startSession(handler: nil) }
        #expect(error?.isSetupError == true)
        #expect(error?.message.contains("must start Python") == true, "\(String(describing: error))")
        let missing = CommandSandbox(command: ["/no/such/kubectl"], configuration: conformanceConfiguration())
        await #expect(throws: SandboxError.self) { try await missing.startSession(handler: nil) }
    }

    @Test("a timeout kills the command's whole process group, children included")
    func killsTheGroup() async throws {
        let marker = "/tmp/rlm-command-group-\(UInt32.random(in: 0...UInt32.max))"
        var configuration = conformanceConfiguration(timeout: .seconds(2))
        configuration.interruptGrace = .milliseconds(500)
        let sandbox = CommandSandbox(
            command: [
                "/bin/sh", "-c", "sleep 300 & echo $! > \(marker); exec /usr/bin/python3 -I -c \"$1\"", "sh",
                "{bootstrap}",
            ], configuration: configuration)
        try await sandbox.withSession { session in
            let result = try await session.run(
                "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass")
            #expect(result.timedOut && result.stateLost)
        }
        defer { unlink(marker) }
        let pid = try #require(
            pid_t(
                String(decoding: FileManager.default.contents(atPath: marker) ?? Data(), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)))
        var gone = false
        for _ in 0..<100 where !gone {
            gone = kill(pid, 0) != 0 || isZombie(pid)
            if !gone { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(gone, "the command's background child \(pid) outlived the session")
    }
}

/// Whether `pid` is a zombie (exited, not yet reaped by its parent).
func isZombie(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    return stat[stat.index(close, offsetBy: 2)] == "Z"
}
