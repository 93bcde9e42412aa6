import Foundation
import Glibc
import Logging
import RLM
import Synchronization

/// The container backend: each session is the Python worker in a fresh OCI container run by podman (or docker), its
/// stdin and stdout the channel — the container has no network at all.
///
/// Every container is hardened the same way, whatever the image: `--network none`, every capability dropped,
/// `no-new-privileges`, the engine's default seccomp profile, a read-only root with a size-capped `nosuid,nodev,noexec`
/// tmpfs on `/tmp` as the only writable place (`--ipc none`: no `/dev/shm`), uid/gid 65534, memory with swap
/// included (`--memory` = `--memory-swap`), CPUs, a pids limit, explicit `nofile`, `nproc`, `data`, `fsize`, `cpu`,
/// `core` and `msgqueue` ulimits, no log copy of the channel (`--log-driver none`), an init that reaps orphans
/// (`--init`), and an environment made of `HOME`, `TMPDIR`, `PATH` and `LANG` alone: the engine client itself runs
/// with a scrubbed environment, so none of this process's variables (API keys) can reach the container.
///
/// Containers are named `swiftrlm-<pid>-<random>` and labelled with the owning process (``ContainerLabels``); a
/// session removes its container by name when it ends — killing it first (`kill`, then `rm -f`), because killing the
/// `run` client alone leaves the container running. Containers of a process that died without cleaning up are removed
/// by the first session of the next process to use the engine (``removeOrphanedContainers(engine:)``).
///
/// Frame 0 is the worker's source, not the host-compiled code: the image's Python is usually another version.
public struct ContainerSandbox: Sandbox {
    /// What runs the containers, and in which image.
    public struct Options: Sendable, Hashable {
        /// `podman`, `docker` or the path to either; `nil` detects one (podman first, then docker if its daemon
        /// answers). See ``ContainerSandbox/detectEngine(_:)``.
        public var engine: String?
        /// The image the worker runs in. It must hold Python 3 with its standard library; it is never pulled by a
        /// session (`--pull never`), so pull or build it beforehand.
        public var image: String
        /// The interpreter inside the image: a name looked up in the image's `PATH`, or an absolute path.
        public var python: String
        /// The OCI runtime podman uses (`--runtime`); `nil` picks runc when it is installed (crun fails on hosts
        /// with hybrid cgroups, and runc works on every layout) and podman's default otherwise. For docker it names
        /// a runtime registered with the daemon, and `nil` leaves the daemon's default.
        public var runtime: String?
        /// CPUs the container may use (`--cpus`).
        public var cpus: Double

        /// - Parameters:
        ///   - engine: `podman`, `docker`, a path to either, or `nil` to detect one.
        ///   - image: the image to run (default `python:3.12-slim`).
        ///   - python: the interpreter inside the image (default `python3`).
        ///   - runtime: the OCI runtime (podman), or `nil` for runc when present.
        ///   - cpus: CPUs the container may use (default 1).
        public init(
            engine: String? = nil, image: String = "python:3.12-slim", python: String = "python3",
            runtime: String? = nil, cpus: Double = 1
        ) {
            self.engine = engine
            self.image = image
            self.python = python
            self.runtime = runtime
            self.cpus = cpus
        }
    }

    /// The limits every container gets: `memoryLimitBytes` (plus `workDirBytes`, since the tmpfs work dir is charged
    /// to the container's memory), `workDirBytes`, `maxProcesses` (pids), `maxProcessesPerUser` (nproc),
    /// `maxOpenFiles`, `cpuSeconds`, and the host-side ones (cell timeout, output and frame caps, start timeout,
    /// live sessions per process). The bubblewrap-only fields (paths, Landlock, seccomp, cgroups) are not used.
    public var configuration: ProcessSandbox.Configuration
    /// The engine, image, interpreter, runtime and CPUs.
    public var options: Options
    private let logger: Logger

    /// The uid and gid the worker runs as inside the container (and, with no user namespace, on the host).
    static let sandboxUID: UInt32 = 65534

    /// - Parameters:
    ///   - configuration: the shared limits.
    ///   - options: engine, image, interpreter, runtime, CPUs.
    ///   - logger: where lifecycle events go (debug level).
    public init(
        configuration: ProcessSandbox.Configuration = .init(), options: Options = .init(),
        logger: Logger = Logger(label: "rlm.sandbox", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.options = options
        self.logger = logger
    }

    public func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession {
        try await startSession(handler: handler, name: ContainerLabels.newName())
    }

    /// Starts a session in a container of the given name (the doctor and the tests need to know it).
    func startSession(handler: (any SubcallHandler)?, name: String) async throws -> any SandboxSession {
        let options = options
        let configuration = configuration
        try ContainerEngine.validate(options: options)
        let engine = try await offPool { Result { try ContainerEngine.resolve(options.engine) } }.get()
        let runtime = await offPool { engine.runtimeArgument(options.runtime) }
        try await offPool { Result { try engine.checkImage(options.image) } }.get()
        await ContainerOrphans.sweepOnce(engine: engine, logger: logger)
        // The per-process cap comes first: a session beyond it must not even start a container.
        let lease = SessionLease(
            slot: try await SessionSlots.shared.acquire(
                limit: configuration.maxLiveSessionsPerProcess, wait: configuration.sessionSlotWait))
        let container = ContainerHandle(engine: engine, name: name)
        let argv = engine.runArguments(
            name: name, labels: ContainerLabels.current, configuration: configuration, options: options,
            runtime: runtime, cidFile: container.cidFile)
        let process: ChildProcess
        do {
            // Its own process group: a terminal's Ctrl-C reaches the host, which kills the container by name,
            // rather than the client, which would leave the container running.
            // In the session's private directory: the engine's monitor (conmon) writes an `oom` file into its
            // working directory when the container is killed for memory, which must not land in the user's.
            process = try await ChildProcess.spawn(
                path: engine.path, arguments: argv, environment: engine.environment, dataPipe: false,
                newProcessGroup: true, workingDirectory: container.directory)
        } catch {
            await offPool { container.remove() }
            lease.release()
            throw error
        }
        let host = ProcessWorkerHost(
            process: process, identity: "container \(name)",
            kill: { container.kill() },
            cleanup: {
                await offPool { container.remove() }
                lease.release()
            },
            memoryExceeded: { container.wasKilledForMemory { process.waitForExit(upTo: .seconds(10)) } },
            // The container is killed by name; its client then exits by itself (after --rm's removal) and says why a
            // container that failed to start failed, unless it is still there 5 s later.
            clientGrace: .seconds(5))
        do {
            return try await WorkerSession.start(
                host: host, configuration: configuration, payload: WorkerSource.data, workDir: LaunchPlan.workDir,
                info: SessionInfo(
                    pythonVersion: "", landlock: "not applied by the container backend", cgroups: true,
                    hostUID: Self.sandboxUID),
                handler: handler, logger: logger.with(metadata: ["rlm.sandbox.container": "\(name)"]))
        } catch let error as SandboxError where error.isSetupError {
            throw SandboxError.startFailed(engine.explainStartFailure(error.message, options: options))
        }
    }

    /// The engine a session would use, as an absolute path, or `nil` when none is usable.
    ///
    /// A name (`podman`, `docker`) is looked up in `PATH`; a path must be executable. With `nil`, podman is taken
    /// when installed, then docker, but only when its daemon answers `docker info` within a few seconds (a docker
    /// client with no reachable daemon is not an engine). The answer is cached for the process.
    /// - Parameter preferred: `podman`, `docker`, a path, or `nil` to detect.
    public static func detectEngine(_ preferred: String? = nil) -> String? {
        (try? ContainerEngine.resolve(preferred))?.path
    }

    /// Removes the containers that sessions of processes no longer running left behind (labelled `swiftrlm.sandbox`
    /// and this host's identity — machine id and pid namespace — whose owner's pid is gone or belongs to another
    /// process now), and only those: containers of live processes, of another host or pid namespace (a shared or
    /// remote engine), and anything not labelled by SwiftRLM are never touched. Sessions do this once per process
    /// on their own.
    /// - Parameter engine: `podman`, `docker`, a path, or `nil` to detect.
    /// - Returns: the names of the containers removed.
    public static func removeOrphanedContainers(engine: String? = nil) async -> [String] {
        guard let resolved = try? await offPool({ Result { try ContainerEngine.resolve(engine) } }).get() else {
            return []
        }
        return await offPool { ContainerOrphans.sweep(engine: resolved) }
    }
}

extension Logger {
    fileprivate func with(metadata: Logger.Metadata) -> Logger {
        var copy = self
        for (key, value) in metadata { copy[metadataKey: key] = value }
        return copy
    }
}
