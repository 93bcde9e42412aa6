import Foundation
import Subprocess
import SystemPackage

/// What a finished command printed and how it ended.
struct CommandResult: Sendable {
    var status: TerminationStatus
    var stdout: String
    var stderr: String

    /// The last `lines` non-empty lines of stderr (or stdout when stderr is empty), for error messages.
    func tail(lines: Int = 8) -> String {
        let text = stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? stdout : stderr
        return text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines).joined(separator: "\n")
    }
}

/// Runs a short command (pip, venv creation, `python -c`) to completion with swift-subprocess, capturing its output.
/// Cancelling the task kills the process and throws `CancellationError`.
/// - Parameters:
///   - executable: an absolute path.
///   - arguments: the arguments after argv[0].
/// - Throws: ``LocalModelError/pythonEnvironment(_:)`` when it cannot be started.
func runCommand(_ executable: String, _ arguments: [String]) async throws -> CommandResult {
    let result: ExecutionResult<Void, StringOutput<UTF8>, StringOutput<UTF8>>
    do {
        result = try await run(
            .path(FilePath(executable)), arguments: Arguments(arguments),
            output: .string(limit: commandOutputLimit), error: .string(limit: commandOutputLimit))
    } catch let error as SubprocessError {
        try Task.checkCancellation()
        throw LocalModelError.pythonEnvironment("cannot run \(executable): \(error)")
    }
    try Task.checkCancellation()
    return CommandResult(
        status: result.terminationStatus, stdout: result.standardOutput ?? "", stderr: result.standardError ?? "")
}

/// How much of each stream a command may print (pip's output is a few kilobytes; past this it is refused).
private let commandOutputLimit = 16 << 20

extension TerminationStatus {
    /// `exit status 3` or `killed by signal 9`, for messages.
    var summary: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}
