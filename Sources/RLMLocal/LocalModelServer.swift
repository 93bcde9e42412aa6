import AsyncHTTPClient
import Foundation
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import RLM

/// How far starting a local model server has got, for a progress display.
public enum ServerProgress: Sendable, Hashable {
    /// Creating the private venv (first use only).
    case creatingEnvironment(URL)
    /// Installing the xllamacpp wheel into it (first use only).
    case installingPackage(String)
    /// A server for the same model is already running: it is reused.
    case reusing(port: Int, pid: Int32)
    /// Launching the server process and loading the model.
    case launching(model: String, contextWindow: Int)
    /// The server answers `/health`.
    case ready(port: Int, seconds: Double)
}

/// Runs llama.cpp's OpenAI-compatible server (the `xllamacpp` wheel) on a loopback port for one local model.
///
/// - The server runs `serve_llama.py` with the python of a private venv (`$XDG_DATA_HOME/swiftrlm/venv`), created
///   with `python3 -m venv` and `pip install xllamacpp==…` on first use.
/// - It binds a free loopback port chosen by the server itself (port 0, so no other process can take the port
///   between picking and binding) unless ``Configuration/port`` names one, and is ready once `/health` answers 200.
/// - Reuse: each started server is recorded in `<state dir>/server-<model>.json` (`pid`, `port`, `model`, `n_ctx`).
///   A later start for the same model file, with a context window no larger, reuses a live server that answers
///   `/health` and names the model in `/v1/models`, instead of loading a second copy. Only the process that started
///   a server stops it; a started server also exits when its parent dies (its stdin closes), so a reused server
///   lasts only as long as the process that started it. Starts for one model are serialized by a lock file, so two
///   processes starting at once load it once.
public struct LocalModelServer: Sendable {
    /// How the server is run.
    public struct Configuration: Sendable {
        /// CPU threads for generation and prompt batches; 1 is fastest on this kind of 2-core machine.
        public var threads: Int
        /// The loopback port; 0 lets the server choose a free one.
        public var port: Int
        /// How long to wait for `/health` after launch.
        public var startTimeout: Duration
        /// How long `stop()` waits after SIGTERM before SIGKILL.
        public var stopGracePeriod: Duration
        /// Whether to reuse a server already running for the same model.
        public var reuseRunningServer: Bool
        /// Where state files, locks and server logs go; default `$XDG_RUNTIME_DIR/swiftrlm` or `/tmp/swiftrlm-<uid>`.
        public var stateDirectory: URL
        /// The private venv; default `$XDG_DATA_HOME/swiftrlm/venv` or `~/.local/share/swiftrlm/venv`.
        public var venvDirectory: URL
        /// Interpreters tried, in order, to create the venv.
        public var basePythons: [String]
        /// A Python that already has xllamacpp: used as is, and no venv is made.
        public var python: String?
        /// The pip requirement installed into the venv.
        public var requirement: String
        /// The server script; default the bundled `serve_llama.py`. Tests substitute a fake server here.
        public var serveScript: URL?

        /// - Parameters: as the properties.
        public init(
            threads: Int = 1, port: Int = 0, startTimeout: Duration = .seconds(120),
            stopGracePeriod: Duration = .seconds(5), reuseRunningServer: Bool = true,
            stateDirectory: URL = LocalPaths.runtimeDirectory(), venvDirectory: URL = LocalPaths.venvDirectory(),
            basePythons: [String] = ["/usr/bin/python3", "python3"], python: String? = nil,
            requirement: String = LocalModelServer.xllamacppRequirement, serveScript: URL? = nil
        ) {
            self.threads = threads
            self.port = port
            self.startTimeout = startTimeout
            self.stopGracePeriod = stopGracePeriod
            self.reuseRunningServer = reuseRunningServer
            self.stateDirectory = stateDirectory
            self.venvDirectory = venvDirectory
            self.basePythons = basePythons
            self.python = python
            self.requirement = requirement
            self.serveScript = serveScript
        }
    }

    /// The bundled `serve_llama.py` (run by the venv's python; see its docstring for the arguments): the copy
    /// embedded in this binary, written to a private per-user cache file; `nil` if that file cannot be written.
    public static var bundledServeScript: URL? {
        try? ServeScript.file()
    }

    /// The pinned server wheel.
    public static let xllamacppRequirement = "xllamacpp==2026.10.11549"

    /// The model id the server reports and accepts.
    public let modelName: String
    /// The `.gguf` file served.
    public let modelPath: URL
    /// The context window asked for (`n_ctx`).
    public let contextWindow: Int
    /// How the server is run.
    public let configuration: Configuration
    private let logger: Logger

    /// Serves any GGUF file.
    /// - Parameters:
    ///   - modelName: the id the server reports and accepts; also names the state file.
    ///   - modelPath: the `.gguf` file.
    ///   - contextWindow: `n_ctx` in tokens.
    ///   - configuration: how the server is run.
    ///   - logger: where starts, reuses and failures are logged.
    public init(
        modelName: String, modelPath: URL, contextWindow: Int, configuration: Configuration = Configuration(),
        logger: Logger
    ) {
        self.modelName = modelName
        self.modelPath = modelPath
        self.contextWindow = contextWindow
        self.configuration = configuration
        self.logger = logger
    }

    /// Serves an installed catalog model.
    /// - Parameters:
    ///   - model: the model.
    ///   - store: the store it was pulled into.
    ///   - contextWindow: `n_ctx`; default the model's (8192 for Qwen, 2048 for SmolLM2).
    ///   - configuration: how the server is run.
    ///   - logger: where starts, reuses and failures are logged.
    /// - Throws: ``LocalModelError/notInstalled(_:)`` when the store does not have it.
    public init(
        model: LocalModel, store: LocalModelStore, contextWindow: Int? = nil,
        configuration: Configuration = Configuration(), logger: Logger
    ) throws {
        self.init(
            modelName: model.name, modelPath: try store.installedPath(for: model),
            contextWindow: contextWindow ?? model.contextWindow, configuration: configuration, logger: logger)
    }

    /// Starts a server for an installed model, runs `body` with it, and stops it afterwards (if this call started
    /// it), whether `body` returns or throws.
    /// - Parameters:
    ///   - model: the model.
    ///   - store: the store it was pulled into.
    ///   - contextWindow: `n_ctx`; default the model's.
    ///   - configuration: how the server is run.
    ///   - logger: where starts, reuses and failures are logged.
    ///   - progress: called as the venv is made and the server starts.
    ///   - body: uses the server.
    public static func withServer<T>(
        model: LocalModel, store: LocalModelStore, contextWindow: Int? = nil,
        configuration: Configuration = Configuration(), logger: Logger,
        progress: @escaping @Sendable (ServerProgress) -> Void = { _ in },
        _ body: (RunningServer) async throws -> T
    ) async throws -> T {
        let server = try LocalModelServer(
            model: model, store: store, contextWindow: contextWindow, configuration: configuration, logger: logger)
        return try await server.withServer(progress: progress, body)
    }

    /// Starts (or reuses) the server, runs `body` with it, and stops it afterwards if this call started it.
    /// - Parameters:
    ///   - progress: called as the venv is made and the server starts.
    ///   - body: uses the server.
    public func withServer<T>(
        progress: @escaping @Sendable (ServerProgress) -> Void = { _ in }, _ body: (RunningServer) async throws -> T
    ) async throws -> T {
        let server = try await start(progress: progress)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    /// Runs the server until the task is cancelled (the shape of a service's `run()`), then stops it.
    /// - Parameters:
    ///   - progress: called as the venv is made and the server starts.
    ///   - onReady: called once the server answers.
    /// - Throws: ``LocalModelError`` when it cannot start or dies while running.
    public func run(
        progress: @escaping @Sendable (ServerProgress) -> Void = { _ in },
        onReady: (RunningServer) async -> Void = { _ in }
    ) async throws {
        try await withServer(progress: progress) { server in
            await onReady(server)
            while !Task.isCancelled && !server.hasExited {
                try? await Task.sleep(for: .milliseconds(500))
            }
            if !Task.isCancelled {
                throw LocalModelError.serverFailed("the model server for \(modelName) (pid \(server.pid)) exited")
            }
        }
    }

    /// Starts the server, or reuses one already running for the same model. Call ``RunningServer/stop()`` when done.
    /// - Parameter progress: called as the venv is made and the server starts.
    /// - Throws: ``LocalModelError`` with the tail of the server's log when it does not come up in time.
    public func start(progress: @escaping @Sendable (ServerProgress) -> Void = { _ in }) async throws -> RunningServer {
        guard FileManager.default.isReadableFile(atPath: modelPath.path) else {
            throw LocalModelError.serverFailed("no model file at \(modelPath.path)")
        }
        guard !modelName.isEmpty, !modelName.contains("/") else {
            throw LocalModelError.serverFailed("invalid model name '\(modelName)'")
        }
        let directory = configuration.stateDirectory
        try LocalModelError.storage { try SwiftRLMPaths.createDirectory(directory, privateToOwner: true) }
        let lock = try await FileLock.acquire(
            directory.appendingPathComponent("server-\(modelName).lock").path,
            timeout: configuration.startTimeout + .seconds(900), purpose: "starting the server for \(modelName)")
        defer { lock.release() }

        let stateFile = directory.appendingPathComponent("server-\(modelName).json")
        if configuration.reuseRunningServer, let reused = await reusableServer(stateFile: stateFile) {
            progress(.reusing(port: reused.port, pid: reused.pid))
            logger.info(
                "reusing local model server",
                metadata: ["rlm.local.model": "\(modelName)", "rlm.local.port": "\(reused.port)"])
            return reused
        }

        let python: String
        if let configured = configuration.python {
            guard let resolved = SwiftRLMPaths.executable(named: configured) else {
                throw LocalModelError.pythonEnvironment("cannot find the Python \(configured)")
            }
            python = resolved
        } else {
            python = try await PythonEnvironment(
                directory: configuration.venvDirectory, basePythons: configuration.basePythons,
                requirement: configuration.requirement, logger: logger
            ).ensure(progress: progress)
        }
        let script = try configuration.serveScript ?? ServeScript.file()
        return try await launch(
            python: python, script: script, stateFile: stateFile, directory: directory, progress: progress)
    }

    // MARK: - Launch

    private func launch(
        python: String, script: URL, stateFile: URL, directory: URL,
        progress: @Sendable (ServerProgress) -> Void
    ) async throws -> RunningServer {
        let token = UUID().uuidString.prefix(8).lowercased()
        let readyFile = directory.appendingPathComponent("server-\(modelName)-\(token).ready")
        // One log per launch: another server for this model (say with a larger window) may still write its own.
        // The log is deleted when the server is stopped, and kept for diagnosis when it fails to start.
        let logFile = directory.appendingPathComponent("server-\(modelName)-\(token).log")
        defer { try? FileManager.default.removeItem(at: readyFile) }
        let log: FileHandle
        do {
            try Data().write(to: logFile)
            log = try FileHandle(forWritingTo: logFile)
        } catch {
            throw LocalModelError.storage("cannot write \(logFile.path): \(error.localizedDescription)")
        }
        defer { try? log.close() }

        let arguments = [
            "-u", script.path, "--model", modelPath.path, "--port", "\(configuration.port)", "--ctx",
            "\(contextWindow)", "--threads", "\(configuration.threads)", "--alias", modelName, "--ready-file",
            readyFile.path,
        ]
        progress(.launching(model: modelName, contextWindow: contextWindow))
        logger.info(
            "starting local model server",
            metadata: [
                "rlm.local.model": "\(modelName)", "rlm.local.n_ctx": "\(contextWindow)",
                "rlm.local.threads": "\(configuration.threads)",
            ])
        let clock = ContinuousClock()
        let started = clock.now
        let child = try await ServerProcess.launch(
            executable: python, arguments: arguments, log: log, grace: configuration.stopGracePeriod)

        let port: Int
        do {
            port = try await waitUntilReady(child: child, readyFile: readyFile, logFile: logFile, clock: clock)
        } catch {
            await child.stop()
            throw error
        }
        let seconds = (clock.now - started).inSeconds
        let state = ServerState(
            pid: child.pid, port: port, model: modelName, modelPath: modelPath.path, contextWindow: contextWindow,
            ownerPid: getpid(), startedAt: Date())
        do {
            try state.write(stateFile)
        } catch {
            logger.warning(
                "cannot record the server for reuse", metadata: ["rlm.local.error": "\(error.localizedDescription)"])
        }
        progress(.ready(port: port, seconds: seconds))
        logger.info(
            "local model server ready",
            metadata: [
                "rlm.local.model": "\(modelName)", "rlm.local.port": "\(port)", "rlm.local.pid": "\(child.pid)",
                "rlm.local.seconds": "\(String(format: "%.1f", seconds))",
            ])
        return RunningServer(
            port: port, modelName: modelName, contextWindow: contextWindow, pid: child.pid, child: child,
            stateFile: stateFile, logFile: logFile)
    }

    /// Waits for the ready file (written once the socket listens) and then for `/health` 200.
    private func waitUntilReady(
        child: ServerProcess, readyFile: URL, logFile: URL, clock: ContinuousClock
    ) async throws -> Int {
        let deadline = clock.now + configuration.startTimeout
        var port: Int?
        while true {
            if let status = child.exitSummary {
                throw LocalModelError.serverFailed(
                    "the model server exited (\(status)) before it was ready; last lines of \(logFile.path):\n"
                        + logTail(logFile))
            }
            if port == nil, let data = FileManager.default.contents(atPath: readyFile.path),
                let ready = try? JSONDecoder().decode(ReadyFile.self, from: data)
            {
                port = ready.port
            }
            if let port, await Self.get(port: port, path: "/health")?.status == 200 {
                return port
            }
            guard clock.now < deadline else {
                throw LocalModelError.timedOut(
                    "the model server did not answer /health within \(configuration.startTimeout); "
                        + "last lines of \(logFile.path):\n" + logTail(logFile))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    private struct ReadyFile: Decodable {
        var port: Int
    }

    // MARK: - Reuse

    private func reusableServer(stateFile: URL) async -> RunningServer? {
        guard let state = ServerState.read(stateFile) else { return nil }
        guard state.model == modelName, state.modelPath == modelPath.path, state.contextWindow >= contextWindow,
            processIsAlive(state.pid)
        else {
            logger.debug("not reusing the recorded server", metadata: ["rlm.local.state": "\(state)"])
            return nil
        }
        // The pid and port may have been recycled since the state was written: ask the server who it is.
        guard await Self.get(port: state.port, path: "/health")?.status == 200,
            let models = await Self.get(port: state.port, path: "/v1/models"), models.status == 200,
            Self.modelIDs(in: models.body).contains(modelName)
        else {
            return nil
        }
        return RunningServer(
            port: state.port, modelName: modelName, contextWindow: state.contextWindow, pid: state.pid, child: nil,
            stateFile: nil, logFile: nil)
    }

    static func modelIDs(in body: String) -> [String] {
        struct Models: Decodable {
            struct Model: Decodable { var id: String }
            var data: [Model]
        }
        return (try? JSONDecoder().decode(Models.self, from: Data(body.utf8)))?.data.map(\.id) ?? []
    }

    /// A GET on loopback with a short deadline; `nil` when nothing answers.
    static func get(port: Int, path: String) async -> (status: Int, body: String)? {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(3))
            let body = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), String(buffer: body))
        } catch {
            return nil
        }
    }

    private func logTail(_ url: URL, lines: Int = 15) -> String {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return "(no log)" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > 8192 ? size - 8192 : 0)
        let text = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}
