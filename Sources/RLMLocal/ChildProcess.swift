import Dispatch
import Foundation
import RLM
import Glibc
import Synchronization

/// How a child process ended.
struct ExitStatus: Sendable, Hashable, CustomStringConvertible {
    /// The exit code, or the signal number when ``signalled``.
    var code: Int32
    /// Whether a signal ended it.
    var signalled: Bool

    var succeeded: Bool { !signalled && code == 0 }

    var description: String { signalled ? "killed by signal \(code)" : "exit status \(code)" }
}

/// A child process that is signalled only while it has not been reaped (so a recycled pid is never hit), and whose
/// exit can be awaited from several tasks.
final class ChildProcess: @unchecked Sendable {
    // `Process` is touched only in `init`, `start` (once, before anyone else sees `self`) and the termination
    // handler; everything else goes through `state`.
    private let process: Process
    private struct State {
        var pid: pid_t = 0
        var exit: ExitStatus?
        var cancelled = false
        var waiters: [CheckedContinuation<ExitStatus, Never>] = []
    }
    private let state = Mutex(State())

    /// - Parameters:
    ///   - executable: an absolute path.
    ///   - arguments: the arguments after argv[0].
    ///   - environment: the environment; `nil` inherits this process's.
    ///   - standardInput, standardOutput, standardError: a `Pipe`, a `FileHandle`, or `nil` for /dev/null.
    init(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        standardInput: Any? = nil, standardOutput: Any? = nil, standardError: Any? = nil
    ) {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardInput = standardInput ?? FileHandle.nullDevice
        process.standardOutput = standardOutput ?? FileHandle.nullDevice
        process.standardError = standardError ?? FileHandle.nullDevice
    }

    /// Starts the process. Throws when it cannot be executed.
    func start() throws {
        process.terminationHandler = { [weak self] process in
            let status = ExitStatus(
                code: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal)
            self?.finished(status)
        }
        try process.run()
        let cancelled = state.withLock { state in
            state.pid = process.processIdentifier
            return state.cancelled
        }
        if cancelled { send(SIGKILL) }
    }

    /// The process id (0 before ``start()``).
    var pid: pid_t { state.withLock { $0.pid } }

    /// How it ended, or `nil` while it runs.
    var exitStatus: ExitStatus? { state.withLock { $0.exit } }

    /// Sends `signal` unless the process has already been reaped.
    func send(_ signal: Int32) {
        state.withLock { state in
            if state.exit == nil && state.pid > 0 { _ = kill(state.pid, signal) }
        }
    }

    /// Kills the process now, or as soon as it starts when it has not started yet.
    func cancel() {
        let pid = state.withLock { state in
            state.cancelled = true
            return state.exit == nil ? state.pid : 0
        }
        if pid > 0 { _ = kill(pid, SIGKILL) }
    }

    /// Waits for the process to exit. Not cancellable: cancel the process instead.
    func waitForExit() async -> ExitStatus {
        await withCheckedContinuation { continuation in
            let done: ExitStatus? = state.withLock { state in
                if let exit = state.exit { return exit }
                state.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; returns once it has exited.
    func terminate(grace: Duration) async -> ExitStatus {
        send(SIGTERM)
        let killer = DispatchWorkItem { [self] in send(SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + grace.inSeconds, execute: killer)
        let status = await waitForExit()
        killer.cancel()
        return status
    }

    private func finished(_ status: ExitStatus) {
        let waiters = state.withLock { state in
            state.exit = status
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume(returning: status) }
    }
}

/// What a finished command printed and how it ended.
struct CommandResult: Sendable {
    var status: ExitStatus
    var stdout: String
    var stderr: String

    /// The last `lines` non-empty lines of stderr (or stdout when stderr is empty), for error messages.
    func tail(lines: Int = 8) -> String {
        let text = stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? stdout : stderr
        return text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines).joined(separator: "\n")
    }
}

/// Runs short commands (pip, venv) to completion, capturing their output.
enum Command {
    /// Runs `executable` and waits for it. Cancelling the task kills the process.
    /// - Parameters:
    ///   - executable: an absolute path.
    ///   - arguments: the arguments after argv[0].
    ///   - environment: the environment; `nil` inherits this process's.
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil
    ) async throws -> CommandResult {
        let stdout = Pipe()
        let stderr = Pipe()
        let child = ChildProcess(
            executable: executable, arguments: arguments, environment: environment, standardOutput: stdout,
            standardError: stderr)
        return try await withTaskCancellationHandler {
            do {
                try child.start()
            } catch {
                throw LocalModelError.pythonEnvironment("cannot run \(executable): \(error.localizedDescription)")
            }
            async let output = readToEnd(stdout.fileHandleForReading)
            async let errors = readToEnd(stderr.fileHandleForReading)
            let status = await child.waitForExit()
            let result = CommandResult(
                status: status, stdout: String(decoding: await output, as: UTF8.self),
                stderr: String(decoding: await errors, as: UTF8.self))
            try Task.checkCancellation()
            return result
        } onCancel: {
            child.cancel()
        }
    }
}

/// Reads a pipe until EOF on a Dispatch thread, so the blocking read never holds a cooperative-pool thread.
func readToEnd(_ handle: FileHandle) async -> Data {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(returning: (try? handle.readToEnd()) ?? Data())
        }
    }
}

/// Resolves a command: a name with a slash is taken as a path; a bare name is looked up in `PATH`.
/// - Returns: an absolute path of an executable file, or `nil`.
func resolveExecutable(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
    if name.contains("/") {
        return FileManager.default.isExecutableFile(atPath: name) ? name : nil
    }
    let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") where !directory.isEmpty {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
