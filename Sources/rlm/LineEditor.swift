import Foundation
import Glibc
import RLM
import RLMRuntime
import Synchronization

/// Reads lines from the terminal with editing (arrows, Home/End, Ctrl-A/E/U/K/W, Backspace/Delete) and history
/// (Up/Down, kept per command in a private file). The terminal is in raw mode only while a line is read, and is put
/// back on every way out: a return, a thrown error, `exit` (SIGINT/SIGTERM end through it) and SIGHUP/SIGQUIT.
/// The editing itself is ``LineEditing`` (RLMRuntime), which tests drive key by key.
final class LineEditor: Sendable {
    /// What one read brought.
    enum Reading: Sendable, Equatable {
        case line(String)
        /// Ctrl-C: the line was dropped.
        case interrupted
        /// Ctrl-D on an empty line, or the terminal went away.
        case endOfInput
    }

    private struct State {
        var editing: LineEditing
        var decoder = KeyDecoder()
        /// Keys that came after an Enter in the same read (a paste of several lines): the next lines.
        var queued: [LineEditing.Key] = []
    }

    private let state: Mutex<State>
    /// Where the prompt and the line are drawn: stderr, so stdout keeps only answers.
    private let output: Int32
    private let history: HistoryFile?

    /// An editor, or `nil` when stdin or stderr is not a terminal (then read lines plainly, with no prompt).
    /// - Parameters:
    ///   - historyName: the history file's name under `$XDG_STATE_HOME/swiftrlm/history`; `nil` for none.
    ///   - environment: where the XDG variables come from.
    static func forTerminal(historyName: String?, environment: [String: String]) -> LineEditor? {
        guard isatty(0) != 0, isatty(2) != 0 else { return nil }
        TerminalMode.installRestoreHandlers()
        let history = historyName.map { HistoryFile(name: $0, environment: environment) }
        return LineEditor(output: 2, history: history)
    }

    private init(output: Int32, history: HistoryFile?) {
        self.output = output
        self.history = history
        self.state = Mutex(
            State(editing: LineEditing(history: history?.load() ?? [], historyLimit: HistoryFile.limit)))
    }

    /// Reads one line after `prompt`. Blocks until the user ends the line: call it off the cooperative pool
    /// (``readOffPool(_:)``).
    /// - Parameters:
    ///   - prompt: the prompt (printable ASCII).
    ///   - remember: whether a submitted line goes into the history.
    func readLine(prompt: String, remember: Bool = true) -> Reading {
        state.withLock { state in
            guard TerminalMode.enterRaw() else { return Self.readPlainly(prompt: prompt, output: output) }
            defer { TerminalMode.restore() }
            write(prompt)
            var reading: Reading?
            var pause = false
            while reading == nil {
                var keys = state.queued
                state.queued = []
                if keys.isEmpty {
                    if pause {
                        keys = state.decoder.flush()
                    } else {
                        guard let bytes = Self.read(timeout: state.decoder.hasPending ? 50 : -1) else {
                            write("\r\n")
                            return .endOfInput
                        }
                        pause = bytes.isEmpty
                        keys = state.decoder.feed(bytes)
                    }
                } else {
                    pause = false
                }
                applying: for (index, key) in keys.enumerated() {
                    switch state.editing.apply(key) {
                    case .editing: continue applying
                    case .submitted(let line):
                        reading = .line(line)
                        write("\r" + prompt + UntrustedText.visible(line) + "\u{1B}[K\r\n")
                        if remember, state.editing.remember(line) { history?.append(line) }
                    case .interrupted:
                        reading = .interrupted
                        write("^C\r\n")
                    case .endOfInput:
                        reading = .endOfInput
                        write("\r\n")
                    }
                    state.queued = Array(keys[(index + 1)...])
                    break applying
                }
                if reading == nil { redraw(prompt: prompt, editing: &state.editing) }
            }
            return reading ?? .endOfInput
        }
    }

    /// Redraws the prompt and the part of the line that fits, from column 0, and puts the cursor back.
    private func redraw(prompt: String, editing: inout LineEditing) {
        let promptWidth = LineEditing.width(of: prompt)
        let columns = max(promptWidth + 2, terminalColumns())
        let (text, cursorColumn) = editing.view(columns: columns - promptWidth)
        var line = "\r" + prompt + text + "\u{1B}[K\r"
        let column = promptWidth + cursorColumn
        if column > 0 { line += "\u{1B}[\(column)C" }
        write(line)
    }

    private func terminalColumns() -> Int {
        var size = winsize()
        guard ioctl(output, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = writeAll(output, &bytes)
    }

    /// Reads what the terminal has: `nil` at its end (or a read error), an empty array when `timeout`
    /// (milliseconds, -1 for none) passed without input.
    private static func read(timeout: Int32) -> [UInt8]? {
        var descriptor = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&descriptor, 1, timeout)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { return nil }
            if ready == 0 { return [] }
            var buffer = [UInt8](repeating: 0, count: 1024)
            let count = Glibc.read(0, &buffer, buffer.count)
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard count > 0 else { return nil }
            return Array(buffer.prefix(count))
        }
    }

    /// A terminal that refuses raw mode: the prompt, then a cooked line.
    private static func readPlainly(prompt: String, output: Int32) -> Reading {
        var bytes = Array(prompt.utf8)
        _ = writeAll(output, &bytes)
        guard let line = Swift.readLine(strippingNewline: true) else { return .endOfInput }
        return .line(line)
    }
}

private func writeAll(_ fd: Int32, _ bytes: inout [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return false }
        offset += written
    }
    return true
}

/// The terminal's mode before raw mode, put back by ``restore()``, by `exit` (an `atexit` handler) and by a
/// SIGHUP/SIGQUIT handler. The saved settings live in memory a signal handler may read: a fixed allocation and an
/// atomic flag, no lock.
enum TerminalMode {
    private nonisolated(unsafe) static let saved = UnsafeMutablePointer<termios>.allocate(capacity: 1)
    private static let isRaw = Atomic<Bool>(false)
    private static let installed = Mutex(false)

    /// Puts stdin's terminal in raw mode: bytes as typed, no echo, no signals from keys (Ctrl-C arrives as a byte);
    /// output processing stays on, so a newline printed meanwhile still starts a line.
    /// - Returns: whether the terminal took it.
    static func enterRaw() -> Bool {
        var original = termios()
        guard tcgetattr(0, &original) == 0 else { return false }
        var raw = original
        raw.c_lflag &= ~tcflag_t(ECHO | ICANON | IEXTEN | ISIG)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL | INLCR | IGNCR | ISTRIP | BRKINT | INPCK)
        raw.c_cflag |= tcflag_t(CS8)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        saved.pointee = original
        isRaw.store(true, ordering: .sequentiallyConsistent)
        // TCSANOW, not TCSAFLUSH: keys typed ahead (or a paste) must not be thrown away.
        guard tcsetattr(0, TCSANOW, &raw) == 0 else {
            isRaw.store(false, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// Puts the terminal back as it was before raw mode (a no-op when it is not raw). Async-signal-safe.
    static func restore() {
        guard isRaw.exchange(false, ordering: .sequentiallyConsistent) else { return }
        _ = tcsetattr(0, TCSANOW, saved)
    }

    /// Once per process: `exit` and SIGHUP/SIGQUIT put the terminal back. SIGINT and SIGTERM are the commands'
    /// (they end through `exit`). A signal's earlier action (the default, or the Swift runtime's backtracer) still
    /// runs after the terminal is put back.
    static func installRestoreHandlers() {
        let first = installed.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        // Initialized here, never lazily inside a handler.
        _ = (saved, previous, isRaw.load(ordering: .relaxed))
        atexit { TerminalMode.restore() }
        for number in [SIGHUP, SIGQUIT] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                TerminalMode.restore()
                _ = sigaction(number, TerminalMode.previous + Int(number), nil)
                raise(number)  // delivered to the earlier action once this handler returns
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            _ = sigaction(number, &action, previous + Int(number))
        }
    }

    /// The actions SIGHUP and SIGQUIT had before ours, by signal number.
    private nonisolated(unsafe) static let previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
}

/// The lines a command remembers: `$XDG_STATE_HOME/swiftrlm/history/NAME`, one line each, the last 1000, the file
/// 0600 in a 0700 directory. Written only by an editor, so never when stdin is not a terminal.
struct HistoryFile: Sendable {
    /// The most lines kept.
    static let limit = 1000

    /// The file.
    let url: URL
    private static let warned = Mutex(false)

    /// - Parameters:
    ///   - name: `chat`, `repl`.
    ///   - environment: where the XDG variables come from.
    init(name: String, environment: [String: String]) {
        url = SwiftRLMPaths.stateDirectory(environment: environment)
            .appendingPathComponent("history", isDirectory: true)
            .appendingPathComponent(name)
    }

    /// The remembered lines, oldest first; none when the file is missing or not a private file of this user.
    func load() -> [String] {
        guard SwiftRLMPaths.isPrivateFile(url.path) else { return [] }
        let fd = open(url.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return [] }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        // A history is small: a file grown past a megabyte keeps only its end.
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > 1 << 20 ? size - (1 << 20) : 0)
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data, as: UTF8.self)
            .split(separator: "\n")
            .map { line in String(line.unicodeScalars.filter { $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) })
            }
            .filter { !$0.isEmpty }
            .suffix(Self.limit)
    }

    /// Appends `line` (what other sessions wrote meanwhile is kept) and keeps the last ``limit`` lines. The file is
    /// replaced whole by a rename, so a reader never sees half of it. A failure is reported once and not again.
    func append(_ line: String) {
        do {
            try SwiftRLMPaths.createDirectory(url.deletingLastPathComponent(), privateToOwner: true)
            let lines = (load() + [line]).suffix(Self.limit)
            let temporary = url.path + ".\(getpid()).tmp"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw PathError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
            fchmod(fd, 0o600)  // a leftover of a crashed session keeps its mode otherwise
            var bytes = Array((lines.joined(separator: "\n") + "\n").utf8)
            let written = writeAll(fd, &bytes)
            close(fd)
            guard written, rename(temporary, url.path) == 0 else {
                unlink(temporary)
                throw PathError("cannot write \(url.path): \(String(cString: strerror(errno)))")
            }
        } catch {
            let first = Self.warned.withLock { warned in
                defer { warned = true }
                return !warned
            }
            if first { printError("rlm: note: the history is not saved: \(error)") }
        }
    }
}

/// Runs a blocking read on a thread of its own, so the cooperative pool (two threads on a two-core machine) never
/// waits for a person to type. Cancelling the caller returns `nil` at once; the thread finishes its read alone (the
/// process is ending by then).
/// - Parameter body: the read.
func readOffPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
    let waiter = ReadWaiter<T>()
    return await withTaskCancellationHandler {
        await withCheckedContinuation { continuation in
            guard waiter.wait(continuation) else { return }
            Thread { waiter.resume(body()) }.start()
        }
    } onCancel: {
        waiter.resume(nil)
    }
}

/// The continuation of ``readOffPool(_:)``, resumed exactly once: by the read or by a cancellation.
private final class ReadWaiter<T: Sendable>: Sendable {
    private enum Stage {
        case idle, waiting(CheckedContinuation<T?, Never>), done
    }
    private let stage = Mutex<Stage>(.idle)

    /// Keeps the continuation; `false` (and resumed with `nil`) when cancelled already.
    func wait(_ continuation: CheckedContinuation<T?, Never>) -> Bool {
        let cancelled = stage.withLock { stage in
            if case .done = stage { return true }
            stage = .waiting(continuation)
            return false
        }
        if cancelled { continuation.resume(returning: nil) }
        return !cancelled
    }

    func resume(_ value: T?) {
        let continuation = stage.withLock { stage -> CheckedContinuation<T?, Never>? in
            defer { stage = .done }
            if case .waiting(let continuation) = stage { return continuation }
            return nil
        }
        continuation?.resume(returning: value)
    }
}
