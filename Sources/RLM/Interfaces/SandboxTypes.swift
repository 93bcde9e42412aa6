import Foundation

/// What a context loaded into the REPL looks like to model-written code.
public enum ContextValue: Sendable, Hashable {
    /// One text: `context` is a `str`.
    case text(String)
    /// Several documents: `context` is a `list[str]`.
    case documents([String])
    /// Structured data: `context` is whatever the JSON decodes to (usually a `dict`).
    case json(JSONValue)

    /// The total number of characters of text in the context (for JSON, of its serialized form).
    public var characterCount: Int {
        switch self {
        case .text(let text): return text.count
        case .documents(let documents): return documents.reduce(0) { $0 + $1.count }
        case .json(let value): return (try? JSONEncoder().encode(value).count) ?? 0
        }
    }
}

/// A sub-call made by model-written code from inside the sandbox.
public enum SubcallRequest: Sendable, Hashable {
    /// `llm_query(prompt, model=None)`.
    case llmQuery(prompt: String, model: String?)
    /// `llm_query_batched(prompts, model=None)`: the host may run the prompts concurrently.
    case llmQueryBatched(prompts: [String], model: String?)
    /// `rlm_query(prompt, context=None, model=None)`: a child RLM one level deeper, driven by `model` (a declared
    /// model name) or the root model.
    case rlmQuery(prompt: String, context: ChildContext?, model: String?)
}

/// The context an `rlm_query` hands its child.
public enum ChildContext: Sendable, Hashable {
    /// A value (from a sandbox that holds values, or a test).
    case value(JSONValue)
    /// Bytes the parent sandbox streamed out, spooled to a private file the child's sandbox reads in turn: never
    /// held by the host as one string.
    case streamed(StreamedContext)
}

/// A child's context as a ``ContextSource`` over a spooled file (compared by identity).
public final class StreamedContext: Sendable, Hashable {
    /// The source the child's sandbox loads.
    public let source: ContextSource

    /// - Parameter source: the spooled file, its shape and encoding.
    public init(source: ContextSource) {
        self.source = source
    }

    public static func == (lhs: StreamedContext, rhs: StreamedContext) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

/// The host's answer to a ``SubcallRequest``.
public enum SubcallResponse: Sendable, Hashable {
    /// The answer to `llm_query` or `rlm_query`.
    case text(String)
    /// The answers to `llm_query_batched`, one per prompt, in order.
    case batch([String])
}

/// Answers sub-calls made by code in a sandbox. The engine plugs its router in; tests plug a fake.
///
/// A thrown error reaches the model's code as a `RuntimeError` carrying the error's description.
public protocol SubcallHandler: Sendable {
    /// Answers one sub-call.
    /// - Parameter request: the call the sandboxed code made.
    /// - Returns: `.text` for `llm_query`/`rlm_query`, `.batch` with one answer per prompt for `llm_query_batched`.
    func handle(_ request: SubcallRequest) async throws -> SubcallResponse
}

/// A ``SubcallHandler`` built from a closure.
public struct ClosureSubcallHandler: SubcallHandler {
    private let body: @Sendable (SubcallRequest) async throws -> SubcallResponse

    /// - Parameter body: answers each sub-call.
    public init(_ body: @escaping @Sendable (SubcallRequest) async throws -> SubcallResponse) {
        self.body = body
    }

    public func handle(_ request: SubcallRequest) async throws -> SubcallResponse {
        try await body(request)
    }
}

/// An exception raised by a cell, or the reason it did not finish.
public struct CellError: Sendable, Hashable, Codable {
    /// The Python exception's type name (`ValueError`, `SyntaxError`, `KeyboardInterrupt`), or one of the host's
    /// own: `Timeout` (killed after a timeout), `MemoryError` (killed for memory), `SandboxDied`.
    public var type: String
    /// The exception's message, or the host's explanation.
    public var message: String
    /// The traceback, without the worker's own frames; empty for host-side errors.
    public var traceback: String

    /// - Parameters:
    ///   - type: the exception type name.
    ///   - message: the message.
    ///   - traceback: the formatted traceback.
    public init(type: String, message: String, traceback: String = "") {
        self.type = type
        self.message = message
        self.traceback = traceback
    }
}

/// The outcome of running one cell.
public struct CellResult: Sendable, Hashable {
    /// Everything written to fd 1 during the cell (head+tail truncated by the worker).
    public var stdout: String
    /// Everything written to fd 2 during the cell (head+tail truncated by the worker).
    public var stderr: String
    /// The exception the cell raised, or why it did not finish; `nil` when it ran to the end.
    public var error: CellError?
    /// The cell ran past its timeout.
    public var timedOut: Bool
    /// Wall time of the cell as seen by the host.
    public var duration: Duration
    /// A final answer given by `FINAL(…)`, `FINAL_VAR(…)` or the `answer` dict during this cell.
    public var finalAnswer: String?
    /// The sandbox was killed during this cell: the REPL state is gone and the session is over.
    public var stateLost: Bool
    /// The sandbox ran out of memory (a `MemoryError`, or the kernel killed it at its memory limit).
    public var memoryExceeded: Bool

    /// - Parameters: the fields, as documented on each property.
    public init(
        stdout: String = "",
        stderr: String = "",
        error: CellError? = nil,
        timedOut: Bool = false,
        duration: Duration = .zero,
        finalAnswer: String? = nil,
        stateLost: Bool = false,
        memoryExceeded: Bool = false
    ) {
        self.stdout = stdout
        self.stderr = stderr
        self.error = error
        self.timedOut = timedOut
        self.duration = duration
        self.finalAnswer = finalAnswer
        self.stateLost = stateLost
        self.memoryExceeded = memoryExceeded
    }

    /// Milliseconds of ``duration``.
    public var durationMilliseconds: Double { duration.inMilliseconds }
}

/// A variable read back from the REPL.
public struct VariableValue: Sendable, Hashable {
    /// `str()` of the object (cut when larger than half a frame, with a note).
    public var value: String
    /// The Python type name.
    public var typeName: String

    /// - Parameters:
    ///   - value: `str()` of the object.
    ///   - typeName: the Python type name.
    public init(value: String, typeName: String) {
        self.value = value
        self.typeName = typeName
    }
}

/// Errors from a sandbox. The description is safe to log and to show a user.
public struct SandboxError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case setup
        case startFailed
        case protocolViolation
        case terminated
        case busy
    }

    private let code: Code
    /// What went wrong and, where there is one, what to do about it.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The sandbox cannot be set up (missing bubblewrap or Python, bad configuration).
    public static func setup(_ message: String) -> SandboxError { SandboxError(.setup, message) }
    /// The sandbox process did not start or died before it was ready.
    public static func startFailed(_ message: String) -> SandboxError { SandboxError(.startFailed, message) }
    /// The worker sent a frame the host refuses; the sandbox has been killed.
    public static func protocolViolation(_ message: String) -> SandboxError {
        SandboxError(.protocolViolation, "sandbox killed: protocol violation: \(message)")
    }
    /// The session is over (killed after a timeout, out of memory, or shut down).
    public static func terminated(_ message: String) -> SandboxError { SandboxError(.terminated, message) }
    /// Another call is already running in this session.
    public static func busy() -> SandboxError {
        SandboxError(.busy, "the sandbox session is already running a cell; calls must not overlap")
    }

    /// Whether this is a setup error (missing tools, bad configuration): exit code 2 in the CLI.
    public var isSetupError: Bool { code == .setup || code == .startFailed }
    /// Whether the worker broke the channel protocol.
    public var isProtocolViolation: Bool { code == .protocolViolation }
    /// Whether the session had already ended.
    public var isTerminated: Bool { code == .terminated }

    public var description: String { message }
}
