import Foundation
import Glibc
import RLM

/// What a ``WorkerSession`` runs its worker in — a bubblewrap process tree, a container, a command that starts Python
/// elsewhere, or an in-process WebAssembly guest — reached over a pair of pipes. Backends differ only here: the
/// worker, the channel and every check the host makes of what the worker sends are the same.
package protocol WorkerHost: AnyObject, Sendable {
    /// The host's end of the channel into the worker (the worker's stdin): frames, and inline context bytes.
    var channelWriteFD: Int32 { get }
    /// The host's end of the channel out of the worker (the worker's stdout): frames, and inline child contexts.
    var channelReadFD: Int32 { get }
    /// Separate data pipes on the worker's fds 3 and 4 (the process backend), or `nil`: context bytes then follow
    /// their frame on the channel itself (docs/CHANNEL.md, "Inline data").
    var dataPipes: (write: Int32, read: Int32)? { get }
    /// Names the worker in logs (a pid, a container name).
    var identity: String { get }
    /// Stops the worker now, and everything it started. Never blocks; safe to call twice and from any thread.
    func kill()
    /// Waits until the worker has exited (after ``kill()`` or on its own) and says how it ended.
    func waitForExit() async -> String
    /// Once the worker is gone: removes what it left (cgroups, the container) and gives back shared limits. Called
    /// exactly once per host, also when a session is dropped without being shut down.
    func release() async
    /// Whether the worker was killed for memory (the kernel's OOM killer in its cgroup, or an engine's limit).
    func memoryExceeded() async -> Bool
    /// What the worker's side wrote outside the channel (its stderr), at most 64 KiB, read without blocking.
    func diagnostics() -> String
}

/// A worker in a child process whose stdio carries the channel: the process backend's launcher, `podman run -i`,
/// `docker run -i`, or a user's command. Backends add what killing and cleaning up mean for them.
package final class ProcessWorkerHost: WorkerHost {
    let process: ChildProcess
    private let extraKill: (@Sendable () -> Void)?
    private let cleanup: (@Sendable () async -> Void)?
    private let oom: (@Sendable () -> Bool)?
    private let clientGrace: Duration?
    package let identity: String
    /// The sandbox's own cgroups, when it has some (for tests that check nothing outlives a session).
    let cgroupDirectories: [String]

    /// - Parameters:
    ///   - process: the spawned child.
    ///   - identity: for logs; the pid when `nil`.
    ///   - kill: also run on ``kill()`` (after SIGKILL of the child), e.g. killing a container by name.
    ///   - cleanup: run once the child has exited, e.g. removing a container or cgroups.
    ///   - memoryExceeded: whether the worker was killed for memory.
    ///   - cgroupDirectories: the worker's own cgroups, if any.
    ///   - clientGrace: with a `kill` that stops the worker by itself (a container killed by name), how long the
    ///     child — only a client then — may take to exit on its own before it is killed too, so that its last words on
    ///     stderr (why the container did not start) are not lost; `nil` kills the child at once.
    init(
        process: ChildProcess, identity: String? = nil, kill: (@Sendable () -> Void)? = nil,
        cleanup: (@Sendable () async -> Void)? = nil, memoryExceeded: (@Sendable () -> Bool)? = nil,
        cgroupDirectories: [String] = [], clientGrace: Duration? = nil
    ) {
        self.clientGrace = clientGrace
        self.process = process
        self.cgroupDirectories = cgroupDirectories
        self.identity = identity ?? "pid \(process.pid)"
        self.extraKill = kill
        self.cleanup = cleanup
        self.oom = memoryExceeded
    }

    package var channelWriteFD: Int32 { process.stdinFD }
    package var channelReadFD: Int32 { process.stdoutFD }
    package var dataPipes: (write: Int32, read: Int32)? {
        process.dataFD >= 0 && process.dataOutFD >= 0 ? (process.dataFD, process.dataOutFD) : nil
    }

    package func kill() {
        guard let clientGrace, let extraKill else {
            process.kill()
            extraKill?()
            return
        }
        extraKill()
        let process = process
        Task {
            try? await Task.sleep(for: clientGrace)
            process.kill()  // nothing once it has been reaped
        }
    }

    package func waitForExit() async -> String {
        describeWaitStatus(await process.waitForExit())
    }

    package func release() async {
        await cleanup?()
        process.closeStderr()
    }

    package func memoryExceeded() async -> Bool {
        guard let oom else { return false }
        return await offPool { oom() }
    }

    package func diagnostics() -> String { process.drainStderr() }
}
