import Foundation

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
    ///   - stdin: reads standard input (injected for tests).
    public func load(_ sources: [String], stdin: () -> Data = { FileHandle.standardInput.readDataToEndOfFile() })
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
                        + "pass fewer files or raise the limit")
            }
            guard let text = Self.decodeText(data) else {
                notices.append(Notice(path: path, reason: "binary file skipped"))
                total -= data.count
                return
            }
            documents.append((path, text))
        }
        for source in sources {
            if source == "-" {
                let data = stdin()
                guard let text = Self.decodeText(data) else {
                    throw LoadError(description: "stdin is not UTF-8 text")
                }
                total += data.count
                documents.append(("<stdin>", text))
                continue
            }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) else {
                throw LoadError(description: "context \(source): no such file or directory")
            }
            if isDirectory.boolValue {
                sawDirectory = true
                for file in try Self.listFiles(in: source) {
                    guard let data = FileManager.default.contents(atPath: file) else {
                        notices.append(Notice(path: file, reason: "unreadable, skipped"))
                        continue
                    }
                    try add(file, data)
                }
            } else {
                guard FileManager.default.isReadableFile(atPath: source),
                    let data = FileManager.default.contents(atPath: source)
                else {
                    throw LoadError(description: "context \(source): permission denied or unreadable")
                }
                guard Self.decodeText(data) != nil else {
                    throw LoadError(description: "context \(source) is not UTF-8 text (a binary file?)")
                }
                try add(source, data)
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

    /// Regular files below `directory`, sorted, skipping hidden entries and VCS/build folders.
    static func listFiles(in directory: String) throws -> [String] {
        let root = URL(fileURLWithPath: directory)
        guard
            let enumerator = FileManager.default.enumerator(
                at: root, includingPropertiesForKeys: [.isRegularFileKey, .isDirectoryKey],
                options: [.skipsHiddenFiles])
        else { throw LoadError(description: "context \(directory): cannot list the directory") }
        var files = [String]()
        for case let url as URL in enumerator {
            let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .isDirectoryKey])
            if values?.isDirectory == true, [".build", "node_modules", "__pycache__"].contains(url.lastPathComponent) {
                enumerator.skipDescendants()
                continue
            }
            if values?.isRegularFile == true { files.append(url.path) }
        }
        return files.sorted()
    }

    /// UTF-8 text without NUL bytes; `nil` for binary data.
    static func decodeText(_ data: Data) -> String? {
        if data.prefix(8192).contains(0) { return nil }
        return String(data: data, encoding: .utf8)
    }

    private static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error { return context.debugDescription }
        return String(describing: error)
    }
}
