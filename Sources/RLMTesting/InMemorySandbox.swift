import Foundation
import RLM
import Synchronization

/// A ``Sandbox`` that runs nothing: each cell's result comes from a script. For engine unit tests that need no
/// bubblewrap and no Python, and for users testing code built on the engine.
///
/// A scripted cell can make sub-calls through ``Cell/subcall(_:)``, exactly as model-written code would, so routing
/// and budgets are exercised without a real sandbox.
///
/// ```swift
/// let sandbox = InMemorySandbox { cell in
///     cell.code.contains("len(context)") ? CellResult(stdout: "42\n") : CellResult()
/// }
/// ```
public final class InMemorySandbox: Sandbox {
    /// One cell as the script sees it.
    public struct Cell: Sendable {
        /// The code the engine sent.
        public var code: String
        /// The session's number (0 for the first session this sandbox started).
        public var session: Int
        /// The cell's number within its session (0 for the first).
        public var index: Int
        /// The context loaded into the session, if any.
        public var context: ContextValue?
        let handler: (any SubcallHandler)?

        /// Makes a sub-call as `llm_query`, `llm_query_batched` or `rlm_query` would from inside a sandbox.
        /// - Parameter request: the call.
        /// - Returns: the host's answer.
        /// - Throws: the handler's error, or an error when the session has no handler.
        public func subcall(_ request: SubcallRequest) async throws -> SubcallResponse {
            guard let handler else { throw SandboxError.setup("no sub-call handler is connected to this session") }
            return try await handler.handle(request)
        }
    }

    /// Produces each cell's result.
    public typealias Script = @Sendable (Cell) async throws -> CellResult

    private let script: Script
    private let state = Mutex(State())

    private struct State {
        var sessions = 0
        var live = 0
        var cells: [String] = []
    }

    /// - Parameter script: the result of each cell.
    public init(_ script: @escaping Script) {
        self.script = script
    }

    /// Results in order, across sessions; past the end, a cell that raised `RuntimeError`.
    /// - Parameter results: the cell results.
    public convenience init(results: [CellResult]) {
        let next = Mutex(0)
        self.init { _ in
            let index = next.withLock { value in
                defer { value += 1 }
                return value
            }
            guard index < results.count else {
                return CellResult(error: CellError(type: "RuntimeError", message: "script exhausted"))
            }
            return results[index]
        }
    }

    /// Sessions started so far.
    public var sessionsStarted: Int { state.withLock { $0.sessions } }
    /// Sessions started and not yet shut down.
    public var liveSessions: Int { state.withLock { $0.live } }
    /// The code of every cell run, in order.
    public var cellsRun: [String] { state.withLock { $0.cells } }

    public func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession {
        let number = state.withLock { state in
            defer {
                state.sessions += 1
                state.live += 1
            }
            return state.sessions
        }
        return InMemorySession(number: number, handler: handler, sandbox: self)
    }

    fileprivate func run(_ cell: Cell) async throws -> CellResult {
        state.withLock { $0.cells.append(cell.code) }
        return try await script(cell)
    }

    fileprivate func ended() {
        state.withLock { $0.live -= 1 }
    }
}

/// One scripted REPL: remembers the loaded context and the variables a script result names (`FINAL_VAR`).
private actor InMemorySession: SandboxSession {
    let number: Int
    let handler: (any SubcallHandler)?
    let sandbox: InMemorySandbox
    private var context: ContextValue?
    private var cells = 0
    private var alive = true

    init(number: Int, handler: (any SubcallHandler)?, sandbox: InMemorySandbox) {
        self.number = number
        self.handler = handler
        self.sandbox = sandbox
    }

    func run(_ code: String, timeout: Duration?) async throws -> CellResult {
        guard alive else { throw SandboxError.terminated("the in-memory session was shut down") }
        let cell = InMemorySandbox.Cell(
            code: code, session: number, index: cells, context: context, handler: handler)
        cells += 1
        let result = try await sandbox.run(cell)
        if result.stateLost { await shutdown() }
        return result
    }

    func loadContext(_ source: ContextSource, name: String, sample: Int) async throws -> ContextSummary {
        let context = try Self.read(source)
        self.context = context
        return ContextSummary.measure(context, sampleCharacters: sample)
    }

    /// The source's files read into memory, as UTF-8 (bad bytes replaced): this sandbox holds values.
    private static func read(_ source: ContextSource) throws -> ContextValue {
        let texts = try source.files.map { file -> String in
            let data: Data
            if case .data(let bytes) = file.content {
                data = bytes
            } else if let fd = try file.openForReading() {
                defer { close(fd) }
                data = FileHandle(fileDescriptor: fd, closeOnDealloc: false).readData(ofLength: file.size)
            } else {
                data = Data()
            }
            return String(decoding: data, as: UTF8.self)
        }
        switch source.shape {
        case .text:
            return .text(texts.first ?? "")
        case .documents:
            return .documents(
                zip(source.files, texts).map { file, text in file.label.isEmpty ? text : "### \(file.label)\n\(text)" })
        case .json:
            do {
                return .json(try JSONDecoder().decode(JSONValue.self, from: Data((texts.first ?? "").utf8)))
            } catch {
                throw ContextLoadError("context \(source.files.first?.label ?? "") is not valid JSON (\(error))")
            }
        }
    }

    func variable(named name: String) async throws -> VariableValue? {
        guard name == "context", let context else { return nil }
        switch context {
        case .text(let text): return VariableValue(value: text, typeName: "str")
        case .documents(let documents): return VariableValue(value: "\(documents)", typeName: "list")
        case .json(let value):
            let data = (try? JSONEncoder().encode(value)) ?? Data()
            return VariableValue(value: String(decoding: data, as: UTF8.self), typeName: "dict")
        }
    }

    func interrupt() async {}

    var isAlive: Bool { alive }

    var info: SessionInfo {
        SessionInfo(pythonVersion: "in-memory", landlock: "disabled", cgroups: false, hostUID: getuid())
    }

    func shutdown() async {
        guard alive else { return }
        alive = false
        sandbox.ended()
    }
}
