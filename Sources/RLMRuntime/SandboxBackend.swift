import Foundation
import Logging
import RLM
import RLMSandbox
import RLMWasm

/// Which sandbox runs the model's code (`--backend`): every front end — `rlm run`, `rlm chat`, `rlm sandbox`,
/// `rlm serve`, `rlm mcp` — builds its sandboxes through ``sandbox(_:logger:)``, with the limits it sized.
public enum SandboxBackend: Sendable, Hashable {
    /// Bubblewrap on this machine (the default): namespaces, seccomp, Landlock, cgroups, rlimits.
    case process
    /// A hardened podman or docker container (see ``ContainerSandbox``).
    case container(ContainerSandbox.Options)
    /// CPython for WASI run in-process by WasmKit (see ``WasmSandbox``).
    case wasm(WasmSandbox.Options)
    /// The worker over the stdio of a command that starts Python elsewhere (`kubectl exec -i POD -- python3 -I`);
    /// the words as given (see ``CommandSandbox``).
    case command([String])

    /// The backend's name, as `--backend` takes it.
    public var name: String {
        switch self {
        case .process: return "process"
        case .container: return "container"
        case .wasm: return "wasm"
        case .command: return "command"
        }
    }

    /// The names `--backend` accepts.
    public static let names = ["process", "container", "wasm", "command"]

    /// A sandbox of this backend with the given limits (memory, work dir, timeouts, caps).
    /// - Parameters:
    ///   - limits: sized by the caller (for the context, the server's limits, the flags).
    ///   - logger: lifecycle events (debug level).
    public func sandbox(
        _ limits: ProcessSandbox.Configuration,
        logger: Logger = Logger(label: "rlm.sandbox", factory: { _ in SwiftLogNoOpLogHandler() })
    ) -> any Sandbox {
        switch self {
        case .process: return ProcessSandbox(configuration: limits, logger: logger)
        case .container(let options): return ContainerSandbox(configuration: limits, options: options, logger: logger)
        case .wasm(let options): return WasmSandbox(configuration: limits, options: options, logger: logger)
        case .command(let words): return CommandSandbox(command: words, configuration: limits, logger: logger)
        }
    }
}
