import Foundation
import RLM
import Synchronization

/// Prints to stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
}

/// Writes text to stdout without adding anything.
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// The CLI's one self-overwriting status line on stderr: shown only when stderr is a terminal, so pipes and logs stay
/// quiet. Every progress display (`rlm run`, `rlm bench tasks`, `rlm model pull|serve`) goes through it.
final class StatusLine: Sendable {
    /// Whether stderr is a terminal.
    static let isTerminal = isatty(2) != 0

    private let shown = Mutex(false)

    /// Replaces the line with `text`.
    func show(_ text: String) {
        guard Self.isTerminal else { return }
        shown.withLock { $0 = true }
        FileHandle.standardError.write(Data("\r\u{1B}[2K\(text)".utf8))
    }

    /// Ends the line: `keep` leaves the last status visible (and moves on), otherwise it is erased.
    func finish(keep: Bool = false) {
        guard Self.isTerminal, shown.withLock({ shown in defer { shown = false }; return shown }) else { return }
        FileHandle.standardError.write(Data((keep ? "\n" : "\r\u{1B}[2K").utf8))
    }

    /// Prints a whole line above the status (which is redrawn by the next `show`).
    func note(_ text: String) {
        if Self.isTerminal, shown.withLock({ $0 }) {
            FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
        }
        printError(text)
    }
}
