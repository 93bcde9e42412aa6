import Foundation
import RLM

/// Where SwiftRLM keeps local models, the server's Python environment and the running servers' state: the local
/// model's subdirectories of ``SwiftRLMPaths``, which reads the XDG variables.
///
/// Each function takes the environment explicitly so the entry point decides what is read; the default is the
/// process environment.
public enum LocalPaths {
    /// `$XDG_CACHE_HOME/swiftrlm/models`, or `~/.cache/swiftrlm/models`: where pulled models live.
    /// - Parameter environment: the variables to read.
    public static func modelsDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> URL {
        SwiftRLMPaths.cacheDirectory(environment: environment).appendingPathComponent("models", isDirectory: true)
    }

    /// `$XDG_DATA_HOME/swiftrlm/venv`, or `~/.local/share/swiftrlm/venv`: the private venv with xllamacpp.
    /// - Parameter environment: the variables to read.
    public static func venvDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        SwiftRLMPaths.dataDirectory(environment: environment).appendingPathComponent("venv", isDirectory: true)
    }

    /// `$XDG_RUNTIME_DIR/swiftrlm`, or `/tmp/swiftrlm-<uid>`: state files of running model servers.
    /// - Parameter environment: the variables to read.
    public static func runtimeDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> URL {
        SwiftRLMPaths.runtimeDirectory(environment: environment)
    }
}
