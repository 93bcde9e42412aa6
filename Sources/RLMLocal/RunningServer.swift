import Foundation
import Glibc
import Synchronization

/// A llama.cpp server that answers OpenAI-compatible requests on loopback.
///
/// Either this process started it (``startedHere``), and ``stop()`` ends it, or it was already running for the same
/// model, started by another process, and ``stop()`` leaves it alone: only the process that started a server stops
/// it. A started server also ends when this process dies, since it exits when its stdin closes.
public final class RunningServer: Sendable {
    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1` (append `/chat/completions`).
    public let baseURL: URL
    /// The model id the server reports in `/v1/models` and accepts in requests (the catalog name).
    public let modelName: String
    /// The server's context window (`n_ctx`) in tokens.
    public let contextWindow: Int
    /// The loopback port.
    public let port: Int
    /// The server process's id.
    public let pid: Int32
    /// Whether this process started the server (and so stops it).
    public let startedHere: Bool
    /// The server's log (llama.cpp writes to stderr; both streams go here), when this process started it; deleted by
    /// ``stop()``.
    public let logFile: URL?

    private let child: ServerProcess?
    private let stateFile: URL?
    private let stopped = Mutex(false)

    init(
        port: Int, modelName: String, contextWindow: Int, pid: Int32, child: ServerProcess?, stateFile: URL?,
        logFile: URL?
    ) {
        self.baseURL = URL(string: "http://127.0.0.1:\(port)/v1")!
        self.port = port
        self.modelName = modelName
        self.contextWindow = contextWindow
        self.pid = pid
        self.child = child
        self.stateFile = stateFile
        self.logFile = logFile
        self.startedHere = child != nil
    }

    deinit {
        // Forgotten without stop(): do not leave a 2 GB process behind until this process exits.
        if let child, !stopped.withLock({ $0 }) {
            child.requestStop()
        }
    }

    /// `http://127.0.0.1:PORT` without `/v1`, for `/health` and llama.cpp's own endpoints.
    public var rootURL: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// Whether the server process is gone.
    public var hasExited: Bool {
        if let child { return child.exitSummary != nil }
        return !processIsAlive(pid)
    }

    /// Stops the server if this process started it: SIGTERM (and stdin closed), then SIGKILL after the grace period
    /// (5 s by default); then deletes its log and state file. Returns once it has exited. Does nothing for a reused
    /// server; a second call just waits for the exit.
    public func stop() async {
        guard let child else { return }
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else {
            await child.waitForExit()
            return
        }
        await child.stop()
        if let logFile { try? FileManager.default.removeItem(at: logFile) }
        if let stateFile, let state = ServerState.read(stateFile), state.pid == pid {
            try? FileManager.default.removeItem(at: stateFile)
        }
    }
}

/// Whether a process with this id exists (it may belong to another user).
func processIsAlive(_ pid: Int32) -> Bool {
    guard pid > 0 else { return false }
    return kill(pid, 0) == 0 || errno == EPERM
}

/// What a running server's state file records, so other processes can reuse the server.
struct ServerState: Codable, Sendable, Hashable {
    var pid: Int32
    var port: Int
    var model: String
    var modelPath: String
    var contextWindow: Int
    var ownerPid: Int32
    var startedAt: Date

    enum CodingKeys: String, CodingKey {
        case pid, port, model
        case modelPath = "model_path"
        case contextWindow = "n_ctx"
        case ownerPid = "owner_pid"
        case startedAt = "started_at"
    }

    static func read(_ url: URL) -> ServerState? {
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(ServerState.self, from: data)
    }

    func write(_ url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(self).write(to: url, options: .atomic)
    }
}
