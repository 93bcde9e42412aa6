import Foundation
import RLM

/// One long-context question with an exact answer: the unit of the task suite.
///
/// Encoded as JSON (snake_case keys) in a task file, so a set generated elsewhere — or a hidden one — loads the same way.
public struct BenchTask: Sendable, Hashable, Codable {
    /// Unique within a suite, e.g. `s1-03-aggregation-1m`.
    public var id: String
    /// What kind of task it is.
    public var kind: TaskKind
    /// Size of the context in bytes (UTF-8; for documents, the sum of the documents).
    public var sizeBytes: Int
    /// The question asked.
    public var query: String
    /// What the question is about.
    public var context: ContextValue
    /// The exact expected answer.
    public var answer: String
    /// How ``answer`` is compared with a prediction.
    public var answerKind: AnswerKind

    /// - Parameters: as the properties.
    public init(
        id: String, kind: TaskKind, sizeBytes: Int, query: String, context: ContextValue, answer: String,
        answerKind: AnswerKind
    ) {
        self.id = id
        self.kind = kind
        self.sizeBytes = sizeBytes
        self.query = query
        self.context = context
        self.answer = answer
        self.answerKind = answerKind
    }

    private enum CodingKeys: String, CodingKey {
        case id, kind, query, context, answer
        case sizeBytes = "size_bytes"
        case answerKind = "answer_kind"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        kind = try container.decode(TaskKind.self, forKey: .kind)
        query = try container.decode(String.self, forKey: .query)
        context = try container.decode(CodableContext.self, forKey: .context).value
        answer = try container.decode(String.self, forKey: .answer)
        answerKind = try container.decode(AnswerKind.self, forKey: .answerKind)
        sizeBytes = try container.decodeIfPresent(Int.self, forKey: .sizeBytes) ?? Self.byteCount(of: context)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(kind, forKey: .kind)
        try container.encode(sizeBytes, forKey: .sizeBytes)
        try container.encode(query, forKey: .query)
        try container.encode(CodableContext(context), forKey: .context)
        try container.encode(answer, forKey: .answer)
        try container.encode(answerKind, forKey: .answerKind)
    }

    /// The size of a context in UTF-8 bytes (for documents, the sum of the documents; for JSON, its encoding).
    /// - Parameter context: the context.
    public static func byteCount(of context: ContextValue) -> Int {
        switch context {
        case .text(let text): return text.utf8.count
        case .documents(let documents): return documents.reduce(0) { $0 + $1.utf8.count }
        case .json(let value): return (try? JSONEncoder().encode(value).count) ?? 0
        }
    }
}

/// The kind of a task. Open (a string), so task files with kinds this version does not generate still load.
public struct TaskKind: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    /// The kind's name in task files.
    public var rawValue: String

    /// - Parameter rawValue: the kind's name.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// Count matching lines of a long log.
    public static let counting = TaskKind(rawValue: "counting")
    /// Find one fact hidden in a long log or prose, among near-miss decoys.
    public static let needle = TaskKind(rawValue: "needle")
    /// Sum or compare fields over many short documents (orders, invoices, tickets).
    public static let aggregation = TaskKind(rawValue: "aggregation")
    /// Questions about a generated multi-file Python project.
    public static let sourceTree = TaskKind(rawValue: "source_tree")

    /// Rank the top few services, paths, customers or products by a count or a sum.
    public static let topK = TaskKind(rawValue: "top_k")
    /// Count the distinct values of a field (customers, client IPs, users) among records that pass a filter.
    public static let distinct = TaskKind(rawValue: "distinct")
    /// Count the documents that mention a word (whole word, any case) among near-miss words.
    public static let mentions = TaskKind(rawValue: "mentions")
    /// Two dependent steps (find an entity, then ask about it), where the one-step shortcut gives another answer.
    public static let multiStep = TaskKind(rawValue: "multi_step")
    /// A small directory of files in different formats that must be joined on an id.
    public static let join = TaskKind(rawValue: "join")
    /// JSON lines with nested objects, lists and optional fields; an average of a nested field, rounded.
    public static let jsonl = TaskKind(rawValue: "jsonl")
    /// CSV with quoted fields, decimals, a list column and a JSON column; a filtered sum or average, rounded.
    public static let csv = TaskKind(rawValue: "csv")
    /// The current code of one exact entity among decoys: names one edit away, a superseded code, other wordings.
    public static let needleDecoys = TaskKind(rawValue: "needle_decoys")
    /// Which one of a few documents sharing a keyword is about what the question means.
    public static let meaning = TaskKind(rawValue: "meaning")
    /// How many of the documents that mention a topic complain about it.
    public static let meaningCount = TaskKind(rawValue: "meaning_count")

    /// The kinds this version generates, in suite order (the first four keep their place: a kind's position is part
    /// of its tasks' random streams).
    public static let generated: [TaskKind] = [
        .counting, .needle, .aggregation, .sourceTree, .topK, .distinct, .mentions, .multiStep, .join, .jsonl, .csv,
        .needleDecoys, .meaning, .meaningCount,
    ]

    /// One-step kinds: a small model solves them with one filter over the context.
    public static let simple: [TaskKind] = [
        .counting, .needle, .aggregation, .sourceTree, .topK, .distinct, .mentions,
    ]

    /// Kinds that need several steps, a join, careful parsing, or reading for meaning.
    public static let hard: [TaskKind] = [.multiStep, .join, .jsonl, .csv, .needleDecoys, .meaning, .meaningCount]
}

/// How an expected answer is compared with a prediction (see ``AnswerScorer``).
public enum AnswerKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// A whole number, compared numerically.
    case integer
    /// A decimal number, compared numerically.
    case number
    /// A string, compared case-insensitively.
    case text
    /// A file path, compared after dropping a leading `./` or `### `.
    case path
    /// An ordered list, comma-separated; items compared in order, case-insensitively (an "and" before the last item
    /// and spaces around commas are ignored).
    case list
}

/// `ContextValue` in a task file: `{"type": "text", "text": …}`, `{"type": "documents", "documents": […]}` or
/// `{"type": "json", "value": …}`.
struct CodableContext: Codable {
    var value: ContextValue

    init(_ value: ContextValue) {
        self.value = value
    }

    private enum CodingKeys: String, CodingKey {
        case type, text, documents, value
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "text": value = .text(try container.decode(String.self, forKey: .text))
        case "documents": value = .documents(try container.decode([String].self, forKey: .documents))
        case "json": value = .json(try container.decode(JSONValue.self, forKey: .value))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .type, in: container,
                debugDescription: "unknown context type '\(type)' (expected text, documents or json)")
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch value {
        case .text(let text):
            try container.encode("text", forKey: .type)
            try container.encode(text, forKey: .text)
        case .documents(let documents):
            try container.encode("documents", forKey: .type)
            try container.encode(documents, forKey: .documents)
        case .json(let json):
            try container.encode("json", forKey: .type)
            try container.encode(json, forKey: .value)
        }
    }
}
