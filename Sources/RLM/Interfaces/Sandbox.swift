import Foundation

/// A place to run model-written Python: starts isolated REPL sessions.
public protocol Sandbox: Sendable {
    /// Starts a fresh session: a new isolated worker with an empty namespace.
    /// - Parameter handler: answers `llm_query`, `llm_query_batched` and `rlm_query` from the session's code;
    ///   `nil` makes those calls raise in the REPL.
    /// - Returns: the running session. Call ``SandboxSession/shutdown()`` when done, or use
    ///   ``Sandbox/withSession(handler:_:)``.
    func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession
}

/// One running REPL: state persists across cells until it is shut down or killed.
public protocol SandboxSession: AnyObject, Sendable {
    /// Runs one cell.
    /// - Parameters:
    ///   - code: Python source.
    ///   - timeout: wall-clock limit; past it the cell is interrupted (state kept) and, if it does not stop within
    ///     the grace period, the sandbox is killed (state lost). `nil` uses the configured default.
    /// - Returns: the cell's output and outcome. Timeouts and memory kills are outcomes, not thrown errors.
    /// - Throws: ``SandboxError`` when the session is over, busy, or the worker broke the protocol.
    func run(_ code: String, timeout: Duration?) async throws -> CellResult

    /// Builds a context inside the sandbox from its sources and binds it to `name`: the sandbox reads the files as
    /// they stream in (the host never holds them) and measures what it built.
    /// - Parameters:
    ///   - source: the files (or in-memory bytes), the shape and the encoding.
    ///   - name: the variable name, a Python identifier.
    ///   - sample: how many characters of the head to return in the summary.
    /// - Returns: what the sandbox measured; files it left out are in ``ContextSummary/skipped``.
    /// - Throws: ``ContextLoadError`` when the context cannot be built (an undecodable single text, invalid JSON,
    ///   out of memory) — the REPL state is kept; ``SandboxError`` when the session broke.
    func loadContext(_ source: ContextSource, name: String, sample: Int) async throws -> ContextSummary

    /// Reads `str()` of a variable from the REPL, or `nil` when there is no such variable.
    /// - Parameter name: the variable's name.
    func variable(named name: String) async throws -> VariableValue?

    /// Raises `KeyboardInterrupt` in the running cell, if there is one (the REPL state is kept).
    func interrupt() async

    /// Whether the worker is still alive (not killed, not shut down).
    var isAlive: Bool { get async }

    /// Information about the running worker and the isolation in force.
    var info: SessionInfo { get async }

    /// Kills the sandbox and everything in it. Safe to call twice.
    func shutdown() async
}

/// What a session reports about itself.
public struct SessionInfo: Sendable, Hashable {
    /// The Python version inside.
    public var pythonVersion: String
    /// Landlock status as the worker saw it: `enforced abi N`, `unsupported`, `failed: …` or `disabled`.
    public var landlock: String
    /// Whether the sandbox is in its own cgroups (memory and pids limits enforced by the kernel).
    public var cgroups: Bool
    /// The uid the sandbox runs as on the host.
    public var hostUID: UInt32

    /// - Parameters: as the properties.
    public init(pythonVersion: String, landlock: String, cgroups: Bool, hostUID: UInt32) {
        self.pythonVersion = pythonVersion
        self.landlock = landlock
        self.cgroups = cgroups
        self.hostUID = hostUID
    }
}

extension SandboxSession {
    /// Runs one cell with the configured default timeout.
    /// - Parameter code: Python source.
    public func run(_ code: String) async throws -> CellResult {
        try await run(code, timeout: nil)
    }

    /// Loads a context held in memory as the variable `name` (default `context`).
    /// - Parameters:
    ///   - context: the text, documents or JSON.
    ///   - name: the variable name.
    @discardableResult
    public func loadContext(_ context: ContextValue, name: String = "context") async throws -> ContextSummary {
        try await loadContext(ContextSource(context), name: name, sample: 2000)
    }
}

extension Sandbox {
    /// Runs `body` with a fresh session and always shuts the session down afterwards, even on error or cancellation.
    /// - Parameters:
    ///   - handler: answers sub-calls from the session's code.
    ///   - body: what to do with the session.
    public func withSession<T: Sendable>(
        handler: (any SubcallHandler)? = nil,
        _ body: (any SandboxSession) async throws -> T
    ) async throws -> T {
        let session = try await startSession(handler: handler)
        do {
            let value = try await body(session)
            await session.shutdown()
            return value
        } catch {
            await session.shutdown()
            throw error
        }
    }
}
