import CRLMSystem
import Foundation
import Glibc
import RLM

/// Checks which isolation features this machine offers and which a real sandbox has in force, by starting one and
/// looking from the inside.
public enum SandboxDoctor {
    /// One line of the report.
    public struct Check: Sendable, Hashable, Codable {
        /// `in force`: verified inside a running sandbox; `available`: the machine has it but it is switched off;
        /// `missing`: this machine cannot provide it.
        public enum Status: String, Sendable, Codable {
            case inForce = "in force"
            case available
            case missing
        }

        /// The feature.
        public var feature: String
        /// Its status.
        public var status: Status
        /// What was seen.
        public var detail: String

        /// - Parameters: as the properties.
        public init(feature: String, status: Status, detail: String) {
            self.feature = feature
            self.status = status
            self.detail = detail
        }
    }

    /// The probe cell: prints one JSON object describing the sandbox from the inside.
    static let probe = #"""
        import os, json, resource, ctypes, errno as _errno
        f = {}
        f['uid'] = os.getuid(); f['gid'] = os.getgid()
        status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
        f['seccomp'] = status.get('Seccomp', '').strip()
        f['no_new_privs'] = status.get('NoNewPrivs', '').strip()
        f['cap_eff'] = status.get('CapEff', '').strip()
        f['ns'] = {n: os.readlink('/proc/self/ns/' + n) for n in ('user', 'pid', 'net', 'ipc', 'uts', 'mnt', 'cgroup')}
        f['interfaces'] = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]
        try:
            open('/usr/.rlm-probe', 'w'); f['root_writable'] = True
        except OSError:
            f['root_writable'] = False
        st = os.statvfs('/tmp'); f['tmp_bytes'] = st.f_blocks * st.f_frsize
        f['env'] = sorted(os.environ)
        try:
            f['pid1_environ'] = len(open('/proc/1/environ', 'rb').read())
        except PermissionError:
            f['pid1_environ'] = -1
        f['rlimits'] = {n: resource.getrlimit(getattr(resource, 'RLIMIT_' + n.upper()))[1]
                        for n in ('as', 'nproc', 'nofile', 'fsize', 'cpu', 'core')}
        libc = ctypes.CDLL(None, use_errno=True)
        nr = {'x86_64': 250, 'aarch64': 219}.get(os.uname().machine, 250)
        r = libc.syscall(nr, 0, -3, 0, 0, 0)  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)
        f['keyctl_errno'] = ctypes.get_errno() if r < 0 else 0
        print(json.dumps(f))
        """#

    /// Runs every check.
    /// - Parameter configuration: the sandbox configuration to check.
    /// - Returns: the report, and whether a sandbox could start at all.
    public static func run(configuration: ProcessSandbox.Configuration) async -> (checks: [Check], started: Bool) {
        var checks = [Check]()
        func add(_ feature: String, _ status: Check.Status, _ detail: String) {
            checks.append(Check(feature: feature, status: status, detail: detail))
        }
        let root = geteuid() == 0
        let bwrap = configuration.bubblewrapPath ?? SwiftRLMPaths.executable(named: "bwrap")
        if let bwrap {
            let probe = try? ChildProcess.runToCompletion([bwrap, "--version"], timeout: .seconds(10))
            let version =
                probe.map { String(decoding: $0.stdout + $0.stderr, as: UTF8.self) }?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            add("bubblewrap", .available, "\(bwrap) (\(version))")
        } else {
            add("bubblewrap", .missing, "install it with `apt-get install -y bubblewrap`")
        }
        let landlockABI = landlockKernelABI()
        let cgroupProbe = root ? SandboxCgroups.probe() : (memory: false, pids: false)

        let sandbox = ProcessSandbox(configuration: configuration)
        var facts: [String: Any]?
        var info: SessionInfo?
        var failure: String?
        do {
            let probeOutput = try await sandbox.withSession { session in
                let result = try await session.run(probe, timeout: .seconds(20))
                return (result, await session.info)
            }
            info = probeOutput.1
            if let error = probeOutput.0.error {
                failure = "probe cell failed: \(error.type): \(error.message)"
            } else if let data = probeOutput.0.stdout.data(using: .utf8) {
                facts = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            }
        } catch {
            failure = String(describing: error)
        }
        guard let facts, let info else {
            add("sandbox", .missing, failure ?? "the sandbox did not start")
            return (checks, false)
        }
        checks[0].status = .inForce

        let uid = facts["uid"] as? Int ?? -1
        add(
            "unprivileged uid", uid == 0 ? .missing : .inForce,
            "uid \(uid) inside"
                + (root
                    ? " (host runs as root; dropped to \(configuration.sandboxUID))"
                    : " (host runs as uid \(getuid()), not root: no drop to \(configuration.sandboxUID); the sandbox "
                        + "keeps this user's uid, mapped into its own user namespace, with no capabilities)"))
        let hostNamespaces = ["user", "pid", "net", "ipc", "uts", "mnt", "cgroup"].map {
            ($0, (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/\($0)")) ?? "")
        }
        let inside = facts["ns"] as? [String: String] ?? [:]
        for (name, host) in hostNamespaces {
            let fresh = inside[name] != nil && inside[name] != host
            add("\(name) namespace", fresh ? .inForce : .missing, fresh ? "fresh" : "shared with the host")
        }
        let interfaces = facts["interfaces"] as? [String] ?? []
        add(
            "network", interfaces.allSatisfy { $0 == "lo" } ? .inForce : .missing,
            "interfaces inside: \(interfaces.joined(separator: ", "))")
        add(
            "read-only root", (facts["root_writable"] as? Bool) == false ? .inForce : .missing,
            "/usr and the rest bound read-only; only the work dir is writable")
        let tmpBytes = facts["tmp_bytes"] as? Int ?? 0
        add("private tmpfs work dir", tmpBytes > 0 ? .inForce : .missing, "/tmp, \(tmpBytes >> 20) MiB cap")
        let env = facts["env"] as? [String] ?? []
        let pid1 = facts["pid1_environ"] as? Int ?? -1
        add(
            "empty environment", pid1 <= 0 ? .inForce : .missing,
            "worker sees only \(env.joined(separator: ", ")); /proc/1/environ "
                + (pid1 < 0 ? "is unreadable" : "has \(pid1) bytes"))
        let seccomp = facts["seccomp"] as? String ?? ""
        add(
            "seccomp", seccomp == "2" ? .inForce : (configuration.seccomp ? .missing : .available),
            seccomp == "2"
                ? "filter mode (deny list: ptrace, keyctl, bpf, mount, unshare, io_uring, …)"
                : "Seccomp: \(seccomp)")
        add("no_new_privs", facts["no_new_privs"] as? String == "1" ? .inForce : .missing, "")
        let caps = facts["cap_eff"] as? String ?? ""
        add("no capabilities", Int(caps, radix: 16) == 0 ? .inForce : .missing, "CapEff \(caps)")
        let keyErrno = facts["keyctl_errno"] as? Int ?? 0
        add(
            "session keyring", keyErrno != 0 ? .inForce : .missing,
            keyErrno != 0 ? "new keyring; keyctl denied (errno \(keyErrno))" : "keyctl reachable")
        if info.landlock.hasPrefix("enforced") {
            add("landlock", .inForce, info.landlock)
        } else {
            add(
                "landlock", landlockABI > 0 ? .available : .missing,
                landlockABI > 0 ? "kernel ABI \(landlockABI); in the sandbox: \(info.landlock)" : "not in this kernel")
        }
        let limits = facts["rlimits"] as? [String: Int] ?? [:]
        let limitText = ["as", "nproc", "nofile", "fsize", "cpu", "core"].map { "\($0)=\(limits[$0] ?? -1)" }
        add(
            "rlimits", limits["as"].map { $0 > 0 } == true ? .inForce : .missing,
            limitText.joined(separator: " "))
        if info.cgroups {
            add(
                "cgroup memory+pids", .inForce,
                "memory ≤ \((configuration.memoryLimitBytes + configuration.workDirBytes) >> 20) MiB + slack, "
                    + "pids ≤ \(configuration.maxProcesses) (cgroup v1)")
        } else {
            let possible = cgroupProbe.memory || cgroupProbe.pids
            add(
                "cgroup memory+pids", possible ? .available : .missing,
                root
                    ? "cgroup v1 memory/pids not writable here"
                    : "not root, so no cgroups (cgroup v1 needs root): memory, processes and CPU are bounded by "
                        + "the rlimits alone, and the work dir by its tmpfs size cap")
        }
        add("host-side kill", .inForce, "per-cell wall-clock timeout: interrupt, then SIGKILL of the whole sandbox")
        let cap = "at most \(configuration.maxLiveSessionsPerProcess) live sandboxes per process"
        add(
            "process-wide limits", .inForce,
            info.cgroups
                ? cap + "; all together memory ≤ \(configuration.totalMemoryLimitBytes >> 20) MiB and pids ≤ "
                    + "\(configuration.totalMaxProcesses) (one swiftrlm-<pid> cgroup above theirs)"
                : cap + "; no shared memory ceiling without cgroups")
        return (checks, true)
    }

    /// The Landlock ABI version the kernel offers, or 0.
    static func landlockKernelABI() -> Int {
        Int(crlm_landlock_abi())
    }
}
