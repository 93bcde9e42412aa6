import Foundation
import RLM
import RLMLocal

/// Errors the runtime raises itself (bad options, a models file, an unpriced model under `--max-cost`). The
/// description is safe to log and tells the user what to do.
public struct RuntimeError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case usage
        case setup
    }

    private let code: Code
    /// What went wrong and what to do.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The request or the flags are wrong (a bad value, a file that does not parse, a model with no price).
    public static func usage(_ message: String) -> RuntimeError { RuntimeError(.usage, message) }
    /// Something the run needs is missing on this machine or cannot be set up.
    public static func setup(_ message: String) -> RuntimeError { RuntimeError(.setup, message) }

    /// Whether the user's input is at fault (rather than the machine).
    public var isUsage: Bool { code == .usage }

    public var description: String { message }
}

/// What went wrong in a run, once, for every front end: the kind (stable, for scripts and metrics), a message safe to
/// show, and how each front end reports it — the CLI's exit code, the HTTP status, the JSON-RPC error code.
public struct RunFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// Stable names, printed in `--json` as `error.kind`.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// Bad flags, request fields or files (exit 2, HTTP 400).
        case usage
        /// A context that cannot be read or is too large (exit 2, HTTP 400 or 413).
        case context
        /// A missing tool, model, Python or sandbox feature on this machine (exit 2, HTTP 500).
        case setup
        /// The model provider refused the key (exit 2, HTTP 502: the server's own key is wrong, not the client's).
        case unauthorized
        /// The provider could not be reached or timed out (exit 1, HTTP 503).
        case unreachable
        /// The provider kept answering 429 (exit 1, HTTP 429).
        case rateLimited
        /// The provider failed or answered nonsense (exit 1, HTTP 502).
        case provider
        /// The sandbox broke: a protocol violation, a crash (exit 1, HTTP 500).
        case sandbox
        /// The run was cancelled (SIGINT/SIGTERM, a client that went away) (exit 130, HTTP 499 is not standard: 503).
        case interrupted
        /// Anything else (exit 1, HTTP 500).
        case `internal`
    }

    /// The kind.
    public var kind: Kind
    /// What happened and what to do; safe to show and to log.
    public var message: String
    /// The input was over a size limit (HTTP 413 rather than 400).
    public var tooLarge = false

    /// - Parameters:
    ///   - kind: the kind.
    ///   - message: what happened and what to do.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// The `rlm run` exit status (contract 2): 2 usage or setup error, 1 other failure, 130 interrupted.
    public var exitCode: Int32 {
        switch kind {
        case .usage, .context, .setup, .unauthorized: return 2
        case .interrupted: return 130
        case .unreachable, .rateLimited, .provider, .sandbox, .internal: return 1
        }
    }

    /// The HTTP status the API answers with (contract 4).
    public var httpStatus: Int {
        switch kind {
        case .usage: return 400
        case .context: return tooLarge ? 413 : 400
        case .rateLimited: return 429
        case .unreachable, .interrupted: return 503
        case .unauthorized, .provider: return 502
        case .setup, .sandbox, .internal: return 500
        }
    }

    /// OpenAI's error `type` for the HTTP API's error body.
    public var openAIErrorType: String {
        switch kind {
        case .usage, .context: return "invalid_request_error"
        case .rateLimited: return "rate_limit_error"
        default: return "server_error"
        }
    }

    /// The JSON-RPC error code the MCP server answers with: invalid params for the caller's mistakes, internal error
    /// otherwise.
    public var jsonRPCCode: Int {
        switch kind {
        case .usage, .context: return -32602
        default: return -32603
        }
    }

    /// Classifies any error a run can throw. The one place errors become outcomes.
    /// - Parameter error: what was thrown.
    public static func classify(_ error: any Error) -> RunFailure {
        switch error {
        case let failure as RunFailure:
            return failure
        case let error as RuntimeError:
            return RunFailure(error.isUsage ? .usage : .setup, error.message)
        case let error as ContextLoadError:
            var failure = RunFailure(.context, error.description)
            failure.tooLarge = error.isTooLarge
            return failure
        case let error as LLMError:
            switch error.kind {
            case .configuration: return RunFailure(.usage, error.message)
            case .unauthorized: return RunFailure(.unauthorized, error.message)
            case .rateLimited: return RunFailure(.rateLimited, error.message)
            case .transport, .timeout: return RunFailure(.unreachable, error.message)
            case .contextOverflow, .badRequest, .server, .invalidResponse: return RunFailure(.provider, error.message)
            }
        case let error as SandboxError:
            return RunFailure(error.isSetupError ? .setup : .sandbox, error.message)
        case let error as LocalModelError:
            return RunFailure(.setup, error.description)
        case let error as PathError:
            return RunFailure(.setup, error.message)
        case is CancellationError:
            return RunFailure(.interrupted, "the run was interrupted")
        default:
            return RunFailure(.internal, String(describing: error))
        }
    }
}
