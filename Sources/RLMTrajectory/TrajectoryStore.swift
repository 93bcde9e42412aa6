import Foundation
import Glibc
import RLM

/// The trajectories of past runs in one directory (by default `$XDG_STATE_HOME/swiftrlm/trajectories`): listed,
/// shown, deleted and pruned.
///
/// A trajectory's id is its file name without `.jsonl`: `run-<yyyyMMdd-HHmmss>-<random>`. Its first part is
/// `<id>.jsonl`; the writer rotates by size into `<id>.2.jsonl`, `<id>.3.jsonl`, … beside it. A file may hold several
/// runs (a conversation).
///
/// What the store touches, and how:
/// - Only names of that shape, and only regular files owned by this user that read as trajectories (an empty file
///   counts: a run killed before its first line). Symbolic links are never followed, read or deleted (every entry is
///   reached relative to the directory with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`); other files are left alone.
/// - Files are streamed: listing reads a file's first lines and its last kilobytes, and counts its runs in bounded
///   chunks, so a 100 MB trajectory is never loaded whole. A last line cut short by a killed run is tolerated.
/// - Opening the store tightens a directory looser than 0700 and trajectory files looser than 0600 that belong to
///   this user (links and other users' files are skipped), and lists what it changed in ``repairs``.
public struct TrajectoryStore: Sendable {
    /// One trajectory, summarised.
    public struct Entry: Sendable, Hashable {
        /// The id (`run-…`).
        public var id: String
        /// Its files, first part first.
        public var parts: [String]
        /// Bytes of all parts.
        public var bytes: Int
        /// The last change to any part.
        public var modified: Date
        /// When the first run started (its `run_started` line, else the first line's time).
        public var started: Date?
        /// The first run's question (cut to 200 characters).
        public var query: String?
        /// The first run's model.
        public var model: String?
        /// `status` of the last run's `run_finished`; `nil` when the last run has none (still running, or killed).
        public var status: String?
        /// `answer` of that `run_finished` (cut to 200 characters).
        public var answer: String?
        /// How many runs the file holds (`run_started` lines).
        public var runs: Int
    }

    /// A permission the store tightened when it was opened.
    public struct Repair: Sendable, Hashable, CustomStringConvertible {
        /// The file or directory.
        public var path: String
        /// Its mode before.
        public var oldMode: UInt32
        /// Its mode now.
        public var newMode: UInt32

        public var description: String {
            "tightened \(path) from \(String(oldMode, radix: 8).leftPadded(to: 4)) to "
                + String(newMode, radix: 8).leftPadded(to: 4)
        }
    }

    /// One line of a shown trajectory.
    public enum Line: Sendable, Hashable {
        /// A trajectory line.
        case event(TrajectoryLine)
        /// A whole line that is not a trajectory line (its text, cut to 200 characters).
        case unreadable(String)
        /// The last line, cut short (a run killed mid-write); its text, cut to 200 characters.
        case cut(String)
        /// A line longer than the reader's limit, skipped.
        case oversized
    }

    /// What a prune removed.
    public struct PruneResult: Sendable, Hashable {
        /// The trajectories deleted, oldest first.
        public var deleted: [Entry] = []
        /// Files unlinked.
        public var files = 0
        /// Bytes freed.
        public var bytes = 0

        /// Nothing removed.
        public init() {}

        mutating func add(_ entry: Entry, files: Int) {
            deleted.append(entry)
            self.files += files
            bytes += entry.bytes
        }
    }

    /// The directory.
    public let directory: String
    /// What opening the store tightened (empty when everything was private already).
    public let repairs: [Repair]

    /// `$XDG_STATE_HOME/swiftrlm/trajectories` (or under `~/.local/state`): where `rlm run` writes by default.
    /// - Parameter environment: where the XDG variables come from.
    public static func defaultDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        SwiftRLMPaths.stateDirectory(environment: environment).appendingPathComponent("trajectories").path
    }

    /// Opens the store and repairs its permissions. A missing directory is an empty store (it is not created).
    /// - Parameters:
    ///   - directory: the directory; `nil` for ``defaultDirectory(environment:)``.
    ///   - environment: where the XDG variables come from.
    /// - Throws: ``TrajectoryError`` when the directory is a symbolic link, not a directory, or unreadable.
    public init(directory: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        self.directory = directory ?? Self.defaultDirectory(environment: environment)
        guard let handle = try DirectoryHandle(path: self.directory) else {
            repairs = []
            return
        }
        repairs = try Self.repair(handle)
    }

    // MARK: Ids

    /// Whether `id` is a trajectory id: `run-` + 8 digits + `-` + 6 digits + `-` + 1 to 32 lowercase letters or
    /// digits. Nothing else (no `/`, no `..`, no suffix) is ever turned into a path.
    /// - Parameter id: text from the user.
    public static func isValidID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        guard bytes.count >= 21 && bytes.count <= 52, id.hasPrefix("run-") else { return false }
        let digit = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
        let lower = { (byte: UInt8) in (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) }
        return bytes[4..<12].allSatisfy(digit) && bytes[12] == UInt8(ascii: "-")
            && bytes[13..<19].allSatisfy(digit) && bytes[19] == UInt8(ascii: "-")
            && bytes[20...].allSatisfy { digit($0) || lower($0) }
    }

    /// The id and part number of a file name (`<id>.jsonl` is part 1, `<id>.<n>.jsonl` part n ≥ 2); `nil` for any
    /// other name.
    /// - Parameter name: a file name.
    public static func part(ofFileName name: String) -> (id: String, part: Int)? {
        guard name.hasSuffix(".jsonl") else { return nil }
        let stem = String(name.dropLast(6))
        if isValidID(stem) { return (stem, 1) }
        guard let dot = stem.lastIndex(of: "."), isValidID(String(stem[..<dot])) else { return nil }
        let number = stem[stem.index(after: dot)...]
        guard !number.isEmpty, number.count <= 6, number.first != "0", number.allSatisfy(\.isASCII),
            let part = Int(number), part >= 2
        else { return nil }
        return (String(stem[..<dot]), part)
    }

    /// The trajectory id of a trajectory file's path (`…/run-X.jsonl` or `…/run-X.3.jsonl` → `run-X`); for a file
    /// named otherwise (`rlm run --trajectory FILE`), its name without `.jsonl`.
    /// - Parameter path: a trajectory file.
    public static func id(ofPath path: String) -> String {
        let name = (path as NSString).lastPathComponent
        if let (id, _) = part(ofFileName: name) { return id }
        return name.hasSuffix(".jsonl") ? String(name.dropLast(6)) : name
    }

    // MARK: Reading

    /// Every trajectory, newest first.
    /// - Throws: ``TrajectoryError`` when the directory cannot be read.
    public func list() throws -> [Entry] {
        guard let handle = try DirectoryHandle(path: directory) else { return [] }
        return try groups(in: handle, only: nil).compactMap { summarize($0, in: handle) }
            .sorted { ($0.started ?? $0.modified, $0.id) > ($1.started ?? $1.modified, $1.id) }
    }

    /// One trajectory, summarised.
    /// - Parameter id: its id.
    /// - Throws: ``TrajectoryError``: an invalid id, or no such trajectory.
    public func entry(_ id: String) throws -> Entry {
        let (handle, group) = try find(id)
        guard let entry = summarize(group, in: handle) else { throw TrajectoryError.notFound(id, in: directory) }
        return entry
    }

    /// Streams a trajectory's lines, every part in order, to `body`; nothing is held but the current line.
    /// - Parameters:
    ///   - id: the trajectory.
    ///   - body: called once per line.
    /// - Throws: ``TrajectoryError`` (an invalid id, no such trajectory, a read error) or what `body` throws.
    public func show(_ id: String, _ body: (Line) throws -> Void) throws {
        let (handle, group) = try find(id)
        for part in group.parts {
            guard let (fd, info) = handle.openOwnedFile(part.name), info.st_ino == part.info.st_ino else { continue }
            defer { close(fd) }
            var reader = LineReader(fd: fd)
            while let line = try reader.next() {
                switch line {
                case .complete(let bytes):
                    let text = String(decoding: bytes, as: UTF8.self)
                    try body(TrajectoryLine(text).map(Line.event) ?? .unreadable(cut(text, to: 200)))
                case .unterminated(let bytes):
                    let text = String(decoding: bytes, as: UTF8.self)
                    try body(TrajectoryLine(text).map(Line.event) ?? .cut(cut(text, to: 200)))
                case .oversized:
                    try body(.oversized)
                }
            }
        }
    }

    // MARK: Deleting

    /// Deletes every part of a trajectory, and nothing else.
    /// - Parameter id: the trajectory.
    /// - Returns: the paths deleted.
    /// - Throws: ``TrajectoryError``: an invalid id, no such trajectory, or a part that could not be unlinked.
    @discardableResult
    public func delete(_ id: String) throws -> [String] {
        let (handle, group) = try find(id)
        return try unlink(group, in: handle)
    }

    /// Deletes every trajectory last modified more than `age` before `now`.
    /// - Parameters:
    ///   - age: how old a trajectory must be.
    ///   - now: the present.
    /// - Returns: what was removed.
    public func prune(olderThan age: Duration, now: Date = Date()) throws -> PruneResult {
        let cutoff = now.addingTimeInterval(-age.inSeconds)
        return try prune { entries in entries.filter { $0.modified < cutoff && !Self.isLive($0, now: now) } }
    }

    /// Deletes the oldest trajectories (by last modification) until the rest hold at most `maxTotalBytes`.
    /// Files that are not trajectories do not count.
    /// - Parameter maxTotalBytes: the most bytes to keep.
    /// - Returns: what was removed.
    public func prune(maxTotalBytes: Int, now: Date = Date()) throws -> PruneResult {
        try prune { entries in
            var total = entries.reduce(0) { $0 + $1.bytes }
            var doomed = [Entry]()
            // A run still being written counts toward the total but is never pruned for size: its writer would
            // carry on into an unlinked file.
            for entry in entries where total > maxTotalBytes && !Self.isLive(entry, now: now) {
                doomed.append(entry)
                total -= entry.bytes
            }
            return doomed
        }
    }

    /// How recently an unfinished trajectory must have been written to count as a run in progress.
    public static let liveWindow: Duration = .seconds(600)

    /// An unfinished trajectory (its last run has no `run_finished`) written within ``liveWindow``: most likely a run
    /// still going.
    static func isLive(_ entry: Entry, now: Date) -> Bool {
        entry.status == nil && now.timeIntervalSince(entry.modified) < liveWindow.inSeconds
    }

    /// Deletes the trajectories `choose` picks from all of them, oldest first.
    private func prune(_ choose: ([Entry]) -> [Entry]) throws -> PruneResult {
        var result = PruneResult()
        guard let handle = try DirectoryHandle(path: directory) else { return result }
        var groups = [String: Group]()
        var entries = [Entry]()
        for group in try self.groups(in: handle, only: nil) {
            guard let entry = summarize(group, in: handle) else { continue }
            groups[group.id] = group
            entries.append(entry)
        }
        entries.sort { ($0.modified, $0.id) < ($1.modified, $1.id) }
        for entry in choose(entries) {
            guard let group = groups[entry.id] else { continue }
            result.add(entry, files: try unlink(group, in: handle).count)
        }
        return result
    }

    /// Unlinks the parts of `group` that are still the files that were checked.
    private func unlink(_ group: Group, in handle: DirectoryHandle) throws -> [String] {
        var deleted = [String]()
        for part in group.parts {
            guard let now = handle.status(of: part.name), now.isOwnedRegularFile, now.st_ino == part.info.st_ino,
                now.st_dev == part.info.st_dev
            else { continue }
            guard unlinkat(handle.fd, part.name, 0) == 0 else {
                throw TrajectoryError.io("delete", handle.path(of: part.name))
            }
            deleted.append(handle.path(of: part.name))
        }
        return deleted
    }

    // MARK: Finding

    /// A trajectory's parts as found: regular files of ours, named for it, that read as trajectories.
    private struct Group {
        var id: String
        var parts: [(name: String, number: Int, info: stat)]
    }

    private func find(_ id: String) throws -> (DirectoryHandle, Group) {
        guard Self.isValidID(id) else { throw TrajectoryError.invalidID(id) }
        guard let handle = try DirectoryHandle(path: directory), let group = try groups(in: handle, only: id).first
        else { throw TrajectoryError.notFound(id, in: directory) }
        return (handle, group)
    }

    private func groups(in handle: DirectoryHandle, only id: String?) throws -> [Group] {
        var groups = [String: Group]()
        for name in try handle.names() {
            guard let (stem, number) = Self.part(ofFileName: name), id == nil || stem == id,
                let info = handle.status(of: name), info.isOwnedRegularFile, isTrajectory(name, in: handle)
            else { continue }
            groups[stem, default: Group(id: stem, parts: [])].parts.append((name, number, info))
        }
        return groups.values.map { group in
            var group = group
            group.parts.sort { $0.number < $1.number }
            return group
        }
    }

    /// Whether a file reads as a trajectory: empty, or its first line is a trajectory line (or the start of one, cut
    /// short by a killed run).
    private func isTrajectory(_ name: String, in handle: DirectoryHandle) -> Bool {
        guard let (fd, _) = handle.openOwnedFile(name) else { return false }
        defer { close(fd) }
        var reader = LineReader(fd: fd, maxLineBytes: 4 << 20)
        switch try? reader.next() {
        case nil: return true
        case .complete(let bytes)?: return TrajectoryLine(String(decoding: bytes, as: UTF8.self)) != nil
        case .unterminated(let bytes)?:
            let text = String(decoding: bytes, as: UTF8.self)
            return TrajectoryLine(text) != nil || text.hasPrefix(#"{""#)
        case .oversized?: return false
        }
    }

    // MARK: Summaries

    private func summarize(_ group: Group, in handle: DirectoryHandle) -> Entry? {
        guard let first = group.parts.first else { return nil }
        var entry = Entry(
            id: group.id, parts: group.parts.map { handle.path(of: $0.name) },
            bytes: group.parts.reduce(0) { $0 + Int($1.info.st_size) },
            modified: group.parts.map(\.info.modified).max() ?? first.info.modified, runs: 0)
        readHead(first.name, in: handle, into: &entry)
        for part in group.parts.reversed() where readTail(part.name, in: handle, into: &entry) { break }
        entry.runs = max(
            group.parts.reduce(0) { $0 + countRunStarts(in: $1.name, handle: handle) }, entry.query == nil ? 0 : 1)
        return entry
    }

    /// The first run's start, question and model, from the first lines.
    private func readHead(_ name: String, in handle: DirectoryHandle, into entry: inout Entry) {
        guard let (fd, _) = handle.openOwnedFile(name) else { return }
        defer { close(fd) }
        var reader = LineReader(fd: fd, maxLineBytes: 4 << 20)
        for _ in 0..<8 {
            guard let next = try? reader.next() else { return }
            guard case .complete(let bytes) = next, let line = TrajectoryLine(String(decoding: bytes, as: UTF8.self))
            else { continue }
            if entry.started == nil, let time = line.time { entry.started = Date(timeIntervalSince1970: time) }
            if line.kind == "run_started" {
                if let time = line.time { entry.started = Date(timeIntervalSince1970: time) }
                entry.query = line.text("query").map { cut($0, to: 200) }
                entry.model = line.text("model").map { cut($0, to: 200) }
                return
            }
        }
    }

    /// The last run's outcome, from the last kilobytes: the `run_finished` of the run the last whole line belongs
    /// to. Returns whether the part held any whole line (else the part before is read).
    private func readTail(_ name: String, in handle: DirectoryHandle, into entry: inout Entry) -> Bool {
        guard let (fd, info) = handle.openOwnedFile(name) else { return false }
        defer { close(fd) }
        for window in [64 << 10, 1 << 20] {
            let offset = max(0, Int(info.st_size) - window)
            guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else { return false }
            var reader = LineReader(fd: fd, maxLineBytes: window)
            var lines = [TrajectoryLine]()
            var first = true
            while let next = try? reader.next() {
                defer { first = false }
                // The window's first line usually starts mid-line.
                guard case .complete(let bytes) = next, !(first && offset > 0),
                    let line = TrajectoryLine(String(decoding: bytes, as: UTF8.self))
                else { continue }
                lines.append(line)
            }
            guard let last = lines.last else {
                if offset == 0 { return false }
                continue
            }
            if let finished = lines.last(where: { $0.kind == "run_finished" && $0.run == last.run }) {
                entry.status = finished.text("status")
                entry.answer = finished.text("answer").map { cut($0, to: 200) }
            }
            return true
        }
        return false
    }

    /// `"kind":"run_started"` occurrences, counted in 1 MiB chunks with `strstr` (the chunk ends with a NUL; a NUL
    /// in the file, which JSON never writes raw, is stepped over). The pattern cannot occur inside a JSON string (its
    /// quotes would be escaped), so each is a line of that kind.
    private func countRunStarts(in name: String, handle: DirectoryHandle) -> Int {
        guard let (fd, _) = handle.openOwnedFile(name) else { return 0 }
        defer { close(fd) }
        let pattern = Array(#""kind":"run_started""#.utf8CString)
        let overlap = pattern.count - 2
        let chunk = 1 << 20
        var buffer = [CChar](repeating: 0, count: overlap + chunk + 1)
        var carried = 0
        var count = 0
        while true {
            let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + carried, chunk) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { break }
            let filled = carried + got
            buffer[filled] = 0
            count += buffer.withUnsafeBufferPointer { raw in
                pattern.withUnsafeBufferPointer { needle in
                    let base = raw.baseAddress!
                    let end = base + filled
                    var position = base
                    var found = 0
                    while position < end {
                        if let hit = strstr(position, needle.baseAddress!) {
                            found += 1
                            position = UnsafePointer(hit) + overlap + 1
                        } else {
                            position += strlen(position) + 1
                        }
                    }
                    return found
                }
            }
            // Keep the last bytes, which could start a match across the chunk boundary (they hold no whole match).
            carried = min(overlap, filled)
            buffer.withUnsafeMutableBytes { raw in
                _ = memmove(raw.baseAddress!, raw.baseAddress! + filled - carried, carried)
            }
        }
        return count
    }

    // MARK: Permissions

    /// Tightens the directory to 0700 and each trajectory-named file of ours to 0600, through descriptors that were
    /// opened without following links.
    private static func repair(_ handle: DirectoryHandle) throws -> [Repair] {
        var repairs = [Repair]()
        var info = stat()
        if fstat(handle.fd, &info) == 0, info.st_uid == geteuid(), info.permissions & 0o077 != 0 {
            let mode = info.permissions & 0o700
            guard fchmod(handle.fd, mode) == 0 else {
                throw TrajectoryError.io("tighten the permissions of", handle.path)
            }
            repairs.append(Repair(path: handle.path, oldMode: UInt32(info.permissions), newMode: UInt32(mode)))
        }
        for name in try handle.names() where part(ofFileName: name) != nil {
            guard let seen = handle.status(of: name), seen.isOwnedRegularFile, seen.permissions & 0o177 != 0,
                let (fd, info) = handle.openOwnedFile(name)
            else { continue }
            defer { close(fd) }
            let mode = info.permissions & 0o600
            guard info.permissions != mode else { continue }
            guard fchmod(fd, mode) == 0 else {
                throw TrajectoryError.io("tighten the permissions of", handle.path(of: name))
            }
            repairs.append(
                Repair(path: handle.path(of: name), oldMode: UInt32(info.permissions), newMode: UInt32(mode)))
        }
        return repairs
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
