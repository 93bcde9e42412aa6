import Foundation
import Glibc
import RLM

/// `rlm doctor --backend command`: what the host enforces whatever the command, and what the worker sees on the far
/// side — which SwiftRLM does not enforce there and can only report.
public enum CommandDoctor {
    /// The process backend's probe, asking whether the root is writable instead of writing to it: the far side may
    /// be no sandbox at all, and a probe must leave nothing behind there.
    static let probe = SandboxDoctor.probe.replacingOccurrences(
        of: "open('/usr/.rlm-probe', 'w'); f['root_writable'] = True",
        with: "f['root_writable'] = os.access('/usr', os.W_OK)")

    /// Starts the command's worker, runs the probe inside, and reports.
    /// - Parameters:
    ///   - command: the command's words (as ``CommandSandbox`` takes them).
    ///   - configuration: the host-side limits.
    /// - Returns: the report, and whether a worker started.
    public static func run(command: [String], configuration: ProcessSandbox.Configuration) async -> (
        checks: [SandboxDoctor.Check], started: Bool
    ) {
        var checks = [SandboxDoctor.Check]()
        func add(_ feature: String, _ status: SandboxDoctor.Check.Status, _ detail: String) {
            checks.append(SandboxDoctor.Check(feature: feature, status: status, detail: detail))
        }
        let sandbox = CommandSandbox(command: command, configuration: configuration)
        var facts: [String: Any]?
        var python = ""
        var failure: String?
        do {
            let (result, info) = try await sandbox.withSession { session in
                (try await session.run(probe, timeout: .seconds(30)), await session.info)
            }
            python = info.pythonVersion
            if let error = result.error {
                failure = "the probe cell failed: \(error.type): \(error.message)"
            } else {
                facts = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            }
        } catch {
            failure = String(describing: error)
        }
        let shown = command.prefix(6).joined(separator: " ") + (command.count > 6 ? " …" : "")
        guard failure == nil || python.isEmpty == false else {
            add("command worker", .missing, "\(shown): \(failure ?? "did not start")")
            return (checks, false)
        }
        add("command worker", .inForce, "\(shown) → Python \(python)")
        add(
            "host-side kill", .inForce,
            "per-cell wall-clock timeout: interrupt, then SIGKILL of the command's process group (the worker's "
                + "channel ends and it exits)")
        add(
            "channel checks", .inForce,
            "every frame validated; frames ≤ \(configuration.maxFrameBytes >> 20) MiB; output ≤ "
                + "\(configuration.outputLimit) characters per stream per cell")
        add(
            "clean environment for the command", .inForce,
            "only \(CommandSandbox.passedEnvironment.sorted().joined(separator: ", ")) pass; no API key")
        let remote = "not enforced by SwiftRLM with --backend command: the command's environment must provide it"
        guard let facts else {
            add("far side", .missing, "the probe needs Linux and ctypes there (\(failure ?? "no output")); \(remote)")
            return (checks, true)
        }
        let uid = facts["uid"] as? Int ?? -1
        add(
            "unprivileged uid", uid > 0 ? .inForce : .missing,
            "uid \(uid) on the far side" + (uid > 0 ? "" : "; \(remote)"))
        let interfaces = facts["interfaces"] as? [String] ?? []
        let isolated = interfaces.allSatisfy { $0 == "lo" }
        add(
            "network", isolated ? .inForce : .missing,
            "interfaces: \(interfaces.joined(separator: ", "))" + (isolated ? "" : "; \(remote)"))
        let readOnly = (facts["root_writable"] as? Bool) == false
        add("read-only root", readOnly ? .inForce : .missing, readOnly ? "/usr not writable" : remote)
        let seccomp = facts["seccomp"] as? String ?? ""
        add(
            "seccomp", seccomp == "2" ? .inForce : .missing,
            seccomp == "2" ? "filter mode" : "Seccomp: \(seccomp); \(remote)")
        let caps = facts["cap_eff"] as? String ?? ""
        add("no capabilities", Int(caps, radix: 16) == 0 ? .inForce : .missing, "CapEff \(caps)")
        let limits = facts["rlimits"] as? [String: Int] ?? [:]
        let memory = limits["as"] ?? -1
        add(
            "memory limit", memory > 0 ? .inForce : .missing,
            memory > 0 ? "RLIMIT_AS \(memory >> 20) MiB" : "no RLIMIT_AS; a cgroup may still bound it; \(remote)")
        add(
            "rlimits", .available,
            ["nproc", "nofile", "fsize", "cpu"].map { "\($0)=\(limits[$0] ?? -1)" }.joined(separator: " "))
        return (checks, true)
    }
}
