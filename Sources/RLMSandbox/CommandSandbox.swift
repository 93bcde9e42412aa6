import Foundation
import Glibc
import Logging
import RLM

/// The command backend: the worker runs in whatever Python a command starts — `kubectl exec -i POD -- python3 -I`,
/// `ssh host python3 -I`, `podman exec -i NAME python3 -I` — over that command's stdin and stdout. It is how sandboxes
/// move off this machine (a Kubernetes pod, a VM), so isolation is the remote side's job.
///
/// What SwiftRLM still enforces from the host, whatever the command: the wall-clock timeout of every cell (interrupt,
/// then SIGKILL of the command's whole process group: the worker's channel then ends and it exits), the frame cap and
/// the validation of every frame, the output caps, the sub-call and budget limits, and a clean environment for the
/// command (``passedEnvironment``: no API key ever reaches it). What it cannot: the memory, CPU, processes, network and
/// files of the remote Python — `rlm doctor --backend command` shows what the worker sees there.
///
/// The command's words: `{bootstrap}` as a whole word is replaced by the worker's start-up code (one argument; for a
/// command whose arguments reach a shell again, as ssh's do, `{bootstrap_sh}` gives it shell-quoted). Without either,
/// `-c` and the code are appended, which suits `kubectl exec … -- python3 -I` and `podman exec -i … python3 -I`.
public struct CommandSandbox: Sandbox {
    /// The command and its arguments, before the start-up code is put in (see the type's documentation).
    public var command: [String]
    /// The limits the host enforces: cell timeout and grace, output and frame caps, start timeout. Memory, processes
    /// and files are the remote side's to enforce (`memoryLimitBytes` still caps a child context's size).
    public var configuration: ProcessSandbox.Configuration
    /// The worker's writable directory on the far side.
    public var workDir: String
    private let logger: Logger

    /// Host variables a command may need to reach its remote side, and nothing else: credentials for the remote
    /// side come from files these point at (a kubeconfig, an ssh agent), never from this process's secrets.
    public static let passedEnvironment: Set<String> = [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME", "KUBECONFIG", "SSH_AUTH_SOCK", "CONTAINER_HOST", "DOCKER_HOST",
    ]

    /// - Parameters:
    ///   - command: the command's words (``parse(_:)`` splits a command line).
    ///   - configuration: the host-side limits.
    ///   - workDir: the worker's writable directory on the far side (default `/tmp`).
    ///   - logger: where lifecycle events go (debug level).
    public init(
        command: [String], configuration: ProcessSandbox.Configuration = .init(), workDir: String = "/tmp",
        logger: Logger = Logger(label: "rlm.sandbox", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.command = command
        self.configuration = configuration
        self.workDir = workDir
        self.logger = logger
    }

    public func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession {
        let argv = try Self.arguments(command)
        guard let path = SwiftRLMPaths.executable(named: argv[0]) else {
            throw SandboxError.setup("the sandbox command \(argv[0]) was not found (looked in PATH)")
        }
        let lease = SessionLease(
            slot: try await SessionSlots.shared.acquire(
                limit: configuration.maxLiveSessionsPerProcess, wait: configuration.sessionSlotWait))
        let environment = ProcessInfo.processInfo.environment
            .filter { Self.passedEnvironment.contains($0.key) }
            .map { "\($0.key)=\($0.value)" }.sorted()
        let process: ChildProcess
        do {
            process = try await ChildProcess.spawn(
                path: path, arguments: argv, environment: environment, dataPipe: false, newProcessGroup: true)
        } catch {
            lease.release()
            throw error
        }
        let host = ProcessWorkerHost(
            process: process, identity: "command \(argv[0]) (pid \(process.pid))", cleanup: { lease.release() })
        do {
            return try await WorkerSession.start(
                host: host, configuration: configuration, payload: WorkerSource.data, workDir: workDir,
                info: SessionInfo(
                    pythonVersion: "", landlock: "not applied by the command backend", cgroups: false,
                    hostUID: 0),
                handler: handler, logger: logger)
        } catch let error as SandboxError where error.isSetupError || error.isProtocolViolation {
            // A command that prints anything else first (a banner, a shell's motd) breaks the protocol at once.
            throw SandboxError.startFailed(
                "the sandbox command (\(command.prefix(4).joined(separator: " "))…) did not start a worker: "
                    + error.message + ". The command must start Python 3 with the code it is given "
                    + "({bootstrap}, or `-c CODE` appended) and connect that Python's stdin and stdout to its own")
        }
    }

    /// The command's argv with the start-up code put in.
    /// - Throws: ``SandboxError/setup(_:)`` for an empty command.
    public static func arguments(_ command: [String]) throws -> [String] {
        guard let first = command.first, !first.isEmpty else {
            throw SandboxError.setup(
                "--command is empty: give the command that starts Python, e.g. "
                    + "'kubectl exec -i POD -- python3 -I'")
        }
        let code = LaunchPlan.bootstrap
        var placed = false
        let argv = command.map { word -> String in
            switch word {
            case "{bootstrap}":
                placed = true
                return code
            case "{bootstrap_sh}":
                placed = true
                return shellQuoted(code)
            default:
                return word
            }
        }
        return placed ? argv : argv + ["-c", code]
    }

    /// Splits a command line into words as a POSIX shell would, without running one: whitespace separates words,
    /// single quotes keep everything, double quotes keep everything but `\"` and `\\`, a backslash outside quotes
    /// escapes the next character. Nothing is expanded (no `$VAR`, no globs).
    /// - Throws: ``SandboxError/setup(_:)`` for an unterminated quote.
    public static func parse(_ line: String) throws -> [String] {
        var words = [String]()
        var current = ""
        var inWord = false
        var iterator = line.makeIterator()
        while let character = iterator.next() {
            switch character {
            case " ", "\t", "\n":
                if inWord { words.append(current) }
                current = ""
                inWord = false
            case "'":
                inWord = true
                var closed = false
                while let next = iterator.next() {
                    if next == "'" {
                        closed = true
                        break
                    }
                    current.append(next)
                }
                guard closed else { throw SandboxError.setup("--command has an unterminated ' quote") }
            case "\"":
                inWord = true
                var closed = false
                while let next = iterator.next() {
                    if next == "\"" {
                        closed = true
                        break
                    }
                    if next == "\\", let escaped = iterator.next() {
                        if escaped != "\"" && escaped != "\\" { current.append("\\") }
                        current.append(escaped)
                        continue
                    }
                    current.append(next)
                }
                guard closed else { throw SandboxError.setup("--command has an unterminated \" quote") }
            case "\\":
                inWord = true
                if let escaped = iterator.next() { current.append(escaped) }
            default:
                inWord = true
                current.append(character)
            }
        }
        if inWord { words.append(current) }
        return words
    }

    /// `text` in single quotes for a POSIX shell.
    static func shellQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
