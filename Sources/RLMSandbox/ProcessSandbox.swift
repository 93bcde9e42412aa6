import Foundation
import Glibc
import Logging
import RLM
import Synchronization

/// The process backend: each session is a Python worker inside bubblewrap, run as an unprivileged uid in fresh
/// user/pid/net/ipc/uts/mount/cgroup namespaces with a read-only root, a private size-capped tmpfs work dir, seccomp,
/// Landlock, rlimits and (as root) its own cgroups; the host kills the whole sandbox on timeout.
public struct ProcessSandbox: Sandbox {
    /// The configuration every session of this sandbox uses.
    public var configuration: Configuration
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: limits, paths and features.
    ///   - logger: where sandbox lifecycle events are logged (debug level).
    public init(
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "rlm.sandbox", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.logger = logger
    }

    public func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession {
        let plan = try LaunchPlan(configuration: configuration)
        let configuration = configuration
        // The per-process cap comes first: a session beyond it must not even spawn a helper.
        let lease = SessionLease(
            slot: try await SessionSlots.shared.acquire(
                limit: configuration.maxLiveSessionsPerProcess, wait: configuration.sessionSlotWait))
        // From here on every way out gives the lease back: the host's release on the normal paths, its deinit else.
        // Both run a helper process the first time (then they are cached): keep that off the cooperative pool.
        let bwrapPath = plan.bubblewrapPath
        let features = await offPool { BubblewrapFeatures.probe(bwrapPath) }
        var payload = configuration.workerSourceOverride ?? Data()
        if configuration.workerSourceOverride == nil {
            payload = await offPool {
                WorkerSource.payload(
                    python: configuration.pythonPath, cacheDirectory: configuration.workerCacheDirectory)
            }
        }
        let cgroups: SandboxCgroups? =
            configuration.cgroups && geteuid() == 0
            ? await offPool {
                let parents = lease.holdHostCgroups(
                    memoryLimitBytes: configuration.totalMemoryLimitBytes,
                    maxProcesses: configuration.totalMaxProcesses)
                return SandboxCgroups.create(
                    name: "\(HostCgroups.parentName)-\(UInt32.random(in: 0...UInt32.max))",
                    // The tmpfs work dir is charged to the group too; leave room for it and for bwrap itself.
                    memoryLimitBytes: configuration.memoryLimitBytes + configuration.workDirBytes + (64 << 20),
                    maxProcesses: configuration.maxProcesses, parents: parents)
            }
            : nil
        let argv = plan.arguments(configuration: configuration, cgroups: cgroups, bubblewrapFeatures: features)
        let process: ChildProcess
        do {
            process = try await ChildProcess.spawn(
                path: plan.launcherPath, arguments: argv, environment: [], dataPipe: true)
        } catch {
            await offPool { cgroups?.remove() }
            lease.release()
            throw error
        }
        let host = ProcessWorkerHost(
            process: process,
            kill: { cgroups?.killAll() },
            cleanup: {
                await offPool {
                    cgroups?.killAll()
                    cgroups?.remove()
                }
                lease.release()
            },
            memoryExceeded: { (cgroups?.oomKills() ?? 0) > 0 },
            cgroupDirectories: cgroups?.directories ?? [])
        return try await WorkerSession.start(
            host: host, configuration: configuration, payload: payload, workDir: LaunchPlan.workDir,
            info: SessionInfo(
                pythonVersion: "", landlock: configuration.landlock ? "pending" : "disabled",
                cgroups: cgroups != nil, hostUID: plan.runningAsRoot ? configuration.sandboxUID : getuid()),
            handler: handler, logger: logger)
    }
}

/// Resolved paths and the full command line for one sandbox.
struct LaunchPlan: Sendable {
    let launcherPath: String
    let bubblewrapPath: String
    let pythonPath: String
    let extraReadOnly: [String]
    let runningAsRoot: Bool
    /// A venv needs `site` at start-up (it sets `sys.prefix` and the venv's paths); a system Python starts with -S
    /// and the worker imports `site` on the first import the standard library cannot satisfy.
    let usesVenv: Bool

    static let workDir = "/tmp"

    /// The fixed start-up code: read frame 0 (the worker source) from stdin and run it.
    static let bootstrap = """
        import os,sys
        def _r(n):
            b=b''
            while len(b)<n:
                c=os.read(0,n-len(b))
                if not c: raise SystemExit(3)
                b+=c
            return b
        _n=int.from_bytes(_r(4),'big');_s=_r(_n)
        _g={'__name__':'rlm_worker','__builtins__':__builtins__}
        exec(__import__('marshal').loads(_s[4:]) if _s[:4]==b'RLMM' else compile(_s.decode(),'<rlm-worker>','exec'),_g)
        """

    init(configuration: ProcessSandbox.Configuration) throws {
        runningAsRoot = geteuid() == 0
        guard let bwrap = configuration.bubblewrapPath ?? SwiftRLMPaths.executable(named: "bwrap") else {
            throw SandboxError.setup(
                "bubblewrap (bwrap) is not installed: install it with `apt-get install -y bubblewrap`")
        }
        guard access(bwrap, X_OK) == 0 else {
            throw SandboxError.setup("bubblewrap at \(bwrap) is not executable: `apt-get install -y bubblewrap`")
        }
        bubblewrapPath = bwrap
        if let configured = configuration.launcherPath {
            guard access(configured, X_OK) == 0 else {
                throw SandboxError.setup("the sandbox launcher \(configured) is missing or not executable")
            }
        }
        guard let launcher = configuration.launcherPath ?? Self.defaultLauncherPath() else {
            throw SandboxError.setup(Self.launcherNotFoundMessage())
        }
        launcherPath = launcher
        let python = configuration.pythonPath
        guard access(python, X_OK) == 0 else {
            throw SandboxError.setup(
                "Python interpreter \(python) not found: install it with `apt-get install -y python3`, "
                    + "or point the sandbox at another interpreter (--python)")
        }
        pythonPath = python
        usesVenv = FileManager.default.fileExists(
            atPath: URL(fileURLWithPath: python).deletingLastPathComponent().deletingLastPathComponent().path
                + "/pyvenv.cfg")
        var binds = configuration.readOnlyBinds
        binds.append(contentsOf: Self.interpreterBinds(python))
        extraReadOnly = Array(Set(binds)).sorted()
        if runningAsRoot {
            for path in [python] + extraReadOnly {
                if let blocker = Self.pathBlockedForOthers(path) {
                    throw SandboxError.setup(
                        "the sandbox runs as uid \(configuration.sandboxUID), which cannot reach \(path) "
                            + "(\(blocker) is not searchable by others); use an interpreter outside it, "
                            + "e.g. /usr/bin/python3 or a venv under /opt")
                }
            }
        }
    }

    /// The launcher's argv: its own options, then bubblewrap and its options, then Python.
    func arguments(
        configuration: ProcessSandbox.Configuration, cgroups: SandboxCgroups?, bubblewrapFeatures: BubblewrapFeatures
    ) -> [String] {
        var launcher = [launcherPath]
        if runningAsRoot {
            launcher += ["--uid", "\(configuration.sandboxUID)", "--gid", "\(configuration.sandboxGID)"]
        }
        for dir in cgroups?.directories ?? [] { launcher += ["--cgroup", dir] }
        launcher += [
            "--rlimit", "as=\(configuration.memoryLimitBytes)",
            "--rlimit", "nproc=\(configuration.maxProcessesPerUser)",
            "--rlimit", "nofile=\(configuration.maxOpenFiles)",
            "--rlimit", "fsize=\(configuration.workDirBytes)",
            "--rlimit", "cpu=\(configuration.cpuSeconds)",
            "--rlimit", "core=0",
            "--new-keyring", "--data-fd",
        ]
        if configuration.seccomp { launcher.append("--seccomp") }
        launcher.append("--")

        var bwrap = [bubblewrapPath, "--unshare-all", "--unshare-user"]
        if bubblewrapFeatures.disableUserns { bwrap.append("--disable-userns") }
        bwrap += [
            "--die-with-parent", "--new-session", "--hostname", "rlm-sandbox",
            "--ro-bind", "/usr", "/usr",
        ]
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let path = "/" + top
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
                bwrap += ["--symlink", target, path]
            } else if FileManager.default.fileExists(atPath: path) {
                bwrap += ["--ro-bind", path, path]
            }
        }
        bwrap += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        bwrap += [
            "--proc", "/proc", "--dev", "/dev",
            "--size", "\(configuration.workDirBytes)", "--tmpfs", Self.workDir,
        ]
        // After the tmpfs, so an interpreter that lives under /tmp is not hidden by it.
        for path in extraReadOnly { bwrap += ["--ro-bind", path, path] }
        bwrap += [
            "--chdir", Self.workDir,
            "--clearenv",
            "--setenv", "HOME", Self.workDir, "--setenv", "TMPDIR", Self.workDir,
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--",
        ]
        bwrap += [pythonPath, "-I"] + (usesVenv ? [] : ["-S"]) + ["-c", Self.bootstrap]
        return launcher + bwrap
    }

    /// A venv (or an interpreter installed outside /usr) must be visible inside: bind its root read-only.
    static func interpreterBinds(_ python: String) -> [String] {
        var binds = [String]()
        let url = URL(fileURLWithPath: python)
        let prefix = url.deletingLastPathComponent().deletingLastPathComponent().path
        if FileManager.default.fileExists(atPath: prefix + "/pyvenv.cfg"), !prefix.hasPrefix("/usr/") {
            binds.append(prefix)
        }
        let real = url.resolvingSymlinksInPath()
        if !real.path.hasPrefix("/usr/") {
            binds.append(real.deletingLastPathComponent().deletingLastPathComponent().path)
        }
        return binds.filter { $0 != "/" && !$0.isEmpty }
    }

    /// The first ancestor of `path` that others cannot search, if any (the sandbox uid is "other").
    static func pathBlockedForOthers(_ path: String) -> String? {
        var current = URL(fileURLWithPath: path).deletingLastPathComponent()
        while current.path != "/" && !current.path.isEmpty {
            var info = stat()
            if stat(current.path, &info) == 0, info.st_mode & S_IXOTH == 0 { return current.path }
            current.deleteLastPathComponent()
        }
        return nil
    }

    /// `rlm-sandbox-launch` is a product of this package, found from the real path of the running executable (read
    /// from /proc/self/exe, so neither argv[0] nor a symlink to `rlm` can point elsewhere).
    static func defaultLauncherPath() -> String? {
        launcherCandidates().first(where: isTrustedLauncher)
    }

    /// Where the launcher may be, in order: beside the executable (`swift build` puts both products, and the test
    /// runner, in one folder) and `<exe dir>/../libexec/swiftrlm/` (what scripts/install lays out). Nowhere else: a
    /// folder above the prefix (`/tmp`, say) is anyone's.
    static func launcherCandidates() -> [String] {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            return []
        }
        let dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        return [
            dir.appendingPathComponent("rlm-sandbox-launch").path,
            dir.deletingLastPathComponent().appendingPathComponent("libexec/swiftrlm/rlm-sandbox-launch").path,
        ]
    }

    /// The launcher runs with our privileges (root, often), so one that someone else could have planted or can
    /// rewrite — in /tmp, say, above a prefix installed there — is not used: it must be a regular executable file
    /// writable by no one but its owner, and owned by root, by us, or by whoever owns this executable (a build
    /// folder checked out by another user), who could change this program anyway.
    static func isTrustedLauncher(_ path: String) -> Bool {
        var info = stat()
        var exe = stat()
        guard stat(path, &info) == 0, access(path, X_OK) == 0, stat("/proc/self/exe", &exe) == 0 else {
            return false
        }
        return (info.st_mode & S_IFMT) == S_IFREG && [0, geteuid(), exe.st_uid].contains(info.st_uid)
            && info.st_mode & 0o022 == 0
    }

    /// Says where the launcher was looked for and how to put it there.
    static func launcherNotFoundMessage() -> String {
        let candidates = launcherCandidates()
        let looked = candidates.map { path in
            FileManager.default.fileExists(atPath: path)
                ? path + " (present, but not executable, writable by others, or owned by a stranger)"
                : path
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "unknown"
        return "the sandbox launcher rlm-sandbox-launch was not found; this program is \(exe), and the launcher was "
            + "looked for at: \(looked.joined(separator: ", ")). Fix: install both with `scripts/install PREFIX` "
            + "(rlm into PREFIX/bin, the launcher into PREFIX/libexec/swiftrlm), or run rlm from the build folder "
            + "where `swift build` leaves the two side by side (.build/debug)"
    }
}

/// What the installed bubblewrap supports (read once per binary).
struct BubblewrapFeatures: Sendable {
    var disableUserns: Bool

    private static let cache = Mutex<[String: BubblewrapFeatures]>([:])

    static func probe(_ bwrap: String) -> BubblewrapFeatures {
        if let known = cache.withLock({ $0[bwrap] }) { return known }
        let help = try? ChildProcess.runToCompletion([bwrap, "--help"], timeout: .seconds(10))
        let text = help.map { String(decoding: $0.stdout + $0.stderr, as: UTF8.self) } ?? ""
        let features = BubblewrapFeatures(disableUserns: text.contains("--disable-userns"))
        cache.withLock { $0[bwrap] = features }
        return features
    }
}
