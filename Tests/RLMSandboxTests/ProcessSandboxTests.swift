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

        /// A cell that shrinks or deletes `context` gets the full value back, with a note in its output; a rebind to
        /// another type (parsing the text, say) is kept.
        @Test func aCellThatShrinksTheContextGetsItBack() async throws {
            let text = String(repeating: "line of the context\n", count: 500)
            try await withTestSession { (session: any SandboxSession) async throws in
                try await session.loadContext(.text(text))
                let shrunk = try await session.run("context = context[:40]\nprint(len(context))")
                #expect(shrunk.stdout.hasPrefix("40\n"), "the cell really shrank it: \(shrunk.stdout)")
                #expect(shrunk.stdout.contains("`context` was replaced by a smaller value (40 of 10,000 characters)"))
                #expect(try await session.run("print(len(context))").stdout == "\(text.count)\n")
                let deleted = try await session.run("del context")
                #expect(deleted.stdout.contains("`context` was deleted; it has been restored"))
                #expect(try await session.run("print(len(context))").stdout == "\(text.count)\n")
                let parsed = try await session.run("context = context.splitlines()")
                #expect(!parsed.stdout.contains("restored"))
                #expect(try await session.run("print(type(context).__name__)").stdout == "list\n")
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
                        "child saw \(prompt) with \(spooledText(context) ?? "nothing") via \(model ?? "root")")
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
                #expect(clock.now - start < .seconds(30), "interrupted, not the 100 s sleep")
                #expect(result.timedOut)
                #expect(!result.stateLost)
                #expect(result.error?.type == "TimeoutError")
                #expect(try await session.run("print(kept)").stdout == "still here\n")
            }
        }

        @Test func loopThatSwallowsInterruptsIsKilled() async throws {
            let configuration = testConfiguration()
            let session = try await ProcessSandbox(configuration: configuration).startSession(handler: nil)
            let probe = try #require(session as? WorkerSession).processesForTesting
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

        /// Allocating past the address-space limit raises `MemoryError` in the cell, near the configured limit (the
        /// blocks it got add up to most of it, never more), and the REPL keeps its state.
        @Test func memoryBombIsContained() async throws {
            try await withTestSession(testConfiguration(memoryMB: 256)) { (session: any SandboxSession) async throws in
                let result = try await session.run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))")
                #expect(result.memoryExceeded)
                #expect(result.error?.type == "MemoryError")
                #expect(!result.stateLost)
                // The attack got blocks and stopped short of the limit: 16 MiB each under 256 MiB of address space,
                // of which Python, its libraries and its threads' stacks already map about 150 MiB.
                let held = try #require(
                    Int(
                        try await session.run("print(len(blocks))").stdout.trimmingCharacters(
                            in: .whitespacesAndNewlines)))
                #expect((1..<16).contains(held), "\(held) blocks of 16 MiB under a 256 MiB limit")
            }
        }

        /// Memory that `RLIMIT_AS` does not see — pages of `memfd` files, written, never mapped — is charged to the
        /// sandbox's memory cgroup, whose limit (memory + work dir + 64 MiB) the kernel enforces by killing the
        /// sandbox. Without the cgroup the cell would finish holding 640 MiB.
        @Test(
            .enabled(
                if: runningAsRoot && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/cgroup.procs"),
                "the memory cgroup needs root and cgroup v1's memory controller"))
        func memoryOutsideTheAddressSpaceHitsTheCgroupLimit() async throws {
            let configuration = testConfiguration(memoryMB: 128, workDirMB: 32)  // cgroup limit: 224 MiB
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import os
                    fds = []
                    for i in range(40):  # 40 memfds of 16 MiB (under RLIMIT_FSIZE), 640 MiB in all
                        fd = os.memfd_create(f'm{i}')
                        for _ in range(16):
                            os.write(fd, b'\\x01' * (1 << 20))
                        fds.append(fd)
                    print('holding', len(fds) * 16, 'MiB outside the address space')
                    """)
                #expect(!result.stdout.contains("holding"), "the cell kept 640 MiB: \(result.stdout)")
                #expect(result.memoryExceeded)
                #expect(result.stateLost)
                #expect(
                    result.error?.message.contains("killed by the kernel") == true,
                    "\(String(describing: result.error))")
                #expect(await session.isAlive == false)
            }
        }

        /// Processes are capped by the sandbox's pids cgroup (`maxProcesses`, 64 by default): a loop that forks
        /// sleepers is refused with `BlockingIOError` before it has 64 of them — not by the cell timeout, and not
        /// by `RLIMIT_NPROC` (1024), which would let it go much further. Then a real fork bomb (every child forks
        /// too) ends the same way, and the REPL, its state and the channel all still work.
        @Test(
            .enabled(
                if: runningAsRoot && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/pids/cgroup.procs"),
                "the pids cgroup needs root and cgroup v1's pids controller (without them RLIMIT_NPROC alone bounds it)"
            ))
        func forkBombIsContained() async throws {
            let configuration = testConfiguration(timeout: .seconds(20))
            let handler = ClosureSubcallHandler { _ in .text("the channel works") }
            try await withTestSession(configuration, handler: handler) { (session: any SandboxSession) async throws in
                _ = try await session.run("survivor = 'kept'")
                let counted = try await session.run(
                    """
                    import os, signal, time
                    kids, stopped = [], None
                    try:
                        while len(kids) < 5000:
                            pid = os.fork()
                            if pid == 0:
                                time.sleep(60)
                                os._exit(0)
                            kids.append(pid)
                    except BlockingIOError as e:
                        stopped = type(e).__name__
                    for k in kids:
                        os.kill(k, signal.SIGKILL)
                    for k in kids:
                        os.waitpid(k, 0)
                    print(len(kids), stopped)
                    """)
                #expect(counted.error == nil, "\(String(describing: counted.error))")
                let fields = counted.stdout.split(separator: " ").map {
                    $0.trimmingCharacters(in: .whitespacesAndNewlines)
                }
                let forks = Int(fields.first ?? "") ?? -1
                #expect(fields.last == "BlockingIOError", "\(counted.stdout)")
                #expect(forks >= 10 && forks < configuration.maxProcesses, "\(forks) forks under a cap of 64")

                let clock = ContinuousClock()
                let start = clock.now
                let bomb = try await session.run("import os\nwhile True:\n    os.fork()")
                #expect(bomb.error?.type == "BlockingIOError", "\(String(describing: bomb.error))")
                #expect(!bomb.timedOut && !bomb.stateLost)
                #expect(clock.now - start < .seconds(15))
                try await Task.sleep(for: .milliseconds(300))  // the bomb's children finish their copies of the cell
                _ = try await session.run("pass")
                let after = try await session.run("print(survivor, llm_query('still there?'))")
                #expect(after.stdout.hasSuffix("kept the channel works\n"), "\(after.stdout)")
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
            let probe = try #require(session as? WorkerSession).processesForTesting
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
        /// As root the host drops the sandbox to the configured uid/gid (65534) — real, effective and saved — with
        /// no supplementary groups and no capabilities; without root the code runs as the caller's own uid.
        @Test func runsAsAnUnprivilegedUser() async throws {
            let configuration = testConfiguration()
            let expected = runningAsRoot ? Int(configuration.sandboxUID) : Int(getuid())
            let expectedGroup = runningAsRoot ? Int(configuration.sandboxGID) : Int(getgid())
            #expect(expected != 0)
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import os
                    caps = {k: int(v, 16) for k, v in (l.split(':') for l in open('/proc/self/status')
                                                        if l.startswith('Cap'))}
                    print(*os.getresuid(), *os.getresgid(), len(os.getgroups()), caps['CapEff'], caps['CapPrm'])
                    """)
                #expect(result.error == nil, "\(String(describing: result.error))")
                let ids = result.stdout.split(separator: " ").map {
                    Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
                }
                #expect(
                    ids == [expected, expected, expected, expectedGroup, expectedGroup, expectedGroup, 0, 0, 0],
                    "uid×3 gid×3 groups CapEff CapPrm: \(result.stdout)")
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
            // The listener never saw a connection.
            _ = fcntl(listener, F_SETFL, O_NONBLOCK)
            let accepted = accept(listener, nil, nil)
            #expect(accepted < 0, "the sandbox reached the host's loopback")
            if accepted >= 0 { close(accepted) }
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

        /// A secret in the host's environment is in no environment inside: not the worker's (HOME, TMPDIR, PATH,
        /// LANG and bwrap's PWD only) and not bubblewrap's pid 1, which keeps the environment bwrap itself was started
        /// with. Landlock would also hide pid 1 from the cell (it may not inspect processes outside its domain), so
        /// it is off here: this test is about the environment the launcher hands bwrap, which must be empty.
        @Test func hostSecretsAreInvisible() async throws {
            setenv("RLM_TEST_FAKE_SECRET", "sk-fake-0123456789", 1)
            defer { unsetenv("RLM_TEST_FAKE_SECRET") }
            #expect(String(cString: getenv("RLM_TEST_FAKE_SECRET")) == "sk-fake-0123456789", "planted on the host")
            var configuration = testConfiguration()
            configuration.landlock = false
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import json, os
                    seen = {}
                    for pid in os.listdir('/proc'):
                        if pid.isdigit():
                            try:
                                seen[pid] = open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')
                            except OSError as e:
                                seen[pid] = 'UNREADABLE ' + type(e).__name__
                    print(json.dumps({'env': dict(os.environ), 'proc': seen, 'me': str(os.getpid())}))
                    """)
                #expect(result.error == nil, "\(String(describing: result.error))")
                #expect(!result.stdout.contains("sk-fake-0123456789"))
                #expect(!result.stdout.contains("RLM_TEST_FAKE_SECRET"))
                // Every environment in the sandbox was read: the worker's, and bubblewrap's pid 1 (which keeps the
                // environment bwrap was started with), which is empty.
                let dump = try #require(
                    try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
                let proc = try #require(dump["proc"] as? [String: String])
                let me = try #require(dump["me"] as? String)
                #expect(proc["1"] == "", "bwrap's pid 1: \(proc["1"] ?? "absent")")
                #expect(proc[me]?.contains("PATH=") == true)
                #expect(proc.values.allSatisfy { !$0.hasPrefix("UNREADABLE") }, "\(proc)")
                let env = try #require(dump["env"] as? [String: String])
                #expect(Set(env.keys) == ["HOME", "TMPDIR", "PATH", "LANG", "PWD"], "\(env)")
            }
        }

        @Test func writesOutsideTheWorkDirFail() async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                for path in ["/usr/evil", "/evil", "/proc/evil", "/dev/evil"] {
                    let result = try await session.run("open('\(path)', 'w').write('x')")
                    #expect(result.error != nil, "writing \(path) should fail")
                    #expect(!FileManager.default.fileExists(atPath: path), "\(path) appeared on the host")
                }
                #expect(try await session.run("open('/tmp/ok', 'w').write('x')").error == nil)
            }
        }

        /// Every call in the launcher's seccomp table (read from `rlm-sandbox-launch --print-denied-syscalls`, the
        /// table the filter is built from) is made from a cell, by number, and fails with the filter's errno — in a
        /// process that is under the filter (`Seccomp: 2`). Argument-filtered calls use one denied argument list.
        @Test(arguments: DeniedSyscall.table)
        func dangerousSyscallsAreDenied(call: DeniedSyscall) async throws {
            try await withTestSession { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import ctypes
                    libc = ctypes.CDLL(None, use_errno=True)
                    libc.syscall.restype = ctypes.c_long
                    args = [ctypes.c_long(a) for a in \(call.arguments)] + [ctypes.c_long(0)] * \(6 - call.arguments.count)
                    ctypes.set_errno(0)
                    ret = libc.syscall(ctypes.c_long(\(call.number)), *args)
                    err = ctypes.get_errno()
                    mode = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]
                    print(ret, err, mode)
                    """)
                #expect(result.error == nil, "\(String(describing: result.error))")
                #expect(
                    result.stdout == "-1 \(call.errno) 2\n",
                    "\(call.name) (nr \(call.number)): return, errno, seccomp mode = \(result.stdout)")
            }
        }

        /// The table is the launcher's and it holds every call SECURITY.md names, so the claim and the filter cannot
        /// part either.
        @Test func theDeniedTableHoldsEveryDocumentedSyscall() throws {
            let names = Set(DeniedSyscall.table.map(\.name))
            let documented = [
                "ptrace", "unshare", "setns", "mount", "umount2", "pivot_root", "keyctl", "add_key", "request_key",
                "bpf",
                "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
                "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "process_vm_readv",
                "process_vm_writev", "open_by_handle_at", "ioctl(TIOCSTI)", "ioctl(TIOCLINUX)",
            ]
            #expect(!names.isEmpty, "rlm-sandbox-launch --print-denied-syscalls printed nothing usable")
            for name in documented { #expect(names.contains(name), "\(name) is not denied by the filter") }
            #expect(DeniedSyscall.table.allSatisfy { $0.errno == EPERM })
        }

        /// A descriptor the host holds open without close-on-exec while it starts the sandbox is not open in any
        /// process inside (the worker or bubblewrap's pid 1). The cell reads every descriptor of every process it
        /// can see, and the list must hold the worker's own pipes — so an empty or failed listing cannot pass.
        /// Landlock would hide pid 1's descriptors from the cell, so it is off here (the claim is the launcher's).
        @Test func noHostFileDescriptorsLeakIn() async throws {
            let planted = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-planted-fd-\(UUID())").path
            let fd = open(planted, O_RDWR | O_CREAT, 0o644)  // deliberately not close-on-exec
            try #require(fd >= 0)
            defer {
                close(fd)
                unlink(planted)
            }
            var configuration = testConfiguration()
            configuration.landlock = false
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import json, os
                    fds = {}
                    for pid in os.listdir('/proc'):
                        if not pid.isdigit():
                            continue
                        for n in os.listdir(f'/proc/{pid}/fd'):
                            try:
                                fds[f'{pid}/{n}'] = os.readlink(f'/proc/{pid}/fd/{n}')
                            except FileNotFoundError:
                                pass  # the directory os.listdir opened, closed since
                    print(json.dumps({'fds': fds, 'me': os.getpid()}))
                    """)
                #expect(result.error == nil, "\(String(describing: result.error))")
                let dump = try #require(
                    try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
                let fds = try #require(dump["fds"] as? [String: String])
                let me = try #require(dump["me"] as? Int)
                #expect(fds.keys.contains { $0.hasPrefix("1/") }, "bwrap's pid 1 was listed: \(fds)")
                #expect(fds.filter { $0.key.hasPrefix("\(me)/") && $0.value.hasPrefix("pipe:") }.count >= 3, "\(fds)")
                let leaked = fds.filter { $0.value.contains("rlm-planted-fd") }
                #expect(leaked.isEmpty, "host descriptors inside the sandbox: \(leaked)")
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
