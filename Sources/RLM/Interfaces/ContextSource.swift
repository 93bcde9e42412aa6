import CRLMSystem
import Foundation
import Glibc

/// A context as the host hands it to a sandbox: a list of sources the sandbox reads as they stream in, never a value
/// the host holds. The host knows each source's size before anything is read (limits are checked on that); the
/// sandbox decodes, builds `context` and measures it (``ContextSummary``).
public struct ContextSource: Sendable {
    /// What `context` becomes inside the REPL (contract 1).
    public enum Shape: String, Sendable, Hashable, Codable {
        /// One `str` built from the single file.
        case text = "str"
        /// A `list[str]`, one document per file, each starting with the line `### <label>`.
        case documents = "list"
        /// The single file parsed as JSON (a `dict`, a `list`, …).
        case json
    }

    /// What `context` becomes.
    public var shape: Shape
    /// The files, in order. `.text` and `.json` have exactly one.
    public var files: [ContextFile]
    /// How bytes become text.
    public var encoding: ContextEncoding

    /// - Parameters: as the properties.
    public init(shape: Shape, files: [ContextFile], encoding: ContextEncoding = .auto) {
        self.shape = shape
        self.files = files
        self.encoding = encoding
    }

    /// The bytes the sandbox will read, as planned (a file that grows meanwhile is cut at its planned size).
    public var totalBytes: Int { files.reduce(0) { $0 + $1.size } }

    /// A context that is already in memory (a bench task, an uploaded text): one source per document, UTF-8.
    /// - Parameter value: the text, documents or JSON.
    public init(_ value: ContextValue) {
        encoding = ContextEncoding(name: "utf-8", errors: .strict)
        switch value {
        case .text(let text):
            shape = .text
            files = [ContextFile(label: "<text>", data: Data(text.utf8))]
        case .documents(let documents):
            // In-memory documents are whole already: an empty label means no `### label` line is added.
            shape = .documents
            files = documents.enumerated().map { ContextFile(label: "", data: Data($0.element.utf8)) }
        case .json(let json):
            shape = .json
            files = [ContextFile(label: "<json>", data: (try? JSONEncoder().encode(json)) ?? Data("null".utf8))]
        }
    }
}

/// How the sandbox turns a source's bytes into text.
public struct ContextEncoding: Sendable, Hashable, Codable, CustomStringConvertible {
    /// What to do with bytes the encoding cannot decode.
    public enum Errors: String, Sendable, Hashable, Codable, CaseIterable {
        /// Refuse: a single text fails with a message; a document in a directory is skipped and named.
        case strict
        /// Replace each bad byte with U+FFFD and go on (lossy).
        case replace
    }

    /// `auto`, or a Python codec name (`utf-8`, `latin-1`, `utf-16`, `cp1252`, …).
    ///
    /// `auto`: a byte-order mark decides (UTF-8, UTF-16, UTF-32); otherwise UTF-8, and a file that is not valid
    /// UTF-8 is read as Latin-1 (every byte kept, named in a notice) unless it holds NUL bytes (binary).
    public var name: String
    /// See ``Errors``.
    public var errors: Errors

    /// - Parameters: as the properties.
    public init(name: String, errors: Errors) {
        self.name = name
        self.errors = errors
    }

    /// The default: `auto`, strict.
    public static let auto = ContextEncoding(name: "auto", errors: .strict)

    public var description: String { errors == .strict ? name : "\(name) (bad bytes replaced)" }
}

/// One source of a context: a file below a directory the user named, an open file, or bytes in memory.
public struct ContextFile: Sendable {
    /// Where the bytes are.
    public enum Content: Sendable {
        /// A file at a relative path below an open directory, opened only when it is sent (no symlink followed).
        case below(ContextDirectory, path: String)
        /// A file already open (a named file, spooled standard input, a child's context): read from offset 0.
        case open(ContextDescriptor)
        /// Bytes in memory.
        case data(Data)
    }

    /// How the document is named in `context` (its first line, `### <label>`; none when empty) and in messages.
    public var label: String
    /// The bytes to read at most (the size when planned).
    public var size: Int
    /// Where the bytes are.
    public var content: Content

    /// - Parameters: as the properties.
    public init(label: String, size: Int, content: Content) {
        self.label = label
        self.size = size
        self.content = content
    }

    /// Bytes in memory.
    public init(label: String, data: Data) {
        self.init(label: label, size: data.count, content: .data(data))
    }

    /// Opens the source for reading, checking it is still a regular file; the caller closes the descriptor.
    /// `nil` for in-memory data.
    /// - Throws: ``ContextLoadError`` naming the file.
    public func openForReading() throws -> Int32? {
        switch content {
        case .data:
            return nil
        case .open(let descriptor):
            let fd = dup(descriptor.fd)
            guard fd >= 0 else { throw ContextLoadError("context \(label): \(String(cString: strerror(errno)))") }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            return fd
        case .below(let directory, let path):
            return try directory.openRegularFile(path, label: label)
        }
    }
}

/// An open directory the context's files are opened below, closed when the last reference goes.
public final class ContextDirectory: Sendable {
    /// The directory, opened `O_DIRECTORY`.
    public let fd: Int32

    /// - Parameter fd: an open directory descriptor; this object owns it.
    public init(fd: Int32) {
        self.fd = fd
    }

    deinit { close(fd) }

    /// Opens `path` below this directory for reading: never through a symbolic link, never outside the directory
    /// (openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; where the kernel lacks openat2, component by component with
    /// `O_NOFOLLOW`), without blocking on a FIFO, and only if it is a regular file.
    public func openRegularFile(_ path: String, label: String) throws -> Int32 {
        let fd = crlm_open_beneath(self.fd, path)
        guard fd >= 0 else {
            let reason = errno == ELOOP ? "it is now a symbolic link" : String(cString: strerror(errno))
            throw ContextLoadError("context \(label) could not be opened: \(reason)")
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw ContextLoadError("context \(label) is no longer a regular file")
        }
        // Reads block normally from here on (O_NONBLOCK only guarded the open against FIFOs).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return fd
    }

    /// Opens `path` below this directory as ``openRegularFile(_:label:)`` does, a directory as well as a regular
    /// file (a server's path argument beneath one of its roots).
    /// - Throws: ``ContextLoadError`` when it does not exist, leaves the directory, goes through a link, or is
    ///   neither a regular file nor a directory.
    public func openEntry(_ path: String) throws -> Int32 {
        let fd = crlm_open_beneath(self.fd, path)
        guard fd >= 0 else {
            throw ContextLoadError("\(path) could not be opened: \(String(cString: strerror(errno)))")
        }
        var info = stat()
        let kind = fstat(fd, &info) == 0 ? info.st_mode & S_IFMT : 0
        guard kind == S_IFREG || kind == S_IFDIR else {
            close(fd)
            throw ContextLoadError("\(path) is not a regular file or a directory")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return fd
    }
}

/// An open file owned by a context (closed when the last reference goes).
public final class ContextDescriptor: Sendable {
    /// The descriptor, read with `pread` from offset 0 each time the context is sent.
    public let fd: Int32

    /// - Parameter fd: an open descriptor; this object owns it.
    public init(fd: Int32) {
        self.fd = fd
    }

    deinit { close(fd) }

    /// A new unlinked read-write file, mode 0600, in SwiftRLM's private cache directory (else in `TMPDIR`), for
    /// bytes that can be read only once (standard input, a child's context): `O_TMPFILE` where the file system has it,
    /// otherwise `mkstemp` and `unlink`.
    /// - Parameter environment: where the cache directory and `TMPDIR` are found.
    public static func spool(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> ContextDescriptor
    {
        var directories = [String]()
        let cache = SwiftRLMPaths.cacheDirectory(environment: environment)
        if (try? SwiftRLMPaths.createDirectory(cache, privateToOwner: true)) != nil { directories.append(cache.path) }
        directories.append(environment["TMPDIR"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "/tmp")
        // O_TMPFILE is `__O_TMPFILE | O_DIRECTORY`, a macro Swift does not import; __O_TMPFILE is the same on every
        // architecture Swift runs on.
        let temporaryFile: Int32 = 0o20_000_000 | O_DIRECTORY
        for directory in directories {
            let fd = open(directory, temporaryFile | O_RDWR | O_CLOEXEC, 0o600)
            if fd >= 0 { return ContextDescriptor(fd: fd) }
            var template = Array("\(directory)/rlm-spool-XXXXXX".utf8CString)
            let named = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            if named >= 0 {
                _ = fcntl(named, F_SETFD, FD_CLOEXEC)
                template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
                return ContextDescriptor(fd: named)
            }
        }
        throw ContextLoadError(
            "no private file could be made to spool the context in \(directories.joined(separator: " or "))")
    }
}

/// A context that could not be loaded, said so a user can act on it (which file, which flag).
public struct ContextLoadError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var description: String
    /// The context is larger than a limit (an HTTP front end answers 413).
    public var isTooLarge: Bool

    /// - Parameters: as the properties.
    public init(_ description: String, isTooLarge: Bool = false) {
        self.description = description
        self.isTooLarge = isTooLarge
    }
}

/// What the sandbox measured while it read the context: what the prompts say about it.
public struct ContextSummary: Sendable, Hashable, Codable {
    /// What `context` is: `str`, `list` (of documents), or for JSON the Python type name (`dict`, `list`, …).
    public var type: String
    /// The shape it was loaded as.
    public var shape: ContextSource.Shape
    /// Bytes read.
    public var bytes: Int
    /// Characters (Unicode code points) of text; for JSON, of the file.
    public var characters: Int
    /// Lines of a single text or JSON file (a last line without a newline counts); 0 for documents, whose lines are
    /// not counted (the prompt does not use them, and counting costs a pass over every document).
    public var lines: Int
    /// Documents in a `list` of documents, or items of a JSON list / keys of a JSON dict.
    public var items: Int
    /// The characters of the first few documents.
    public var itemSizes: [Int]
    /// The first characters of the text (or of the JSON).
    public var head: String
    /// The first characters of the first few documents.
    public var itemHeads: [String]
    /// The first few keys of a JSON dict.
    public var keys: [String]
    /// Files the sandbox left out (binary, or not decodable in strict mode), with why.
    public var skipped: [Notice]
    /// Files decoded some other way than asked (`auto` reading a non-UTF-8 file as Latin-1), with how.
    public var decodedAs: [Notice]

    /// A file and what happened to it.
    public struct Notice: Sendable, Hashable, Codable {
        /// The file's label.
        public var label: String
        /// What happened.
        public var reason: String

        /// - Parameters: as the properties.
        public init(label: String, reason: String) {
            self.label = label
            self.reason = reason
        }
    }

    /// - Parameters: as the properties.
    public init(
        type: String, shape: ContextSource.Shape, bytes: Int, characters: Int, lines: Int, items: Int = 0,
        itemSizes: [Int] = [], head: String = "", itemHeads: [String] = [], keys: [String] = [],
        skipped: [Notice] = [], decodedAs: [Notice] = []
    ) {
        self.type = type
        self.shape = shape
        self.bytes = bytes
        self.characters = characters
        self.lines = lines
        self.items = items
        self.itemSizes = itemSizes
        self.head = head
        self.itemHeads = itemHeads
        self.keys = keys
        self.skipped = skipped
        self.decodedAs = decodedAs
    }

    /// Nothing to read: an empty text, no documents, an empty JSON container.
    public var isEmpty: Bool {
        switch shape {
        case .text: return characters == 0
        case .documents: return items == 0
        case .json: return items == 0 && (type == "dict" || type == "list")
        }
    }

    /// Measures a context held in memory the way the sandbox worker measures one it reads (for sandboxes that hold
    /// values, like the in-memory test sandbox).
    /// - Parameters:
    ///   - value: the context.
    ///   - sampleCharacters: the length of ``head``.
    public static func measure(_ value: ContextValue, sampleCharacters: Int) -> ContextSummary {
        func lines(_ text: String) -> Int {
            var count = 0
            var last: UInt8 = 0
            for byte in text.utf8 {
                if byte == 0x0A { count += 1 }
                last = byte
            }
            return count + (text.isEmpty || last == 0x0A ? 0 : 1)
        }
        let headsShown = 3
        switch value {
        case .text(let text):
            return ContextSummary(
                type: "str", shape: .text, bytes: text.utf8.count, characters: text.unicodeScalars.count,
                lines: lines(text), head: String(String.UnicodeScalarView(text.unicodeScalars.prefix(sampleCharacters)))
            )
        case .documents(let documents):
            let each = max(80, sampleCharacters / max(1, min(headsShown, documents.count)))
            return ContextSummary(
                type: "list", shape: .documents, bytes: documents.reduce(0) { $0 + $1.utf8.count },
                characters: documents.reduce(0) { $0 + $1.unicodeScalars.count },
                lines: 0, items: documents.count,
                itemSizes: documents.prefix(5).map { $0.unicodeScalars.count },
                itemHeads: documents.prefix(headsShown).map {
                    String(String.UnicodeScalarView($0.unicodeScalars.prefix(each)))
                })
        case .json(let json):
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let text = String(decoding: (try? encoder.encode(json)) ?? Data(), as: UTF8.self)
            var summary = ContextSummary(
                type: "int", shape: .json, bytes: text.utf8.count, characters: text.unicodeScalars.count,
                lines: lines(text), head: String(String.UnicodeScalarView(text.unicodeScalars.prefix(sampleCharacters)))
            )
            switch json {
            case .object(let object):
                summary.type = "dict"
                summary.items = object.count
                summary.keys = Array(object.keys.sorted().prefix(12))
            case .array(let array):
                summary.type = "list"
                summary.items = array.count
            case .string: summary.type = "str"
            case .bool: summary.type = "bool"
            case .null: summary.type = "NoneType"
            case .int: summary.type = "int"
            case .double: summary.type = "float"
            }
            return summary
        }
    }
}
