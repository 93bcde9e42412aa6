import Foundation
import Glibc
import RLM

/// One JSON line per run, appended to `$XDG_STATE_HOME/swiftrlm/audit.jsonl` (or a path of the caller's): who ran
/// what, on which models, for how many tokens and dollars, and how it ended.
///
/// The file is born 0600 (by `open(2)` with `O_CREAT | O_APPEND | O_NOFOLLOW`, in a 0700 directory when it makes
/// one) and only ever written when it is a regular file of this user. Each line is redacted (the run's secrets and
/// every credential shape, see ``SecretRedactor``), kept short (long fields are cut), and written with one `write(2)`
/// on an `O_APPEND` descriptor, so lines appended by several processes at once never interleave.
/// ``prune(olderThan:now:)`` rewrites the file atomically (a temporary 0600 file, then `rename(2)`) holding an
/// exclusive `flock` on the directory, and appenders hold a shared one, so no line is lost to a prune.
public struct AuditLog: Sendable {
    /// Who asked for the run. Never a key: an API key is named by its id.
    public enum Principal: Sendable, Hashable {
        /// A local user (the CLI): login name and uid.
        case user(name: String, uid: UInt32)
        /// A client of `rlm serve`, by the id of its key.
        case apiKey(id: String)

        /// The user running this process.
        public static func currentUser() -> Principal {
            let uid = getuid()
            var record = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: 4096)
            let found = getpwuid_r(uid, &record, &buffer, buffer.count, &result) == 0 && result != nil
            let name = found ? String(cString: record.pw_name) : String(uid)
            return .user(name: name, uid: uid)
        }
    }

    /// How a run ended (the `status` of its `run_finished`).
    public enum Outcome: String, Sendable, Hashable, CaseIterable {
        /// It answered.
        case answered
        /// A budget ran out first.
        case budgetExhausted = "budget_exhausted"
        /// It ended without an answer and without running out of budget.
        case noAnswer = "no_answer"
        /// It failed (`error_kind` says how).
        case error
        /// SIGINT, SIGTERM or a client that went away stopped it.
        case interrupted
    }

    /// One line of the log.
    public struct Entry: Sendable, Hashable {
        /// When the run ended.
        public var time: Date
        /// Who asked.
        public var principal: Principal
        /// The trajectory id (`run-…`); `nil` when the run failed before it had one.
        public var run: String?
        /// The models the run could call (root first).
        public var models: [String]
        /// Input tokens of the whole run tree.
        public var inputTokens: Int
        /// Output tokens of the whole run tree.
        public var outputTokens: Int
        /// Cost in USD; `nil` when unknown.
        public var costUSD: Double?
        /// Wall time.
        public var durationMs: Int
        /// How it ended.
        public var outcome: Outcome
        /// For ``Outcome/error`` (and `interrupted`): the failure's kind (`RunFailure.Kind`, e.g. `provider`).
        public var errorKind: String?
        /// The trajectory's path.
        public var trajectory: String?

        /// - Parameters: as the properties.
        public init(
            time: Date = Date(), principal: Principal = .currentUser(), run: String?, models: [String],
            inputTokens: Int = 0, outputTokens: Int = 0, costUSD: Double? = nil, durationMs: Int, outcome: Outcome,
            errorKind: String? = nil, trajectory: String?
        ) {
            self.time = time
            self.principal = principal
            self.run = run
            self.models = models
            self.inputTokens = inputTokens
            self.outputTokens = outputTokens
            self.costUSD = costUSD
            self.durationMs = durationMs
            self.outcome = outcome
            self.errorKind = errorKind
            self.trajectory = trajectory
        }

        /// The line for a run that ended with a result: answered, no answer, or a budget exhausted.
        /// - Parameters:
        ///   - result: the engine's result.
        ///   - models: the models the run could call (root first).
        ///   - trajectory: the trajectory's path; its id becomes ``run``.
        ///   - principal: who asked.
        ///   - time: when it ended.
        public init(
            result: RLMResult, models: [String], trajectory: String?, principal: Principal = .currentUser(),
            time: Date = Date()
        ) {
            let outcome: Outcome
            switch result.status {
            case .answered: outcome = result.answer == nil ? .noAnswer : .answered
            case .budgetExhausted: outcome = .budgetExhausted
            }
            self.init(
                time: time, principal: principal, run: trajectory.map(TrajectoryStore.id(ofPath:)), models: models,
                inputTokens: result.usage.tokens.inputTokens, outputTokens: result.usage.tokens.outputTokens,
                costUSD: result.usage.costUSD, durationMs: Int(result.duration.inMilliseconds), outcome: outcome,
                trajectory: trajectory)
        }

        /// The line for a run that failed.
        /// - Parameters:
        ///   - errorKind: the failure's kind (`RunFailure.classify(error).kind.rawValue`); `interrupted` makes the
        ///     outcome ``Outcome/interrupted``, any other kind ``Outcome/error``.
        ///   - models: the models the run could call (root first); empty when it failed before resolving them.
        ///   - trajectory: the trajectory's path, when one was opened.
        ///   - usage: the usage so far, when known (the last event's `usage`).
        ///   - duration: wall time until the failure.
        ///   - principal: who asked.
        ///   - time: when it ended.
        public init(
            errorKind: String, models: [String], trajectory: String?, usage: RunUsage? = nil, duration: Duration,
            principal: Principal = .currentUser(), time: Date = Date()
        ) {
            self.init(
                time: time, principal: principal, run: trajectory.map(TrajectoryStore.id(ofPath:)), models: models,
                inputTokens: usage?.tokens.inputTokens ?? 0, outputTokens: usage?.tokens.outputTokens ?? 0,
                costUSD: usage?.costUSD, durationMs: Int(duration.inMilliseconds),
                outcome: errorKind == "interrupted" ? .interrupted : .error, errorKind: errorKind,
                trajectory: trajectory)
        }
    }

    /// The log file.
    public let path: String
    private let redactor: SecretRedactor

    /// `$XDG_STATE_HOME/swiftrlm/audit.jsonl` (or under `~/.local/state`).
    /// - Parameter environment: where the XDG variables come from.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        SwiftRLMPaths.stateDirectory(environment: environment).appendingPathComponent("audit.jsonl").path
    }

    /// - Parameters:
    ///   - path: the log file; `nil` for ``defaultPath(environment:)``.
    ///   - secrets: values no line may hold (the run's keys); each is replaced by `[REDACTED]`.
    ///   - environment: where the XDG variables come from.
    public init(
        path: String? = nil, secrets: [String] = [],
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.path = path ?? Self.defaultPath(environment: environment)
        self.redactor = SecretRedactor(secrets: secrets)
    }

    // MARK: Appending

    /// Appends one line.
    /// - Parameter entry: the run.
    /// - Throws: ``TrajectoryError`` or `PathError` when the file is a link, not a regular file of this user, or
    ///   cannot be written.
    public func append(_ entry: Entry) throws {
        try appendLine(line(for: entry))
    }

    private func appendLine(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, access(directory, F_OK) != 0 {
            try SwiftRLMPaths.createDirectory(URL(fileURLWithPath: directory), privateToOwner: true)
        }
        try withDirectoryLock(LOCK_SH) {
            guard let fd = try openOwned(O_WRONLY | O_APPEND | O_CREAT) else {
                throw TrajectoryError.io("create", path)
            }
            defer { close(fd) }
            guard writeOnce(fd, bytes) else { throw TrajectoryError.io("append to", path) }
        }
    }

    /// One request to `rlm serve` (every request is logged, a run adds its own line).
    public struct Request: Sendable, Hashable {
        /// When it was answered.
        public var time: Date
        /// Who asked: the key's id; `nil` when no valid key was given.
        public var principal: Principal?
        /// The HTTP method (or `tool` for an MCP tool call).
        public var method: String
        /// The path, without its query (or the MCP tool's name).
        public var path: String
        /// The status answered.
        public var status: Int
        /// Time to answer.
        public var durationMs: Int

        /// - Parameters: as the properties.
        public init(
            time: Date = Date(), principal: Principal?, method: String, path: String, status: Int, durationMs: Int
        ) {
            self.time = time
            self.principal = principal
            self.method = method
            self.path = path
            self.status = status
            self.durationMs = durationMs
        }
    }

    /// Appends one request's line: `{"kind": "request", "time", "principal", "method", "path", "status",
    /// "duration_ms"}` (run lines have no `kind`).
    /// - Parameter request: the request.
    public func appendRequest(_ request: Request) throws {
        let text = { (value: String, limit: Int) in cut(redactor.redact(value), to: limit) }
        var object: [String: JSONValue] = [
            "kind": "request", "time": .string(Self.timestamp(request.time)),
            "method": .string(text(request.method, 16)), "path": .string(text(request.path, 256)),
            "status": .int(request.status), "duration_ms": .int(request.durationMs),
        ]
        object["principal"] = request.principal.map { .object(principalObject($0, text)) } ?? .null
        try appendLine(Self.encode(object))
    }

    private func principalObject(_ principal: Principal, _ text: (String, Int) -> String) -> [String: JSONValue] {
        switch principal {
        case .user(let name, let uid):
            return ["kind": .string("user"), "name": .string(text(name, 128)), "uid": .int(Int(uid))]
        case .apiKey(let id):
            return ["kind": .string("api_key"), "id": .string(text(id, 128))]
        }
    }

    private static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    private static func encode(_ object: [String: JSONValue]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(JSONValue.object(object))) ?? Data("{}".utf8)
        return JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self))
    }

    /// The JSON line (without newline) `append` writes for `entry`: redacted, long fields cut, keys sorted.
    /// - Parameter entry: the run.
    public func line(for entry: Entry) -> String {
        let text = { (value: String, limit: Int) in cut(redactor.redact(value), to: limit) }
        let principal = principalObject(entry.principal, text)
        var seen = Set<String>()
        let models = entry.models.filter { seen.insert($0).inserted }
        let cost = entry.costUSD.flatMap { $0.isFinite ? JSONValue.double($0) : nil } ?? .null
        let object: [String: JSONValue] = [
            "time": .string(Self.timestamp(entry.time)),
            "principal": .object(principal),
            "run": entry.run.map { .string(text($0, 128)) } ?? .null,
            "models": .array(models.prefix(16).map { .string(text($0, 200)) }),
            "input_tokens": .int(entry.inputTokens),
            "output_tokens": .int(entry.outputTokens),
            "cost_usd": cost,
            "duration_ms": .int(entry.durationMs),
            "outcome": .string(entry.outcome.rawValue),
            "error_kind": entry.errorKind.map { .string(text($0, 64)) } ?? .null,
            "trajectory": entry.trajectory.map { .string(text($0, 1024)) } ?? .null,
        ]
        return Self.encode(object)
    }

    // MARK: Retention

    /// Rewrites the log keeping the lines of the last `age` (and any line whose time cannot be read: a prune never
    /// drops what it does not understand). Atomic: the kept lines go to a 0600 file in the same directory, which then
    /// replaces the log by `rename(2)`.
    /// - Parameters:
    ///   - age: how old a line must be to go.
    ///   - now: the present.
    /// - Returns: how many lines were removed.
    /// - Throws: ``TrajectoryError`` when the log is a link or not ours, or cannot be rewritten.
    @discardableResult
    public func prune(olderThan age: Duration, now: Date = Date()) throws -> Int {
        let cutoff = now.addingTimeInterval(-age.inSeconds)
        return try withDirectoryLock(LOCK_EX) {
            guard let fd = try openOwned(O_RDONLY) else { return 0 }
            defer { close(fd) }
            return try rewrite(from: fd, keepingSince: cutoff)
        }
    }

    private func rewrite(from fd: Int32, keepingSince cutoff: Date) throws -> Int {
        let temporary = (path as NSString).deletingLastPathComponent.appendingPathComponentIfAny(
            ".\((path as NSString).lastPathComponent).\(UInt64.random(in: 0...UInt64.max)).tmp")
        let out = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw TrajectoryError.io("create", temporary) }
        var renamed = false
        defer {
            close(out)
            if !renamed { unlink(temporary) }
        }
        let plain = ISO8601DateFormatter()
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var removed = 0
        var pending = [UInt8]()
        var reader = LineReader(fd: fd)
        while let line = try reader.next() {
            let bytes: [UInt8]
            switch line {
            case .complete(let whole), .unterminated(let whole): bytes = whole
            case .oversized:
                removed += 1
                continue
            }
            if let time = Self.time(ofLine: bytes), let date = fractional.date(from: time) ?? plain.date(from: time),
                date < cutoff
            {
                removed += 1
                continue
            }
            pending += bytes
            pending.append(UInt8(ascii: "\n"))
            if pending.count >= 64 << 10 {
                guard writeOnce(out, pending) else { throw TrajectoryError.io("write", temporary) }
                pending.removeAll(keepingCapacity: true)
            }
        }
        guard writeOnce(out, pending), fsync(out) == 0 else { throw TrajectoryError.io("write", temporary) }
        guard rename(temporary, path) == 0 else { throw TrajectoryError.io("replace", path) }
        renamed = true
        return removed
    }

    /// The `time` of a line this log wrote: the string after its `"time":"` (which cannot occur inside a JSON
    /// string, whose quotes are escaped). `nil` for anything else.
    private static func time(ofLine bytes: [UInt8]) -> String? {
        let key = Array(#""time":""#.utf8)
        guard bytes.first == UInt8(ascii: "{"), bytes.last == UInt8(ascii: "}"), bytes.count > key.count else {
            return nil
        }
        for start in 0...(bytes.count - key.count) where bytes[start..<start + key.count].elementsEqual(key) {
            let value = bytes[(start + key.count)...].prefix(64)
            guard let end = value.firstIndex(of: UInt8(ascii: "\"")) else { return nil }
            return String(decoding: bytes[(start + key.count)..<end], as: UTF8.self)
        }
        return nil
    }

    // MARK: Files

    /// Opens the log without following a link and without blocking on a FIFO, and checks that it is a regular file
    /// of this user (tightening one found looser than 0600). `nil` when it does not exist.
    private func openOwned(_ flags: Int32) throws -> Int32? {
        let fd = open(path, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            switch errno {
            case ENOENT: return nil
            case ELOOP:
                throw TrajectoryError.unsafe("\(path) is a symbolic link; the audit log is never written through one")
            default: throw TrajectoryError.io("open", path)
            }
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.isOwnedRegularFile else {
            close(fd)
            throw TrajectoryError.unsafe(
                "\(path) is not a regular file owned by this user; remove it or pick another path")
        }
        if info.permissions & 0o177 != 0 { _ = fchmod(fd, 0o600) }
        return fd
    }

    /// Runs `body` holding a `flock` on the log's directory: shared for appends (which `O_APPEND` keeps whole),
    /// exclusive for a prune. The directory, unlike the log, is never replaced, so an append can never land in a file a
    /// prune has just read and is about to replace.
    private func withDirectoryLock<T>(_ operation: Int32, _ body: () throws -> T) throws -> T {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw TrajectoryError.io("open", directory) }
        defer { close(fd) }
        while flock(fd, operation) != 0 {
            guard errno == EINTR else { throw TrajectoryError.io("lock", directory) }
        }
        return try body()
    }
}

/// Writes `bytes` with one `write(2)` (retried only for EINTR, and for the rest of a short write, which a regular file
/// makes only when the disk is full).
private func writeOnce(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
        if written < 0 {
            if errno == EINTR { continue }
            return false
        }
        offset += written
    }
    return true
}

extension String {
    fileprivate func appendingPathComponentIfAny(_ name: String) -> String {
        isEmpty ? name : (self as NSString).appendingPathComponent(name)
    }
}
