import Foundation
import Hummingbird
import RLM
import RLMService

/// `POST /v1/chat/completions`: OpenAI's request and response shapes around one RLM run.
enum ChatCompletions {
    /// What the request asks, read leniently where OpenAI is (unknown fields ignored), strictly where a mistake
    /// would change the answer.
    struct Parsed {
        var run: RunRequest
        var model: String
        var stream: Bool
        var includeUsage: Bool
    }

    static func parse(_ body: [String: JSONValue]) throws -> Parsed {
        guard case .string(let model)? = body["model"], !model.isEmpty else {
            throw ServiceError.invalid("'model' is required: one of GET /v1/models", param: "model")
        }
        guard case .array(let messages)? = body["messages"], !messages.isEmpty else {
            throw ServiceError.invalid("'messages' must be a non-empty array", param: "messages")
        }
        var turns = [(role: String, text: String)]()
        for (index, item) in messages.enumerated() {
            guard case .object(let message) = item, case .string(let role)? = message["role"] else {
                throw ServiceError.invalid(
                    "messages[\(index)] must be an object with a 'role'", param: "messages[\(index)]")
            }
            guard ["system", "developer", "user", "assistant", "tool"].contains(role) else {
                throw ServiceError.invalid(
                    "messages[\(index)].role must be system, developer, user, assistant or tool",
                    param: "messages[\(index)].role")
            }
            turns.append((role, try text(of: message["content"], at: index)))
        }
        guard let last = turns.lastIndex(where: { $0.role == "user" }),
            !turns[last].text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        else {
            throw ServiceError.invalid("the question is the last user message, and it has no text", param: "messages")
        }
        let earlier = turns.enumerated().filter { $0.offset != last && !$0.element.text.isEmpty }
        let history = earlier.map { "\($0.element.role): \($0.element.text)" }.joined(separator: "\n\n")
        var run = RunRequest(query: turns[last].text, history: history.isEmpty ? nil : history, model: model)
        switch body["rlm"] {
        case nil, .null?: break
        case .object(let options)?: try apply(options, to: &run, prefix: "rlm.")
        default: throw ServiceError.invalid("'rlm' must be an object", param: "rlm")
        }
        let stream = try flag(body["stream"], "stream")
        var includeUsage = false
        if case .object(let options)? = body["stream_options"] {
            includeUsage = try flag(options["include_usage"], "stream_options.include_usage")
        }
        return Parsed(run: run, model: model, stream: stream, includeUsage: includeUsage)
    }

    /// The `rlm` options (also the body of `POST /v1/sessions`).
    static func apply(
        _ options: [String: JSONValue], to run: inout RunRequest, prefix: String, alsoAllowed: Set<String> = []
    ) throws {
        // Strict, unlike OpenAI's own fields: a misspelt `max_cost` would otherwise run without the limit asked for.
        let known: Set<String> = [
            "contexts", "session", "max_iterations", "max_depth", "max_tokens", "max_cost", "timeout",
        ]
        if let unknown = options.keys.sorted().first(where: { !known.contains($0) && !alsoAllowed.contains($0) }) {
            throw ServiceError.invalid(
                "unknown option \(prefix)\(unknown); the options are \(known.sorted().joined(separator: ", "))",
                param: prefix + unknown)
        }
        func integer(_ key: String) throws -> Int? {
            switch options[key] {
            case nil, .null?: return nil
            case .int(let value)?: return value
            case .double(let value)? where value == value.rounded() && abs(value) < 1e15: return Int(value)
            default: throw ServiceError.invalid("\(prefix)\(key) must be an integer", param: prefix + key)
            }
        }
        func number(_ key: String) throws -> Double? {
            switch options[key] {
            case nil, .null?: return nil
            case .int(let value)?: return Double(value)
            case .double(let value)?: return value
            default: throw ServiceError.invalid("\(prefix)\(key) must be a number", param: prefix + key)
            }
        }
        switch options["contexts"] {
        case nil, .null?: break
        case .array(let items)? where items.count <= 1000:
            run.contextIDs = try items.map { item in
                guard case .string(let id) = item else {
                    throw ServiceError.invalid("\(prefix)contexts must hold context ids", param: prefix + "contexts")
                }
                return id
            }
        default:
            throw ServiceError.invalid(
                "\(prefix)contexts must be an array of context ids (at most 1000)", param: prefix + "contexts")
        }
        switch options["session"] {
        case nil, .null?: break
        case .string(let id)?: run.sessionID = id
        default: throw ServiceError.invalid("\(prefix)session must be a session id", param: prefix + "session")
        }
        run.maxIterations = try integer("max_iterations")
        run.maxDepth = try integer("max_depth")
        run.maxTokens = try integer("max_tokens")
        run.maxCostUSD = try number("max_cost")
        run.timeoutSeconds = try number("timeout")
    }

    private static func flag(_ value: JSONValue?, _ name: String) throws -> Bool {
        switch value {
        case nil, .null?: return false
        case .bool(let flag)?: return flag
        default: throw ServiceError.invalid("'\(name)' must be true or false", param: name)
        }
    }

    /// A message's text: a string, or the text parts of an array; other parts (images) are refused.
    private static func text(of content: JSONValue?, at index: Int) throws -> String {
        switch content {
        case nil, .null?: return ""
        case .string(let text)?: return text
        case .array(let parts)?:
            return try parts.map { part -> String in
                guard case .object(let part) = part, part["type"] == "text", case .string(let text)? = part["text"]
                else {
                    throw ServiceError.invalid(
                        "messages[\(index)].content parts must be {\"type\": \"text\", \"text\": …}; this server "
                            + "reads text only",
                        param: "messages[\(index)].content")
                }
                return text
            }.joined(separator: "\n")
        default:
            throw ServiceError.invalid(
                "messages[\(index)].content must be a string or an array of text parts",
                param: "messages[\(index)].content")
        }
    }

    // MARK: - Replies

    static func completion(_ outcome: RunOutcome, id: String, created: Int) -> [String: Any] {
        let answer = outcome.result.answer
        return [
            "id": id, "object": "chat.completion", "created": created, "model": outcome.model,
            "system_fingerprint": NSNull(),
            "choices": [
                [
                    "index": 0, "logprobs": NSNull(),
                    "message": [
                        "role": "assistant", "content": answer.map { $0 as Any } ?? NSNull(), "refusal": NSNull(),
                    ],
                    "finish_reason": answer == nil ? "length" : "stop",
                ] as [String: Any]
            ],
            "usage": usage(outcome),
            "rlm": summary(outcome),
        ]
    }

    static func usage(_ outcome: RunOutcome) -> [String: Any] {
        let tokens = outcome.result.usage.tokens
        return [
            "prompt_tokens": tokens.inputTokens, "completion_tokens": tokens.outputTokens,
            "total_tokens": tokens.totalTokens,
        ]
    }

    static func summary(_ outcome: RunOutcome) -> [String: Any] {
        let usage = outcome.result.usage
        var summary: [String: Any] = [
            "status": outcome.status, "iterations": outcome.result.iterations,
            "cost_usd": usage.costUSD.isFinite ? usage.costUSD : 0, "model_calls": usage.modelCalls,
            "subcalls": usage.subcalls, "trajectory": outcome.trajectoryID,
            "duration_ms": Int(outcome.result.duration.inMilliseconds),
        ]
        if case .budgetExhausted(let reason) = outcome.result.status {
            summary["limit"] = reason.limit.rawValue
            summary["message"] = reason.message
        }
        if let session = outcome.sessionID { summary["session"] = session }
        return summary
    }

    static func chunk(
        id: String, created: Int, model: String, delta: [String: Any], finish: String? = nil,
        extra: [String: Any] = [:]
    ) -> [String: Any] {
        var chunk: [String: Any] = [
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": NSNull(),
            "choices": [
                [
                    "index": 0, "delta": delta, "logprobs": NSNull(),
                    "finish_reason": finish.map { $0 as Any } ?? NSNull(),
                ]
            ],
        ]
        for (key, value) in extra { chunk[key] = value }
        return chunk
    }

    /// What a stream says of an event while the run works: kinds and counters, never code, outputs or answers
    /// (those are the model's and the sandbox's, and arrive as the answer when there is one).
    static func progress(_ event: RLMEvent) -> [String: Any]? {
        var progress: [String: Any] = [
            "event": event.kind.rawValue, "iteration": event.iteration, "depth": event.depth,
        ]
        switch event.kind {
        case .modelRequest, .codeStarted, .codeResult, .subcall, .contextLoaded, .budgetExhausted, .note:
            if event.kind == .codeResult, let failed = event.data["error"], failed != .null {
                progress["error"] = true
            }
            if let usage = event.usage {
                progress["tokens"] = usage.tokens.totalTokens
            }
            return progress
        default:
            return nil
        }
    }

    /// One Server-Sent Events record.
    static func sse(_ object: [String: Any]) -> ByteBuffer {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        var buffer = ByteBuffer()
        buffer.writeString("data: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        return buffer
    }

    static func newID() -> String {
        "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }
}
