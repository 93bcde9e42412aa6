import ArgumentParser
import Dispatch
import Foundation
import RLM
import RLMSandbox

#if canImport(Glibc)
    import Glibc
#endif

struct SandboxREPL: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repl",
        abstract: "An interactive Python REPL in one sandbox session (state persists across cells).",
        discussion: """
            A cell is one line, or a block: a line ending in ':' or with open brackets continues until an empty \
            line. On a terminal: line editing and history (Up/Down, kept in $XDG_STATE_HOME/swiftrlm/history/repl). \
            Ctrl-C interrupts the running cell (its variables are kept) or drops the lines typed; Ctrl-D, exit() or \
            quit() ends the REPL, and so does a cell that raises SystemExit (sys.exit(N) ends with status N).
            """
    )

    @OptionGroup var options: SandboxOptions

    @Option(help: "Wall-clock limit per cell in seconds.")
    var timeout: Double = 60

    func run() async throws {
        rawTerminalOutput = options.raw
        let sandbox: any Sandbox
        do {
            sandbox = try options.makeSandbox(timeout: timeout)
        } catch {
            printError("rlm: \(error)")
            throw ExitCode(2)
        }
        let interactive = isatty(0) != 0
        var session: any SandboxSession
        do {
            session = try await sandbox.startSession(handler: nil)
        } catch {
            printError("rlm: \(error)")
            throw ExitCode(2)
        }
        if interactive {
            let info = await session.info
            printError("SwiftRLM sandbox: Python \(info.pythonVersion), uid \(info.hostUID), landlock \(info.landlock)")
        }
        let editor =
            interactive
            ? LineEditor.forTerminal(historyName: "repl", environment: ProcessInfo.processInfo.environment) : nil
        let current = CurrentSession(session)
        signal(SIGINT, SIG_IGN)
        let interrupts = DispatchSource.makeSignalSource(signal: SIGINT)
        interrupts.setEventHandler {
            Task { await current.get().interrupt() }
        }
        interrupts.resume()
        defer { interrupts.cancel() }
        // SIGTERM and SIGHUP (the terminal closed) end the REPL cleanly: the sandbox is killed and its cgroups
        // removed before the process exits (which puts the terminal back).
        let terminations = [SIGTERM, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                Task {
                    await current.get().shutdown()
                    Foundation.exit(128 + number)
                }
            }
            source.resume()
            return source
        }
        defer { terminations.forEach { $0.cancel() } }

        var status: Int32 = 0
        reading: while true {
            guard let input = await readOffPool({ Self.readCell(editor: editor) }) else { break }
            let cell: String
            switch input {
            case .endOfInput: break reading
            case .interrupted:
                // As Python's own prompt: the lines typed so far are dropped.
                printError("KeyboardInterrupt")
                continue reading
            case .cell(let text): cell = text
            }
            if cell.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { continue }
            // The sandbox has no `exit`/`quit` (no site module): they end the REPL here, never in Python.
            if let code = Self.exitStatus(ofCommand: cell) {
                status = code
                break
            }
            do {
                let result = try await session.run(cell, timeout: Duration(userSeconds: timeout))
                writeOut(result.stdout)
                // `sys.exit(…)` or `raise SystemExit` in a cell ends the REPL with its status, as in Python.
                if let error = result.error, error.type == "SystemExit", !result.timedOut, !result.stateLost {
                    writeErr(result.stderr)
                    status = Self.exitStatus(ofSystemExit: error.message)
                    break
                }
                var stderr = result.stderr
                if let error = result.error {
                    stderr += error.traceback.isEmpty ? "\(error.type): \(error.message)\n" : error.traceback
                }
                writeErr(stderr)
                if let final = result.finalAnswer { writeOut("FINAL: \(final)\n") }
                if result.stateLost {
                    printError("rlm: the sandbox was killed, so its state is lost; starting a fresh one")
                    session = try await sandbox.startSession(handler: nil)
                    await current.set(session)
                }
            } catch {
                printError("rlm: \(error)")
                session = try await sandbox.startSession(handler: nil)
                await current.set(session)
            }
        }
        await session.shutdown()
        if status != 0 { throw ExitCode(status) }
    }

    /// What one read brought.
    private enum Input: Sendable {
        case cell(String)
        case interrupted
        case endOfInput
    }

    /// Reads one cell (blocking: call it off the cooperative pool). A cell is one line, or a block: a line ending in
    /// ':' or '\\', or with open brackets, continues until an empty line.
    private static func readCell(editor: LineEditor?) -> Input {
        func line(_ prompt: String) -> Input {
            if let editor {
                switch editor.readLine(prompt: prompt) {
                case .line(let line): return .cell(line)
                case .interrupted: return .interrupted
                case .endOfInput: return .endOfInput
                }
            }
            return Swift.readLine(strippingNewline: true).map { .cell($0) } ?? .endOfInput
        }
        let opening = line(">>> ")
        guard case .cell(let first) = opening else { return opening }
        var lines = [first]
        var depth = bracketDepth(first)
        var block = first.trimmingCharacters(in: .whitespaces).hasSuffix(":") || first.hasSuffix("\\")
        while block || depth > 0 {
            let input = line("... ")
            if case .interrupted = input { return .interrupted }
            guard case .cell(let next) = input else { break }
            if next.trimmingCharacters(in: .whitespaces).isEmpty && depth <= 0 { break }
            lines.append(next)
            depth += bracketDepth(next)
            if next.trimmingCharacters(in: .whitespaces).hasSuffix(":") { block = true }
        }
        return .cell(lines.joined(separator: "\n"))
    }

    /// `exit`, `quit`, `exit()`, `quit()` → 0, `exit(3)` → 3; anything else is Python's.
    static func exitStatus(ofCommand cell: String) -> Int32? {
        let text = cell.trimmingCharacters(in: .whitespacesAndNewlines)
        for name in ["exit", "quit"] where text.hasPrefix(name) {
            let rest = text.dropFirst(name.count).filter { !$0.isWhitespace }
            if rest.isEmpty || rest == "()" { return 0 }
            guard rest.hasPrefix("("), rest.hasSuffix(")") else { return nil }
            return Int32(rest.dropFirst().dropLast()).map { $0 & 0xFF }
        }
        return nil
    }

    /// Python's status for `SystemExit(message)`: none or 0 → 0, an integer → it, anything else is printed → 1.
    static func exitStatus(ofSystemExit message: String) -> Int32 {
        if ["", "None", "0"].contains(message) { return 0 }
        if let code = Int32(message) { return code & 0xFF }
        printError(message)
        return 1
    }

    /// Open minus closed brackets outside string literals (a heuristic good enough for a prompt).
    private static func bracketDepth(_ line: String) -> Int {
        var depth = 0
        var quote: Character?
        var escaped = false
        for ch in line {
            if let q = quote {
                if escaped {
                    escaped = false
                } else if ch == "\\" {
                    escaped = true
                } else if ch == q {
                    quote = nil
                }
                continue
            }
            switch ch {
            case "#": return depth
            case "'", "\"": quote = ch
            case "(", "[", "{": depth += 1
            case ")", "]", "}": depth -= 1
            default: break
            }
        }
        return depth
    }
}

/// The session Ctrl-C should interrupt (it changes when a killed sandbox is replaced).
actor CurrentSession {
    private var session: any SandboxSession
    init(_ session: any SandboxSession) { self.session = session }
    func get() -> any SandboxSession { session }
    func set(_ session: any SandboxSession) { self.session = session }
}
