import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMSandbox

struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Run Python in the isolated sandbox.",
        subcommands: [SandboxExec.self, SandboxREPL.self, SandboxPull.self]
    )
}

/// Options shared by the sandbox commands.
struct SandboxOptions: ParsableArguments {
    @OptionGroup var backend: BackendOptions

    @Option(help: "Memory limit in MB.")
    var memory: Int = 1024

    @Option(help: "Python interpreter inside the sandbox (the process backend's; a venv works; not under /root).")
    var python: String = "/usr/bin/python3"

    @Flag(
        help: "Print the program's output bytes as they are (default: control characters made visible on a terminal).")
    var raw = false

    func validate() throws {
        guard memory >= 32 else { throw ValidationError("--memory must be at least 32 (MB)") }
    }

    func makeSandbox(timeout: Double) throws -> any Sandbox {
        var configuration = ProcessSandbox.Configuration()
        configuration.memoryLimitBytes = memory << 20
        configuration.pythonPath = python
        configuration.cellTimeout = Duration(userSeconds: timeout) ?? .seconds(30)
        // A wasm guest takes a second to start (tens of seconds from an unoptimized build): a longer --timeout also
        // waits longer for the sandbox to start.
        configuration.startTimeout = max(configuration.startTimeout, configuration.cellTimeout)
        let chosen = try backend.resolve()
        if case .wasm = chosen { configuration.startTimeout = max(configuration.startTimeout, .seconds(60)) }
        return chosen.sandbox(configuration)
    }
}

struct SandboxExec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run code once in a fresh sandbox.",
        discussion: """
            Exit status: 0 ok, 1 the code raised, 124 timed out, 137 killed for memory, 2 usage or setup error.
            """
    )

    @OptionGroup var options: SandboxOptions

    @Option(help: "Wall-clock limit in seconds.")
    var timeout: Double = 30

    @Flag(help: "Print one JSON object: stdout, stderr, error, timed_out, duration_ms.")
    var json = false

    @Argument(help: "A Python file, or - (the default) for stdin.")
    var file: String = "-"

    func validate() throws {
        _ = try seconds(timeout, flag: "--timeout")
    }

    func run() async throws {
        rawTerminalOutput = options.raw
        let code: String
        do {
            code = try readSource(file)
        } catch {
            printError("rlm: \(error)")
            throw ExitCode(2)
        }
        let result: CellResult
        let timeout = timeout
        do {
            let sandbox = try options.makeSandbox(timeout: timeout)
            // SIGINT/SIGTERM kill the sandbox and remove its cgroups on the way out.
            result = try await untilInterrupted(forceExit: { signal in Foundation.exit(128 + signal) }) {
                try await sandbox.withSession { session in
                    try await session.run(code, timeout: Duration(userSeconds: timeout))
                }
            }
        } catch let error as SandboxError {
            printError("rlm: \(error)")
            throw ExitCode(error.isSetupError ? 2 : 1)
        } catch let interrupted as Interrupted {
            throw ExitCode(128 + interrupted.signal)
        }
        var stderr = result.stderr
        if let error = result.error, Self.exitStatus(result) != 0 {
            if !stderr.isEmpty && !stderr.hasSuffix("\n") { stderr += "\n" }
            if !error.traceback.isEmpty {
                stderr += error.traceback.hasSuffix("\n") ? error.traceback : error.traceback + "\n"
            }
            // The host's own verdicts (timeout, memory, a killed sandbox) are not in any Python traceback.
            if error.traceback.isEmpty || result.timedOut || result.stateLost {
                stderr += "\(error.type): \(error.message)\n"
            }
        }
        if json {
            let object: [String: Any] = [
                "stdout": result.stdout,
                "stderr": stderr,
                "error": result.error.map { ["type": $0.type, "message": $0.message] } ?? NSNull(),
                "timed_out": result.timedOut,
                "duration_ms": (result.durationMilliseconds * 1000).rounded() / 1000,
            ]
            writeJSON(object)
        } else {
            writeOut(result.stdout)
            writeErr(stderr)
        }
        let status = Self.exitStatus(result)
        if status != 0 { throw ExitCode(status) }
    }

    static func exitStatus(_ result: CellResult) -> Int32 {
        if result.timedOut { return 124 }
        if result.memoryExceeded { return 137 }
        if let error = result.error {
            // `sys.exit()` / `sys.exit(0)` is a clean end of the program, as in `python3 FILE`.
            if error.type == "SystemExit" && ["", "0", "None"].contains(error.message) { return 0 }
            return 1
        }
        return 0
    }
}

/// Reads a file, or stdin for "-".
func readSource(_ path: String) throws -> String {
    let data: Data
    if path == "-" {
        data = FileHandle.standardInput.readDataToEndOfFile()
    } else {
        guard FileManager.default.fileExists(atPath: path) else {
            throw SandboxError.setup("cannot read \(path): no such file")
        }
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw SandboxError.setup("cannot read \(path): permission denied or not a regular file")
        }
        data = contents
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw SandboxError.setup("\(path == "-" ? "stdin" : path) is not UTF-8 text")
    }
    return text
}
