import Foundation

/// Where a server store lives: the directory holding `keys.sqlite` (the ``SQLiteKeyStore``) and `contexts/` (the bytes
/// of uploaded contexts). `rlm serve --store PATH` and `rlm keys --store PATH` name it; without the flag it is
/// `$XDG_DATA_HOME/swiftrlm`, else `~/.local/share/swiftrlm`.
public struct StoreLocation: Sendable, Hashable {
    /// The store directory (absolute).
    public var directory: String
    /// Whether `--store` named the directory (rather than the XDG default).
    public var isExplicit: Bool

    /// The key store's database file.
    public var keysDatabase: String { (directory as NSString).appendingPathComponent("keys.sqlite") }
    /// The directory of uploaded contexts' bytes.
    public var contextsDirectory: String { (directory as NSString).appendingPathComponent("contexts") }

    /// A store at `directory`.
    /// - Parameter directory: the store directory; `~` is expanded and a relative path is taken from the current
    ///   directory.
    public init(directory: String) {
        self.directory = Self.absolute(directory)
        self.isExplicit = true
    }

    /// The store `--store` names, else the default one.
    /// - Parameters:
    ///   - store: the `--store PATH` value, if given.
    ///   - environment: where `XDG_DATA_HOME` and `HOME` are read (the process's by default; read only here).
    public init(store: String?, environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let store {
            self.init(directory: store)
        } else {
            self.init(defaultIn: environment)
        }
    }

    private init(defaultIn environment: [String: String]) {
        directory = Self.defaultDirectory(environment: environment)
        isExplicit = false
    }

    /// `$XDG_DATA_HOME/swiftrlm` when XDG_DATA_HOME is an absolute path (the XDG spec says to ignore a relative
    /// one), else `$HOME/.local/share/swiftrlm`.
    /// - Parameter environment: where `XDG_DATA_HOME` and `HOME` are read.
    public static func defaultDirectory(environment: [String: String]) -> String {
        if let data = environment["XDG_DATA_HOME"], data.hasPrefix("/") {
            return (data as NSString).appendingPathComponent("swiftrlm")
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return (home as NSString).appendingPathComponent(".local/share/swiftrlm")
    }

    private static func absolute(_ path: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        if expanded.hasPrefix("/") { return expanded }
        return (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(expanded)
    }
}
