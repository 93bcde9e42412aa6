import Foundation
import Glibc
import RLM
import Testing

@testable import RLMSandbox

/// What the container tests need of this machine: podman (root, as CI runs) and the local test image that
/// scripts/container_image.sh builds from the apt mirror, no registry involved.
private enum ContainerTestMachine {
    static let image =
        ProcessInfo.processInfo.environment["SWIFTRLM_CONTAINER_IMAGE"] ?? "localhost/swiftrlm-test-python:bookworm"
    static let engine: ContainerEngine? = ContainerSandbox.detectEngine("podman").map(ContainerEngine.init(path:))
    static let ready: Bool = {
        guard let engine, geteuid() == 0 else { return false }
        return (try? engine.checkImage(image)) != nil
    }()
    static let reason = Comment(
        rawValue:
            "needs root, podman and the image \(image): apt-get install -y podman runc catatonit debootstrap, then "
            + "scripts/container_image.sh (scripts/test does both)")

    static func configuration(timeout: Duration = .seconds(10), memoryMB: Int = 256, workDirMB: Int = 64)
        -> ProcessSandbox.Configuration
    {
        var configuration = ProcessSandbox.Configuration()
        configuration.cellTimeout = timeout
        configuration.interruptGrace = .seconds(1)
        configuration.memoryLimitBytes = memoryMB << 20
        configuration.workDirBytes = workDirMB << 20
        configuration.maxProcesses = 32
        return configuration
    }

    static func sandbox(_ configuration: ProcessSandbox.Configuration = configuration()) -> ContainerSandbox {
        ContainerSandbox(configuration: configuration, options: .init(engine: "podman", image: image))
    }

    /// Runs `body` in a session whose container name is known, then checks the container is gone.
    static func withSession<T: Sendable>(
        _ configuration: ProcessSandbox.Configuration = configuration(), handler: (any SubcallHandler)? = nil,
        _ body: (any SandboxSession, String) async throws -> T
    ) async throws -> T {
        let name = ContainerLabels.newName()
        let session = try await sandbox(configuration).startSession(handler: handler, name: name)
        let value: T
        do {
            value = try await body(session, name)
        } catch {
            await session.shutdown()
            throw error
        }
        await session.shutdown()
        #expect(!exists(name), "container \(name) outlived its session")
        return value
    }

    static func podman(_ arguments: [String]) -> (ok: Bool, stdout: String) {
        let done = engine?.run(arguments, timeout: .seconds(60))
        return (done?.succeeded ?? false, done.map { String(decoding: $0.stdout, as: UTF8.self) } ?? "")
    }

    static func exists(_ name: String) -> Bool {
        podman(["container", "inspect", "--format", "{{.Name}}", name]).ok
    }

    static func isRunning(_ name: String) -> Bool {
        podman(["container", "inspect", "--format", "{{.State.Running}}", name]).stdout.hasPrefix("true")
    }

    /// Starts a detached container that sleeps, with the given labels (not a sandbox: a bystander or a fake leftover).
    static func startSleeper(name: String, labels: [String: String]) -> Bool {
        // Explicit ulimits: podman's defaults copy the host's, which root without CAP_SYS_RESOURCE cannot set.
        var argv = [
            "run", "--detach", "--pull", "never", "--name", name, "--network", "none", "--ulimit", "nofile=64:64",
            "--ulimit", "nproc=64:64",
        ]
        if let runtime = engine?.runtimeArgument(nil) { argv += ["--runtime", runtime] }
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) { argv += ["--label", "\(key)=\(value)"] }
        argv += ["--entrypoint", "python3", image, "-c", "import time; time.sleep(600)"]
        return podman(argv).ok
    }

    static func removeForce(_ names: [String]) {
        for name in names { _ = podman(["rm", "--force", "--time", "0", name]) }
    }

    /// Runs a cell and decodes the JSON object it prints.
    static func facts(_ session: any SandboxSession, _ code: String) async throws -> [String: Any] {
        let result = try await session.run(code)
        #expect(result.error == nil, "\(result.error?.message ?? "")\n\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return try #require(object)
    }
}

/// The container backend, against real podman containers. The conformance suite (the other files of this target)
/// checks it behaves like every backend; this suite checks what is particular to containers.
@Suite(.serialized)
struct ContainerBackendTests {
    // MARK: - Without an engine

    @Test func commandLineIsHardenedAndCarriesNoHostEnvironment() throws {
        let engine = ContainerEngine(path: "/usr/bin/podman")
        var configuration = ProcessSandbox.Configuration()
        configuration.memoryLimitBytes = 512 << 20
        configuration.workDirBytes = 64 << 20
        configuration.maxProcesses = 48
        let argv = engine.runArguments(
            name: "swiftrlm-1-abc", labels: ["swiftrlm.sandbox": "1"], configuration: configuration,
            options: .init(image: "img", cpus: 1.5), runtime: "/usr/bin/runc", cidFile: "/tmp/x/id")
        let line = argv.joined(separator: " ")
        for flag in [
            "run --interactive --rm --pull never --name swiftrlm-1-abc", "--network none", "--ipc none",
            "--cap-drop ALL",
            "--security-opt no-new-privileges", "--read-only --read-only-tmpfs=false",
            "--tmpfs /tmp:rw,size=67108864,mode=1777,nosuid,nodev,noexec", "--user 65534:65534",
            "--memory 603979776 --memory-swap 603979776", "--cpus 1.50", "--pids-limit 48",
            "--ulimit nofile=256:256", "--ulimit nproc=1024:1024", "--ulimit data=536870912:536870912",
            "--ulimit core=0:0", "--ulimit msgqueue=0:0", "--log-driver none", "--unsetenv-all",
            "--runtime /usr/bin/runc", "--init",
            "--label swiftrlm.sandbox=1", "--entrypoint python3 img -I -S -c",
        ] {
            #expect(line.contains(flag), "missing \(flag)")
        }
        #expect(!line.contains("--env-host") && !line.contains("--privileged") && !line.contains("-p "))
        let passed = argv.indices.filter { argv[$0] == "--env" }.map { argv[$0 + 1] }
        #expect(passed == ContainerEngine.workerEnvironment)
        // The client's own environment: PATH plus what the engine needs, never a key.
        setenv("OPENAI_API_KEY", "sk-container-test-secret", 1)
        defer { unsetenv("OPENAI_API_KEY") }
        #expect(!engine.environment.contains { $0.contains("sk-container-test-secret") })
        #expect(engine.environment.first?.hasPrefix("PATH=") == true)
        let docker = ContainerEngine(path: "/usr/bin/docker").runArguments(
            name: "n", labels: [:], configuration: configuration, options: .init(image: "img"), runtime: nil)
        #expect(!docker.contains("--read-only-tmpfs=false") && !docker.contains("--unsetenv-all"))
    }

    @Test func listingsOfBothEnginesParse() {
        let podman = Data(
            #"[{"Names":["swiftrlm-1-a"],"Labels":{"swiftrlm.sandbox":"1","swiftrlm.host-pid":"7"}},{"Names":["x"]}]"#
                .utf8)
        #expect(
            ContainerOrphans.parseListing(podman) == [
                .init(name: "swiftrlm-1-a", labels: ["swiftrlm.sandbox": "1", "swiftrlm.host-pid": "7"]),
                .init(name: "x", labels: [:]),
            ])
        let docker = Data(
            #"{"Names":"swiftrlm-2-b","Labels":"swiftrlm.sandbox=1,swiftrlm.host-pid=9"}"#.utf8 + [10]
                + #"{"Names":"y","Labels":""}"#.utf8)
        #expect(
            ContainerOrphans.parseListing(docker) == [
                .init(name: "swiftrlm-2-b", labels: ["swiftrlm.sandbox": "1", "swiftrlm.host-pid": "9"]),
                .init(name: "y", labels: [:]),
            ])
    }

    @Test func ownerLivenessUsesPidStartTimeAndBoot() throws {
        let me = ContainerLabels.current
        #expect(ContainerLabels.ownerIsAlive(me))
        var reused = me
        reused[ContainerLabels.hostStart] = "1"
        #expect(!ContainerLabels.ownerIsAlive(reused), "a pid now held by another process is not the owner")
        var rebooted = me
        rebooted[ContainerLabels.hostBoot] = "00000000-0000-0000-0000-000000000000"
        #expect(!ContainerLabels.ownerIsAlive(rebooted))
        #expect(ContainerLabels.ownerIsAlive(["swiftrlm.sandbox": "1"]), "no owner label: not ours to judge")
    }

    @Test func sweepJudgesOnlyContainersOfThisHostIdentity() throws {
        let identity = try #require(ContainerLabels.currentIdentity, "no /etc/machine-id or /proc/self/ns/pid here")
        var info = stat()
        #expect(stat("/proc/self/ns/pid", &info) == 0 && identity.hasSuffix("/pidns:\(info.st_ino)"))
        #expect(ContainerLabels.current[ContainerLabels.hostIdentity] == identity)
        // An owner that is gone here: a pid that cannot exist (above pid_max's ceiling).
        var dead = ContainerLabels.current
        dead[ContainerLabels.hostPID] = "4194305"
        #expect(ContainerLabels.isOrphanHere(dead))
        #expect(!ContainerLabels.isOrphanHere(ContainerLabels.current), "a live owner's container is not an orphan")
        // Another machine or pid namespace (a remote or shared engine): its pid and boot mean nothing here.
        var elsewhere = dead
        elsewhere[ContainerLabels.hostIdentity] = "0123456789abcdef0123456789abcdef/pidns:4026531836"
        #expect(!ContainerLabels.isOrphanHere(elsewhere))
        var otherNamespace = dead
        otherNamespace[ContainerLabels.hostIdentity] = identity.replacingOccurrences(of: "/pidns:", with: "/pidns:9")
        #expect(!ContainerLabels.isOrphanHere(otherNamespace))
        var otherBoot = elsewhere
        otherBoot[ContainerLabels.hostBoot] = "00000000-0000-0000-0000-000000000000"
        #expect(!ContainerLabels.isOrphanHere(otherBoot), "another boot of another host is not a reboot of this one")
        var unlabelled = dead
        unlabelled[ContainerLabels.hostIdentity] = nil
        #expect(!ContainerLabels.isOrphanHere(unlabelled), "no identity label: not known to be this host's")
    }

    @Test func imagesAndInterpretersThatLookLikeFlagsAreSetupErrors() async throws {
        for image in [
            "--privileged", "-v", "", "img name", "img\tx", "img\u{0}x", "img\nx", "img\u{7F}", "img\u{200B}x",
        ] {
            // The engine is never asked: the name is refused before any command line is built.
            let sandbox = ContainerSandbox(options: .init(engine: "/nonexistent/podman", image: image))
            do {
                _ = try await sandbox.startSession(handler: nil)
                Issue.record("image \(image.debugDescription) was accepted")
            } catch let error as SandboxError {
                #expect(error.isSetupError && error.message.contains("--image"), "\(error)")
                #expect(!error.message.contains("was not found"), "checked after the engine: \(error)")
            }
            #expect(throws: SandboxError.self) { try ContainerEngine(path: "/bin/false").checkImage(image) }
        }
        for python in ["-c", "--version", "", "python3 -c", "py\u{0}"] {
            let sandbox = ContainerSandbox(options: .init(engine: "/nonexistent/podman", image: "img", python: python))
            do {
                _ = try await sandbox.startSession(handler: nil)
                Issue.record("interpreter \(python.debugDescription) was accepted")
            } catch let error as SandboxError {
                #expect(error.isSetupError && error.message.contains("interpreter"), "\(error)")
            }
        }
        for good in ["localhost/swiftrlm-test-python:bookworm", "python:3.12-slim", "registry:5000/a/b@sha256:0f"] {
            #expect(throws: Never.self) {
                try ContainerEngine.validate(options: .init(image: good, python: "/usr/bin/python3"))
            }
        }
    }

    @Test func missingEngineIsASetupErrorThatSaysWhatToInstall() async throws {
        let sandbox = ContainerSandbox(options: .init(engine: "/nonexistent/podman"))
        do {
            _ = try await sandbox.startSession(handler: nil)
            Issue.record("a session started without an engine")
        } catch let error as SandboxError {
            #expect(error.isSetupError)
            #expect(error.message.contains("apt-get install -y podman runc"), "\(error.message)")
        }
        #expect(ContainerSandbox.detectEngine("/nonexistent/podman") == nil)
    }

    @Test(
        .enabled(
            if: SwiftRLMPaths.executable(named: "docker") != nil
                && (try? ChildProcess.runToCompletion(
                    ["/usr/bin/env", "-i", SwiftRLMPaths.executable(named: "docker")!, "info"], timeout: .seconds(5)))?
                    .succeeded == false,
            "needs a docker client whose daemon is not reachable (as on CI machines without dockerd)"))
    func aDockerClientWithoutADaemonIsNotAnEngine() async throws {
        #expect(ContainerSandbox.detectEngine("docker") == nil)
        if let podman = SwiftRLMPaths.executable(named: "podman") {
            #expect(ContainerSandbox.detectEngine() == podman, "podman comes first")
        }
        do {
            _ = try await ContainerSandbox(options: .init(engine: "docker")).startSession(handler: nil)
            Issue.record("a session started on a docker client with no daemon")
        } catch let error as SandboxError {
            #expect(error.isSetupError)
            #expect(error.message.contains("cannot reach its daemon"), "\(error.message)")
        }
    }

    // MARK: - With podman

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func missingImageIsASetupErrorThatSaysHowToGetIt() async throws {
        let sandbox = ContainerSandbox(options: .init(engine: "podman", image: "localhost/swiftrlm-no-such-image:1"))
        do {
            _ = try await sandbox.startSession(handler: nil)
            Issue.record("a session started without its image")
        } catch let error as SandboxError {
            #expect(error.isSetupError)
            #expect(error.message.contains("scripts/container_image.sh"), "\(error.message)")
            #expect(error.message.contains("podman pull"), "\(error.message)")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func hardeningIsInForceInside() async throws {
        setenv("SWIFTRLM_CONTAINER_TEST_SECRET", "do-not-leak", 1)
        defer { unsetenv("SWIFTRLM_CONTAINER_TEST_SECRET") }
        try await ContainerTestMachine.withSession { session, name in
            let facts = try await ContainerTestMachine.facts(
                session,
                #"""
                import os, json, resource, socket, errno
                st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
                f = {'uid': os.getuid(), 'gid': os.getgid(), 'cap': st['CapEff'].strip(), 'bnd': st['CapBnd'].strip(),
                     'nnp': st['NoNewPrivs'].strip(), 'seccomp': st['Seccomp'].strip(), 'env': sorted(os.environ),
                     'ifaces': [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]}
                try:
                    open('/usr/x', 'w'); f['usr_writable'] = True
                except OSError as e:
                    f['usr_writable'] = e.errno
                st = os.statvfs('/tmp'); f['tmp'] = st.f_blocks * st.f_frsize
                f['tmp_opts'] = [l.split()[5] for l in open('/proc/self/mountinfo') if l.split()[4] == '/tmp'][0]
                f['nofile'] = resource.getrlimit(resource.RLIMIT_NOFILE)
                f['nproc'] = resource.getrlimit(resource.RLIMIT_NPROC)
                s = socket.socket(); s.settimeout(2)
                try:
                    s.connect(('1.1.1.1', 53)); f['net'] = 'connected'
                except OSError as e:
                    f['net'] = e.errno
                f['pids'] = open('/sys/fs/cgroup/pids/pids.max').read().strip() if os.path.exists('/sys/fs/cgroup/pids/pids.max') else open('/sys/fs/cgroup/pids.max').read().strip()
                print(json.dumps(f))
                """#)
            #expect(facts["uid"] as? Int == 65534 && facts["gid"] as? Int == 65534)
            #expect(facts["cap"] as? String == "0000000000000000" && facts["bnd"] as? String == "0000000000000000")
            #expect(facts["nnp"] as? String == "1")
            #expect(facts["seccomp"] as? String == "2")
            #expect(facts["ifaces"] as? [String] == ["lo"])
            // No interface but loopback: no route anywhere (the kernel answers ENETUNREACH, or EACCES here).
            #expect(
                [ENETUNREACH, EACCES, EHOSTUNREACH].map(Int.init).contains(facts["net"] as? Int ?? 0),
                "\(facts["net"] ?? "")")
            #expect(facts["usr_writable"] as? Int == Int(EROFS))
            #expect(facts["tmp"] as? Int == 64 << 20)
            let options = try #require(facts["tmp_opts"] as? String)
            #expect(options.contains("nosuid") && options.contains("nodev") && options.contains("noexec"), "\(options)")
            #expect(facts["nofile"] as? [Int] == [256, 256])
            #expect(facts["nproc"] as? [Int] == [1024, 1024])
            #expect(facts["pids"] as? String == "32")
            let env = try #require(facts["env"] as? [String])
            #expect(Set(env).isSubset(of: ["HOME", "TMPDIR", "PATH", "LANG", "HOSTNAME"]), "\(env)")
            // Labelled with its owner, so a later sweep can tell whether it is an orphan.
            let labels = ContainerTestMachine.podman([
                "container", "inspect", "--format", "{{index .Config.Labels \"swiftrlm.host-pid\"}}", name,
            ])
            #expect(labels.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(getpid())")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func forkBombStopsAtThePidsLimitAndTheSessionLives() async throws {
        try await ContainerTestMachine.withSession { session, _ in
            let result = try await session.run(
                """
                import os, time
                pids, err = [], None
                try:
                    for i in range(1000):
                        pid = os.fork()
                        if pid == 0:
                            time.sleep(60)
                            os._exit(0)
                        pids.append(pid)
                except OSError as e:
                    err = e.errno
                for p in pids:
                    os.kill(p, 9)
                for p in pids:
                    os.waitpid(p, 0)
                print(len(pids), err)
                """)
            #expect(result.error == nil, "\(result.error?.message ?? "")")
            let parts = result.stdout.split(separator: " ").map {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            #expect(parts.count == 2 && (parts[0] ?? 1000) < 32 && parts[1] == Int(EAGAIN), "\(result.stdout)")
            let after = try await session.run("print(6 * 7)")
            #expect(after.stdout == "42\n")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func oneLargeAllocationRaisesMemoryErrorAndKeepsTheREPL() async throws {
        try await ContainerTestMachine.withSession { session, _ in
            _ = try await session.run("kept = 'yes'")
            let result = try await session.run("x = bytearray(600 << 20)")
            #expect(result.memoryExceeded)
            #expect(result.error?.type == "MemoryError")
            #expect(!result.stateLost)
            #expect(try await session.run("print(kept)").stdout == "yes\n")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func memoryBombIsKilledAndReportedAsMemory() async throws {
        // conmon writes an `oom` file into its working directory on a memory kill: never into the user's.
        let strayOOMFile = FileManager.default.currentDirectoryPath + "/oom"
        let hadStrayOOMFile = FileManager.default.fileExists(atPath: strayOOMFile)
        defer {
            #expect(
                hadStrayOOMFile || !FileManager.default.fileExists(atPath: strayOOMFile),
                "the engine wrote \(strayOOMFile)")
        }
        try await ContainerTestMachine.withSession { session, _ in
            // Each process stays under the data ulimit, so only the container's memory cgroup can stop them: the
            // worker fills the work dir (tmpfs pages count against the container and cannot be dropped) and holds
            // 180 MiB, then a child forked beforehand grows until the kernel kills the largest process — the worker.
            let result = try await session.run(
                """
                import os
                r, w = os.pipe()
                if os.fork() == 0:
                    os.read(r, 1)
                    hold = []
                    for _ in range(1000):
                        hold.append(b'y' * (1 << 20))
                    os._exit(0)
                chunk = b'x' * (1 << 20)
                try:
                    with open('/tmp/fill', 'wb') as f:
                        for _ in range(63):
                            f.write(chunk)
                except OSError:
                    pass
                big = b'z' * (180 << 20)
                os.write(w, b'g')
                os.wait()
                print('survived')
                """, timeout: .seconds(30))
            #expect(result.memoryExceeded, "\(result.error?.type ?? "no error"): \(result.error?.message ?? "")")
            #expect(!result.timedOut)
            #expect(result.stateLost, "the kernel's OOM kill, not Python's MemoryError, is what this checks")
            #expect(result.error?.type == "MemoryError", "\(result.error?.message ?? "")")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func timeoutKillsOurContainerAndNoOther() async throws {
        let bystander = "swiftrlm-test-bystander-\(UInt32.random(in: 0...UInt32.max))"
        // Same image, SwiftRLM's label, a live owner: a careless kill by image or label would take it too.
        #expect(ContainerTestMachine.startSleeper(name: bystander, labels: ContainerLabels.current))
        defer { ContainerTestMachine.removeForce([bystander]) }
        var configuration = ContainerTestMachine.configuration(timeout: .seconds(2))
        configuration.interruptGrace = .milliseconds(500)
        try await ContainerTestMachine.withSession(configuration) { session, name in
            #expect(ContainerTestMachine.isRunning(name))
            let result = try await session.run(
                """
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
                """)
            #expect(result.timedOut)
            #expect(result.stateLost)
            #expect(!(await session.isAlive))
            // Killed and removed by the time the cell's result is back, not merely its `run` client.
            #expect(!ContainerTestMachine.exists(name), "\(name) survived the timeout")
        }
        #expect(ContainerTestMachine.isRunning(bystander), "the bystander container was touched")
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func sweepRemovesOnlyContainersOfDeadOwners() async throws {
        let engine = try #require(ContainerTestMachine.engine)
        // A real owner that dies: a short-lived process whose pid and start time label the container.
        let owner = try ChildProcess.runToCompletion(
            ["/bin/sh", "-c", "echo $$; awk '{print $22}' /proc/$$/stat"], timeout: .seconds(10))
        let ownerFields = String(decoding: owner.stdout, as: UTF8.self).split(separator: "\n").map(String.init)
        try #require(ownerFields.count == 2)
        let tag = String(format: "%08x", UInt32.random(in: 0...UInt32.max))
        let dead = "swiftrlm-test-dead-\(tag)"
        let reused = "swiftrlm-test-reused-\(tag)"
        let live = "swiftrlm-test-live-\(tag)"
        let unrelated = "swiftrlm-test-unrelated-\(tag)"
        let all = [dead, reused, live, unrelated]
        defer { ContainerTestMachine.removeForce(all) }
        var deadLabels = ContainerLabels.current
        deadLabels[ContainerLabels.hostPID] = ownerFields[0]
        deadLabels[ContainerLabels.hostStart] = ownerFields[1]
        var reusedLabels = ContainerLabels.current
        reusedLabels[ContainerLabels.hostStart] = "1"
        #expect(ContainerTestMachine.startSleeper(name: dead, labels: deadLabels))
        #expect(ContainerTestMachine.startSleeper(name: reused, labels: reusedLabels))
        #expect(ContainerTestMachine.startSleeper(name: live, labels: ContainerLabels.current))
        #expect(
            ContainerTestMachine.startSleeper(
                name: unrelated, labels: ["other.sandbox": "1", ContainerLabels.hostPID: ownerFields[0]]))
        let removed = Set(await offPool { ContainerOrphans.sweep(engine: engine) })
        // Gone, by this sweep or by the same sweep in another `rlm` process of this host (the contract-2 suite runs
        // `rlm sandbox exec --backend container` alongside, and each process sweeps before its first session).
        #expect(!ContainerTestMachine.exists(dead) && !ContainerTestMachine.exists(reused), "\(removed)")
        #expect(removed.isDisjoint(with: [live, unrelated]), "\(removed)")
        #expect(ContainerTestMachine.isRunning(live) && ContainerTestMachine.isRunning(unrelated))
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func sweepLeavesContainersOfAnotherHostIdentity() async throws {
        let engine = try #require(ContainerTestMachine.engine)
        let tag = String(format: "%08x", UInt32.random(in: 0...UInt32.max))
        let ours = "swiftrlm-test-ours-\(tag)"
        let remote = "swiftrlm-test-remote-\(tag)"
        let namespace = "swiftrlm-test-pidns-\(tag)"
        let unlabelled = "swiftrlm-test-noid-\(tag)"
        defer { ContainerTestMachine.removeForce([ours, remote, namespace, unlabelled]) }
        // All four look dead from here: a pid that cannot exist, another boot.
        var dead = ContainerLabels.current
        dead[ContainerLabels.hostPID] = "4194305"
        dead[ContainerLabels.hostBoot] = "00000000-0000-0000-0000-000000000000"
        var remoteLabels = dead
        remoteLabels[ContainerLabels.hostIdentity] = "0123456789abcdef0123456789abcdef/pidns:4026531836"
        var namespaceLabels = dead
        namespaceLabels[ContainerLabels.hostIdentity] =
            (ContainerLabels.currentIdentity ?? "").replacingOccurrences(of: "/pidns:", with: "/pidns:9")
        var unlabelledLabels = dead
        unlabelledLabels[ContainerLabels.hostIdentity] = nil
        #expect(ContainerTestMachine.startSleeper(name: ours, labels: dead))
        #expect(ContainerTestMachine.startSleeper(name: remote, labels: remoteLabels))
        #expect(ContainerTestMachine.startSleeper(name: namespace, labels: namespaceLabels))
        #expect(ContainerTestMachine.startSleeper(name: unlabelled, labels: unlabelledLabels))
        let removed = Set(await offPool { ContainerOrphans.sweep(engine: engine) })
        // Gone, by this sweep or by another `rlm` process's (see above).
        #expect(!ContainerTestMachine.exists(ours), "\(removed)")
        #expect(removed.isDisjoint(with: [remote, namespace, unlabelled]), "\(removed)")
        for name in [remote, namespace, unlabelled] {
            #expect(ContainerTestMachine.isRunning(name), "\(name) was touched")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func sharedMemoryIsNotASecondWritablePlace() async throws {
        try await ContainerTestMachine.withSession { session, _ in
            let facts = try await ContainerTestMachine.facts(
                session,
                #"""
                import os, json
                f = {'exists': os.path.exists('/dev/shm'),
                     'mounts': [l.split()[1] for l in open('/proc/self/mounts') if l.split()[2] == 'tmpfs']}
                try:
                    with open('/dev/shm/x', 'wb') as h:
                        h.write(b'x' * 4096)
                    f['write'] = 'ok'
                except OSError as e:
                    f['write'] = e.errno
                try:
                    import _posixshmem
                    _posixshmem.shm_open('/rlm-test', os.O_CREAT | os.O_RDWR, 0o600); f['shm_open'] = 'ok'
                except OSError as e:
                    f['shm_open'] = e.errno
                except ImportError:
                    f['shm_open'] = 'absent'
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                f['mq_open'] = libc.mq_open(b'/rlm-test', os.O_CREAT | os.O_RDWR, 0o600, None)
                f['mq'] = os.listdir('/dev/mqueue') if os.path.isdir('/dev/mqueue') else []
                try:
                    open('/dev/x', 'w'); f['dev'] = 'ok'
                except OSError as e:
                    f['dev'] = e.errno
                print(json.dumps(f))
                """#)
            #expect(facts["exists"] as? Bool == false, "\(facts)")
            #expect(facts["write"] as? Int == Int(ENOENT), "\(facts)")
            #expect(facts["shm_open"] as? String != "ok", "\(facts)")
            // No tmpfs on /dev/shm, and the engine's /dev tmpfs (root's, mode 755) takes no file from uid 65534.
            #expect(!(facts["mounts"] as? [String] ?? ["/dev/shm"]).contains("/dev/shm"), "\(facts)")
            #expect(facts["dev"] as? Int == Int(EACCES), "\(facts)")
            // /dev/mqueue is writable, but the msgqueue ulimit of 0 lets no queue (and so no byte) be created.
            #expect(facts["mq_open"] as? Int == -1 && (facts["mq"] as? [String])?.isEmpty == true, "\(facts)")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func contextsLoadInlineOverTheChannel() async throws {
        try await ContainerTestMachine.withSession { session, _ in
            // Several MiB, so the inline bytes fill the engine's stdin relay many times over.
            let line = "line with ünïcode and a number 12345\n"
            let text = String(repeating: line, count: 100_000)
            let summary = try await session.loadContext(.text(text))
            #expect(summary.shape == .text)
            let check = try await session.run(
                "print(len(context), context.count('\\n'), context[:9], isinstance(context, str))")
            #expect(check.stdout == "\(text.count) 100000 line with True\n", "\(check.stderr)")
            try await session.loadContext(.documents(["alpha", "beta", "gamma"]), name: "docs")
            #expect(try await session.run("print(docs)").stdout == "['alpha', 'beta', 'gamma']\n")
            try await session.loadContext(
                .json(.object(["n": .int(3), "items": .array([.string("a"), .bool(true), .null])])), name: "data")
            #expect(try await session.run("print(data['n'], data['items'])").stdout == "3 ['a', True, None]\n")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func subcallsReachTheHandler() async throws {
        let handler = ClosureSubcallHandler { request in
            switch request {
            case .llmQuery(let prompt, _): return .text("answer to " + prompt)
            case .llmQueryBatched(let prompts, _): return .batch(prompts.map { $0.uppercased() })
            case .rlmQuery(let prompt, _, _): return .text("child " + prompt)
            }
        }
        try await ContainerTestMachine.withSession(handler: handler) { session, _ in
            let result = try await session.run(
                "print(llm_query('q1')); print(llm_query_batched(['a', 'b'])); print(rlm_query('deep'))")
            #expect(result.stdout == "answer to q1\n['A', 'B']\nchild deep\n", "\(result.stderr)")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func doctorReportsEveryLayerInForce() async throws {
        let (checks, started) = await ContainerDoctor.run(
            configuration: ContainerTestMachine.configuration(),
            options: .init(engine: "podman", image: ContainerTestMachine.image))
        #expect(started)
        for check in checks { print("container doctor: \(check.feature): \(check.status.rawValue) — \(check.detail)") }
        let byName = Dictionary(checks.map { ($0.feature, $0) }, uniquingKeysWith: { first, _ in first })
        for feature in [
            "container", "network none", "read-only root", "non-root uid", "no capabilities", "no_new_privs",
            "seccomp", "memory+swap limit", "pids limit", "cpu limit", "ulimits", "tmpfs size cap",
            "empty environment", "labelled + removed", "pid namespace", "net namespace", "mnt namespace",
            "no /dev/shm", "ipc namespace",
        ] {
            #expect(byName[feature]?.status == .inForce, "\(feature): \(byName[feature]?.detail ?? "absent")")
        }
        #expect(byName["ulimits"]?.detail.contains("msgqueue=0") == true)
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func startAndRoundTripTimes() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        try await ContainerTestMachine.withSession { session, _ in
            let started = clock.now - start
            _ = try await session.run("pass")
            var roundTrips = [Duration]()
            for _ in 0..<20 {
                let before = clock.now
                _ = try await session.run("pass")
                roundTrips.append(clock.now - before)
            }
            let median = roundTrips.sorted()[roundTrips.count / 2]
            print("container backend: cold start \(started), empty-cell round trip (median of 20) \(median)")
            #expect(started < .seconds(10))
            #expect(median < .milliseconds(100))
            // A context several times the engine's stdin relay buffers, inline on the channel.
            let text = String(repeating: "0123456789abcdef", count: 20 << 16)
            let before = clock.now
            try await session.loadContext(.text(text))
            print(
                "container backend: a \(text.utf8.count >> 20) MiB text context loaded inline in \(clock.now - before)")
            #expect(try await session.run("print(len(context))").stdout == "\(text.utf8.count)\n")
        }
    }

    @Test(.enabled(if: ContainerTestMachine.ready, ContainerTestMachine.reason))
    func anImageWithoutTheInterpreterFailsToStartWithAReason() async throws {
        let sandbox = ContainerSandbox(
            configuration: ContainerTestMachine.configuration(),
            options: .init(engine: "podman", image: ContainerTestMachine.image, python: "/usr/bin/python9"))
        let name = ContainerLabels.newName()
        do {
            _ = try await sandbox.startSession(handler: nil, name: name)
            Issue.record("a session started without an interpreter")
        } catch let error as SandboxError {
            #expect(error.isSetupError)
            #expect(error.message.contains("/usr/bin/python9"), "\(error.message)")
        }
        #expect(!ContainerTestMachine.exists(name), "the failed container was left behind")
    }
}
