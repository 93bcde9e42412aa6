import CRLMSystem
import Foundation
import Glibc
import RLM

/// Turns `--context` arguments into a ``ContextSource`` without reading any file's contents: it opens the named files
/// and directories, lists directories and looks at each entry's metadata, and records what the sandbox will read
/// later (``ContextFile/Content/below(_:path:)`` for files inside a directory, opened safely when the context is sent).
///
/// Only standard input is read, because a pipe cannot be read twice: it is spooled to an unlinked private file.
///
/// Inside a git work tree a directory holds exactly what `git ls-files --cached --others --exclude-standard` lists
/// (`.gitignore` at every level, `.git/info/exclude`, the user's global excludes). Outside one, hidden entries and
/// the folders in ``buildFolders`` are left out. Either way symbolic links are never followed and nothing but regular
/// files is planned.
public struct ContextPlanner: Sendable {
    /// The most bytes the whole context may hold (`--max-context`).
    public var maxBytes: Int
    /// How the sandbox is to decode the files (the planner never decodes).
    public var encoding: ContextEncoding
    /// A lone `.json` file becomes a parsed JSON value instead of text.
    public var parseSingleJSONFile: Bool
    /// The environment git runs with (without the variables that point it at another repository or inject
    /// configuration) and where the spool directory for standard input is found.
    public var environment: [String: String]
    /// How long git may take to list one directory before its list is given up (and a note says so).
    public var gitTimeout: Duration
    /// The most bytes of git's list accepted for one directory before it is given up (and a note says so).
    public var gitOutputLimit: Int

    /// Folders left out of a directory that is not in a git work tree, besides hidden entries (names starting with
    /// `.`, which already covers `.git`, `.hg`, `.svn`, `.build`, `.venv`, `.tox`, …): installed packages and
    /// interpreter caches, which are large, generated, and never what a question is about. Words that are also
    /// ordinary folder names (`build`, `dist`, `target`) are not on the list. Not named in ``Plan/skipped``.
    public static let buildFolders: Set<String> = ["node_modules", "__pycache__", "venv"]

    /// Directories nested deeper than this below a source directory are skipped (and named).
    public static let maxDepth = 64

    /// - Parameters:
    ///   - maxBytes: the most bytes the context may hold (`--max-context`).
    ///   - encoding: how the sandbox is to decode the files.
    ///   - parseSingleJSONFile: a lone `.json` file becomes a parsed JSON value instead of text.
    ///   - environment: the environment git runs with, and where the spool directory is found.
    ///   - gitTimeout: how long git may take to list one directory.
    ///   - gitOutputLimit: the most bytes of git's list accepted for one directory.
    public init(
        maxBytes: Int, encoding: ContextEncoding = .auto, parseSingleJSONFile: Bool = true,
        environment: [String: String] = ProcessInfo.processInfo.environment, gitTimeout: Duration = .seconds(60),
        gitOutputLimit: Int = 256 << 20
    ) {
        self.maxBytes = maxBytes
        self.encoding = encoding
        self.parseSingleJSONFile = parseSingleJSONFile
        self.environment = environment
        self.gitTimeout = gitTimeout
        self.gitOutputLimit = gitOutputLimit
    }

    /// The planned context and what was left out of it.
    public struct Plan: Sendable {
        /// The files in order, the shape and the encoding.
        public var source: ContextSource
        /// Every file the host left out (symbolic links, FIFOs, sockets, devices, names that are not UTF-8, nesting
        /// too deep, nested git repositories), with the reason. Hidden entries and build folders outside git, and
        /// files git ignores, are not named here.
        public var skipped: [ContextSummary.Notice]
        /// Regular files left out because git ignores them (`.gitignore`, `.git/info/exclude`, global excludes).
        /// Counted only in the directories the planner walks: a directory that holds no file git lists (an ignored
        /// `node_modules`) is never opened, so its files are not counted.
        public var ignored: Int
        /// Things to say on stderr: git could not apply the ignore rules to a directory, or ignores all of it.
        public var notes: [String]

        /// The bytes the sandbox will read, as planned.
        public var totalBytes: Int { source.totalBytes }

        /// - Parameters: as the properties.
        public init(
            source: ContextSource, skipped: [ContextSummary.Notice] = [], ignored: Int = 0, notes: [String] = []
        ) {
            self.source = source
            self.skipped = skipped
            self.ignored = ignored
            self.notes = notes
        }
    }

    /// Plans the sources. Opens directories and the single named files, reads only directory listings and metadata
    /// (`fstatat`), never file contents, except standard input from a pipe or a terminal, which is spooled to an
    /// unlinked private file.
    ///
    /// One file (or `-`) becomes a `.text` context (`.json` for a `.json` file when ``parseSingleJSONFile``); several
    /// sources, or any directory, become `.documents`, each file labelled with its path as the user would write it.
    /// - Parameters:
    ///   - sources: file paths, directory paths, or `-` for standard input (at most once).
    ///   - standardInput: the descriptor `-` reads (standard input; injected for tests). It is not closed.
    /// - Throws: ``ContextLoadError`` naming the source, or with `isTooLarge` and naming `--max-context` when the
    ///   planned sizes add up to more than ``maxBytes`` (checked file by file, before anything is read).
    public func plan(_ sources: [String], standardInput: Int32 = 0) throws -> Plan {
        try plan(sources.map { $0 == "-" ? .standardInput : .path($0) }, standardInput: standardInput)
    }

    /// A source already opened by the caller (a path a server resolved beneath one of its roots), under a label.
    public struct OpenedSource: Sendable {
        /// What the file or directory is called in the context (never a host path the caller wants hidden).
        public var label: String
        /// An open descriptor of a regular file or a directory; the plan takes it over.
        public var fd: Int32

        /// - Parameters: as the properties.
        public init(label: String, fd: Int32) {
            self.label = label
            self.fd = fd
        }
    }

    /// Plans sources the caller opened itself; as ``plan(_:standardInput:)`` otherwise.
    /// - Parameter sources: open descriptors (each is owned by the plan from here on, or closed on error).
    public func plan(opened sources: [OpenedSource]) throws -> Plan {
        try plan(sources.map { .opened($0) }, standardInput: -1)
    }

    private enum Source {
        case standardInput
        case path(String)
        case opened(OpenedSource)
    }

    private func plan(_ sources: [Source], standardInput: Int32) throws -> Plan {
        var pending = sources.compactMap { source -> Int32? in
            if case .opened(let opened) = source { return opened.fd }
            return nil
        }
        defer { for fd in pending { close(fd) } }
        var tally = Tally(maxBytes: maxBytes)
        var sawDirectory = false
        var sawStandardInput = false
        var firstLabel: String?
        for source in sources {
            let fd: Int32
            var info = stat()
            let label: String
            switch source {
            case .standardInput:
                guard !sawStandardInput else {
                    throw ContextLoadError("standard input (-) can be given as a context only once")
                }
                sawStandardInput = true
                firstLabel = firstLabel ?? "-"
                try tally.add(try standardInputFile(standardInput, used: tally.total, files: tally.files.count))
                continue
            case .path(let path):
                (fd, info) = try Self.openSource(path)
                label = path
            case .opened(let opened):
                pending.removeAll { $0 == opened.fd }
                fd = opened.fd
                label = opened.label
                guard fstat(fd, &info) == 0, Self.isFileOrDirectory(info) else {
                    close(fd)
                    throw ContextLoadError("context \(label) is not a regular file or a directory")
                }
            }
            firstLabel = firstLabel ?? label
            let source = label
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                sawDirectory = true
                try planDirectory(ContextDirectory(fd: fd), source: source, into: &tally)
            default:
                let file = ContextDescriptor(fd: fd)
                try tally.add(ContextFile(label: source, size: Int(info.st_size), content: .open(file)))
            }
        }
        let shape: ContextSource.Shape
        if sources.count == 1 && !sawDirectory {
            let isJSON = firstLabel != "-" && (firstLabel ?? "").lowercased().hasSuffix(".json")
            shape = parseSingleJSONFile && isJSON ? .json : .text
        } else {
            shape = .documents
        }
        return Plan(
            source: ContextSource(shape: shape, files: tally.files, encoding: encoding), skipped: tally.skipped,
            ignored: tally.ignored, notes: tally.notes)
    }

    /// `1536` → `"1.5 KiB"`, `1288490189` → `"1.2 GiB"`, `1 << 30` → `"1 GiB"`, `12` → `"12 bytes"`.
    /// - Parameter bytes: a byte count.
    public static func describeBytes(_ bytes: Int) -> String {
        if bytes < 1024 { return bytes == 1 ? "1 byte" : "\(bytes) bytes" }
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(bytes) / 1024
        var unit = 0
        // 1023.96 KiB would print as "1024.0 KiB": such values go up a unit.
        while value >= 1023.95 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        var text = String(format: "%.1f", value)
        if text.hasSuffix(".0") { text.removeLast(2) }
        return "\(text) \(units[unit])"
    }

    // MARK: - Sources named on the command line

    /// Opens a path the user typed (following a symbolic link there: the user chose it) without blocking on a FIFO
    /// and without opening anything that is not a regular file or a directory.
    private static func openSource(_ source: String) throws -> (Int32, stat) {
        var info = stat()
        // Look before opening: opening a device node can have effects of its own, a socket cannot be opened at all.
        if stat(source, &info) == 0, !isFileOrDirectory(info) {
            throw ContextLoadError("context \(source) is not a regular file or a directory")
        }
        let fd = open(source, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else {
            let reason = errno == ENOENT ? "no such file or directory" : errnoText()
            throw ContextLoadError("context \(source): \(reason)")
        }
        guard fstat(fd, &info) == 0 else {
            let reason = errnoText()
            close(fd)
            throw ContextLoadError("context \(source): \(reason)")
        }
        guard isFileOrDirectory(info) else {
            close(fd)
            throw ContextLoadError("context \(source) is not a regular file or a directory")
        }
        // Reads block normally from here on (O_NONBLOCK only guarded the open against a FIFO swapped in).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, info)
    }

    private static func isFileOrDirectory(_ info: stat) -> Bool {
        let type = info.st_mode & S_IFMT
        return type == S_IFREG || type == S_IFDIR
    }

    // MARK: - Standard input

    /// Standard input as a context file: a regular file read from offset 0 is used as it is (a duplicate of the
    /// descriptor); anything else (a pipe, a terminal, a socket, a file read from a later offset) is spooled.
    private func standardInputFile(_ input: Int32, used: Int, files: Int) throws -> ContextFile {
        var info = stat()
        guard fstat(input, &info) == 0 else { throw ContextLoadError("standard input: \(errnoText())") }
        let type = info.st_mode & S_IFMT
        guard type != S_IFDIR else {
            throw ContextLoadError("standard input is a directory; pass it as --context DIR instead")
        }
        if type == S_IFREG {
            let offset = max(0, Int(lseek(input, 0, SEEK_CUR)))
            let size = max(0, Int(info.st_size) - offset)
            guard size <= maxBytes - used else {
                throw Self.tooLarge(
                    maxBytes: maxBytes, atLeast: used.addingReportingOverflow(size).partialValue, files: files + 1,
                    last: ("<stdin>", size))
            }
            if offset == 0 {
                let copy = fcntl(input, F_DUPFD_CLOEXEC, 0)
                guard copy >= 0 else { throw ContextLoadError("standard input: \(errnoText())") }
                return ContextFile(label: "<stdin>", size: size, content: .open(ContextDescriptor(fd: copy)))
            }
        }
        return try spool(input, left: maxBytes - used)
    }

    /// Copies `input` to an unlinked private file, 1 MiB at a time (host memory stays flat), and refuses as soon as
    /// more than `left` bytes have arrived.
    private func spool(_ input: Int32, left: Int) throws -> ContextFile {
        let spooled = try ContextDescriptor.spool(environment: environment)
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var total = 0
        while true {
            // Never more than one byte past the limit is taken from the pipe.
            let count = read(input, buffer, min(chunk, left - total + 1))
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    // Standard input was left non-blocking by whoever started us: wait for it.
                    var waiting = pollfd(fd: input, events: Int16(POLLIN), revents: 0)
                    _ = poll(&waiting, 1, -1)
                    continue
                }
                throw ContextLoadError("standard input: \(errnoText())")
            }
            if count == 0 { break }
            total += count
            guard total <= left else {
                throw ContextLoadError(
                    "standard input holds more than --max-context (\(Self.describeBytes(maxBytes))) leaves for it "
                        + "(\(Self.describeBytes(left))); pass a larger --max-context (e.g. --max-context "
                        + "\(ByteSize.suggest(maxBytes.multipliedReportingOverflow(by: 2).partialValue))) "
                        + "or fewer files", isTooLarge: true)
            }
            guard Self.writeAll(spooled.fd, buffer, count) else {
                throw ContextLoadError("standard input could not be spooled to disk: \(errnoText())")
            }
        }
        return ContextFile(label: "<stdin>", size: total, content: .open(spooled))
    }

    private static func writeAll(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var written = 0
        while written < count {
            let result = write(fd, buffer + written, count - written)
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else { return false }
            written += result
        }
        return true
    }

    // MARK: - Directories

    /// Plans one directory: asks git what it holds (when it is in a work tree), then walks it.
    private func planDirectory(_ directory: ContextDirectory, source: String, into tally: inout Tally) throws {
        var listing: GitListing?
        switch gitView(of: directory.fd, source: source) {
        case .listed(let listed): listing = listed
        case .notAWorkTree: break
        case .unavailable(let note): tally.notes.append(note)
        }
        let ignoredBefore = tally.ignored
        let walk = DirectoryWalk(
            directory: directory, prefix: source.hasSuffix("/") ? source : source + "/", listing: listing)
        try walk.walk(directory.fd, relative: "", depth: 0, into: &tally)
        if let listing, listing.files.isEmpty, tally.ignored > ignoredBefore {
            tally.notes.append(
                "git ignores everything in \(source) (.gitignore, .git/info/exclude or your global excludes): "
                    + "nothing was loaded from it")
        }
    }

    /// One source directory's walk: every directory opened relative to its parent with `O_NOFOLLOW`, every entry
    /// looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`, no file opened.
    private struct DirectoryWalk {
        /// The source directory, shared by all its files.
        var directory: ContextDirectory
        /// The source path as typed, ending in `/`: labels are this plus the relative path.
        var prefix: String
        /// What git lists, or `nil` outside a work tree.
        var listing: GitListing?

        /// Walks the directory `fd` (left open), whose path below the source is `relative`.
        func walk(_ fd: Int32, relative: String, depth: Int, into tally: inout Tally) throws {
            let listed = try Self.withNames(in: fd) { names in
                for name in names { try visit(name, in: fd, relative: relative, depth: depth, into: &tally) }
            }
            if listed == nil {
                tally.skipped.append(.init(label: label(relative), reason: "cannot be listed, skipped"))
            }
        }

        /// Looks at one entry of the directory `fd` (without following it) and plans, skips or descends into it.
        private func visit(
            _ rawName: UnsafePointer<CChar>, in fd: Int32, relative: String, depth: Int, into tally: inout Tally
        ) throws {
            guard let name = String(validatingCString: rawName) else {
                let shown = String(cString: rawName)  // bad bytes shown as U+FFFD
                let path = relative.isEmpty ? shown : relative + "/" + shown
                tally.skipped.append(.init(label: label(path), reason: "name is not valid UTF-8, skipped"))
                return
            }
            if listing == nil, name.hasPrefix(".") { return }
            let path = relative.isEmpty ? name : relative + "/" + name
            var info = stat()
            guard fstatat(fd, rawName, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                if errno != ENOENT {  // gone since it was listed: nothing to say
                    tally.skipped.append(.init(label: label(path), reason: "cannot be inspected, skipped"))
                }
                return
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                if let listing {
                    guard listing.directories.contains(path) else {
                        // A file git lists that is a directory here: a submodule or a repository of its own.
                        if listing.files.contains(path) {
                            tally.skipped.append(
                                .init(
                                    label: label(path),
                                    reason: "a git submodule or nested repository, skipped (pass it as its own "
                                        + "--context)"))
                        }
                        return  // holds nothing git lists: never opened
                    }
                } else if ContextPlanner.buildFolders.contains(name) {
                    return
                }
                guard depth < ContextPlanner.maxDepth else {
                    tally.skipped.append(
                        .init(
                            label: label(path),
                            reason: "nested more than \(ContextPlanner.maxDepth) directories deep, skipped"))
                    return
                }
                let child = openat(fd, rawName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else {
                    let reason = errno == ELOOP || errno == ENOTDIR ? "symbolic link, skipped" : "unreadable, skipped"
                    tally.skipped.append(.init(label: label(path), reason: reason))
                    return
                }
                defer { close(child) }
                try walk(child, relative: path, depth: depth + 1, into: &tally)
            case S_IFREG:
                if let listing, !listing.files.contains(path) {
                    tally.ignored += 1
                    return
                }
                try tally.add(
                    ContextFile(label: label(path), size: Int(info.st_size), content: .below(directory, path: path)))
            case S_IFLNK:
                // A link git does not list is ignored by the rules like any file; one it lists is named.
                if let listing, !listing.files.contains(path) { return }
                tally.skipped.append(.init(label: label(path), reason: "symbolic link, skipped"))
            default:
                // FIFOs, sockets, devices: git never lists them, so they are named either way.
                tally.skipped.append(.init(label: label(path), reason: "not a regular file, skipped"))
            }
        }

        private func label(_ path: String) -> String {
            path.isEmpty ? String(prefix.dropLast()) : prefix + path
        }

        /// Calls `body` with the entry names of the directory `fd` as C strings (without `.` and `..`), in byte order;
        /// `nil` without calling it when the directory cannot be listed. Listed through a descriptor of its own
        /// (closed before `body` runs, so a deep walk holds one descriptor per level), leaving `fd`'s offset alone.
        /// One buffer, `qsort` and `strcmp` rather than `String`s: `String` order is not byte order, and this runs
        /// once per file.
        private static func withNames<Result>(
            in fd: Int32, _ body: ([UnsafePointer<CChar>]) throws -> Result
        ) rethrows -> Result? {
            let own = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard own >= 0 else { return nil }
            guard let stream = fdopendir(own) else {
                close(own)
                return nil
            }
            var storage = [CChar]()
            var offsets = [Int]()
            while let entry = readdir(stream) {
                withUnsafeBytes(of: &entry.pointee.d_name) { raw in
                    let name = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
                    if strcmp(name, ".") == 0 || strcmp(name, "..") == 0 { return }
                    offsets.append(storage.count)
                    storage.append(contentsOf: UnsafeBufferPointer(start: name, count: strlen(name) + 1))
                }
            }
            closedir(stream)
            return try storage.withUnsafeBufferPointer { buffer in
                guard let base = buffer.baseAddress else { return try body([]) }
                var names = offsets.map { base + $0 }
                names.withUnsafeMutableBufferPointer { sorted in
                    guard sorted.count > 1, let first = sorted.baseAddress else { return }
                    qsort(first, sorted.count, MemoryLayout<UnsafePointer<CChar>>.stride) { left, right in
                        strcmp(
                            left!.load(as: UnsafePointer<CChar>.self), right!.load(as: UnsafePointer<CChar>.self))
                    }
                }
                return try body(names)
            }
        }
    }

    // MARK: - git

    /// What git says about a directory.
    private enum GitView {
        /// It is in a work tree; these are the paths git lists.
        case listed(GitListing)
        /// It is not in a work tree (or git is not installed and nothing there looks like git's).
        case notAWorkTree
        /// git could not say: the note tells the user why, and that the ignore rules were not applied.
        case unavailable(String)
    }

    /// The paths `git ls-files` printed, relative to the source directory.
    private struct GitListing {
        /// Every listed path (a nested repository's without its trailing `/`).
        var files = Set<String>()
        /// Every directory that holds a listed path: the only directories the walk opens.
        var directories = Set<String>()

        /// - Parameter output: what `git ls-files -z` printed: paths, each ended by a NUL.
        init(output: [UInt8]) {
            output.withUnsafeBufferPointer { buffer in
                guard let base = buffer.baseAddress, buffer.last == 0 else { return }
                var start = 0
                while start < buffer.count {
                    let entry = UnsafeRawPointer(base + start).assumingMemoryBound(to: CChar.self)
                    let length = strlen(entry)
                    defer { start += length + 1 }
                    // A name that is not UTF-8 is skipped by the walk anyway.
                    guard length > 0, var path = String(validatingCString: entry) else { continue }
                    if path.hasSuffix("/") { path.removeLast() }
                    add(path)
                }
            }
        }

        private mutating func add(_ path: String) {
            guard !path.isEmpty else { return }
            files.insert(path)
            var parent = Substring(path)
            while let slash = parent.lastIndex(of: "/") {
                parent = parent[..<slash]
                // Its ancestors are in already when it is.
                if !directories.insert(String(parent)).inserted { break }
            }
        }
    }

    /// Asks git for the files of the directory `fd` (one `git ls-files` run).
    private func gitView(of fd: Int32, source: String) -> GitView {
        let unapplied = ".gitignore rules were not applied to \(source) (hidden and build folders were skipped instead)"
        guard let git = SwiftRLMPaths.executable(named: "git", environment: environment) else {
            return Self.looksLikeGit(fd) ? .unavailable("git is not installed: \(unapplied)") : .notAWorkTree
        }
        let run: GitRun
        do {
            run = try GitRun(
                git: git, directory: fd, source: source, environment: Self.gitEnvironment(environment),
                timeout: gitTimeout, outputLimit: gitOutputLimit)
        } catch {
            return .unavailable("git could not be started (\(error)): \(unapplied)")
        }
        if run.timedOut {
            let seconds = String(format: "%g", gitTimeout.inSeconds)
            return .unavailable("git took longer than \(seconds) s to list \(source): \(unapplied)")
        }
        if run.outputTooLarge {
            return .unavailable(
                "git's list of \(source) is larger than \(Self.describeBytes(gitOutputLimit)): \(unapplied)")
        }
        if run.succeeded { return .listed(GitListing(output: run.stdout)) }
        let said = String(decoding: run.stderr, as: UTF8.self)
        if said.contains("not a git repository") || said.contains("must be run in a work tree") { return .notAWorkTree }
        let reason = Self.firstLine(of: said) ?? run.describeStatus()
        return .unavailable("git could not list \(source) (\(reason)): \(unapplied)")
    }

    /// git's environment: the caller's, without what would point git at another repository, index or work tree or
    /// inject configuration (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, `GIT_CONFIG_PARAMETERS`, … — set when rlm
    /// runs from a git hook), with `HOME`, `XDG_CONFIG_HOME` and the user's config choices kept so global excludes
    /// still apply; no optional locks (git must not write the index), untranslated messages, no prompts.
    static func gitEnvironment(_ environment: [String: String]) -> [String] {
        let kept: Set<String> = [
            "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM", "GIT_CEILING_DIRECTORIES",
            "GIT_DISCOVERY_ACROSS_FILESYSTEM",
        ]
        var result = environment.filter { !$0.key.hasPrefix("GIT_") || kept.contains($0.key) }
        result["LANGUAGE"] = nil
        result["LC_ALL"] = "C"
        result["GIT_OPTIONAL_LOCKS"] = "0"
        result["GIT_TERMINAL_PROMPT"] = "0"
        return result.map { "\($0.key)=\($0.value)" }.sorted()
    }

    /// Whether the directory `fd` or one above it holds a `.git`, or it holds a `.gitignore` (when git is missing,
    /// only then is it worth saying that the rules were not applied).
    private static func looksLikeGit(_ fd: Int32) -> Bool {
        var info = stat()
        if fstatat(fd, ".gitignore", &info, AT_SYMLINK_NOFOLLOW) == 0 { return true }
        var current = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        defer { if current >= 0 { close(current) } }
        for _ in 0..<256 where current >= 0 {
            if fstatat(current, ".git", &info, AT_SYMLINK_NOFOLLOW) == 0 { return true }
            var here = stat()
            let parent = openat(current, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard parent >= 0, fstat(current, &here) == 0, fstat(parent, &info) == 0 else {
                if parent >= 0 { close(parent) }
                return false
            }
            close(current)
            current = parent
            if here.st_dev == info.st_dev && here.st_ino == info.st_ino { return false }  // at the root
        }
        return false
    }

    /// The first non-empty line of git's message, without `fatal: `, control characters replaced, at most 200
    /// characters.
    private static func firstLine(of text: String) -> String? {
        guard var line = text.split(whereSeparator: \.isNewline).first.map(String.init) else { return nil }
        if line.hasPrefix("fatal: ") { line.removeFirst("fatal: ".count) }
        let cleaned = String(line.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) })
        return String(cleaned.prefix(200))
    }

    /// One `git ls-files` run, to completion or to its deadline.
    private struct GitRun {
        var stdout = [UInt8]()
        var stderr = [UInt8]()
        var waitStatus: Int32 = 0
        var timedOut = false
        var outputTooLarge = false

        var succeeded: Bool { !timedOut && !outputTooLarge && waitStatus == 0 }

        /// Runs git in the directory `directory` (the very directory that was opened, even if its path was renamed
        /// meanwhile: git is pointed at `/proc/self/fd/3`, a copy of the descriptor) with stdin `/dev/null`, stdout
        /// and stderr collected (stdout up to `outputLimit`, stderr up to 64 KiB), killed past `timeout`.
        init(
            git: String, directory: Int32, source: String, environment: [String], timeout: Duration, outputLimit: Int
        ) throws {
            var output: [Int32] = [-1, -1]
            var errors: [Int32] = [-1, -1]
            guard crlm_pipe_cloexec(&output) == 0 else { throw ContextLoadError("pipe: \(errnoText())") }
            guard crlm_pipe_cloexec(&errors) == 0 else {
                close(output[0])
                close(output[1])
                throw ContextLoadError("pipe: \(errnoText())")
            }
            // At 10 or above, so the dup2 onto fd 3 below never maps a descriptor onto itself (which would keep its
            // close-on-exec flag).
            let directoryCopy = fcntl(directory, F_DUPFD_CLOEXEC, 10)
            defer { if directoryCopy >= 0 { close(directoryCopy) } }
            let byDescriptor = directoryCopy >= 0 && access("/proc/self/fd", F_OK) == 0

            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, output[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errors[1], 2)
            if byDescriptor { posix_spawn_file_actions_adddup2(&actions, directoryCopy, 3) }
            // Nothing else of ours reaches git, even a descriptor some other code left without close-on-exec (a pipe
            // git held open would delay its reader's end of file).
            if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, byDescriptor ? 4 : 3) }

            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            var noSignals = sigset_t()
            sigemptyset(&noSignals)
            posix_spawnattr_setsigmask(&attributes, &noSignals)
            var allSignals = sigset_t()
            sigfillset(&allSignals)
            posix_spawnattr_setsigdefault(&attributes, &allSignals)
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

            // core.fsmonitor: a repository's config could otherwise make git run a command of its choosing.
            let arguments = [
                git, "-c", "core.fsmonitor=false", "-C", byDescriptor ? "/proc/self/fd/3" : source, "ls-files", "-z",
                "--cached", "--others", "--exclude-standard",
            ]
            let argv = arguments.map { strdup($0) } + [nil]
            let envp = environment.map { strdup($0) } + [nil]
            defer {
                argv.forEach { free($0) }
                envp.forEach { free($0) }
            }
            var pid: pid_t = 0
            let started = posix_spawn(&pid, git, &actions, &attributes, argv, envp)
            close(output[1])
            close(errors[1])
            defer {
                close(output[0])
                close(errors[0])
            }
            guard started == 0 else { throw ContextLoadError(String(cString: strerror(started))) }

            let deadline = ContinuousClock.now + timeout
            var polled = [
                pollfd(fd: output[0], events: Int16(POLLIN), revents: 0),
                pollfd(fd: errors[0], events: Int16(POLLIN), revents: 0),
            ]
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
            defer { buffer.deallocate() }
            reading: while polled.contains(where: { $0.fd >= 0 }) {
                let left = deadline - .now
                guard left > .zero else {
                    timedOut = true
                    break
                }
                let ready = poll(&polled, 2, Self.milliseconds(left))
                if ready < 0 && errno != EINTR { break }
                for index in polled.indices where polled[index].fd >= 0 && polled[index].revents != 0 {
                    let count = read(polled[index].fd, buffer, 1 << 16)
                    if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    guard count > 0 else {
                        polled[index].fd = -1  // poll ignores negative descriptors
                        continue
                    }
                    let bytes = UnsafeRawBufferPointer(start: buffer, count: count)
                    if index == 0 {
                        stdout.append(contentsOf: bytes)
                        if stdout.count > outputLimit {
                            outputTooLarge = true
                            break reading
                        }
                    } else if stderr.count < 64 << 10 {
                        stderr.append(contentsOf: bytes)
                    }
                }
            }
            // Both pipes are closed (git is exiting) or git is over its limits: reap it, by force past the deadline.
            if timedOut || outputTooLarge { kill(pid, SIGKILL) }
            var status: Int32 = 0
            while true {
                let reaped = waitpid(pid, &status, WNOHANG)
                if reaped == pid || (reaped < 0 && errno != EINTR) { break }
                if reaped == 0 && ContinuousClock.now > deadline {
                    timedOut = true
                    kill(pid, SIGKILL)
                    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                    break
                }
                usleep(1_000)
            }
            waitStatus = status
        }

        /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift does not import; `nil`
        /// where the C library has none.
        private static let addCloseFrom:
            (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
                guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
                return unsafeBitCast(
                    symbol,
                    to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
            }()

        func describeStatus() -> String {
            let signal = waitStatus & 0x7F
            return signal == 0 ? "exit status \((waitStatus >> 8) & 0xFF)" : "killed by signal \(signal)"
        }

        private static func milliseconds(_ duration: Duration) -> Int32 {
            Int32(min(Double(Int32.max), max(0, duration.inMilliseconds.rounded(.up))))
        }
    }

    // MARK: - Limits

    /// The `--max-context` refusal: what is known so far, and a value that would have let it through.
    private static func tooLarge(maxBytes: Int, atLeast bytes: Int, files: Int, last: (label: String, size: Int))
        -> ContextLoadError
    {
        let count = files == 1 ? "1 file" : "\(files) files"
        let culprit = " (\(last.label) is \(describeBytes(last.size)))"
        return ContextLoadError(
            "the context is more than --max-context (\(Self.describeBytes(maxBytes))): "
                + "\(Self.describeBytes(bytes)) in \(count) so far\(culprit); pass a larger --max-context "
                + "(e.g. --max-context \(ByteSize.suggest(bytes))) or fewer files", isTooLarge: true)
    }

    /// Files planned so far, what was left out, and the running total checked against the limit.
    private struct Tally {
        let maxBytes: Int
        var files = [ContextFile]()
        var skipped = [ContextSummary.Notice]()
        var ignored = 0
        var notes = [String]()
        var total = 0

        init(maxBytes: Int) {
            self.maxBytes = maxBytes
        }

        /// Adds a planned file, refusing it (before anything is read) when it takes the total past the limit.
        mutating func add(_ file: ContextFile) throws {
            guard file.size <= maxBytes - total else {
                let seen = total.addingReportingOverflow(file.size)
                throw ContextPlanner.tooLarge(
                    maxBytes: maxBytes, atLeast: seen.overflow ? .max : seen.partialValue, files: files.count + 1,
                    last: (file.label, file.size))
            }
            total += file.size
            files.append(file)
        }
    }
}

private func errnoText() -> String { String(cString: strerror(errno)) }
