import Foundation
import Glibc
import Synchronization

/// Writes every event of a run as one JSON object per line (JSONL, schema version 1: `docs/TRAJECTORY.md`). It stamps
/// each line with the schema version, the run's id and a sequence number; it redacts every text field — the secrets
/// the run holds and every credential-shaped string become `[REDACTED]` (see ``SecretRedactor``), and personal data is
/// masked when asked (``PIIMask``) — and only then cuts it to its limit (``limits``), so a secret crossing a cut
/// never survives in part. Each line is written with one `write(2)` as it comes: a crash or SIGKILL leaves a valid
/// prefix. Past ``maxBytes`` the trajectory continues in `<stem>.2.jsonl`, `<stem>.3.jsonl`, … in the same directory.
/// Thread-safe: events arrive from many tasks.
public final class TrajectoryWriter: Sendable {
    /// Where the file (its first part) is.
    public let path: String
    /// The size past which the next line goes to a new part.
    public let maxBytes: Int
    private let state: Mutex<State>
    private let redactor: SecretRedactor
    private let settings: [String: JSONValue]

    private struct State {
        var handle: FileHandle?
        var run: String
        var seq = 0
        var bytes = 0
        var paths: [String]
    }

    /// 64 MiB.
    public static let defaultMaxBytes = 64 << 20

    /// The most characters each text field keeps after redaction, by field name (nested fields too: a message's
    /// `content`, an error's `message`); any other text keeps ``defaultLimit``.
    public static let limits: [String: Int] = [
        "code": 4000, "stdout": 4000, "stderr": 2000, "text": 8000, "content": 8000, "prompt": 2000, "reply": 2000,
        "answer": 2000, "query": 2000, "message": 2000, "note": 2000, "reason": 2000,
    ]
    /// The limit of a text field not in ``limits``.
    public static let defaultLimit = 2000

    /// Opens (creating directories, truncating the file) a trajectory file. The file is born 0600 — created with
    /// that mode by `open(2)`, never chmod'ed after — and not through a link; a missing parent directory is created
    /// 0700. Every later part is opened the same way.
    /// - Parameters:
    ///   - path: the file.
    ///   - secrets: strings that must never be written (API keys); each is replaced by `[REDACTED]`.
    ///   - maskPII: also mask emails, phone, card and id numbers (`--redact-pii`).
    ///   - maxBytes: the size of a part before the next one starts.
    ///   - settings: added to the `configuration` of every `run_started` (what the front end knows: the provider,
    ///     the base URL); never put a key here.
    public init(
        path: String, secrets: [String] = [], maskPII: Bool = false, maxBytes: Int = TrajectoryWriter.defaultMaxBytes,
        settings: [String: JSONValue] = [:]
    ) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: directory.path) {
            try SwiftRLMPaths.createDirectory(directory, privateToOwner: true)
        }
        let handle = try Self.openPrivate(path)
        self.path = path
        self.maxBytes = max(1, maxBytes)
        self.state = Mutex(State(handle: handle, run: Self.stem(of: path), paths: [path]))
        self.redactor = SecretRedactor(secrets: secrets, maskPII: maskPII)
        self.settings = settings
    }

    /// Every part written so far, the first one first.
    public var paths: [String] { state.withLock { $0.paths } }

    /// The id the next events are stamped with.
    public var runID: String { state.withLock { $0.run } }

    /// Starts a new run in the same file: the next events carry `id` (a conversation writes one run per question).
    /// The sequence numbers go on.
    /// - Parameter id: the run's id.
    public func startRun(id: String) {
        state.withLock { $0.run = id }
    }

    /// Appends one event: stamped, redacted, cut, one line.
    public func write(_ event: RLMEvent) {
        var event = prepared(event)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        state.withLock { state in
            guard state.handle != nil else { return }
            event.run = state.run
            event.seq = state.seq
            guard let data = try? encoder.encode(event) else { return }
            let line = Data((JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self)) + "\n").utf8)
            if state.bytes > 0, state.bytes + line.count > maxBytes {
                rotate(&state)
            }
            guard (try? state.handle?.write(contentsOf: line)) != nil else { return }
            state.bytes += line.count
            state.seq += 1
        }
    }

    /// The event as it is written: every text field redacted, then cut to its limit; a `run_started` also gets the
    /// writer's settings.
    /// - Parameter event: an event as the engine emitted it (text whole).
    public func prepared(_ event: RLMEvent) -> RLMEvent {
        var event = event
        if event.kind == .runStarted, !settings.isEmpty {
            var configuration = event.data["configuration"]?.objectValue ?? [:]
            configuration.merge(settings) { _, new in new }
            event.data["configuration"] = .object(configuration)
        }
        // Redacted field by field before encoding, so a secret holding characters JSON escapes is still found.
        event.data = event.data.mapValues { value in
            value.mapStrings { text, key in
                redactor.redactThenCut(text, limit: key.flatMap { Self.limits[$0] } ?? Self.defaultLimit)
            }
        }
        return event
    }

    /// Flushes and closes the file.
    public func close() {
        state.withLock {
            try? $0.handle?.close()
            $0.handle = nil
        }
    }

    /// Continues in the next part. A part that cannot be opened leaves the writer where it is: a trajectory grows
    /// past its size rather than losing its end.
    private func rotate(_ state: inout State) {
        let next = Self.partPath(path, part: state.paths.count + 1)
        guard let handle = try? Self.openPrivate(next) else { return }
        try? state.handle?.close()
        state.handle = handle
        state.paths.append(next)
        state.bytes = 0
    }

    /// `<dir>/<stem>.<part>.jsonl`: the file's name without its extension, the part's number (2, 3, …).
    /// - Parameters:
    ///   - path: the first part.
    ///   - part: the number.
    public static func partPath(_ path: String, part: Int) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent("\(stem(of: path)).\(part).jsonl").path
    }

    /// The file's name without `.jsonl` (or its other extension): the default run id.
    static func stem(of path: String) -> String {
        URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    }

    /// Opens `path` for writing: created 0600 by `open(2)`, never through a symbolic link, only a regular file owned
    /// by this user (never someone else's file, whose owner could read the run, nor a device), truncated only then.
    private static func openPrivate(_ path: String) throws -> FileHandle {
        // O_NONBLOCK: a FIFO planted at the path must not hang the run.
        let fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            throw PathError("cannot write the trajectory \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == geteuid() else {
            Glibc.close(fd)
            throw PathError("cannot write the trajectory \(path): not a regular file owned by this user")
        }
        _ = ftruncate(fd, 0)
        // An existing file keeps its mode: tighten one found looser.
        if info.st_mode & 0o077 != 0 { fchmod(fd, 0o600) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
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
