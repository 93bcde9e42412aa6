import Foundation
import RLM

/// Host → worker requests (contract 3; docs/CHANNEL.md).
enum HostMessage {
    struct Initialize: Encodable {
        let type = "init"
        let id: String
        let outputLimit: Int
        let maxFrame: Int
        /// The most prompts one `llm_query_batched` may carry: the worker raises `ValueError` in the cell beyond it,
        /// before sending; the host's frame validation stays the hard boundary.
        let maxBatch: Int
        let workDir: String
        let landlock: Bool
        /// The most bytes an `rlm_query` context may stream out (the worker raises `ValueError` beyond it).
        let maxChildContext: Int
        /// `pipe`: context bytes use the data pipes on fds 3 and 4; `inline`: they follow their frame on the channel
        /// (backends whose worker has stdio only: container, command, wasm).
        let data: String

        enum CodingKeys: String, CodingKey {
            case type, id, landlock, data
            case outputLimit = "output_limit"
            case maxFrame = "max_frame"
            case maxBatch = "max_batch"
            case workDir = "work_dir"
            case maxChildContext = "max_child_context"
        }
    }

    struct Execute: Encodable {
        let type = "exec"
        let id: String
        let code: String
    }

    /// Load a context from the data pipe: `files` file records follow there (docs/CHANNEL.md).
    struct LoadContext: Encodable {
        let type = "context"
        let id: String
        let name: String
        let kind: String
        let files: Int
        let encoding: String
        let errors: String
        /// Characters of the head sample to measure.
        let sample: Int
        /// Documents whose heads to measure.
        let heads: Int
        /// Whether the worker counts lines (the host counts a single text's itself, and nobody counts documents').
        let countLines: Bool

        enum CodingKeys: String, CodingKey {
            case type, id, name, kind, files, encoding, errors, sample, heads
            case countLines = "count_lines"
        }
    }

    struct GetVariable: Encodable {
        let type = "get_var"
        let id: String
        let name: String
    }

    struct SubcallResult: Encodable {
        let type = "subcall_result"
        let id: String
        let ok: Bool
        let value: SubcallValue?
        let error: String?
    }

    enum SubcallValue: Encodable {
        case text(String)
        case batch([String])

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .text(let text): try container.encode(text)
            case .batch(let texts): try container.encode(texts)
            }
        }
    }

    struct Control: Encodable {
        let type: String
        static let interrupt = Control(type: "interrupt")
        static let shutdown = Control(type: "shutdown")
    }

    static func encode(_ message: some Encodable) -> Data {
        // `/` is not escaped: text full of slashes (paths, URLs, a hostile 9 MB of them) would otherwise double in
        // size on the wire and pass the frame cap.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        // Encoding our own plain structs cannot fail.
        return try! encoder.encode(message)
    }
}

/// The result fields of a worker's `result` frame.
struct WorkerCellResult: Sendable {
    var stdout: String
    var stderr: String
    var error: CellError?
    var final: String?
    var durationMilliseconds: Double
}

/// Worker → host frames, validated strictly: every field must be present with the right type, and sizes are checked.
enum WorkerMessage: Sendable {
    case ready(id: String, pid: Int, python: String, landlock: String)
    case result(id: String, WorkerCellResult)
    /// A sub-call; `stream` when an `rlm_query` context follows on the data pipe out (fd 4).
    case subcall(id: String, SubcallRequest, stream: ChildStream?)
    case loaded(id: String, ContextLoadReply)
    case variable(id: String, VariableValue?)
    case fatal(message: String)

    /// Limits on what a worker may ask for in one sub-call.
    static let maxBatchPrompts = 4096
    static let maxModelNameLength = 256
    static let maxIDLength = 64

    /// Parses and validates one frame.
    /// - Throws: a description of what is wrong, for a protocol-violation error.
    static func parse(_ payload: Data) throws(ParseFailure) -> WorkerMessage {
        let decoded: Raw
        do {
            decoded = try JSONDecoder().decode(Raw.self, from: payload)
        } catch let error as ParseFailure {
            throw error
        } catch {
            throw ParseFailure(reason: "malformed frame (\(payload.count) bytes): \(Self.describe(error))")
        }
        return decoded.message
    }

    struct ParseFailure: Error, Sendable {
        let reason: String
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context):
            return "not JSON (\(context.debugDescription))"
        case DecodingError.keyNotFound(let key, _):
            return "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "field '\(path)' has the wrong type"
        default:
            return String(describing: error)
        }
    }

    private struct Raw: Decodable {
        let message: WorkerMessage

        enum Keys: String, CodingKey {
            case type, id, pid, python, landlock, stdout, stderr, error, final
            case durationMS = "duration_ms"
            case call, prompt, prompts, model, context, found, value
            case typeName = "type_name"
            case message, summary
            case contextStream = "context_stream"
        }

        enum ErrorKeys: String, CodingKey {
            case type, message, traceback
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            let type = try c.decode(String.self, forKey: .type)
            func id() throws -> String {
                let value = try c.decode(String.self, forKey: .id)
                guard !value.isEmpty, value.utf8.count <= WorkerMessage.maxIDLength else {
                    throw ParseFailure(reason: "invalid id")
                }
                return value
            }
            switch type {
            case "ready":
                message = .ready(
                    id: try id(), pid: try c.decode(Int.self, forKey: .pid),
                    python: try c.decode(String.self, forKey: .python),
                    landlock: try c.decode(String.self, forKey: .landlock))
            case "result":
                var error: CellError?
                if try !c.decodeNil(forKey: .error) {
                    let e = try c.nestedContainer(keyedBy: ErrorKeys.self, forKey: .error)
                    error = CellError(
                        type: try e.decode(String.self, forKey: .type),
                        message: try e.decode(String.self, forKey: .message),
                        traceback: try e.decodeIfPresent(String.self, forKey: .traceback) ?? "")
                }
                let result = WorkerCellResult(
                    stdout: try c.decode(String.self, forKey: .stdout),
                    stderr: try c.decode(String.self, forKey: .stderr),
                    error: error,
                    final: try c.decodeIfPresent(String.self, forKey: .final),
                    durationMilliseconds: try c.decode(Double.self, forKey: .durationMS))
                message = .result(id: try id(), result)
            case "subcall":
                let call = try c.decode(String.self, forKey: .call)
                let model = try c.decodeIfPresent(String.self, forKey: .model)
                if let model, model.count > WorkerMessage.maxModelNameLength {
                    throw ParseFailure(reason: "model name longer than \(WorkerMessage.maxModelNameLength)")
                }
                let request: SubcallRequest
                switch call {
                case "llm_query":
                    request = .llmQuery(prompt: try c.decode(String.self, forKey: .prompt), model: model)
                case "llm_query_batched":
                    let prompts = try c.decode([String].self, forKey: .prompts)
                    guard prompts.count <= WorkerMessage.maxBatchPrompts else {
                        throw ParseFailure(
                            reason: "batch of \(prompts.count) prompts (at most \(WorkerMessage.maxBatchPrompts))")
                    }
                    request = .llmQueryBatched(prompts: prompts, model: model)
                case "rlm_query":
                    request = .rlmQuery(prompt: try c.decode(String.self, forKey: .prompt), context: nil, model: model)
                    if let announced = try c.decodeIfPresent(ChildStream.self, forKey: .contextStream) {
                        message = .subcall(id: try id(), request, stream: announced)
                        return
                    }
                default:
                    throw ParseFailure(reason: "unknown sub-call '\(call.prefix(40))'")
                }
                message = .subcall(id: try id(), request, stream: nil)
            case "loaded":
                if let error = try c.decodeIfPresent(String.self, forKey: .error) {
                    message = .loaded(id: try id(), .failed(error))
                } else {
                    message = .loaded(id: try id(), .summary(try c.decode(WireSummary.self, forKey: .summary).value))
                }
            case "var":
                let found = try c.decode(Bool.self, forKey: .found)
                if found {
                    message = .variable(
                        id: try id(),
                        VariableValue(
                            value: try c.decode(String.self, forKey: .value),
                            typeName: try c.decode(String.self, forKey: .typeName)))
                } else {
                    message = .variable(id: try id(), nil)
                }
            case "fatal":
                message = .fatal(message: try c.decode(String.self, forKey: .message))
            default:
                throw ParseFailure(reason: "unknown frame type '\(type.prefix(40))'")
            }
        }
    }
}

/// The worker's answer to a `context` request.
enum ContextLoadReply: Sendable {
    case summary(ContextSummary)
    /// Why the context could not be built (the REPL state is kept).
    case failed(String)
}

/// A `loaded` frame's summary, decoded strictly and cut to what the prompts use: the worker is not trusted to keep
/// its strings short.
private struct WireSummary: Decodable {
    let value: ContextSummary

    static let maxHead = 64 << 10
    static let maxNotices = 1000

    enum Keys: String, CodingKey {
        case type, shape, bytes, characters, lines, items, head, keys, skipped
        case itemSizes = "item_sizes"
        case itemHeads = "item_heads"
        case decodedAs = "decoded_as"
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        func count(_ key: Keys) throws -> Int {
            let value = try c.decode(Int.self, forKey: key)
            guard value >= 0 else { throw WorkerMessage.ParseFailure(reason: "summary: negative \(key.stringValue)") }
            return value
        }
        func notices(_ key: Keys) throws -> [ContextSummary.Notice] {
            try c.decode([[String]].self, forKey: key).prefix(Self.maxNotices).map { pair in
                guard pair.count == 2 else {
                    throw WorkerMessage.ParseFailure(reason: "summary: a notice is not a pair")
                }
                return ContextSummary.Notice(label: String(pair[0].prefix(4096)), reason: String(pair[1].prefix(500)))
            }
        }
        func cut(_ text: String) -> String {
            String(String.UnicodeScalarView(text.unicodeScalars.prefix(Self.maxHead)))
        }
        guard let shape = ContextSource.Shape(rawValue: try c.decode(String.self, forKey: .shape)) else {
            throw WorkerMessage.ParseFailure(reason: "summary: unknown shape")
        }
        value = ContextSummary(
            type: String(try c.decode(String.self, forKey: .type).prefix(64)), shape: shape,
            bytes: try count(.bytes), characters: try count(.characters), lines: try count(.lines),
            items: try count(.items), itemSizes: Array(try c.decode([Int].self, forKey: .itemSizes).prefix(5)),
            head: cut(try c.decode(String.self, forKey: .head)),
            itemHeads: try c.decode([String].self, forKey: .itemHeads).prefix(8).map(cut),
            keys: try c.decode([String].self, forKey: .keys).prefix(12).map { String($0.prefix(200)) },
            skipped: try notices(.skipped), decodedAs: try notices(.decodedAs))
    }
}

/// An `rlm_query` context announced in the sub-call frame, whose bytes follow on the data pipe out.
struct ChildStream: Decodable, Sendable {
    /// `str` (UTF-8 text) or `json`.
    let kind: ContextSource.Shape
    /// The bytes that follow, as chunk records.
    let bytes: Int

    init(from decoder: any Decoder) throws {
        enum Keys: String, CodingKey { case kind, bytes }
        let c = try decoder.container(keyedBy: Keys.self)
        guard let kind = ContextSource.Shape(rawValue: try c.decode(String.self, forKey: .kind)), kind != .documents
        else { throw WorkerMessage.ParseFailure(reason: "context_stream: kind must be \"str\" or \"json\"") }
        let bytes = try c.decode(Int.self, forKey: .bytes)
        guard bytes >= 0 else { throw WorkerMessage.ParseFailure(reason: "context_stream: negative bytes") }
        self.kind = kind
        self.bytes = bytes
    }
}
