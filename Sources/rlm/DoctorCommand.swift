import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMSandbox
import RLMWasm

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Report each isolation layer of a sandbox backend as in force, available or missing.",
        discussion:
            "Starts a real sandbox of the backend (--backend, default process) and inspects it from the inside. Exit 0 when a sandbox starts."
    )

    @Option(help: "Python interpreter inside the sandbox (the process backend's).")
    var python: String = "/usr/bin/python3"

    @OptionGroup var backend: BackendOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        var configuration = ProcessSandbox.Configuration()
        configuration.pythonPath = python
        let report: (checks: [SandboxDoctor.Check], started: Bool)
        switch try backend.resolve() {
        case .process:
            report = await SandboxDoctor.run(configuration: configuration)
        case .container(let options):
            report = await ContainerDoctor.run(configuration: configuration, options: options)
        case .wasm(let options):
            report = await WasmDoctor.run(configuration: configuration, options: options)
        case .command(let words):
            report = await CommandDoctor.run(command: words, configuration: configuration)
        }
        let (checks, started) = report
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            writeOut(String(decoding: try encoder.encode(checks), as: UTF8.self) + "\n")
        } else {
            let width = checks.map(\.feature.count).max() ?? 10
            for check in checks {
                let status = check.status.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
                let feature = check.feature.padding(toLength: width, withPad: " ", startingAt: 0)
                writeOut("\(status)  \(feature)  \(check.detail)\n")
            }
        }
        if !started { throw ExitCode(1) }
    }
}
