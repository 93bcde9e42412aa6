import Foundation
import Glibc

/// Turns `--context` arguments into a ``ContextValue``: files, directories (recursive, text files only, each
/// document headed by its path) and `-` for stdin.
public struct ContextLoader: Sendable {
    /// Total bytes accepted over all sources.
    public var maxTotalBytes: Int
    /// Files with these extensions are parsed as JSON when a single `.json` file is the whole context.
    public var parseSingleJSONFile: Bool

    /// What was skipped, for the user.
    public struct Notice: Sendable, Hashable {
        /// The path.
        public var path: String
        /// Why it was skipped.
        public var reason: String
    }

    /// The loaded context and what was left out.
    public struct Loaded: Sendable {
        /// The context.
        public var context: ContextValue
        /// Skipped files and why.
        public var notices: [Notice]
        /// Documents loaded.
        public var documentCount: Int
        /// Bytes loaded.
        public var byteCount: Int
    }

    /// A loader error a user can act on.
    public struct LoadError: Error, Sendable, CustomStringConvertible {
        /// What went wrong, naming the path.
        public var description: String
        /// The context is larger than the limit (an HTTP front end answers 413).
        public var isTooLarge: Bool = false
    }

    /// - Parameters:
    ///   - maxTotalBytes: the most bytes to load (default 512 MiB).
    ///   - parseSingleJSONFile: a lone `.json` file becomes a dict/list instead of text.
    public init(maxTotalBytes: Int = 512 << 20, parseSingleJSONFile: Bool = true) {
        self.maxTotalBytes = maxTotalBytes
        self.parseSingleJSONFile = parseSingleJSONFile
    }

    /// Loads every source. One plain file (or stdin) becomes a `str`; several files or a directory become a list of
    /// documents, each starting with `### <path>`.
    /// - Parameters:
    ///   - sources: file paths, directory paths, or `-`.
    ///   - stdin: reads at most the given number of bytes of standard input (injected for tests).
    public func load(_ sources: [String], stdin: (Int) -> Data = ContextLoader.readStandardInput(upTo:))
        throws -> Loaded
    {
        var documents = [(path: String, text: String)]()
        var notices = [Notice]()
        var total = 0
        var sawDirectory = false
        func add(_ path: String, _ data: Data) throws {
            total += data.count
            guard total <= maxTotalBytes else {
                throw LoadError(
                    description: "the context is larger than \(maxTotalBytes >> 20) MiB (at \(path)); "
                        + "pass fewer files or raise the limit", isTooLarge: true)
            }
            guard let text = Self.decodeText(data) else {
                notices.append(Notice(path: path, reason: "binary file skipped"))
                total -= data.count
                return
            }
            documents.append((path, text))
        }
        /// Reads every regular file below the directory `fd` (closed on return), in name order, skipping hidden
        /// entries, build folders, links and anything that is not a regular file or directory.
        func walk(directory fd: Int32, path: String, depth: Int) throws {
            defer { close(fd) }
            guard depth < 64 else {
                notices.append(Notice(path: path, reason: "nested too deep, skipped"))
                return
            }
            for name in try Self.entries(of: fd, path: path) {
                let child = path.hasSuffix("/") ? path + name : path + "/" + name
                // Look before opening: opening a device node or a FIFO can have effects of its own.
                var kind = stat()
                if fstatat(fd, name, &kind, AT_SYMLINK_NOFOLLOW) == 0 {
                    let type = kind.st_mode & S_IFMT
                    if type == S_IFLNK {
                        notices.append(Notice(path: child, reason: "symbolic link, skipped"))
                        continue
                    }
                    if type != S_IFREG && type != S_IFDIR {
                        notices.append(Notice(path: child, reason: "not a regular file, skipped"))
                        continue
                    }
                }
                let entry = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
                guard entry >= 0 else {
                    notices.append(
                        Notice(
                            path: child,
                            reason: errno == ELOOP ? "symbolic link, skipped" : "unreadable, skipped"))
                    continue
                }
                var info = stat()
                guard fstat(entry, &info) == 0 else {
                    close(entry)
                    notices.append(Notice(path: child, reason: "unreadable, skipped"))
                    continue
                }
                switch info.st_mode & S_IFMT {
                case S_IFDIR:
                    if Self.skippedDirectories.contains(name) {
                        close(entry)
                        continue
                    }
                    try walk(directory: entry, path: child, depth: depth + 1)
                case S_IFREG:
                    let data: Data
                    do {
                        data = try Self.read(
                            fd: entry, size: Int(info.st_size), path: child, limit: maxTotalBytes - total)
                    } catch {
                        close(entry)
                        throw error
                    }
                    close(entry)
                    try add(child, data)
                default:
                    close(entry)
                    notices.append(Notice(path: child, reason: "not a regular file, skipped"))
                }
            }
        }
        for source in sources {
            if source == "-" {
                let data = try Self.readStandardInput(limit: maxTotalBytes - total, stdin: stdin)
                guard let text = Self.decodeText(data) else {
                    throw LoadError(description: "stdin is not UTF-8 text (it holds a NUL byte or invalid UTF-8)")
                }
                total += data.count
                documents.append(("<stdin>", text))
                continue
            }
            // The path the user typed is opened once; everything below it is opened relative to its directory's
            // descriptor with O_NOFOLLOW, so no component can be swapped for a link between listing and reading.
            let fd = open(source, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else {
                let reason = errno == ENOENT ? "no such file or directory" : String(cString: strerror(errno))
                throw LoadError(description: "context \(source): \(reason)")
            }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                close(fd)
                throw LoadError(description: "context \(source): \(String(cString: strerror(errno)))")
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                sawDirectory = true
                try walk(directory: fd, path: source, depth: 0)
            case S_IFREG:
                let data = try Self.read(fd: fd, size: Int(info.st_size), path: source, limit: maxTotalBytes - total)
                close(fd)
                guard Self.decodeText(data) != nil else {
                    throw LoadError(description: "context \(source) is not UTF-8 text (a binary file?)")
                }
                try add(source, data)
            default:
                close(fd)
                throw LoadError(description: "context \(source) is not a regular file or a directory")
            }
        }
        guard !documents.isEmpty else {
            throw LoadError(description: "the context sources hold no text files")
        }
        let context: ContextValue
        if documents.count == 1 && !sawDirectory {
            let only = documents[0]
            if parseSingleJSONFile, only.path.lowercased().hasSuffix(".json") {
                do {
                    context = .json(try JSONDecoder().decode(JSONValue.self, from: Data(only.text.utf8)))
                } catch {
                    throw LoadError(
                        description: "context \(only.path) is not valid JSON (\(Self.describe(error))); "
                            + "rename it to load it as text")
                }
            } else {
                context = .text(only.text)
            }
        } else {
            context = .documents(documents.map { "### \($0.path)\n\($0.text)" })
        }
        return Loaded(context: context, notices: notices, documentCount: documents.count, byteCount: total)
    }

    /// Folders never read inside a context directory.
    static let skippedDirectories: Set<String> = [".build", "node_modules", "__pycache__"]

    /// The names in the directory `fd`, sorted, without `.`/`..` and hidden entries. The descriptor stays open.
    static func entries(of fd: Int32, path: String) throws -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw LoadError(description: "context \(path): cannot list the directory")
        }
        defer { closedir(stream) }
        var names = [String]()
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            names.append(name)
        }
        return names.sorted()
    }

    /// Reads an open regular file of `size` bytes (from `fstat`), refusing before any read a file larger than what
    /// is left of the limit, and never reading more than that even if the file grows meanwhile.
    static func read(fd: Int32, size: Int, path: String, limit: Int) throws -> Data {
        guard size <= limit else {
            throw LoadError(
                description: "the context is larger than the limit (\(path) is \(size) bytes; "
                    + "\(max(0, limit)) bytes are left of the context limit): pass fewer files or raise the limit",
                isTooLarge: true)
        }
        var data = Data(count: size)
        var filled = 0
        while filled < size {
            let count = data.withUnsafeMutableBytes { buffer in
                Glibc.read(fd, buffer.baseAddress! + filled, size - filled)
            }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw LoadError(description: "context \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            filled += count
        }
        return data.prefix(filled)
    }

    /// Reads standard input in chunks, stopping after `maxBytes` bytes.
    /// - Parameter maxBytes: the most bytes to read.
    public static func readStandardInput(upTo maxBytes: Int) -> Data {
        var data = Data()
        let handle = FileHandle.standardInput
        while data.count < maxBytes {
            guard let chunk = try? handle.read(upToCount: min(1 << 20, maxBytes - data.count)), !chunk.isEmpty
            else { break }
            data.append(chunk)
        }
        return data
    }

    /// Standard input, up to `limit` bytes: reading stops one byte past the limit, and more is refused rather than
    /// held in memory.
    static func readStandardInput(limit: Int, stdin: (Int) -> Data) throws -> Data {
        let data = stdin(max(0, limit) + 1)
        guard data.count <= limit else {
            throw LoadError(
                description: "stdin holds more than the context limit (\(max(0, limit)) bytes left); "
                    + "pass a file instead or raise the limit", isTooLarge: true)
        }
        return data
    }

    /// UTF-8 text without NUL bytes anywhere; `nil` for binary data.
    static func decodeText(_ data: Data) -> String? {
        if data.contains(0) { return nil }
        return String(data: data, encoding: .utf8)
    }

    private static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error { return context.debugDescription }
        return String(describing: error)
    }
}
