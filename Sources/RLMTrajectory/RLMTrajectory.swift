import Foundation
import Glibc
import RLM

/// The records SwiftRLM keeps of its runs (docs/TRAJECTORY.md): where trajectories live and how they are listed,
/// shown, deleted and pruned; the audit log; the HTML viewer.
public enum RLMTrajectory {
    /// The trajectory schema version this module reads and writes.
    public static let schemaVersion = 1
}

/// A trajectory or audit operation that failed. The message names the file and says what to do; it is safe to show
/// and to log (it never holds a trajectory's content).
public struct TrajectoryError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case invalidID
        case notFound
        case unsafe
        case io
    }

    private let code: Code
    /// What went wrong and what to do.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The text given is not a trajectory id (`run-<yyyyMMdd-HHmmss>-<random>`).
    static func invalidID(_ id: String) -> TrajectoryError {
        TrajectoryError(
            .invalidID,
            "\(id.debugDescription) is not a trajectory id: ids look like run-20250101-120000-k3j9x2 "
                + "(see `rlm trajectories list`)")
    }

    /// No trajectory has this id.
    static func notFound(_ id: String, in directory: String) -> TrajectoryError {
        TrajectoryError(.notFound, "no trajectory \(id) in \(directory) (see `rlm trajectories list`)")
    }

    /// A file or directory is a link, not ours, or not what it should be.
    static func unsafe(_ message: String) -> TrajectoryError { TrajectoryError(.unsafe, message) }

    /// A system call failed; `errno` is read here.
    static func io(_ what: String, _ path: String) -> TrajectoryError {
        TrajectoryError(.io, "cannot \(what) \(path): \(String(cString: strerror(errno)))")
    }

    /// The id was malformed (a usage error, not a missing trajectory).
    public var isInvalidID: Bool { code == .invalidID }
    /// The id was well formed but names no trajectory.
    public var isNotFound: Bool { code == .notFound }
    /// A path is a symbolic link, not a directory, or not a regular file of this user (a setup error).
    public var isUnsafe: Bool { code == .unsafe }

    public var description: String { message }
}

/// One line of a trajectory, decoded as far as docs/TRAJECTORY.md fixes it. Unknown fields are kept in ``data``;
/// nothing here trusts the file: every field may be missing.
public struct TrajectoryLine: Sendable, Hashable {
    /// The line as stored (without its newline).
    public var text: String
    /// `schema`.
    public var schema: Int
    /// `kind`.
    public var kind: String
    /// `run`: the run's id.
    public var run: String?
    /// `seq`.
    public var seq: Int?
    /// `time`: seconds since the Unix epoch.
    public var time: Double?
    /// `depth`.
    public var depth: Int?
    /// `iteration`.
    public var iteration: Int?
    /// `scope`.
    public var scope: String?
    /// `data`: the kind's fields.
    public var data: [String: JSONValue]
    /// `usage`: the run's usage so far, when the line has it.
    public var usage: [String: JSONValue]?

    /// Decodes a line; `nil` when it is not a JSON object with an integer `schema` and a string `kind` (not a
    /// trajectory line, or a line cut short by a killed run).
    /// - Parameter text: one line, without its newline.
    public init?(_ text: String) {
        guard text.hasPrefix("{"),
            case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)),
            case .int(let schema)? = object["schema"], case .string(let kind)? = object["kind"]
        else { return nil }
        self.text = text
        self.schema = schema
        self.kind = kind
        run = object["run"]?.stringValue
        seq = object["seq"]?.intValue
        time = object["time"]?.doubleValue
        depth = object["depth"]?.intValue
        iteration = object["iteration"]?.intValue
        scope = object["scope"]?.stringValue
        if case .object(let data)? = object["data"] { self.data = data } else { data = [:] }
        if case .object(let usage)? = object["usage"] { self.usage = usage }
    }

    /// A `data` field as text: a string as it is, a number or boolean written out, `nil` for null or absent.
    /// - Parameter key: the field.
    public func text(_ key: String) -> String? { data[key]?.displayText }
}

extension JSONValue {
    /// The integer inside (a whole `.double` too).
    var intValue: Int? {
        switch self {
        case .int(let value): return value
        case .double(let value) where value.rounded() == value && abs(value) < 1e15: return Int(value)
        default: return nil
        }
    }

    /// The number inside.
    var doubleValue: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    /// Scalars as text; arrays and objects as compact JSON; `nil` for null.
    var displayText: String? {
        switch self {
        case .null: return nil
        case .string(let value): return value
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .array, .object:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) }
        }
    }
}

/// Reads a descriptor line by line through a bounded buffer: a file of any size is never held whole, and a line
/// longer than `maxLineBytes` is skipped (reported as ``Line/oversized``) rather than buffered.
struct LineReader {
    enum Line {
        /// A line that ended with a newline (the newline removed).
        case complete([UInt8])
        /// The file's last bytes, with no newline after them: a line a killed run did not finish.
        case unterminated([UInt8])
        /// A line over the limit, skipped.
        case oversized
    }

    private let fd: Int32
    private let maxLineBytes: Int
    private var buffer: [UInt8] = []
    /// Where the current line starts in `buffer`.
    private var start = 0
    /// How far `buffer` has been searched for a newline.
    private var scanned = 0
    private var atEnd = false
    /// A line over the limit is being skipped up to its newline.
    private var skipping = false

    /// - Parameters:
    ///   - fd: an open descriptor, read from its current offset; not closed here.
    ///   - maxLineBytes: longer lines are skipped.
    init(fd: Int32, maxLineBytes: Int = 16 << 20) {
        self.fd = fd
        self.maxLineBytes = maxLineBytes
    }

    /// The next line, or `nil` at the end.
    /// - Throws: ``TrajectoryError`` when reading fails.
    mutating func next() throws -> Line? {
        while true {
            if let newline = buffer[scanned...].firstIndex(of: UInt8(ascii: "\n")) {
                defer {
                    start = newline + 1
                    scanned = start
                }
                if skipping {
                    skipping = false
                    return .oversized
                }
                return .complete(Array(buffer[start..<newline]))
            }
            scanned = buffer.count
            if atEnd {
                guard start < buffer.count || skipping else { return nil }
                defer {
                    start = buffer.count
                    skipping = false
                }
                return skipping ? .oversized : .unterminated(Array(buffer[start...]))
            }
            if start > 0 {
                buffer.removeFirst(start)
                scanned -= start
                start = 0
            }
            if buffer.count > maxLineBytes {
                skipping = true
                buffer.removeAll(keepingCapacity: true)
                scanned = 0
            }
            try fill()
        }
    }

    private mutating func fill() throws {
        let chunk = 64 << 10
        let old = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: chunk))
        var count = 0
        repeat {
            count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + old, chunk) }
        } while count < 0 && errno == EINTR
        guard count >= 0 else {
            buffer.removeLast(chunk)
            throw TrajectoryError.io("read", "a trajectory")
        }
        buffer.removeLast(chunk - count)
        if count == 0 { atEnd = true }
    }
}

/// A directory opened once (`O_DIRECTORY | O_NOFOLLOW`), whose entries are then reached only relative to it with
/// `*at` calls that never follow a link: what a file looks like when checked is what is read, chmod'ed or unlinked.
final class DirectoryHandle {
    let fd: Int32
    let path: String

    /// Opens `path`; `nil` when it does not exist.
    /// - Throws: ``TrajectoryError`` when it is a link, not a directory, or cannot be opened.
    init?(path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            switch errno {
            case ENOENT: return nil
            case ELOOP, ENOTDIR:
                var info = stat()
                if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
                    throw TrajectoryError.unsafe(
                        "\(path) is a symbolic link; it is not followed: pass the directory it points to")
                }
                throw TrajectoryError.unsafe("\(path) is not a directory")
            default: throw TrajectoryError.io("open", path)
            }
        }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// The names in the directory (without `.` and `..`).
    func names() throws -> [String] {
        let own = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard own >= 0, let stream = fdopendir(own) else {
            throw TrajectoryError.io("list", path)
        }
        defer { closedir(stream) }
        var names = [String]()
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// `lstat` of an entry: a link is described as the link.
    func status(of name: String) -> stat? {
        var info = stat()
        return fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 ? info : nil
    }

    /// Opens an entry for reading when it is a regular file owned by this user: never through a link, never
    /// blocking on a FIFO. `nil` otherwise.
    func openOwnedFile(_ name: String) -> (fd: Int32, info: stat)? {
        let file = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        var info = stat()
        guard fstat(file, &info) == 0, info.isOwnedRegularFile else {
            close(file)
            return nil
        }
        _ = fcntl(file, F_SETFL, fcntl(file, F_GETFL) & ~O_NONBLOCK)
        return (file, info)
    }

    /// The full path of an entry.
    func path(of name: String) -> String { path.hasSuffix("/") ? path + name : path + "/" + name }
}

extension stat {
    /// A regular file of the effective user.
    var isOwnedRegularFile: Bool { (st_mode & S_IFMT) == S_IFREG && st_uid == geteuid() }

    /// Permission bits.
    var permissions: mode_t { st_mode & 0o7777 }

    /// Last modification.
    var modified: Date {
        Date(timeIntervalSince1970: Double(st_mtim.tv_sec) + Double(st_mtim.tv_nsec) / 1e9)
    }
}

/// Text cut to `limit` characters with a marker, the way trajectories cut text (head and tail kept).
func cut(_ text: String, to limit: Int) -> String {
    guard text.count > limit else { return text }
    let keep = max(limit - 30, 2)
    let head = text.prefix(keep / 2 + keep % 2)
    let tail = text.suffix(keep / 2)
    return "\(head)… [\(text.count - head.count - tail.count) characters cut] …\(tail)"
}
