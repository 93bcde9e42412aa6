import Foundation

/// A task file: the suite's JSON format. `rlm bench tasks generate` writes one; `rlm bench tasks run --tasks` reads
/// one (a bare JSON array of tasks is accepted too).
///
/// ```json
/// {"format": "swiftrlm-tasks", "version": 1, "seed": 1, "tasks": [{"id": …, "kind": "counting", "size_bytes": …,
///   "query": …, "answer": "42", "answer_kind": "integer", "context": {"type": "text", "text": …}}]}
/// ```
public struct TaskFile: Sendable, Hashable, Codable {
    /// Always `swiftrlm-tasks`.
    public var format: String
    /// The format version (1).
    public var version: Int
    /// The seed the tasks were generated from, when they were.
    public var seed: UInt64?
    /// The tasks, in run order.
    public var tasks: [BenchTask]

    /// The current format version.
    public static let currentVersion = 1

    /// - Parameters:
    ///   - tasks: the tasks.
    ///   - seed: their seed, when generated.
    public init(tasks: [BenchTask], seed: UInt64? = nil) {
        self.format = "swiftrlm-tasks"
        self.version = Self.currentVersion
        self.seed = seed
        self.tasks = tasks
    }

    /// A file error a user can act on.
    public struct FormatError: Error, Sendable, CustomStringConvertible {
        /// What is wrong.
        public var description: String
    }

    /// The file as JSON: sorted keys, so equal tasks give byte-identical files.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// Reads a task file (or a bare array of tasks).
    /// - Parameter data: the JSON.
    /// - Throws: ``FormatError`` naming what is wrong.
    public static func decode(_ data: Data) throws -> TaskFile {
        let decoder = JSONDecoder()
        let file: TaskFile
        do {
            if data.first(where: { !" \n\r\t".utf8.contains($0) }) == UInt8(ascii: "[") {
                file = TaskFile(tasks: try decoder.decode([BenchTask].self, from: data))
            } else {
                file = try decoder.decode(TaskFile.self, from: data)
            }
        } catch let error as DecodingError {
            throw FormatError(description: "not a task file: \(describe(error))")
        }
        guard file.version <= currentVersion else {
            throw FormatError(
                description: "task file version \(file.version) is newer than this rlm understands (\(currentVersion))"
            )
        }
        var seen = Set<String>()
        for task in file.tasks {
            guard seen.insert(task.id).inserted else {
                throw FormatError(description: "task id '\(task.id)' appears twice")
            }
        }
        return file
    }

    private enum CodingKeys: String, CodingKey {
        case format, version, seed, tasks
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        format = try container.decodeIfPresent(String.self, forKey: .format) ?? "swiftrlm-tasks"
        version = try container.decodeIfPresent(Int.self, forKey: .version) ?? 1
        seed = try container.decodeIfPresent(UInt64.self, forKey: .seed)
        tasks = try container.decode([BenchTask].self, forKey: .tasks)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let context):
            return
                "missing '\(key.stringValue)' at \(path(context.codingPath).isEmpty ? "top" : path(context.codingPath))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(context.debugDescription) at \(path(context.codingPath))"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? context.debugDescription : "\(context.debugDescription) at \(path(context.codingPath))"
        @unknown default:
            return String(describing: error)
        }
    }
}
