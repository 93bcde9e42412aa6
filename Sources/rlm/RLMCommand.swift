import ArgumentParser
import Foundation

/// The `rlm` command line: parses, wires, prints. Logic lives in the libraries.
@main
struct RLMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rlm",
        abstract: "SwiftRLM: answer questions over contexts far larger than a model's window.",
        subcommands: [RunCommand.self, ModelCommand.self, SandboxCommand.self, DoctorCommand.self, BenchCommand.self]
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
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Prints to stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
}

/// Writes text to stdout without adding anything.
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}
