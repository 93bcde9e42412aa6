import Foundation
import Glibc
import Subprocess
import Synchronization
import SystemPackage

/// The model server's process, run by swift-subprocess.
///
/// swift-subprocess runs a child for the length of a closure, while ``LocalModelServer/start(progress:)`` returns a
/// server that outlives the call. So the closure runs in a task of its own, owned by this object, and waits there
/// until a stop is asked for or the child exits by itself. A stop closes the child's stdin, sends SIGTERM and, if it
/// is still running after the grace period, SIGKILL (swift-subprocess's teardown); then the closure returns and
/// swift-subprocess reaps the child. Every signal is sent from inside the closure, through the child's pidfd, before
/// the child is reaped, so a recycled pid is never hit. The child's stdin is a pipe only this process holds, so the
/// server also sees EOF, and exits, when this process dies.
final class ServerProcess: Sendable {
    private enum Phase {
        case starting
        case running(pid_t)
        /// How it ended (`exit status 3`), and its pid (0 when it never started).
        case exited(pid_t, String)
    }

    private struct State {
        var phase = Phase.starting
        var started: CheckedContinuation<Void, any Error>?
        var launchError: (any Error)?
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let stopRequests: AsyncStream<Void>.Continuation
    private let stops: AsyncStream<Void>

    private init() {
        (stops, stopRequests) = AsyncStream.makeStream(of: Void.self)
    }

    /// Starts `executable` with stdout and stderr appended to `log`; returns once it runs.
    /// - Parameters:
    ///   - executable: an absolute path.
    ///   - arguments: the arguments after argv[0].
    ///   - log: where both output streams go; it may be closed once this returns.
    ///   - grace: how long ``stop()`` waits after SIGTERM before SIGKILL.
    /// - Throws: ``LocalModelError/serverFailed(_:)`` when it cannot be started.
    static func launch(
        executable: String, arguments: [String], log: FileHandle, grace: Duration
    ) async throws -> ServerProcess {
        let process = ServerProcess()
        let output = FileDescriptor(rawValue: log.fileDescriptor)
        do {
            try await withCheckedThrowingContinuation { (started: CheckedContinuation<Void, any Error>) in
                process.state.withLock { $0.started = started }
                Task {
                    await process.run(executable: executable, arguments: arguments, output: output, grace: grace)
                }
            }
        } catch {
            throw LocalModelError.serverFailed("cannot run \(executable): \(error)")
        }
        return process
    }

    /// The process id (0 if it never started).
    var pid: pid_t {
        state.withLock { state in
            switch state.phase {
            case .starting: 0
            case .running(let pid), .exited(let pid, _): pid
            }
        }
    }

    /// How it ended (`exit status 3`, `killed by signal 9`), or `nil` while it runs.
    var exitSummary: String? {
        state.withLock { state in
            if case .exited(_, let summary) = state.phase { return summary }
            return nil
        }
    }

    /// Asks for a stop without waiting for it: stdin is closed, SIGTERM sent, and SIGKILL after the grace period.
    func requestStop() {
        stopRequests.finish()
    }

    /// Stops the process (see ``requestStop()``) and returns once it has exited. Not cancellable: the process is
    /// always reaped. Calling it again just waits.
    func stop() async {
        requestStop()
        await waitForExit()
    }

    /// Waits for the process to exit. Not cancellable.
    func waitForExit() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if case .exited = state.phase { return true }
                state.exitWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: - The runner task

    private func run(executable: String, arguments: [String], output: FileDescriptor, grace: Duration) async {
        var options = PlatformOptions()
        // Also what swift-subprocess does should this closure throw.
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: grace)]
        let summary: String
        do {
            let result = try await Subprocess.run(
                .path(FilePath(executable)), arguments: Arguments(arguments), platformOptions: options,
                input: .inputWriter, output: .fileDescriptor(output, closeAfterSpawningProcess: false),
                error: .combinedWithOutput
            ) { execution in
                let pid = execution.processIdentifier.value
                started(pid)
                if await waitForStopOrExit(pid) {
                    try? await execution.standardInputWriter.finish()
                    await execution.teardown(using: options.teardownSequence)
                }
            }
            summary = result.terminationStatus.summary
        } catch {
            summary = "ended with an error: \(error)"
            let started = state.withLock { state in
                defer { state.started = nil }
                return state.started
            }
            started?.resume(throwing: error)
        }
        let waiters = state.withLock { state in
            let pid: pid_t = if case .running(let pid) = state.phase { pid } else { 0 }
            state.phase = .exited(pid, summary)
            defer { state.exitWaiters = [] }
            return state.exitWaiters
        }
        waiters.forEach { $0.resume() }
    }

    private func started(_ pid: pid_t) {
        let started = state.withLock { state in
            state.phase = .running(pid)
            defer { state.started = nil }
            return state.started
        }
        started?.resume()
    }

    /// Returns `true` once a stop is asked for, or `false` once the child has exited by itself.
    private func waitForStopOrExit(_ pid: pid_t) async -> Bool {
        let stops = stops
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in stops {}
                return true
            }
            group.addTask {
                // swift-subprocess reaps the child only after the closure returns; until then it is ours to peek at.
                while !Task.isCancelled && !Self.hasExited(pid) {
                    try? await Task.sleep(for: .milliseconds(100))
                }
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Whether the (unreaped) child has exited, without reaping it.
    private static func hasExited(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        guard waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 else { return errno != EINTR }
        return info.si_signo != 0
    }
}
