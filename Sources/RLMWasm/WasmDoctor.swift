import Foundation
import RLM
import RLMSandbox

/// `rlm doctor --backend wasm`: the runtime, and what a guest can reach from the inside.
public enum WasmDoctor {
    /// The probe cell: prints one JSON object describing what the guest sees.
    static let probe = #"""
        import os, sys, json
        f = {'platform': sys.platform, 'env': sorted(os.environ)}
        def _exists(p):
            try:
                os.stat(p); return True
            except OSError:
                return False
        f['host_paths'] = [p for p in ('/etc/passwd', '/proc/self', '/usr/bin', '/root', '/home', '/') if _exists(p)]
        try:
            import socket
            socket.socket().connect(('127.0.0.1', 9)); f['network'] = 'connected'
        except Exception as e:
            f['network'] = type(e).__name__
        try:
            os.symlink('/etc', '/tmp/.rlm-probe-link'); f['symlink'] = True
        except OSError:
            f['symlink'] = False
        try:
            open('/tmp/.rlm-probe', 'w').write('x'); os.remove('/tmp/.rlm-probe'); f['work_dir'] = True
        except OSError:
            f['work_dir'] = False
        print(json.dumps(f))
        """#

    /// Checks the runtime, starts a guest, runs the probe inside, and reports.
    /// - Parameters:
    ///   - configuration: the limits to check with.
    ///   - options: where the runtime comes from.
    /// - Returns: the report, and whether a guest started.
    public static func run(configuration: ProcessSandbox.Configuration, options: WasmSandbox.Options) async -> (
        checks: [SandboxDoctor.Check], started: Bool
    ) {
        var checks = [SandboxDoctor.Check]()
        func add(_ feature: String, _ status: SandboxDoctor.Check.Status, _ detail: String) {
            checks.append(SandboxDoctor.Check(feature: feature, status: status, detail: detail))
        }
        let path = options.runtimePath ?? WasmRuntime.defaultPath()
        do {
            try WasmRuntime.verify(path: path)
            add(
                "wasm runtime", .available,
                "\(path) (CPython 3.12.0 for WASI, sha256 \(WasmRuntime.sha256.prefix(12))…)")
        } catch {
            add("wasm runtime", .missing, "\(error)")
            return (checks, false)
        }
        var facts: [String: Any]?
        var failure: String?
        do {
            let result = try await WasmSandbox(configuration: configuration, options: options).withSession { session in
                try await session.run(probe, timeout: configuration.cellTimeout * WasmSandbox.slowBuildFactor)
            }
            if let error = result.error {
                failure = "the probe cell failed: \(error.type): \(error.message)"
            } else {
                facts = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            }
        } catch {
            failure = String(describing: error)
        }
        guard let facts else {
            add("wasm guest", .missing, failure ?? "the guest did not start")
            return (checks, false)
        }
        checks[0].status = .inForce
        add(
            "wasm guest", .inForce,
            "CPython in WasmKit inside this process, one thread per session; it reaches only its WASI imports")
        let seen = facts["host_paths"] as? [String] ?? ["?"]
        add(
            "no host files", seen.isEmpty ? .inForce : .missing,
            seen.isEmpty
                ? "no host directory is exposed: /etc/passwd, /proc, /usr, /root, /home and / are absent"
                : "visible: \(seen.joined(separator: ", "))")
        let work = facts["work_dir"] as? Bool ?? false
        add(
            "private work dir", work ? .inForce : .missing,
            "/tmp in host memory, ≤ \(configuration.workDirBytes >> 20) MiB (ENOSPC past it)")
        let env = facts["env"] as? [String] ?? ["?"]
        add(
            "empty environment", env.isEmpty ? .inForce : .missing,
            env.isEmpty ? "os.environ is empty" : "the guest sees \(env.joined(separator: ", "))")
        let network = facts["network"] as? String ?? "?"
        add(
            "network", network == "connected" ? .missing : .inForce,
            network == "connected" ? "a TCP connect succeeded" : "no sockets in WASI preview 1 (\(network))")
        let symlink = facts["symlink"] as? Bool ?? true
        add("symlinks refused", symlink ? .missing : .inForce, "path_symlink and path_link return EPERM")
        add(
            "memory limit", .inForce,
            "linear memory ≤ \(configuration.memoryLimitBytes >> 20) MiB (a denied growth is a MemoryError)")
        add(
            "CPU budget", .inForce,
            "fuel for \(configuration.cpuSeconds) s at a nominal 10⁹ operations a second, then the guest is stopped")
        add(
            "host-side kill", .inForce,
            "per-cell wall-clock timeout: interrupt (ends a sleep or a sub-call wait), then the guest is stopped "
                + "(fuel zeroed, blocked host calls woken)")
        add(
            "kernel isolation", .missing,
            "not applied to the wasm backend (no namespaces, seccomp, Landlock or cgroups): the guest runs inside this "
                + "process, bounded by WebAssembly and the imports above")
        return (checks, true)
    }
}
