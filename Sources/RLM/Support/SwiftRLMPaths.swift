import Foundation
import Glibc

/// Where SwiftRLM keeps its files, following the XDG base directory conventions. The one place that reads
/// `XDG_*_HOME` and `HOME`: every module asks here.
///
/// Each function takes the environment explicitly so the entry point decides what is read; the default is the process
/// environment.
public enum SwiftRLMPaths {
    /// `$XDG_CACHE_HOME/swiftrlm`, or `~/.cache/swiftrlm`: pulled models, the compiled worker.
    /// - Parameter environment: the variables to read.
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        base("XDG_CACHE_HOME", fallback: ".cache", environment: environment)
    }

    /// `$XDG_DATA_HOME/swiftrlm`, or `~/.local/share/swiftrlm`: the model server's venv, keys.
    /// - Parameter environment: the variables to read.
    public static func dataDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        base("XDG_DATA_HOME", fallback: ".local/share", environment: environment)
    }

    /// `$XDG_STATE_HOME/swiftrlm`, or `~/.local/state/swiftrlm`: trajectories and audit logs.
    /// - Parameter environment: the variables to read.
    public static func stateDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        base("XDG_STATE_HOME", fallback: ".local/state", environment: environment)
    }

    /// `$XDG_RUNTIME_DIR/swiftrlm`, or `/tmp/swiftrlm-<uid>`: state files and locks of running model servers.
    /// - Parameter environment: the variables to read.
    public static func runtimeDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            return URL(fileURLWithPath: runtime, isDirectory: true).appendingPathComponent(
                "swiftrlm", isDirectory: true)
        }
        return URL(fileURLWithPath: "/tmp/swiftrlm-\(getuid())", isDirectory: true)
    }

    /// Creates `directory` (and its parents) if missing. With `privateToOwner`, the directory is made 0700 and then
    /// checked: one that is a symlink, belongs to another user or is writable by group or others is refused, since a
    /// directory under /tmp (or a shared home) could have been made by someone else first.
    /// - Parameters:
    ///   - directory: the directory.
    ///   - privateToOwner: make it 0700 and verify ownership and mode.
    /// - Throws: ``PathError`` saying what is wrong and what to do.
    public static func createDirectory(_ directory: URL, privateToOwner: Bool = false) throws {
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true,
                attributes: privateToOwner ? [.posixPermissions: 0o700] : nil)
        } catch {
            throw PathError("cannot create \(directory.path): \(error.localizedDescription)")
        }
        guard privateToOwner else { return }
        var info = stat()
        guard lstat(directory.path, &info) == 0 else {
            throw PathError("cannot inspect \(directory.path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == getuid(), info.st_mode & 0o022 == 0 else {
            throw PathError(
                "\(directory.path) is not a private directory owned by this user; remove it or point the XDG "
                    + "variable elsewhere")
        }
    }

    /// Whether `path` is a regular file owned by this user and not writable by group or others: the test a cached
    /// file must pass before it is trusted.
    /// - Parameter path: the file.
    public static func isPrivateFile(_ path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else { return false }
        return (info.st_mode & S_IFMT) == S_IFREG && info.st_uid == getuid() && info.st_mode & 0o022 == 0
    }

    /// The first executable called `name` on `PATH` (or `name` itself when it contains a `/` and is executable).
    /// - Parameters:
    ///   - name: a program name (`bwrap`, `python3`) or a path.
    ///   - environment: where `PATH` comes from.
    /// - Returns: the absolute path, or `nil` when there is none.
    public static func executable(
        named name: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = environment["PATH"].flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(name)"
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    private static func base(_ variable: String, fallback: String, environment: [String: String]) -> URL {
        let root: URL
        if let value = environment[variable], value.hasPrefix("/") {
            root = URL(fileURLWithPath: value, isDirectory: true)
        } else {
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            root = URL(fileURLWithPath: home, isDirectory: true).appendingPathComponent(fallback, isDirectory: true)
        }
        return root.appendingPathComponent("swiftrlm", isDirectory: true)
    }
}

/// A directory or file SwiftRLM needs is missing, unsafe or cannot be created. The message is safe to show.
public struct PathError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong and what to do.
    public let message: String
    /// - Parameter message: what is wrong and what to do.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
