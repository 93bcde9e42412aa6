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
            A cell is one line, or a block: a line ending in ':' or with open brackets continues until an empty
            line. Ctrl-C interrupts the running cell; Ctrl-D quits.
            """
    )

    @OptionGroup var options: SandboxOptions

    @Option(help: "Wall-clock limit per cell in seconds.")
    var timeout: Double = 60

    func run() async throws {
        rawTerminalOutput = options.raw
        let sandbox: ProcessSandbox
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
        let current = CurrentSession(session)
        signal(SIGINT, SIG_IGN)
        let interrupts = DispatchSource.makeSignalSource(signal: SIGINT)
        interrupts.setEventHandler {
            Task { await current.get().interrupt() }
        }
        interrupts.resume()
        defer { interrupts.cancel() }
        // SIGTERM ends the REPL cleanly: the sandbox is killed and its cgroups removed before the process exits.
        signal(SIGTERM, SIG_IGN)
        let terminations = DispatchSource.makeSignalSource(signal: SIGTERM)
        terminations.setEventHandler {
            Task {
                await current.get().shutdown()
                Foundation.exit(128 + SIGTERM)
            }
        }
        terminations.resume()
        defer { terminations.cancel() }

        while let cell = readCell(interactive: interactive) {
            if cell.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { continue }
            do {
                let result = try await session.run(cell, timeout: Duration(userSeconds: timeout))
                writeOut(result.stdout)
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
    }

    /// Reads one cell; `nil` at end of input.
    private func readCell(interactive: Bool) -> String? {
        if interactive { FileHandle.standardError.write(Data(">>> ".utf8)) }
        guard let first = readLine(strippingNewline: true) else { return nil }
        var lines = [first]
        var depth = bracketDepth(first)
        var block = first.trimmingCharacters(in: .whitespaces).hasSuffix(":") || first.hasSuffix("\\")
        while block || depth > 0 {
            if interactive { FileHandle.standardError.write(Data("... ".utf8)) }
            guard let next = readLine(strippingNewline: true) else { break }
            if next.trimmingCharacters(in: .whitespaces).isEmpty && depth <= 0 { break }
            lines.append(next)
            depth += bracketDepth(next)
            if next.trimmingCharacters(in: .whitespaces).hasSuffix(":") { block = true }
        }
        return lines.joined(separator: "\n")
    }

    /// Open minus closed brackets outside string literals (a heuristic good enough for a prompt).
    private func bracketDepth(_ line: String) -> Int {
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
