import Foundation
import Glibc
import Logging
import RLM
import Synchronization

/// A container engine's command-line client (podman or docker) and the commands the container backend runs with it.
/// Every helper command runs with the scrubbed environment below and a deadline; they block, so call them off the
/// cooperative pool.
struct ContainerEngine: Sendable, Hashable {
    enum Kind: String, Sendable {
        case podman
        case docker
    }

    /// The client's absolute path.
    let path: String
    let kind: Kind

    init(path: String) {
        self.path = path
        kind = URL(fileURLWithPath: path).lastPathComponent.contains("docker") ? .docker : .podman
    }

    /// What the engine client may see of this process's environment: what it needs to find its own configuration,
    /// storage and daemon, and nothing else — so no secret of this process (an API key) can reach a container, even
    /// through an engine option that copies the client's environment in.
    static let passedEnvironment: Set<String> = [
        "HOME", "USER", "LOGNAME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "CONTAINER_HOST",
        "CONTAINER_CONNECTION", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF",
        "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
    ]

    /// The client's environment (`NAME=value`): a fixed `PATH` (the engine finds conmon and the runtime there) and
    /// the passed variables.
    var environment: [String] {
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            + ProcessInfo.processInfo.environment.filter { Self.passedEnvironment.contains($0.key) }
            .map { "\($0.key)=\($0.value)" }.sorted()
    }

    /// Runs `<engine> arguments…` to completion with the scrubbed environment (through `env -i`, since the shared
    /// helper runs everything with an empty one). `nil` when it could not be started.
    func run(_ arguments: [String], timeout: Duration = .seconds(30)) -> ChildProcess.Completion? {
        try? ChildProcess.runToCompletion(
            [Self.envPath, "-i"] + environment + [path] + arguments, timeout: timeout, outputLimit: 8 << 20)
    }

    private static let envPath = SwiftRLMPaths.executable(named: "/usr/bin/env") ?? "/bin/env"

    // MARK: - Finding one

    private static let resolved = Mutex<[String: ContainerEngine]>([:])

    /// The engine for `preferred` (`podman`, `docker`, a path, or `nil` to detect), checked usable; successes are
    /// cached for the process.
    /// - Throws: ``SandboxError/setup(_:)`` saying what to install or start.
    static func resolve(_ preferred: String?) throws -> ContainerEngine {
        let key = preferred ?? ""
        if let known = resolved.withLock({ $0[key] }) { return known }
        let engine = try find(preferred)
        resolved.withLock { $0[key] = engine }
        return engine
    }

    private static let installHint = "install podman with `apt-get install -y podman runc catatonit`"

    private static func find(_ preferred: String?) throws -> ContainerEngine {
        if let preferred {
            guard !preferred.isEmpty, let path = SwiftRLMPaths.executable(named: preferred) else {
                throw SandboxError.setup(
                    "the container engine '\(preferred)' was not found"
                        + (preferred.contains("/") ? " (not an executable file)" : " in PATH") + ": " + installHint)
            }
            // Absolute: the client runs in the session's own directory, where a relative path means nothing.
            let engine = ContainerEngine(path: URL(fileURLWithPath: path).standardizedFileURL.path)
            if engine.kind == .docker, let problem = engine.daemonProblem() {
                throw SandboxError.setup(
                    "docker at \(path) cannot reach its daemon (\(problem)): start the docker daemon, or "
                        + installHint + " and use --engine podman")
            }
            return engine
        }
        if let podman = SwiftRLMPaths.executable(named: "podman") { return ContainerEngine(path: podman) }
        guard let docker = SwiftRLMPaths.executable(named: "docker") else {
            throw SandboxError.setup("no container engine is installed: " + installHint)
        }
        let engine = ContainerEngine(path: docker)
        if let problem = engine.daemonProblem() {
            throw SandboxError.setup(
                "no usable container engine: podman is not installed and docker at \(docker) has no reachable "
                    + "daemon (\(problem)); " + installHint)
        }
        return engine
    }

    /// Why `docker info` fails, or `nil` when the daemon answers (within 5 seconds).
    private func daemonProblem() -> String? {
        guard let done = run(["info", "--format", "{{.ServerVersion}}"], timeout: .seconds(5)) else {
            return "docker could not be started"
        }
        if done.timedOut { return "`docker info` did not answer within 5 s" }
        if done.succeeded { return nil }
        return Self.firstLine(done.stderr) ?? "`docker info` failed"
    }

    /// `--runtime` for `podman run`: the explicit one, else runc when installed; docker only takes an explicit one
    /// (a name registered with its daemon).
    func runtimeArgument(_ explicit: String?) -> String? {
        if let explicit, !explicit.isEmpty {
            // A path is made absolute (the client runs in the session's own directory); a bare name is the engine's.
            return explicit.contains("/") ? URL(fileURLWithPath: explicit).standardizedFileURL.path : explicit
        }
        guard kind == .podman else { return nil }
        for candidate in ["runc", "/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"] {
            if let path = SwiftRLMPaths.executable(named: candidate) { return path }
        }
        return nil
    }

    // MARK: - The image

    /// Checks the image name and the interpreter before either reaches an engine command line, where a value
    /// starting with `-` would be read as an engine flag (`--privileged`) and whitespace or control characters
    /// have no business in an image reference or a path.
    /// - Throws: ``SandboxError/setup(_:)`` naming the option (`--image`, or the interpreter option).
    static func validate(options: ContainerSandbox.Options) throws {
        try validateImage(options.image)
        let python = options.python
        if python.isEmpty || python.hasPrefix("-") || !isPlain(python) {
            throw SandboxError.setup(
                "the container interpreter (ContainerSandbox.Options.python) '\(UntrustedText.visible(python))' is not "
                    + "a name or a path: it must be non-empty, not start with '-', and hold no whitespace or control "
                    + "characters")
        }
    }

    /// Checks an image name (see ``validate(options:)``).
    static func validateImage(_ image: String) throws {
        if image.isEmpty || image.hasPrefix("-") || !isPlain(image) {
            throw SandboxError.setup(
                "--image '\(UntrustedText.visible(image))' is not an image name: it must be non-empty, not start "
                    + "with '-' (it would be read as an engine flag), and hold no whitespace, control characters or NUL"
            )
        }
    }

    /// No whitespace, no control characters (NUL included).
    private static func isPlain(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy {
            !$0.properties.isWhitespace && !CharacterSet.controlCharacters.contains($0)
                && $0.properties.generalCategory != .format
        }
    }

    private static let imagesPresent = Mutex<Set<String>>([])

    /// Checks that `image` is present (sessions never pull); the answer is cached once positive.
    /// - Throws: ``SandboxError/setup(_:)`` saying how to get the image, or that the engine itself is broken.
    func checkImage(_ image: String) throws {
        try Self.validateImage(image)
        let key = path + "\u{0}" + image
        if Self.imagesPresent.withLock({ $0.contains(key) }) { return }
        guard let done = run(["image", "inspect", "--format", "{{.Id}}", "--", image]) else {
            throw SandboxError.setup("\(path) could not be started: " + Self.installHint)
        }
        if done.succeeded {
            Self.imagesPresent.withLock { _ = $0.insert(key) }
            return
        }
        let stderr = String(decoding: done.stderr, as: UTF8.self)
        if done.timedOut {
            throw SandboxError.setup(
                "\(kind.rawValue) did not answer `image inspect` within 30 s; check `\(kind.rawValue) info`")
        }
        let lowered = stderr.lowercased()
        if lowered.contains("image not known") || lowered.contains("no such image")
            || lowered.contains("no such object")
        {
            throw SandboxError.setup(
                "the container image '\(image)' is not on this machine, and sessions never pull one: "
                    + "`\(kind.rawValue) pull \(image)` (needs network access), or build the local test image "
                    + "without a registry with `scripts/container_image.sh` and pass "
                    + "--image localhost/swiftrlm-test-python:bookworm")
        }
        throw SandboxError.setup(
            "\(kind.rawValue) at \(path) does not work here: "
                + (Self.firstLine(done.stderr) ?? describeWaitStatus(done.status))
                + "; check `\(kind.rawValue) info`")
    }

    // MARK: - The command line

    /// The hostname inside every container.
    static let hostname = "rlm-sandbox"

    /// The worker's environment inside the container: all of it.
    static let workerEnvironment = [
        "HOME=\(LaunchPlan.workDir)", "TMPDIR=\(LaunchPlan.workDir)", "PATH=/usr/local/bin:/usr/bin:/bin",
        "LANG=C.UTF-8",
    ]

    /// `<engine> run …` for one session's container (argv[0] included); see ``ContainerSandbox`` for why each flag.
    func runArguments(
        name: String, labels: [String: String], configuration: ProcessSandbox.Configuration,
        options: ContainerSandbox.Options, runtime: String?, cidFile: String? = nil
    ) -> [String] {
        // The tmpfs work dir is charged to the container's memory: room for it on top of the worker's own.
        let memory = configuration.memoryLimitBytes + configuration.workDirBytes
        // --rm: the engine's monitor (conmon, dockerd) removes the container when it exits, even after this
        // process died without a word; the host also removes it by name, and sweeps what an engine left.
        var argv = [path, "run", "--interactive", "--rm", "--pull", "never", "--name", name]
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) { argv += ["--label", "\(key)=\(value)"] }
        if let cidFile { argv += ["--cidfile", cidFile] }
        if let runtime { argv += ["--runtime", runtime] }
        argv += [
            "--init", "--network", "none", "--ipc", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--read-only",
        ]
        // podman's --read-only would add writable tmpfs on /run, /tmp and /var/tmp; the work dir is the only one.
        if kind == .podman { argv.append("--read-only-tmpfs=false") }
        argv += [
            "--tmpfs",
            "\(LaunchPlan.workDir):rw,size=\(configuration.workDirBytes),mode=1777,nosuid,nodev,noexec",
            "--user", "\(ContainerSandbox.sandboxUID):\(ContainerSandbox.sandboxUID)",
            "--memory", "\(memory)", "--memory-swap", "\(memory)",
            "--cpus", Self.cpus(options.cpus),
            "--pids-limit", "\(max(1, configuration.maxProcesses))",
        ]
        // Explicit, soft = hard: the engine's defaults copy the host's, and root without CAP_SYS_RESOURCE cannot
        // raise them. `data` caps the heap (anonymous private memory), so a large allocation raises MemoryError
        // with the REPL kept rather than waking the OOM killer (`as` is not an option engines accept). `msgqueue`
        // 0: /dev/mqueue (the private IPC namespace's) takes no POSIX message queue, so it stores no bytes either.
        let ulimits: [(String, Int)] = [
            ("nofile", configuration.maxOpenFiles), ("nproc", configuration.maxProcessesPerUser),
            ("data", configuration.memoryLimitBytes), ("fsize", configuration.workDirBytes),
            ("cpu", configuration.cpuSeconds), ("core", 0), ("msgqueue", 0),
        ]
        for (limit, value) in ulimits { argv += ["--ulimit", "\(limit)=\(value):\(value)"] }
        argv += ["--log-driver", "none", "--sig-proxy=false", "--hostname", Self.hostname]
        if kind == .podman { argv.append("--unsetenv-all") }
        for variable in Self.workerEnvironment { argv += ["--env", variable] }
        argv += [
            "--workdir", LaunchPlan.workDir, "--entrypoint", options.python, options.image,
            "-I", "-S", "-c", LaunchPlan.bootstrap,
        ]
        return argv
    }

    static func cpus(_ value: Double) -> String {
        let clamped = max(0.01, value)
        return clamped == clamped.rounded() ? "\(Int(clamped))" : String(format: "%.2f", clamped)
    }

    /// A start failure's message with what to do about the usual causes.
    func explainStartFailure(_ message: String, options: ContainerSandbox.Options) -> String {
        var text = "the container (\(kind.rawValue), image \(options.image)) did not start a worker: " + message
        let lowered = message.lowercased()
        if lowered.contains("crun") && lowered.contains("cgroup") {
            text +=
                ". crun cannot manage this host's cgroups: `apt-get install -y runc` (used automatically) or "
                + "pass --runtime runc"
        } else if lowered.contains("init binary") {
            text += ". The engine's init (--init) is missing: `apt-get install -y catatonit` for podman"
        } else if lowered.contains("failed to exec pid1") || lowered.contains("executable file not found")
            || lowered.contains("no such file or directory")
        {
            text +=
                ". The image may have no '\(options.python)': use an image with Python 3, or name its "
                + "interpreter's path"
        } else if lowered.contains("image not known") || lowered.contains("no such image") {
            text += ". Pull the image, or build the local one with scripts/container_image.sh"
        }
        return text
    }

    static func firstLine(_ data: Data) -> String? {
        let text = String(decoding: data.prefix(4096), as: UTF8.self)
        let line = text.split(whereSeparator: \.isNewline).first { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        return line.map { UntrustedText.visible(String($0.prefix(500))) }
    }
}

/// One session's container, by name: killing and removing it, and telling whether the kernel killed it for memory.
final class ContainerHandle: Sendable {
    let engine: ContainerEngine
    let name: String
    /// Where the engine writes the container's id (in ``directory``), to find its cgroup.
    let cidFile: String?
    /// The session's private directory (0700, under /tmp): the id file, and the engine client's working directory.
    var directory: String? { cidFile.map { ($0 as NSString).deletingLastPathComponent } }
    private let killed = Atomic<Bool>(false)
    /// The kernel's count of OOM kills when the session started (see ``wasKilledForMemory(clientExitStatus:)``).
    private let oomKillsAtStart: Int

    /// - Parameters:
    ///   - engine: the engine that runs the container.
    ///   - name: the container's name.
    ///   - recordsID: make a private directory for `--cidfile` (a session's own container; not for a leftover).
    init(engine: ContainerEngine, name: String, recordsID: Bool = true) {
        self.engine = engine
        self.name = name
        var template = Array("/tmp/swiftrlm-cid-XXXXXX".utf8CString)
        cidFile =
            recordsID
            ? template.withUnsafeMutableBufferPointer { buffer in
                mkdtemp(buffer.baseAddress!).map { String(cString: $0) + "/id" }
            } : nil
        oomKillsAtStart = Self.kernelOOMKills()
    }

    /// Kills the container by name, in the background (never blocks; once). Killing the `run` client is not
    /// enough: the engine's monitor keeps the container running without it.
    func kill() {
        guard !killed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let engine = engine
        let name = name
        DispatchQueue.global().async {
            _ = engine.run(["kill", "--signal", "KILL", "--", name], timeout: .seconds(20))
        }
    }

    /// Removes the container (killing it if it still runs), checks it is gone, and deletes the id file. Blocks.
    func remove() {
        let force =
            engine.kind == .podman ? ["rm", "--force", "--time", "0", "--", name] : ["rm", "--force", "--", name]
        for attempt in 0..<3 {
            _ = engine.run(force, timeout: .seconds(30))
            guard let check = engine.run(["container", "inspect", "--format", "{{.Name}}", "--", name]),
                check.succeeded
            else { break }
            if attempt < 2 { usleep(200_000) }
        }
        // The id file, and whatever the engine's monitor left beside it (its `oom` file).
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Whether the container's worker was killed for memory, asked once the worker has died. Blocks (up to a few
    /// seconds, while the engine records the exit).
    ///
    /// The evidence, in order: the container's memory cgroup counts an OOM kill (read at once, since the engine
    /// deletes the cgroup moments after the exit); the engine's `OOMKilled` flag while the container is still
    /// listed; or the container ended by SIGKILL (exit status 137, from the engine's record or, once `--rm` has
    /// removed the container, from the `run` client's own exit status, which is the container's) that the host did
    /// not send while the kernel's OOM-kill count rose during the session. The last is for engines that do not record
    /// OOM kills (podman with runc on cgroup v1 does not) when the cgroup is already gone; SIGKILL from inside
    /// (`os.kill(os.getpid(), 9)`) during an unrelated OOM kill elsewhere would fool it, which costs only a wrong
    /// label on a dead sandbox.
    /// - Parameter clientExitStatus: the `run` client's raw wait status once it has exited (waiting a little), or
    ///   `nil`.
    func wasKilledForMemory(clientExitStatus: () -> Int32?) -> Bool {
        if killed.load(ordering: .acquiring) { return false }
        let id = cidFile.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if let id, let kills = Self.cgroupOOMKills(containerID: id), kills > 0 { return true }
        for _ in 0..<50 {
            guard
                let done = engine.run(
                    [
                        "container", "inspect", "--format",
                        "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}", "--",
                        name,
                    ], timeout: .seconds(10)), done.succeeded
            else { break }  // removed already (--rm): the client's exit status is what is left
            let fields = String(decoding: done.stdout, as: UTF8.self).split(separator: " ").map {
                $0.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard fields.count == 3 else { break }
            if fields[0] == "running" || fields[0] == "stopping" {
                usleep(100_000)
                continue
            }
            return fields[2] == "true" || (fields[1] == "137" && Self.kernelOOMKills() > oomKillsAtStart)
        }
        // The client exits normally with the container's status.
        guard let status = clientExitStatus() else { return false }
        return exitStatusCode(status) == 137 && Self.kernelOOMKills() > oomKillsAtStart
    }

    /// OOM kills counted in the container's memory cgroup, where the usual engine layouts put it (cgroup v1 or v2;
    /// podman with cgroupfs or systemd, docker), or `nil` when it is not found (gone already, or another layout).
    static func cgroupOOMKills(containerID id: String) -> Int? {
        guard id.count >= 12, id.allSatisfy(\.isHexDigit) else { return nil }
        let relative = [
            "libpod_parent/libpod-\(id)", "machine.slice/libpod-\(id).scope",
            "machine.slice/libpod-\(id).scope/container", "docker/\(id)", "system.slice/docker-\(id).scope",
        ]
        let files =
            relative.map { "/sys/fs/cgroup/memory/\($0)/memory.oom_control" }
            + relative.flatMap { ["/sys/fs/cgroup/\($0)/memory.events", "/sys/fs/cgroup/unified/\($0)/memory.events"] }
        for file in files {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
                return Int(line.dropFirst("oom_kill ".count))
            }
        }
        return nil
    }

    /// The kernel's count of OOM kills since boot (`oom_kill` in /proc/vmstat), 0 when unreadable.
    static func kernelOOMKills() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/vmstat", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return 0
    }
}

/// The labels and names that tie a container to the process that started it.
enum ContainerLabels {
    /// Marks every SwiftRLM sandbox container.
    static let sandbox = "swiftrlm.sandbox"
    /// The owning process's pid.
    static let hostPID = "swiftrlm.host-pid"
    /// The owning process's start time (field 22 of /proc/PID/stat), so a reused pid is not taken for the owner.
    static let hostStart = "swiftrlm.host-start"
    /// The boot the owner ran in: after a reboot no owner is alive.
    static let hostBoot = "swiftrlm.host-boot"
    /// Where the owner's pid means something: the machine (/etc/machine-id) and the pid namespace (the inode of
    /// /proc/self/ns/pid). With a shared or remote engine (`DOCKER_HOST`, `CONTAINER_HOST`) or an owner in another
    /// pid namespace, the pid and boot labels cannot be checked here, so the sweep leaves every container whose
    /// identity is not this one's alone.
    static let hostIdentity = "swiftrlm.host-id"

    /// This process's labels.
    static let current: [String: String] = {
        var labels = [sandbox: "1", hostPID: "\(getpid())"]
        if let start = startTime(of: getpid()) { labels[hostStart] = start }
        if let boot = bootID() { labels[hostBoot] = boot }
        if let identity = currentIdentity { labels[hostIdentity] = identity }
        return labels
    }()

    /// `<machine-id>/pidns:<inode>`, or `nil` when either is unreadable (then nothing is ever swept).
    static let currentIdentity: String? = {
        let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"].lazy.compactMap {
            (try? String(contentsOfFile: $0, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }.first { !$0.isEmpty && $0.allSatisfy(\.isHexDigit) }
        var info = stat()
        guard let machine, stat("/proc/self/ns/pid", &info) == 0 else { return nil }
        return "\(machine)/pidns:\(info.st_ino)"
    }()

    /// A fresh container name: `swiftrlm-<pid>-<random>`.
    static func newName() -> String {
        "swiftrlm-\(getpid())-" + String(format: "%08x", UInt32.random(in: 0...UInt32.max))
    }

    /// Field 22 of /proc/PID/stat (start time in clock ticks since boot), or `nil` when there is no such process.
    static func startTime(of pid: pid_t) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // After the command (which may hold spaces and parentheses) come fields 3, 4, …; 22 is the 20th of them.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }

    static func bootID() -> String? {
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether a listed container is this host's to remove: a SwiftRLM sandbox labelled with this host's identity
    /// (same machine, same pid namespace) whose owner is no longer alive. A container without the identity label,
    /// or with another one, is never an orphan here, whatever its pid and boot labels say.
    static func isOrphanHere(_ labels: [String: String]) -> Bool {
        guard labels[sandbox] == "1", let identity = currentIdentity, labels[hostIdentity] == identity else {
            return false
        }
        return !ownerIsAlive(labels)
    }

    /// Whether the process that labelled a container still runs: same boot, its pid alive and started when the
    /// label says. A container without a pid label is treated as alive (it is not known to be ours to remove).
    static func ownerIsAlive(_ labels: [String: String]) -> Bool {
        guard let pidText = labels[hostPID], let pid = pid_t(pidText), pid > 0 else { return true }
        if let boot = labels[hostBoot], let current = bootID(), boot != current { return false }
        guard let start = startTime(of: pid) else { return false }
        if let recorded = labels[hostStart], recorded != start { return false }
        return true
    }
}

/// Removing the containers of dead owners (see ``ContainerSandbox/removeOrphanedContainers(engine:)``).
enum ContainerOrphans {
    private static let swept = Mutex<Set<String>>([])

    /// Sweeps once per engine per process, before its first session.
    static func sweepOnce(engine: ContainerEngine, logger: Logger) async {
        let first = swept.withLock { $0.insert(engine.path).inserted }
        guard first else { return }
        let removed = await offPool { sweep(engine: engine) }
        if !removed.isEmpty {
            logger.info(
                "removed sandbox containers left by processes that are gone",
                metadata: ["rlm.sandbox.containers": "\(removed.joined(separator: ","))"])
        }
    }

    /// Lists the SwiftRLM containers and removes, by name, those of this host's identity whose owner is dead (see
    /// ``ContainerLabels/isOrphanHere(_:)``). Blocks.
    static func sweep(engine: ContainerEngine) -> [String] {
        let format = engine.kind == .podman ? "json" : "{{json .}}"
        guard
            let listed = engine.run(
                ["ps", "--all", "--filter", "label=\(ContainerLabels.sandbox)=1", "--format", format]),
            listed.succeeded
        else { return [] }
        var removed = [String]()
        for container in parseListing(listed.stdout) where ContainerLabels.isOrphanHere(container.labels) {
            let handle = ContainerHandle(engine: engine, name: container.name, recordsID: false)
            handle.remove()
            removed.append(container.name)
        }
        return removed
    }

    /// One listed container.
    struct Listed: Equatable {
        var name: String
        var labels: [String: String]
    }

    /// Reads `podman ps --format json` (one array; `Names` a list, `Labels` an object) or `docker ps --format
    /// '{{json .}}'` (an object per line; `Names` a comma-separated string, `Labels` `k=v,k=v`).
    static func parseListing(_ data: Data) -> [Listed] {
        var objects = [[String: Any]]()
        if let array = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] {
            objects = array
        } else {
            for line in data.split(separator: UInt8(ascii: "\n")) {
                if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] {
                    objects.append(object)
                }
            }
        }
        return objects.compactMap { object in
            let name: String?
            if let names = object["Names"] as? [String] {
                name = names.first
            } else {
                name = (object["Names"] as? String)?.split(separator: ",").first.map(String.init)
            }
            guard let name, !name.isEmpty else { return nil }
            var labels = [String: String]()
            if let map = object["Labels"] as? [String: String] {
                labels = map
            } else if let text = object["Labels"] as? String {
                for pair in text.split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2 { labels[String(parts[0])] = String(parts[1]) }
                }
            }
            return Listed(name: name, labels: labels)
        }
    }
}
