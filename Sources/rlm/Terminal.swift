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

/// Model- and worker-written text meets the user's terminal only through here (see `UntrustedText`).
enum TerminalText {
    /// Whether stdout is a terminal.
    static let stdoutIsTerminal = isatty(1) != 0

    /// The text with every control character but `\n` and `\t` replaced by a visible escape.
    static func neutralize(_ text: String) -> String { UntrustedText.visible(text) }
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

/// SIGINT and SIGTERM as a stream, one element per signal. From creation on, those signals no longer kill the
/// process: the consumer decides how to stop. Ending the stream (or cancelling its consumer) restores nothing —
/// the process is winding down by then.
func terminationSignals() -> AsyncStream<Int32> {
    /// Dispatch sources are thread-safe; the array is only read again to cancel them.
    final class Sources: @unchecked Sendable {
        var sources: [any DispatchSourceSignal] = []
    }
    return AsyncStream<Int32> { continuation in
        let holder = Sources()
        holder.sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        continuation.onTermination = { _ in holder.sources.forEach { $0.cancel() } }
    }
}

/// Returns when SIGINT or SIGTERM arrives (the signal), or `nil` when the task is cancelled first.
func waitForTerminationSignal() async -> Int32? {
    for await number in terminationSignals() { return number }
    return nil
}

/// The run was stopped by SIGINT or SIGTERM.
struct Interrupted: Error {
    /// The signal.
    var signal: Int32
}

/// Runs `body` until it ends or SIGINT/SIGTERM arrives. The first signal cancels `body` (its sandboxes are killed
/// and its in-flight calls cancelled by structured cancellation), waits for it to wind down, and throws
/// ``Interrupted``. A second signal, or a wind-down longer than `grace` (a read blocked on a terminal cannot be
/// cancelled), calls `forceExit` with the signal, which must end the process.
func untilInterrupted<T: Sendable>(
    grace: Duration = .seconds(10), forceExit: @escaping @Sendable (Int32) -> Never,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    // One stream for the whole run, so no signal falls between two listeners.
    let signals = terminationSignals()
    let received = Mutex<Int32?>(nil)
    // The body is a task of its own so the listener can cancel it; cancelling this call cancels it too.
    let work = Task { try await body() }
    let listener = Task {
        for await signal in signals {
            let first = received.withLock { value in
                defer { if value == nil { value = signal } }
                return value == nil
            }
            guard first else { forceExit(signal) }
            work.cancel()
            Task {
                try? await Task.sleep(for: grace)
                forceExit(signal)
            }
        }
    }
    defer { listener.cancel() }
    return try await withTaskCancellationHandler {
        do {
            let value = try await work.value
            if let signal = received.withLock({ $0 }) { throw Interrupted(signal: signal) }
            return value
        } catch let interrupted as Interrupted {
            throw interrupted
        } catch {
            if let signal = received.withLock({ $0 }) { throw Interrupted(signal: signal) }
            throw error
        }
    } onCancel: {
        work.cancel()
    }
}
