import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMSandbox
import RLMWasm

/// `--backend` and the options of each backend, shared by every command that runs code.
struct BackendOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Sandbox backend: process, container, wasm or command.",
            discussion: """
                process: bubblewrap on this machine (the default). container: podman or docker, hardened \
                (--image, --container-engine). wasm: CPython for WASI run in-process by WasmKit (`rlm sandbox \
                pull` fetches it once). command: any command that starts Python elsewhere (--command).
                """))
    var backend: String = "process"

    @Option(help: "container: the image (default python:3.12-slim).")
    var image: String?

    @Option(help: "container: podman, docker or a path (default: the one installed, podman first).")
    var containerEngine: String?

    @Option(
        help: ArgumentHelp(
            "command: the command that starts Python elsewhere, e.g. 'kubectl exec -i POD -- python3 -I'.",
            discussion: """
                `{bootstrap}` as a word is replaced by the worker's start-up code, `{bootstrap_sh}` by it \
                shell-quoted (for ssh); without either, `-c CODE` is appended.
                """))
    var command: String?

    @Option(help: "wasm: the python.wasm to run (default: the one `rlm sandbox pull` fetched).")
    var wasmRuntime: String?

    func validate() throws {
        guard SandboxBackend.names.contains(backend) else {
            throw ValidationError(
                "--backend must be one of \(SandboxBackend.names.joined(separator: ", ")), not '\(backend)'")
        }
        if backend == "command" && (command ?? "").isEmpty {
            throw ValidationError(
                "--backend command needs --command, the command that starts Python (e.g. "
                    + "'kubectl exec -i POD -- python3 -I')")
        }
        if command != nil && backend != "command" {
            throw ValidationError("--command is for --backend command")
        }
        if (image != nil || containerEngine != nil) && backend != "container" {
            throw ValidationError("--image and --container-engine are for --backend container")
        }
        if wasmRuntime != nil && backend != "wasm" {
            throw ValidationError("--wasm-runtime is for --backend wasm")
        }
    }

    /// The backend the flags name.
    /// - Throws: `SandboxError.setup` for a `--command` line that does not parse.
    func resolve() throws -> SandboxBackend {
        switch backend {
        case "command": return .command(try CommandSandbox.parse(command ?? ""))
        case "container":
            var options = ContainerSandbox.Options(engine: containerEngine)
            if let image { options.image = image }
            return .container(options)
        case "wasm": return .wasm(WasmSandbox.Options(runtimePath: wasmRuntime))
        default: return .process
        }
    }
}
