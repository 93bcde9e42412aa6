import Dispatch
import Foundation
import RLM
import Synchronization

/// Whether untrusted text may reach the terminal as it is. `--raw` sets it for users who want the bytes; by default
/// every control character in text bound for a terminal is made visible (see ``TerminalText``).
nonisolated(unsafe) var rawTerminalOutput = false

/// Prints a line to stderr. Messages carry untrusted pieces (a file name, a worker's error, a provider's reply), so on
/// a terminal their control characters are made visible.
func printError(_ message: String) {
    let line = message.hasSuffix("\n") ? message : message + "\n"
    writeUntrusted(line, to: FileHandle.standardError, isTerminal: StatusLine.isTerminal)
}

/// Writes text to stdout without adding anything; on a terminal its control characters are made visible unless the
/// user asked for `--raw`.
func writeOut(_ text: String) {
    writeUntrusted(text, to: FileHandle.standardOutput, isTerminal: TerminalText.stdoutIsTerminal)
}

/// Writes sandbox output to stderr, neutralised on a terminal like everything else.
func writeErr(_ text: String) {
    writeUntrusted(text, to: FileHandle.standardError, isTerminal: StatusLine.isTerminal)
}

private func writeUntrusted(_ text: String, to handle: FileHandle, isTerminal: Bool) {
    let safe = isTerminal && !rawTerminalOutput ? TerminalText.neutralize(text) : text
    handle.write(Data(safe.utf8))
}

/// Model- and worker-written text meets the user's terminal only through here: a final answer holding
/// `ESC ] 52 ; c ; …` would write the clipboard, `ESC [ 2 J` would clear the screen, a title sequence would retitle
/// the window, a bare carriage return would overwrite the line before it. Every C0 control but newline and tab, DEL,
/// and every C1 control (U+0080–U+009F, which some terminals obey as 8-bit controls) is shown as a visible escape
/// (`\x1b`, `\r`, `\u009b`) instead.
enum TerminalText {
    /// Whether stdout is a terminal.
    static let stdoutIsTerminal = isatty(1) != 0

    /// The text with every control character but `\n` and `\t` replaced by a visible escape.
    static func neutralize(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard isControl(scalar) else {
                result.append(scalar)
                continue
            }
            let escaped: String
            switch scalar.value {
            case 0x0D: escaped = "\\r"
            case 0x00..<0x80: escaped = String(format: "\\x%02x", scalar.value)
            default: escaped = String(format: "\\u%04x", scalar.value)
            }
            result.append(contentsOf: escaped.unicodeScalars)
        }
        return String(result)
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x0A, 0x09: return false
        case 0x00..<0x20, 0x7F, 0x80...0x9F: return true
        default: return false
        }
    }
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
        guard Self.isTerminal,
            shown.withLock({ shown in
                defer { shown = false }; return shown
            })
        else { return }
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

/// Returns when SIGINT or SIGTERM arrives, or when the task is cancelled. From the first call on, those signals no
/// longer kill the process: the caller decides how to stop.
func waitForTerminationSignal() async -> Int32? {
    let signals = [SIGINT, SIGTERM]
    /// Dispatch sources are thread-safe; the array is only read again to cancel them.
    final class Sources: @unchecked Sendable {
        var sources: [any DispatchSourceSignal] = []
    }
    let stream = AsyncStream<Int32> { continuation in
        let holder = Sources()
        holder.sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        continuation.onTermination = { _ in holder.sources.forEach { $0.cancel() } }
    }
    for await number in stream { return number }
    return nil
}

private enum InterruptibleOutcome<T: Sendable>: Sendable {
    case done(T)
    case signal(Int32)
}

/// The run was stopped by SIGINT or SIGTERM.
struct Interrupted: Error {
    /// The signal.
    var signal: Int32
}

/// Runs `body` until it ends or SIGINT/SIGTERM arrives; a signal cancels `body` (its sandboxes are killed and its
/// in-flight calls cancelled by structured cancellation), waits for it to wind down, and throws ``Interrupted``.
func untilInterrupted<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    return try await withThrowingTaskGroup(of: InterruptibleOutcome<T>.self) { group in
        group.addTask { .done(try await body()) }
        group.addTask {
            guard let number = await waitForTerminationSignal() else { throw CancellationError() }
            return .signal(number)
        }
        defer { group.cancelAll() }
        while let outcome = try await group.next() {
            switch outcome {
            case .done(let value): return value
            case .signal(let number):
                group.cancelAll()
                // Let the body clean up (sandboxes, cgroups, the local server) before the process exits.
                while (try? await group.next()) != nil {}
                throw Interrupted(signal: number)
            }
        }
        throw CancellationError()
    }
}
