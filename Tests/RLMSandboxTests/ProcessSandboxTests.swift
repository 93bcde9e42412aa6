import Foundation
import Glibc
import RLM
import Testing

@testable import RLMSandbox

extension SandboxTests {
    @Suite("Process sandbox: the REPL")
    struct SandboxREPLTests {
        @Test func statePersistsAcrossCells() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                _ = try await session.run("x = 41\ndef inc(v):\n    return v + 1")
                let result = try await session.run("print(inc(x))")
                #expect(result.stdout == "42\n")
                #expect(result.error == nil)
            }
        }

        @Test func capturesPrintOsWriteAndChildProcesses() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import os, subprocess, sys
                    print("from print")
                    os.write(1, b"from os.write\\n")
                    subprocess.run(["/bin/echo", "from a child"])
                    os.system("echo from a shell >&2")
                    print("to stderr", file=sys.stderr)
                    """)
                #expect(result.error == nil)
                #expect(result.stdout == "from print\nfrom os.write\nfrom a child\n")
                #expect(result.stderr.contains("from a shell"))
                #expect(result.stderr.contains("to stderr"))
            }
        }

        @Test func reportsExceptionsWithTracebacks() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run("def f():\n    raise ValueError('bad value')\nf()")
                let error = try #require(result.error)
                #expect(error.type == "ValueError")
                #expect(error.message == "bad value")
                #expect(error.traceback.contains("raise ValueError"))
                #expect(!error.traceback.contains("rlm-worker"))
                let syntax = try await session.run("def broken(:\n  pass")
                #expect(syntax.error?.type == "SyntaxError")
                // The REPL survives both, and sys.exit too.
                let exit = try await session.run("import sys\nsys.exit(3)")
                #expect(exit.error?.type == "SystemExit")
                #expect(try await session.run("print('alive')").stdout == "alive\n")
            }
        }

        @Test func lastExpressionIsShown() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                #expect(try await session.run("a = [1, 2]\nlen(a) * 21").stdout == "42\n")
                #expect(try await session.run("None").stdout == "")
            }
        }

        @Test func finalAnswerForms() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                #expect(try await session.run("FINAL(6 * 7)").finalAnswer == "42")
                #expect(
                    try await session.run("result = 'from a variable'\nFINAL_VAR('result')").finalAnswer
                        == "from a variable")
                let missing = try await session.run("FINAL_VAR('nope')")
                #expect(missing.error?.type == "NameError")
                #expect(missing.finalAnswer == nil)
                #expect(
                    try await session.run("answer['content'] = 'dict'\nanswer['ready'] = True").finalAnswer == "dict")
                #expect(try await session.run("x = 1").finalAnswer == nil)
                let shown = try await session.run("SHOW_VARS()")
                #expect(shown.stdout.contains("result"))
            }
        }

        @Test func readsVariables() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                _ = try await session.run("total = sum(range(10))")
                let value = try await session.variable(named: "total")
                #expect(value == VariableValue(value: "45", typeName: "int"))
                #expect(try await session.variable(named: "absent") == nil)
            }
        }

        @Test func outputIsCutHeadAndTail() async throws {
            var configuration = testConfiguration()
            configuration.outputLimit = 1000
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let result = try await session.run("print('A' * 600 + 'B' * 5000 + 'C' * 600, end='')")
                #expect(result.stdout.count < 1100)
                #expect(result.stdout.hasPrefix(String(repeating: "A", count: 400)))
                #expect(result.stdout.hasSuffix(String(repeating: "C", count: 400)))
                #expect(result.stdout.contains("5200 characters cut"))
            }
        }
    }
}

extension SandboxTests {
    @Suite("Process sandbox: contexts and sub-calls")
    struct SandboxContextTests {
        @Test(arguments: [
            (ContextValue.text("hello world"), "str", "11"),
            (ContextValue.documents(["a", "bb", "ccc"]), "list", "3"),
            (ContextValue.json(.object(["k": .array([.int(1), .int(2)])])), "dict", "1"),
        ])
        func loadsContexts(context: ContextValue, type: String, length: String) async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                try await session.loadContext(context)
                let result = try await session.run("print(type(context).__name__, len(context))")
                #expect(result.stdout == "\(type) \(length)\n")
            }
        }

        @Test func largeContextCrossesManyFrames() async throws {
            let line = "2026-11-21 ERROR svc-7 something failed\n"
            let text = String(repeating: line, count: 250_000)  // ~10 MB: three chunks
            var configuration = testConfiguration(workDirMB: 128)
            configuration.cellTimeout = .seconds(30)
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                try await session.loadContext(.text(text))
                let result = try await session.run("print(len(context), context.count('ERROR'))")
                #expect(result.stdout == "\(text.count) 250000\n")
            }
        }

        @Test func contextLargerThanWorkDirIsRefused() async throws {
            try await withTestSession(testConfiguration(workDirMB: 4)) { (session: any SandboxSession) async throws in
                await #expect(throws: SandboxError.self) {
                    try await session.loadContext(.text(String(repeating: "x", count: 5 << 20)))
                }
            }
        }

        @Test func subcallsReachTheHandler() async throws {
            let handler = ClosureSubcallHandler { request in
                switch request {
                case .llmQuery(let prompt, let model):
                    if prompt == "fail" { throw SandboxError.setup("the sub-model is unreachable") }
                    return .text("answer to \(prompt) via \(model ?? "default")")
                case .llmQueryBatched(let prompts, _):
                    return .batch(prompts.map { $0.uppercased() })
                case .rlmQuery(let prompt, let context, let model):
                    return .text(
                        "child saw \(prompt) with \(context?.stringValue ?? "nothing") via \(model ?? "root")")
                }
            }
            try await withTestSession(handler: handler) { (session: any SandboxSession) async throws in
                let one = try await session.run("print(llm_query('q1', model='small'))")
                #expect(one.stdout == "answer to q1 via small\n")
                let batch = try await session.run("print(llm_query_batched(['a', 'b', 'c']))")
                #expect(batch.stdout == "['A', 'B', 'C']\n")
                let child = try await session.run("print(rlm_query('sub', context='piece'))")
                #expect(child.stdout == "child saw sub with piece via root\n")
                let named = try await session.run("print(rlm_query('sub', model='judge'))")
                #expect(named.stdout == "child saw sub with nothing via judge\n")
                let failed = try await session.run("llm_query('fail')")
                #expect(failed.error?.type == "RuntimeError")
                #expect(failed.error?.message.contains("unreachable") == true)
                let wrongType = try await session.run("llm_query(123)")
                #expect(wrongType.error?.type == "TypeError")
            }
        }

        @Test func subcallsWithoutAHandlerRaise() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run("llm_query('hi')")
                #expect(result.error?.type == "RuntimeError")
            }
        }
    }
}

extension SandboxTests {
    @Suite("Process sandbox: limits and timeouts")
    struct SandboxLimitTests {
        @Test(arguments: [
            "while True:\n    pass",
            "import time\ntime.sleep(100)",
        ])
        func timeoutInterruptsAndKeepsState(code: String) async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                _ = try await session.run("kept = 'still here'")
                let clock = ContinuousClock()
                let start = clock.now
                let result = try await session.run(code, timeout: .milliseconds(500))
                #expect(clock.now - start < .seconds(5))
                #expect(result.timedOut)
                #expect(!result.stateLost)
                #expect(result.error?.type == "TimeoutError")
                #expect(try await session.run("print(kept)").stdout == "still here\n")
            }
        }

        @Test func loopThatSwallowsInterruptsIsKilled() async throws {
            let configuration = testConfiguration()
            let session = try await ProcessSandbox(configuration: configuration).startSession(handler: nil)
            let probe = try #require(session as? BubblewrapSession).processesForTesting
            let result = try await session.run(
                """
                import signal
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                while True:
                    try:
                        pass
                    except BaseException:
                        pass
                """, timeout: .milliseconds(300))
            #expect(result.timedOut)
            #expect(result.stateLost)
            #expect(result.error?.message.contains("state is lost") == true)
            #expect(await session.isAlive == false)
            await #expect(throws: SandboxError.self) { try await session.run("1") }
            await session.shutdown()
            try await expectGone(probe)
        }

        @Test func memoryBombIsContained() async throws {
            try await withTestSession(testConfiguration(memoryMB: 256)) { (session: any SandboxSession) async throws in
                let result = try await session.run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))")
                #expect(result.memoryExceeded)
                #expect(result.error?.type == "MemoryError")
            }
        }

        @Test func forkBombIsContained() async throws {
            try await withTestSession(testConfiguration(timeout: .seconds(5))) {
                (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import os
                    while True:
                        os.fork()
                    """)
                // Either the pids limit stops it (BlockingIOError) or the timeout does; the host is unharmed.
                #expect(result.error != nil)
            }
        }

        @Test func outputFloodIsBounded() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run("while True:\n    print('x' * 1000)", timeout: .seconds(1))
                #expect(result.timedOut)
                #expect(result.stdout.count <= 20_100)
                #expect(result.stdout.contains("characters cut"))
            }
        }

        @Test func filling_theWorkDirFails() async throws {
            try await withTestSession(testConfiguration(workDirMB: 16)) { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    "with open('/tmp/fill', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * (1 << 20))")
                #expect(result.error?.type == "OSError")
                #expect(try await session.run("print('alive')").stdout == "alive\n")
            }
        }

        @Test func cancellationKillsTheSandbox() async throws {
            let session = try await ProcessSandbox(configuration: testConfiguration()).startSession(handler: nil)
            let probe = try #require(session as? BubblewrapSession).processesForTesting
            let task = Task {
                try await session.run("import time\ntime.sleep(60)", timeout: .seconds(60))
            }
            try await Task.sleep(for: .milliseconds(500))
            task.cancel()
            _ = await task.result
            // Cancelling the cell alone kills the sandbox: no shutdown() here.
            try await expectGone(probe)
            #expect(await session.isAlive == false)
        }
    }
}

extension SandboxTests {
    @Suite("Process sandbox: isolation under attack")
    struct SandboxIsolationTests {
        @Test func runsAsAnUnprivilegedUser() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run("import os\nprint(os.getuid(), os.geteuid(), os.getgid())")
                let ids = result.stdout.split(separator: " ").compactMap {
                    Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
                }
                #expect(ids.count == 3)
                #expect(!ids.contains(0))
            }
        }

        @Test func cannotConnectToTheHostLoopback() async throws {
            let (listener, port) = try openLoopbackListener()
            defer { close(listener) }
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    "import socket\nsocket.create_connection(('127.0.0.1', \(port)), timeout=2)")
                #expect(result.error != nil)
                #expect(
                    ["ConnectionRefusedError", "PermissionError", "OSError", "TimeoutError"].contains(
                        result.error?.type ?? ""))
            }
        }

        @Test func cannotReadAHostFile() async throws {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-secret-\(getpid()).txt").path
            try "host-only-secret".write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o644)
            defer { unlink(path) }
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run("print(open('\(path)').read())")
                #expect(result.error?.type == "FileNotFoundError" || result.error?.type == "PermissionError")
                #expect(!result.stdout.contains("host-only-secret"))
                let etc = try await session.run(
                    "import os\nprint(os.path.exists('/etc/passwd'), os.path.exists('/root'), os.path.exists('/work'))")
                #expect(etc.stdout == "False False False\n")
            }
        }

        @Test func hostSecretsAreInvisible() async throws {
            setenv("RLM_TEST_FAKE_SECRET", "sk-fake-0123456789", 1)
            defer { unsetenv("RLM_TEST_FAKE_SECRET") }
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import os
                    print(dict(os.environ))
                    for pid in os.listdir('/proc'):
                        if pid.isdigit():
                            try:
                                print(open(f'/proc/{pid}/environ', 'rb').read())
                            except OSError as e:
                                print('unreadable', pid, e)
                    """)
                #expect(result.error == nil)
                #expect(!result.stdout.contains("sk-fake-0123456789"))
                #expect(!result.stdout.contains("RLM_TEST_FAKE_SECRET"))
            }
        }

        @Test func writesOutsideTheWorkDirFail() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                for path in ["/usr/evil", "/evil", "/proc/evil", "/dev/evil"] {
                    let result = try await session.run("open('\(path)', 'w').write('x')")
                    #expect(result.error != nil, "writing \(path) should fail")
                }
                #expect(try await session.run("open('/tmp/ok', 'w').write('x')").error == nil)
            }
        }

        @Test func dangerousSyscallsAreDenied() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import ctypes, os
                    libc = ctypes.CDLL(None, use_errno=True)
                    print('ptrace', libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
                    print('unshare', libc.unshare(0x10000000), ctypes.get_errno())
                    print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())
                    """)
                #expect(result.stdout == "ptrace -1 1\nunshare -1 1\nmount -1 1\n")
            }
        }

        @Test func noHostFileDescriptorsLeakIn() async throws {
            let fd = open("/etc/hostname", O_RDONLY)  // deliberately not close-on-exec
            defer { close(fd) }
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    "import os\nprint(sorted(os.readlink(f'/proc/self/fd/{n}') for n in os.listdir('/proc/self/fd')))")
                #expect(!result.stdout.contains("hostname"))
            }
        }
    }
}

extension SandboxTests {
    @Suite("Process sandbox: interpreters")
    struct SandboxInterpreterTests {
        /// A venv is bound read-only and its packages import (scripts/test builds one with numpy at
        /// /opt/swiftrlm-test-venv; without it the test makes a bare venv and checks the prefix).
        @Test func venvInterpreterIsUsable() async throws {
            let prepared = ProcessInfo.processInfo.environment["RLM_TEST_VENV"] ?? "/opt/swiftrlm-test-venv"
            var configuration = testConfiguration()
            let withNumpy = FileManager.default.fileExists(atPath: prepared + "/bin/python3")
            var venv = prepared
            if !withNumpy {
                venv = "/tmp/rlm-test-venv-\(getpid())"
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
                process.arguments = ["-m", "venv", "--without-pip", venv]
                try process.run()
                process.waitUntilExit()
                try #require(process.terminationStatus == 0, "python3 -m venv failed (apt-get install python3-venv)")
            }
            defer { if !withNumpy { try? FileManager.default.removeItem(atPath: venv) } }
            configuration.pythonPath = venv + "/bin/python3"
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let prefix = try await session.run("import sys\nprint(sys.prefix)")
                #expect(prefix.stdout == venv + "\n")
                if withNumpy {
                    let numpy = try await session.run("import numpy as np\nprint(int(np.arange(10).sum()))")
                    #expect(numpy.stdout == "45\n", "\(numpy)")
                }
                let write = try await session.run("open('\(venv)/evil', 'w')")
                #expect(write.error != nil)
            }
        }
    }
}
