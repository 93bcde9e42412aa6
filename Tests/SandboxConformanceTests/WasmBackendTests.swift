import Foundation
import RLM
import RLMSandbox
import Synchronization
import Testing

@testable import RLMWasm

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
        configuration.maxOpenFiles = 64
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

            // Guest-chosen sizes and offsets near Int.max: refused (ENOSPC/EFBIG), where the host's accounting once
            // overflowed and trapped, ending the whole process.
            result = try await session.run(
                """
                os.remove('/tmp/again')
                r = []
                fd = os.open('/tmp/o', os.O_RDWR | os.O_CREAT)
                os.write(fd, b'z')
                def seek_write():
                    os.lseek(fd, 2**63 - 1, 0); os.write(fd, b'q')
                tries = [('ftruncate', lambda: os.ftruncate(fd, 2**63 - 1)),
                         ('pwrite', lambda: os.pwrite(fd, b'x', 2**63 - 1)), ('seek+write', seek_write)]
                if hasattr(os, 'posix_fallocate'):
                    tries.append(('fallocate', lambda: os.posix_fallocate(fd, 2**63 - 2, 2**63 - 2)))
                for name, call in tries:
                    try:
                        call(); r.append(name + ' ok')
                    except OSError as e:
                        r.append(name + ' ' + str(e.errno))
                os.close(fd)
                print(r[:3], os.path.getsize('/tmp/o'))
                """, timeout: Self.slow)
            #expect(result.error == nil, "\(String(describing: result.error))")
            #expect(result.stdout == "['ftruncate 51', 'pwrite 22', 'seek+write 22'] 1\n")

            // The cap counts what the files really hold: a rename onto itself and a read-only O_TRUNC free nothing;
            // names and nodes count too; a directory cannot move into itself; descriptors are capped (64 here).
            result = try await session.run(
                """
                def fill(p, n):
                    try:
                        with open(p, 'wb') as f: f.write(b'z' * n)
                        return 'ok'
                    except OSError as e:
                        return e.errno
                r = [fill('/tmp/s', 3 << 20)]
                os.rename('/tmp/s', '/tmp/s')
                r.append(fill('/tmp/t', 2 << 20)); os.remove('/tmp/t')
                os.close(os.open('/tmp/s', os.O_RDONLY | os.O_TRUNC))
                r.append(fill('/tmp/t', 2 << 20)); os.remove('/tmp/t')
                r.append(os.path.getsize('/tmp/s'))
                os.remove('/tmp/s')
                r.append(fill('/tmp/t', 2 << 20)); os.remove('/tmp/t')
                os.makedirs('/tmp/D/S')
                try:
                    os.rename('/tmp/D', '/tmp/D/S/D'); r.append('moved into itself')
                except OSError as e:
                    r.append(e.errno)
                r.append(sorted(os.listdir('/tmp/D')))
                for p in ['/tmp/' + 'n' * 300, '/tmp/' + 'd/' * 2100 + 'f']:
                    try:
                        open(p, 'w').close(); r.append('long name ok')
                    except OSError as e:
                        r.append(e.errno)
                # Fill the work dir to its last bytes: then an empty file or a directory does not fit either.
                with open('/tmp/full', 'wb', buffering=0) as f:
                    for step in (1 << 16, 1 << 10, 1 << 4, 1):
                        try:
                            while True: f.write(b'f' * step)
                        except OSError:
                            pass
                for make in (lambda: open('/tmp/empty', 'w').close(), lambda: os.mkdir('/tmp/dir')):
                    try:
                        make(); r.append('created')
                    except OSError as e:
                        r.append(e.errno)
                os.remove('/tmp/full')
                fds = []
                try:
                    for _ in range(100): fds.append(os.open('/tmp/a.txt', os.O_RDONLY))
                    r.append('no limit')
                except OSError as e:
                    r.append(e.errno)
                for f in fds: os.close(f)
                print(r, fill('/tmp/t', 3 << 20))
                """, timeout: Self.slow)
            #expect(result.error == nil, "\(String(describing: result.error))")
            #expect(result.stdout == "['ok', 51, 51, 3145728, 'ok', 28, ['S'], 37, 37, 51, 51, 33] ok\n")

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
            // the session as a protocol violation. 8 MiB written at once: the guest was blocked in write(2), where the
            // kill never reached it, and its end was awaited forever (a hang here, proven by the deadline below).
            let ended = Mutex<Result<CellResult, any Error>?>(nil)
            Task {
                do {
                    let value = try await session.run("import os\nos.write(1, b'x' * (8 << 20))", timeout: Self.slow)
                    ended.withLock { $0 = .success(value) }
                } catch {
                    ended.withLock { $0 = .failure(error) }
                }
            }
            let deadline = ContinuousClock.now + .seconds(120)
            while ended.withLock({ $0 }) == nil {
                guard ContinuousClock.now < deadline else {
                    preconditionFailure("the guest killed in a blocking write of its channel never ended")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect {
                _ = try ended.withLock { $0 }?.get()
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

    /// A guest of 222 bytes (no Python): `fd_fdstat_get(1, 65534)` and `path_open(3, …, O_CREAT, …, fd: 65533)` —
    /// results written past the end of its one page of memory — then `proc_exit(100 * first + second)`. WasmKit's
    /// accessors stop the whole process on such an access: every WASI function must check the guest's pointers first
    /// (EFAULT, 21).
    static let outOfBoundsGuest: [UInt8] = {
        let hex = [
            "0061736d01000000011b0460027f7f017f60017f0060000060097f7f7f7f7f7e7e7f7f017f026e0316776173695f736e6170",
            "73686f745f70726576696577310d66645f6664737461745f676574000016776173695f736e617073686f745f707265766965",
            "77310970726f635f65786974000116776173695f736e617073686f745f707265766965773109706174685f6f70656e000303",
            "0201020503010001071302066d656d6f72790200065f737461727400030a29012700410141feff03100041e4006c41034100",
            "41004101410142004200410041fdff0310026a10010b",
        ].joined()
        var bytes = [UInt8]()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }()

    @Test("out-of-bounds guest pointers are EFAULT, not a crash; kill() after release() writes nowhere")
    func outOfBoundsPointersAndLateKill() async throws {
        let host = try WasmWorkerHost(
            module: WasmRuntime.module(bytes: Self.outOfBoundsGuest), arguments: ["oob"], memoryLimit: 1 << 20,
            workDirCap: 1 << 20, workDir: "/tmp", fuel: 1 << 30, stackSize: 1 << 20, onRelease: {})
        #expect(await host.waitForExit() == "exited with status 2121")
        await host.release()
        // The guest's six pipe ends are closed now, the kill pipe's among them: pipes opened next reuse their
        // numbers, and must stay empty.
        var pipes = [[Int32]]()
        for _ in 0..<3 {
            var fds: [Int32] = [-1, -1]
            #expect(pipe(&fds) == 0)
            _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
            pipes.append(fds)
        }
        host.kill()
        for fds in pipes {
            var byte: UInt8 = 0
            #expect(read(fds[0], &byte, 1) == -1)
            for fd in fds { close(fd) }
        }
        close(host.channelWriteFD)
        close(host.channelReadFD)
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
