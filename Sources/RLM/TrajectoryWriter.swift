import Foundation
import Glibc
import Synchronization

/// Writes every event of a run as one JSON object per line (JSONL), replacing every secret the run holds and every
/// credential-shaped string (see ``SecretRedactor``) by `[REDACTED]` before it reaches the disk. Thread-safe: events arrive from many tasks.
public final class TrajectoryWriter: Sendable {
    /// Where the file is.
    public let path: String
    private let handle: Mutex<FileHandle?>
    private let redactor: SecretRedactor

    /// Opens (creating directories, truncating the file) a trajectory file. The file is born 0600 — created with
    /// that mode by `open(2)`, never chmod'ed after — and not through a link; a missing parent directory is created
    /// 0700.
    /// - Parameters:
    ///   - path: the file.
    ///   - secrets: strings that must never be written (API keys); each is replaced by `[REDACTED]`.
    public init(path: String, secrets: [String] = []) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: directory.path) {
            try SwiftRLMPaths.createDirectory(directory, privateToOwner: true)
        }
        // O_NONBLOCK: a FIFO planted at the path must not hang the run.
        let fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            throw PathError("cannot write the trajectory \(path): \(String(cString: strerror(errno)))")
        }
        // Only a regular file of ours is written (and truncated only then): never someone else's file, whose owner
        // could read the run, nor a device.
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == geteuid() else {
            Glibc.close(fd)
            throw PathError("cannot write the trajectory \(path): not a regular file owned by this user")
        }
        _ = ftruncate(fd, 0)
        // An existing file keeps its mode: tighten one found looser.
        if info.st_mode & 0o077 != 0 { fchmod(fd, 0o600) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        self.path = path
        self.handle = Mutex(FileHandle(fileDescriptor: fd, closeOnDealloc: true))
        self.redactor = SecretRedactor(secrets: secrets)
    }

    /// Appends one event.
    public func write(_ event: RLMEvent) {
        // Redacted field by field before encoding, so a secret holding characters JSON escapes is still found.
        var event = event
        event.data = event.data.mapValues(redactor.redact)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(event) else { return }
        let line = JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self))
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
            .appendingPathComponent(
                "trajectories/run-\(stamp)-\(String(UInt64.random(in: 0...UInt64.max), radix: 36)).jsonl"
            )
            .path
    }
}
