import Foundation
import RLM

extension ProcessSandbox {
    /// How a bubblewrap sandbox is built. Every limit has a safe default.
    public struct Configuration: Sendable, Hashable {
        /// The Python interpreter inside the sandbox. It must be outside directories the sandbox uid cannot enter
        /// (pyenv's Python under /root is not usable). A venv works: its directory is bound read-only.
        public var pythonPath: String
        /// The bubblewrap binary; `nil` searches `PATH` and `/usr/bin`.
        public var bubblewrapPath: String?
        /// Our launcher (`rlm-sandbox-launch`); `nil` looks next to the running executable.
        public var launcherPath: String?
        /// The unprivileged uid/gid the sandbox runs as when the host runs as root.
        public var sandboxUID: UInt32
        /// See ``sandboxUID``.
        public var sandboxGID: UInt32
        /// Address-space limit (RLIMIT_AS) and, with headroom for the work dir, the cgroup memory limit.
        public var memoryLimitBytes: Int
        /// Size of the private tmpfs work dir (also RLIMIT_FSIZE).
        public var workDirBytes: Int
        /// Processes and threads in the sandbox's pids cgroup.
        public var maxProcesses: Int
        /// RLIMIT_NPROC for the sandbox uid (a backstop where cgroups are not available).
        public var maxProcessesPerUser: Int
        /// RLIMIT_NOFILE.
        public var maxOpenFiles: Int
        /// RLIMIT_CPU for the whole session, in seconds (cells have their own wall-clock timeouts).
        public var cpuSeconds: Int
        /// Default wall-clock limit per cell.
        public var cellTimeout: Duration
        /// After a timeout's interrupt, how long the cell has to stop before the sandbox is killed.
        public var interruptGrace: Duration
        /// How long a new sandbox may take to report ready.
        public var startTimeout: Duration
        /// Characters kept per stream per cell (head + tail).
        public var outputLimit: Int
        /// Largest frame either side may send.
        public var maxFrameBytes: Int
        /// Apply Landlock inside the sandbox when the kernel has it.
        public var landlock: Bool
        /// Install the seccomp filter.
        public var seccomp: Bool
        /// Put each sandbox in its own cgroup v1 memory and pids groups when the host can (root).
        public var cgroups: Bool
        /// Extra host paths bound read-only into the sandbox at the same path.
        public var readOnlyBinds: [String]
        /// Live sandboxes in this process, across every ``ProcessSandbox``: a session started beyond it waits up
        /// to ``sessionSlotWait`` for one to end, then fails. Each run caps its own children too; this bounds many
        /// runs together (a server) and recursion the engine does not see.
        public var maxLiveSessionsPerProcess: Int
        /// How long a session waits for a slot under ``maxLiveSessionsPerProcess`` before `startSession` throws.
        public var sessionSlotWait: Duration
        /// The memory of all this process's sandboxes together (work dirs included), enforced by one cgroup above
        /// theirs where cgroups are used. The session that creates that group sets it (the group lives while any
        /// sandbox of the process does). Default: half the machine's RAM, at most 8 GiB.
        public var totalMemoryLimitBytes: Int
        /// Processes and threads of all this process's sandboxes together (the same parent cgroup's pids limit).
        public var totalMaxProcesses: Int
        /// Tests replace the worker with a hostile one to attack the host's side of the channel.
        var workerSourceOverride: Data?
        /// Tests point the compiled-worker cache elsewhere; `nil` is ``SwiftRLMPaths/cacheDirectory(environment:)``.
        var workerCacheDirectory: URL?

        /// A configuration with the defaults: `/usr/bin/python3`, uid 65534, 1 GiB memory, 256 MiB work dir,
        /// 64 processes, 30 s per cell.
        public init(
            pythonPath: String = "/usr/bin/python3",
            bubblewrapPath: String? = nil,
            launcherPath: String? = nil,
            sandboxUID: UInt32 = 65534,
            sandboxGID: UInt32 = 65534,
            memoryLimitBytes: Int = 1 << 30,
            workDirBytes: Int = 256 << 20,
            maxProcesses: Int = 64,
            maxProcessesPerUser: Int = 1024,
            maxOpenFiles: Int = 256,
            cpuSeconds: Int = 3600,
            cellTimeout: Duration = .seconds(30),
            interruptGrace: Duration = .seconds(2),
            startTimeout: Duration = .seconds(15),
            outputLimit: Int = 20_000,
            maxFrameBytes: Int = 16 << 20,
            landlock: Bool = true,
            seccomp: Bool = true,
            cgroups: Bool = true,
            readOnlyBinds: [String] = []
        ) {
            self.pythonPath = pythonPath
            self.bubblewrapPath = bubblewrapPath
            self.launcherPath = launcherPath
            self.sandboxUID = sandboxUID
            self.sandboxGID = sandboxGID
            self.memoryLimitBytes = memoryLimitBytes
            self.workDirBytes = workDirBytes
            self.maxProcesses = maxProcesses
            self.maxProcessesPerUser = maxProcessesPerUser
            self.maxOpenFiles = maxOpenFiles
            self.cpuSeconds = cpuSeconds
            self.cellTimeout = cellTimeout
            self.interruptGrace = interruptGrace
            self.startTimeout = startTimeout
            self.outputLimit = outputLimit
            self.maxFrameBytes = maxFrameBytes
            self.landlock = landlock
            self.seccomp = seccomp
            self.cgroups = cgroups
            self.readOnlyBinds = readOnlyBinds
            maxLiveSessionsPerProcess = 16
            sessionSlotWait = .seconds(60)
            totalMemoryLimitBytes = Self.defaultTotalMemoryLimitBytes
            totalMaxProcesses = 1024
        }

        /// Half the machine's physical memory, at most 8 GiB (8 GiB when it cannot be read).
        public static var defaultTotalMemoryLimitBytes: Int {
            let pages = sysconf(Int32(_SC_PHYS_PAGES))
            let pageSize = sysconf(Int32(_SC_PAGESIZE))
            guard pages > 0, pageSize > 0 else { return 8 << 30 }
            return min(8 << 30, pages * pageSize / 2)
        }
    }
}
