import CRLMSystem
import Dispatch
import Foundation
import Glibc
import RLM
import Synchronization

/// A child process with pipes on its stdin, stdout and stderr, killed and reaped exactly once.
final class ChildProcess: Sendable {
    let pid: pid_t
    /// Host end of the child's stdin (write).
    let stdinFD: Int32
    /// Host end of the child's stdout (read).
    let stdoutFD: Int32
    /// Host end of the child's stderr (read, non-blocking).
    let stderrFD: Int32
    /// Host end of the data pipe on the child's fd 3 (write), or -1: context bytes stream here, outside the frames.
    let dataFD: Int32
    /// Host end of the data pipe on the child's fd 4 (read), or -1: a child context streams out here.
    let dataOutFD: Int32

    private struct State {
        var exitStatus: Int32?
        var reaping = false
        var waiters: [CheckedContinuation<Int32, Never>] = []
    }
    private let state = Mutex(State())

    /// The child leads its own process group: ``kill()`` signals the whole group.
    let ownGroup: Bool

    private init(
        pid: pid_t, stdinFD: Int32, stdoutFD: Int32, stderrFD: Int32, dataFD: Int32, dataOutFD: Int32, ownGroup: Bool
    ) {
        self.pid = pid
        self.ownGroup = ownGroup
        self.stdinFD = stdinFD
        self.stdoutFD = stdoutFD
        self.stderrFD = stderrFD
        self.dataFD = dataFD
        self.dataOutFD = dataOutFD
    }

    /// Starts `path` with `arguments` (argv[0] included) and an explicit environment.
    ///
    /// Every descriptor the host creates is close-on-exec, so only the three pipes (and the data pipe, when asked
    /// for) reach the child; the launcher also closes everything above 2 (above 3 with `--data-fd`) before it execs
    /// the sandbox.
    /// - Parameters:
    ///   - dataPipe: also give the child a pipe on fd 3 to read from (``dataFD`` is the host's end) and one on fd 4 to
    ///     write to (``dataOutFD``).
    ///   - newProcessGroup: start the child in a process group of its own, so ``kill()`` reaches whatever it starts
    ///     (a user's command that runs a shell, say).
    ///   - workingDirectory: the child's working directory; `nil` keeps this process's.
    static func spawn(
        path: String, arguments: [String], environment: [String], dataPipe: Bool = false, newProcessGroup: Bool = false,
        workingDirectory: String? = nil
    ) async throws -> ChildProcess {
        // The launcher arms PR_SET_PDEATHSIG, which fires when the *thread* that spawned it exits, so spawn from one
        // thread that lives as long as the process, never from a pool thread that may be retired. The caller waits
        // without holding a pool thread: several sandboxes starting at once queue on the spawner, not on the two
        // threads every request of a server needs.
        try await SpawnThread.shared.run {
            try spawnHere(
                path: path, arguments: arguments, environment: environment, dataPipe: dataPipe,
                newProcessGroup: newProcessGroup, workingDirectory: workingDirectory)
        }
    }

    private static func spawnHere(
        path: String, arguments: [String], environment: [String], dataPipe: Bool, newProcessGroup: Bool = false,
        workingDirectory: String? = nil
    ) throws -> ChildProcess {
        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        var stderrPipe: [Int32] = [-1, -1]
        guard crlm_pipe_cloexec(&stdinPipe) == 0 else { throw SandboxError.setup("pipe2 failed: \(errnoText())") }
        guard crlm_pipe_cloexec(&stdoutPipe) == 0 else {
            closeAll(stdinPipe)
            throw SandboxError.setup("pipe2 failed: \(errnoText())")
        }
        guard crlm_pipe_cloexec(&stderrPipe) == 0 else {
            closeAll(stdinPipe + stdoutPipe)
            throw SandboxError.setup("pipe2 failed: \(errnoText())")
        }
        var data: [Int32] = [-1, -1]
        var dataOut: [Int32] = [-1, -1]
        if dataPipe {
            guard crlm_pipe_cloexec(&data) == 0 else {
                closeAll(stdinPipe + stdoutPipe + stderrPipe)
                throw SandboxError.setup("pipe2 failed: \(errnoText())")
            }
            guard crlm_pipe_cloexec(&dataOut) == 0 else {
                closeAll(stdinPipe + stdoutPipe + stderrPipe + data)
                throw SandboxError.setup("pipe2 failed: \(errnoText())")
            }
            // A larger pipe moves bulk context data in fewer wake-ups (1 MiB is the unprivileged maximum by default).
            _ = fcntl(data[1], 1031 /* F_SETPIPE_SZ */, 1 << 20)
            _ = fcntl(dataOut[0], 1031 /* F_SETPIPE_SZ */, 1 << 20)
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        if dataPipe {
            posix_spawn_file_actions_adddup2(&actions, data[0], 3)
            posix_spawn_file_actions_adddup2(&actions, dataOut[1], 4)
        }
        if let workingDirectory { _ = crlm_spawn_file_actions_addchdir(&actions, workingDirectory) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if newProcessGroup {
            flags |= POSIX_SPAWN_SETPGROUP
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        closeAll([stdinPipe[0], stdoutPipe[1], stderrPipe[1], data[0], dataOut[1]])
        guard rc == 0 else {
            closeAll([stdinPipe[1], stdoutPipe[0], stderrPipe[0], data[1], dataOut[0]])
            throw SandboxError.setup("cannot start \(path): \(String(cString: strerror(rc)))")
        }
        _ = fcntl(stderrPipe[0], F_SETFL, fcntl(stderrPipe[0], F_GETFL) | O_NONBLOCK)
        return ChildProcess(
            pid: pid, stdinFD: stdinPipe[1], stdoutFD: stdoutPipe[0], stderrFD: stderrPipe[0], dataFD: data[1],
            dataOutFD: dataOut[0], ownGroup: newProcessGroup)
    }

    /// Sends SIGKILL unless the process was already reaped (so a recycled pid is never hit): to its whole process
    /// group when it leads one. Until it is reaped its pid, and so its group id, cannot be reused.
    func kill() {
        state.withLock { state in
            if state.exitStatus == nil { _ = Glibc.kill(ownGroup ? -pid : pid, SIGKILL) }
        }
    }

    /// Waits for the process to exit and returns its raw wait status. Safe to call from several tasks.
    func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let startReaper: Bool = state.withLock { state in
                if let status = state.exitStatus {
                    continuation.resume(returning: status)
                    return false
                }
                state.waiters.append(continuation)
                defer { state.reaping = true }
                return !state.reaping
            }
            guard startReaper else { return }
            let pid = pid
            DispatchQueue.global().async {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let waiters = self.state.withLock { state in
                    state.exitStatus = status
                    defer { state.waiters = [] }
                    return state.waiters
                }
                waiters.forEach { $0.resume(returning: status) }
            }
        }
    }

    /// Waits up to `timeout` for the process to exit and returns its raw wait status, or `nil` if it still runs.
    /// Blocks the calling thread: call it off the cooperative pool.
    func waitForExit(upTo timeout: Duration) -> Int32? {
        let done = DispatchSemaphore(value: 0)
        let status = Mutex<Int32?>(nil)
        Task {
            let reaped = await waitForExit()
            status.withLock { $0 = reaped }
            done.signal()
        }
        _ = done.wait(timeout: .now() + max(0, min(timeout.inSeconds, 86_400)))
        return status.withLock { $0 }
    }

    /// Records a status reaped by someone else (``runToCompletion(_:input:timeout:outputLimit:)``), so ``kill()``
    /// never signals a recycled pid.
    fileprivate func markReaped(_ status: Int32) {
        state.withLock { $0.exitStatus = status }
    }

    /// Whatever the child wrote to stderr so far (at most `limit` bytes), read without blocking.
    func drainStderr(limit: Int = 64 << 10) -> String {
        var collected = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 8192)
        while collected.count < limit {
            let n = read(stderrFD, &buffer, buffer.count)
            if n <= 0 { break }
            collected.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: collected.prefix(limit), as: UTF8.self)
    }

    /// Closes the stderr descriptor and the data pipe's (the channel closes the other two).
    func closeStderr() {
        _ = close(stderrFD)
        if dataFD >= 0 { _ = close(dataFD) }
        if dataOutFD >= 0 { _ = close(dataOutFD) }
    }

    private static func closeAll(_ fds: [Int32]) {
        for fd in fds where fd >= 0 { _ = close(fd) }
    }
}

extension ChildProcess {
    /// What a helper program printed and how it ended.
    struct Completion: Sendable {
        /// The raw wait status (see ``describeWaitStatus(_:)``).
        var status: Int32
        var stdout: Data
        var stderr: Data
        /// It ran past its deadline and was killed.
        var timedOut: Bool

        var succeeded: Bool { status == 0 && !timedOut }
    }

    /// Runs a short helper program (a version probe, the worker's compiler) to completion: the same spawn path as
    /// the sandbox itself (empty environment, close-on-exec descriptors, no Foundation `Process`), with `input` fed
    /// to its stdin and both outputs collected up to `outputLimit` bytes each, killed past `timeout`. Blocks: call it
    /// off the cooperative pool (``offPool(_:)``).
    static func runToCompletion(
        _ argv: [String], input: Data = Data(), timeout: Duration = .seconds(30), outputLimit: Int = 64 << 20
    ) throws -> Completion {
        _ = ignoreSIGPIPE
        let child = try SpawnThread.shared.runBlocking {
            try spawnHere(path: argv[0], arguments: argv, environment: [], dataPipe: false)
        }
        // The writer has its own thread so a child that writes before it reads all its input cannot deadlock us.
        let writer = DispatchGroup()
        let stdinFD = child.stdinFD
        DispatchQueue.global().async(group: writer) {
            input.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
                var offset = 0
                while offset < buffer.count, let base = buffer.baseAddress {
                    let written = Glibc.write(stdinFD, base + offset, buffer.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    if written <= 0 { break }
                    offset += written
                }
            }
            _ = Glibc.close(stdinFD)
        }
        var stdout = Data()
        var stderr = Data()
        var timedOut = false
        let deadline = ContinuousClock.now + timeout
        var open: [Int32] = [child.stdoutFD, child.stderrFD]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            let left = deadline - ContinuousClock.now
            if left <= .zero {
                timedOut = true
                child.kill()
                break
            }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(max(1, min(left.inSeconds * 1000, 1000))))
            if ready < 0 && errno != EINTR { break }
            for entry in fds where entry.revents != 0 {
                let n = Glibc.read(entry.fd, &buffer, buffer.count)
                if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
                if n <= 0 {
                    open.removeAll { $0 == entry.fd }
                    continue
                }
                if entry.fd == child.stdoutFD {
                    if stdout.count < outputLimit { stdout.append(contentsOf: buffer[0..<n]) }
                } else if stderr.count < outputLimit {
                    stderr.append(contentsOf: buffer[0..<n])
                }
            }
        }
        var status: Int32 = 0
        while waitpid(child.pid, &status, 0) < 0 && errno == EINTR {}
        child.markReaped(status)
        writer.wait()
        _ = Glibc.close(child.stdoutFD)
        child.closeStderr()
        return Completion(status: status, stdout: stdout, stderr: stderr, timedOut: timedOut)
    }
}

/// Writing to a pipe whose reader died must fail with EPIPE, not kill the host.
let ignoreSIGPIPE: Void = {
    _ = signal(SIGPIPE, SIG_IGN)
}()

/// Describes a raw wait status: "exit status 3", "killed by signal 9".
func describeWaitStatus(_ status: Int32) -> String {
    exitStatusCode(status).map { "exit status \($0)" } ?? "killed by signal \(status & 0x7f)"
}

/// The exit code of a raw wait status (`WEXITSTATUS`), or `nil` when a signal ended the process.
func exitStatusCode(_ status: Int32) -> Int32? {
    status & 0x7f == 0 ? (status >> 8) & 0xff : nil
}

func errnoText() -> String {
    String(cString: strerror(errno))
}

/// A thread that never exits, on which every sandbox is spawned (see ``ChildProcess/spawn(path:arguments:environment:)``).
final class SpawnThread: @unchecked Sendable {
    static let shared = SpawnThread()

    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "rlm-sandbox-spawner"
        thread.start()
    }

    /// Runs `body` on the spawner thread and blocks until it is done (for callers already off the pool).
    func runBlocking<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<T, any Error>?
        condition.lock()
        jobs.append {
            result = Result { try body() }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        return try result!.get()
    }

    /// Runs `body` on the spawner thread; the caller is suspended, not blocked, meanwhile.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            jobs.append { continuation.resume(with: Result { try body() }) }
            condition.signal()
            condition.unlock()
        }
    }
}

/// Runs blocking work (process waits, sleeps in retry loops) on a Dispatch thread, so the cooperative thread pool —
/// two threads on a two-core machine — never stalls on it.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}
