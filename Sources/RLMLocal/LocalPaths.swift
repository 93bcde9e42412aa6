import Foundation
import Glibc

/// Where SwiftRLM keeps local models, the server's Python environment and the running servers' state, following the
/// XDG base directory conventions.
///
/// Each function takes the environment explicitly so the entry point decides what is read; the default is the
/// process environment.
public enum LocalPaths {
    /// `$XDG_CACHE_HOME/swiftrlm/models`, or `~/.cache/swiftrlm/models`: where pulled models live.
    /// - Parameter environment: the variables to read.
    public static func modelsDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> URL {
        base("XDG_CACHE_HOME", fallback: ".cache", environment: environment)
            .appendingPathComponent("swiftrlm/models", isDirectory: true)
    }

    /// `$XDG_DATA_HOME/swiftrlm/venv`, or `~/.local/share/swiftrlm/venv`: the private venv with xllamacpp.
    /// - Parameter environment: the variables to read.
    public static func venvDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        base("XDG_DATA_HOME", fallback: ".local/share", environment: environment)
            .appendingPathComponent("swiftrlm/venv", isDirectory: true)
    }

    /// `$XDG_RUNTIME_DIR/swiftrlm`, or `/tmp/swiftrlm-<uid>`: state files of running model servers.
    /// - Parameter environment: the variables to read.
    public static func runtimeDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> URL {
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            return URL(fileURLWithPath: runtime, isDirectory: true).appendingPathComponent(
                "swiftrlm", isDirectory: true)
        }
        return URL(fileURLWithPath: "/tmp/swiftrlm-\(getuid())", isDirectory: true)
    }

    private static func base(_ variable: String, fallback: String, environment: [String: String]) -> URL {
        if let value = environment[variable], value.hasPrefix("/") {
            return URL(fileURLWithPath: value, isDirectory: true)
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return URL(fileURLWithPath: home, isDirectory: true).appendingPathComponent(fallback, isDirectory: true)
    }
}

/// Creates `directory` (and parents) if missing.
func createDirectory(_ directory: URL, privateToOwner: Bool = false) throws {
    do {
        try FileManager.default.createDirectory(
            at: directory, withIntermediateDirectories: true,
            attributes: privateToOwner ? [.posixPermissions: 0o700] : nil)
    } catch {
        throw LocalModelError.storage("cannot create \(directory.path): \(error.localizedDescription)")
    }
    guard privateToOwner else { return }
    // A directory under /tmp could have been made by someone else first: refuse one we do not own or that others
    // can write, since the state files in it decide which process we talk to.
    var info = stat()
    guard lstat(directory.path, &info) == 0 else {
        throw LocalModelError.storage("cannot inspect \(directory.path): \(String(cString: strerror(errno)))")
    }
    guard (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == getuid(), info.st_mode & 0o022 == 0 else {
        throw LocalModelError.storage(
            "\(directory.path) is not a private directory owned by this user; remove it or set XDG_RUNTIME_DIR")
    }
}
