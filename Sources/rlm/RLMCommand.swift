import ArgumentParser
import Foundation
import RLM

/// The `rlm` command line: parses, wires, prints. Logic lives in the libraries.
@main
struct RLMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rlm",
        abstract: "SwiftRLM: answer questions over contexts far larger than a model's window.",
        version: "rlm \(RLMVersion.string)",
        subcommands: [
            RunCommand.self, ChatCommand.self, ModelCommand.self, SandboxCommand.self, TrajectoriesCommand.self,
            ViewCommand.self, DoctorCommand.self, BenchCommand.self, KeysCommand.self, ServeCommand.self,
            MCPCommand.self,
        ]
    )

    /// Contract 2: usage errors exit 2 (ArgumentParser's default is 64).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code.rawValue == ExitCode.validationFailure.rawValue {
                // `rlm run --json` promises one JSON object on stdout for every outcome, usage errors included.
                let arguments = CommandLine.arguments.dropFirst()
                if arguments.first == "run" && arguments.contains("--json") {
                    writeJSON([
                        "status": "error", "answer": NSNull(), "usage": NSNull(), "trajectory": NSNull(),
                        "error": ["kind": "usage", "message": message(for: error)],
                    ])
                }
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
