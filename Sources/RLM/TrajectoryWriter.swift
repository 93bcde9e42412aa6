import Foundation
import Synchronization

/// Writes every event of a run as one JSON object per line (JSONL), replacing any planted secret by `[REDACTED]`
/// before it reaches the disk. Thread-safe: events arrive from many tasks.
public final class TrajectoryWriter: Sendable {
    /// Where the file is.
    public let path: String
    private let handle: Mutex<FileHandle?>
    private let secrets: [String]

    /// Opens (creating directories, truncating the file) a trajectory file.
    /// - Parameters:
    ///   - path: the file.
    ///   - secrets: strings that must never be written (API keys); each is replaced by `[REDACTED]`.
    public init(path: String, secrets: [String] = []) throws {
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        else {
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: path])
        }
        self.path = path
        self.handle = Mutex(try FileHandle(forWritingTo: url))
        self.secrets = secrets.filter { $0.count >= 8 }
    }

    /// Appends one event.
    public func write(_ event: RLMEvent) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(event) else { return }
        var line = JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self))
        for secret in secrets { line = line.replacingOccurrences(of: secret, with: "[REDACTED]") }
        handle.withLock { try? $0?.write(contentsOf: Data((line + "\n").utf8)) }
    }

    /// Flushes and closes the file.
    public func close() {
        handle.withLock {
            try? $0?.close()
            $0 = nil
        }
    }

    /// `$XDG_STATE_HOME/swiftrlm/trajectories/run-<time>-<random>.jsonl` (or under `~/.local/state`).
    /// - Parameter environment: where the XDG variables come from.
    public static func defaultPath(environment: [String: String]) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = formatter.string(from: Date())
        return SwiftRLMPaths.stateDirectory(environment: environment)
            .appendingPathComponent("trajectories/run-\(stamp)-\(UInt16.random(in: 0...UInt16.max)).jsonl").path
    }
}
