import Foundation
import Glibc
import RLM

/// Checks the container backend's isolation layers, by starting one container the way sessions do and looking
/// from the inside (`rlm doctor --backend container`).
public enum ContainerDoctor {
    /// The probe cell: prints one JSON object describing the container from the inside.
    static let probe = #"""
        import os, json, resource
        f = {}
        f['uid'] = os.getuid(); f['gid'] = os.getgid(); f['groups'] = os.getgroups()
        status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
        for k in ('Seccomp', 'NoNewPrivs', 'CapEff', 'CapBnd', 'CapPrm'):
            f[k] = status.get(k, '').strip()
        f['ns'] = {n: os.readlink('/proc/self/ns/' + n) for n in ('user', 'pid', 'net', 'ipc', 'uts', 'mnt')}
        f['interfaces'] = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]
        def writable(path):
            try:
                open(path, 'w').close(); os.unlink(path); return True
            except OSError:
                return False
        f['root_writable'] = writable('/.rlm-probe') or writable('/usr/.rlm-probe') or writable('/etc/.rlm-probe')
        st = os.statvfs('/tmp'); f['tmp_bytes'] = st.f_blocks * st.f_frsize
        f['tmp_options'] = ''
        for line in open('/proc/self/mountinfo').read().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[4] == '/tmp':
                f['tmp_options'] = parts[5] + ' ' + line.split(' - ')[-1]
        f['env'] = sorted(os.environ)
        f['limits'] = {n: resource.getrlimit(getattr(resource, 'RLIMIT_' + n.upper()))
                       for n in ('nofile', 'nproc', 'data', 'fsize', 'cpu', 'core', 'msgqueue')}
        f['dev_shm'] = os.path.exists('/dev/shm') or writable('/dev/shm/.rlm-probe')
        def read(*paths):
            for p in paths:
                try:
                    return open(p).read().strip()
                except OSError:
                    pass
            return None
        f['memory'] = read('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max')
        f['memsw'] = read('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes')
        f['swap_max'] = read('/sys/fs/cgroup/memory.swap.max')
        f['pids'] = read('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max')
        quota = read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us', '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us')
        period = read('/sys/fs/cgroup/cpu/cpu.cfs_period_us', '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us')
        f['cpu'] = (quota + ' ' + period) if quota and period else read('/sys/fs/cgroup/cpu.max')
        f['pid1'] = open('/proc/1/cmdline', 'rb').read().split(b'\0')[0].decode(errors='replace')
        print(json.dumps(f))
        """#

    /// Runs every check: the engine, runtime and image on the host, then each isolation layer as seen from inside a
    /// running container, then that the container was removed.
    /// - Parameters:
    ///   - configuration: the shared limits a session would use.
    ///   - options: the engine, image, interpreter, runtime and CPUs.
    /// - Returns: the report, and whether a container could start at all.
    public static func run(
        configuration: ProcessSandbox.Configuration, options: ContainerSandbox.Options
    ) async -> (checks: [SandboxDoctor.Check], started: Bool) {
        var checks = [SandboxDoctor.Check]()
        func add(_ feature: String, _ status: SandboxDoctor.Check.Status, _ detail: String) {
            checks.append(SandboxDoctor.Check(feature: feature, status: status, detail: detail))
        }
        let engine: ContainerEngine
        switch await offPool({ Result { try ContainerEngine.resolve(options.engine) } }) {
        case .success(let found):
            engine = found
        case .failure(let error):
            add("container engine", .missing, "\(error)")
            return (checks, false)
        }
        let version = await offPool { engine.run(["--version"], timeout: .seconds(10)) }
        let versionText = version.flatMap { ContainerEngine.firstLine($0.stdout) } ?? "version unknown"
        add("container engine", .available, "\(engine.path) (\(versionText))")
        let runtime = engine.runtimeArgument(options.runtime)
        add(
            "OCI runtime", .available,
            runtime.map {
                "--runtime \($0)" + (options.runtime == nil ? " (runc found; crun fails on hybrid cgroups)" : "")
            }
                ?? "the engine's default")
        if case .failure(let error) = await offPool({
            Result {
                try ContainerEngine.validate(options: options)
                try engine.checkImage(options.image)
            }
        }) {
            add("image", .missing, "\(error)")
            return (checks, false)
        }
        add("image", .available, options.image)

        let name = ContainerLabels.newName()
        let sandbox = ContainerSandbox(configuration: configuration, options: options)
        var facts: [String: Any]?
        var info: SessionInfo?
        var failure: String?
        do {
            let session = try await sandbox.startSession(handler: nil, name: name)
            do {
                let result = try await session.run(probe, timeout: .seconds(20))
                info = await session.info
                if let error = result.error {
                    failure = "probe cell failed: \(error.type): \(error.message)"
                } else if let data = result.stdout.data(using: .utf8) {
                    facts = try JSONSerialization.jsonObject(with: data) as? [String: Any]
                }
            } catch {
                failure = String(describing: error)
            }
            await session.shutdown()
        } catch {
            failure = String(describing: error)
        }
        let leftOver = await offPool {
            engine.run(["container", "inspect", "--format", "{{.Name}}", "--", name], timeout: .seconds(10))?.succeeded
        }
        guard let facts, let info else {
            add("container", .missing, failure ?? "the container did not start")
            return (checks, false)
        }
        add("container", .inForce, "\(name): Python \(info.pythonVersion), pid 1 \(facts["pid1"] as? String ?? "?")")
        inspect(facts, configuration: configuration, options: options, add: add)
        add(
            "labelled + removed", leftOver == false ? .inForce : .missing,
            leftOver == false
                ? "labelled \(ContainerLabels.sandbox)=1 with the owner's pid, start time and host identity "
                    + "(\(ContainerLabels.currentIdentity ?? "none: this host has no machine id, so nothing is swept")); "
                    + "run with --rm, so the engine removes it when it exits even if this process died; removed by "
                    + "name when the session ended; leftovers of dead owners of this identity are swept at the next start"
                : "\(name) still exists after its session ended")
        add("host-side kill", .inForce, "per-cell wall-clock timeout: interrupt, then `kill` and `rm -f` by name")
        return (checks, true)
    }

    // swift-format-ignore: FunctionBodyLength
    private static func inspect(
        _ facts: [String: Any], configuration: ProcessSandbox.Configuration, options: ContainerSandbox.Options,
        add: (String, SandboxDoctor.Check.Status, String) -> Void
    ) {
        let interfaces = facts["interfaces"] as? [String] ?? []
        add(
            "network none", interfaces.allSatisfy { $0 == "lo" } ? .inForce : .missing,
            "interfaces inside: \(interfaces.joined(separator: ", "))")
        add(
            "read-only root", (facts["root_writable"] as? Bool) == false ? .inForce : .missing,
            "/, /usr and /etc refuse writes; only /tmp is writable")
        let uid = facts["uid"] as? Int ?? -1
        let gid = facts["gid"] as? Int ?? -1
        add("non-root uid", uid > 0 && gid > 0 ? .inForce : .missing, "uid \(uid), gid \(gid) inside")
        let hostNamespaces = ["user", "pid", "net", "ipc", "uts", "mnt"].map {
            ($0, (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/\($0)")) ?? "")
        }
        let inside = facts["ns"] as? [String: String] ?? [:]
        for (name, host) in hostNamespaces {
            let fresh = inside[name] != nil && inside[name] != host
            if name == "user" {
                add(
                    "user namespace", fresh ? .inForce : .available,
                    fresh
                        ? "fresh: uid \(uid) inside is not the host's"
                        : "shared: uid \(uid) inside is the host's uid \(uid) (unprivileged, no capabilities); "
                            + "rootless podman or --userns=auto would remap it")
            } else {
                add("\(name) namespace", fresh ? .inForce : .missing, fresh ? "fresh" : "shared with the host")
            }
        }
        let capEff = facts["CapEff"] as? String ?? ""
        let capBnd = facts["CapBnd"] as? String ?? ""
        add(
            "no capabilities", Int(capEff, radix: 16) == 0 && Int(capBnd, radix: 16) == 0 ? .inForce : .missing,
            "CapEff \(capEff), CapBnd \(capBnd)")
        add(
            "no_new_privs", facts["NoNewPrivs"] as? String == "1" ? .inForce : .missing,
            "NoNewPrivs \(facts["NoNewPrivs"] ?? "?")")
        let seccomp = facts["Seccomp"] as? String ?? ""
        add(
            "seccomp", seccomp == "2" ? .inForce : .missing,
            seccomp == "2" ? "filter mode (the engine's default profile)" : "Seccomp: \(seccomp)")
        let memory = configuration.memoryLimitBytes + configuration.workDirBytes
        let memoryText = facts["memory"] as? String ?? ""
        let swapText = facts["memsw"] as? String ?? facts["swap_max"] as? String ?? ""
        let memoryOK = Int(memoryText) == memory
        // cgroup v1: memsw (memory + swap) equals memory; v2: swap.max is 0.
        let swapOK = facts["memsw"] != nil ? Int(swapText) == memory : swapText == "0"
        add(
            "memory+swap limit", memoryOK && swapOK ? .inForce : .missing,
            "memory \(memoryText), memory+swap \(swapText) (asked \(memory): worker \(configuration.memoryLimitBytes)"
                + " + work dir \(configuration.workDirBytes))")
        let pids = facts["pids"] as? String ?? ""
        add(
            "pids limit", Int(pids) == max(1, configuration.maxProcesses) ? .inForce : .missing,
            "pids.max \(pids)")
        let cpu = facts["cpu"] as? String ?? ""
        let cpuParts = cpu.split(separator: " ").compactMap { Double($0) }
        let cpuOK = cpuParts.count == 2 && cpuParts[1] > 0 && abs(cpuParts[0] / cpuParts[1] - options.cpus) < 0.01
        add("cpu limit", cpuOK ? .inForce : .missing, "quota/period \(cpu) (asked \(options.cpus) CPU)")
        let limits = facts["limits"] as? [String: [Int]] ?? [:]
        let expected: [String: Int] = [
            "nofile": configuration.maxOpenFiles, "nproc": configuration.maxProcessesPerUser,
            "data": configuration.memoryLimitBytes, "fsize": configuration.workDirBytes,
            "cpu": configuration.cpuSeconds, "core": 0, "msgqueue": 0,
        ]
        let limitsOK = expected.allSatisfy { limits[$0.key] == [$0.value, $0.value] }
        add(
            "ulimits", limitsOK ? .inForce : .missing,
            ["nofile", "nproc", "data", "fsize", "cpu", "core", "msgqueue"].map { "\($0)=\(limits[$0]?.last ?? -1)" }
                .joined(separator: " "))
        let tmpBytes = facts["tmp_bytes"] as? Int ?? 0
        let tmpOptions = facts["tmp_options"] as? String ?? ""
        add(
            "tmpfs size cap", tmpBytes > 0 && tmpBytes <= configuration.workDirBytes ? .inForce : .missing,
            "/tmp \(tmpBytes >> 20) MiB (\(tmpOptions))")
        add(
            "no /dev/shm", facts["dev_shm"] as? Bool == false ? .inForce : .missing,
            facts["dev_shm"] as? Bool == false
                ? "--ipc none: no shared-memory tmpfs beside /tmp" : "/dev/shm exists inside: a second writable place")
        let env = facts["env"] as? [String] ?? []
        let allowed = Set(ContainerEngine.workerEnvironment.map { String($0.prefix { $0 != "=" }) } + ["HOSTNAME"])
        add(
            "empty environment", env.allSatisfy(allowed.contains) ? .inForce : .missing,
            "the worker sees only \(env.joined(separator: ", ")); the engine client runs with a scrubbed "
                + "environment")
    }
}
