import Foundation
import RLM

extension FakeLLMServer {
    /// The two wire formats the server speaks.
    public enum WireFormat: String, Sendable, Hashable, CaseIterable {
        /// OpenAI chat completions: `POST /v1/chat/completions` (or `/chat/completions`).
        case openAI
        /// Anthropic Messages: `POST /v1/messages`.
        case anthropic
    }

    /// One request the server received, decoded from either wire format.
    public struct Request: Sendable {
        /// Which endpoint was called.
        public var format: WireFormat
        /// The HTTP method.
        public var method: String
        /// The request path, without the query.
        public var path: String
        /// The request headers, in order.
        public var headers: [(name: String, value: String)]
        /// The `model` field.
        public var model: String?
        /// The conversation: for both formats the system prompt comes first as a `.system` message (Anthropic's
        /// top-level `system` field, OpenAI's system messages where they were).
        public var messages: [ChatMessage]
        /// Whether the client asked for a stream.
        public var stream: Bool
        /// Whether an OpenAI client asked for a final usage chunk (`stream_options.include_usage`).
        public var includeUsage: Bool
        /// Whether an OpenAI client asked for the call's cost (`usage.include`, OpenRouter's usage accounting).
        public var includeCost: Bool
        /// `max_tokens` (or `max_completion_tokens`).
        public var maxTokens: Int?
        /// `temperature`.
        public var temperature: Double?
        /// `stop` (OpenAI) or `stop_sequences` (Anthropic).
        public var stop: [String]
        /// The raw body.
        public var body: [UInt8]
        /// When the request arrived.
        public var receivedAt: ContinuousClock.Instant
        /// The request's position among all the server received, from 0.
        public var index: Int

        /// The first header with this name (case-insensitive).
        /// - Parameter name: the header name.
        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }

        /// The body as text.
        public var bodyText: String { String(decoding: body, as: UTF8.self) }

        /// The body as a JSON object, when it is one.
        public var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        }

        /// The system prompt: the `.system` messages joined with a blank line, or `nil`.
        public var systemPrompt: String? {
            let system = messages.filter { $0.role == .system }.map(\.content)
            return system.isEmpty ? nil : system.joined(separator: "\n\n")
        }

        /// The last user message's text.
        public var lastUserMessage: String? { messages.last { $0.role == .user }?.content }
    }
}

extension FakeLLMServer.Request {
    /// A request of which only the envelope is known yet (method, path, headers, raw body); decoding fills the rest.
    static func envelope(
        format: FakeLLMServer.WireFormat, method: String, path: String, headers: [(name: String, value: String)],
        body: [UInt8], index: Int
    ) -> Self {
        Self(
            format: format, method: method, path: path, headers: headers, model: nil, messages: [], stream: false,
            includeUsage: false, includeCost: false, maxTokens: nil, temperature: nil, stop: [], body: body,
            receivedAt: .now, index: index)
    }
}

/// Decodes request bodies of both formats, checking what the real APIs check.
enum RequestDecoder {
    struct Invalid: Error {
        var message: String
    }

    static func decode(
        format: WireFormat,
        method: String,
        path: String,
        headers: [(name: String, value: String)],
        body: [UInt8],
        index: Int,
        strict: Bool
    ) -> (FakeLLMServer.Request, Invalid?) {
        var request = FakeLLMServer.Request.envelope(
            format: format, method: method, path: path, headers: headers, body: body, index: index)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            return (request, Invalid(message: "the request body is not a JSON object"))
        }
        request.model = object["model"] as? String
        request.stream = (object["stream"] as? Bool) ?? false
        request.includeUsage = ((object["stream_options"] as? [String: Any])?["include_usage"] as? Bool) ?? false
        request.includeCost = ((object["usage"] as? [String: Any])?["include"] as? Bool) ?? false
        request.maxTokens =
            (object["max_tokens"] as? NSNumber)?.intValue ?? (object["max_completion_tokens"] as? NSNumber)?.intValue
        request.temperature = (object["temperature"] as? NSNumber)?.doubleValue
        if let stop = object[format == .openAI ? "stop" : "stop_sequences"] {
            request.stop = (stop as? [String]) ?? ((stop as? String).map { [$0] } ?? [])
        }

        var problem: String?
        func complain(_ message: String) { if problem == nil { problem = message } }

        if strict, request.model == nil || request.model?.isEmpty == true { complain("model: Field required") }
        let rawMessages = object["messages"] as? [[String: Any]]
        if strict, rawMessages == nil || rawMessages?.isEmpty == true {
            complain("messages: Field required (a non-empty array)")
        }

        switch format {
        case .openAI:
            for message in rawMessages ?? [] {
                let role = message["role"] as? String ?? ""
                let content = text(of: message["content"])
                switch role {
                case "system", "developer": request.messages.append(.system(content ?? ""))
                case "user": request.messages.append(.user(content ?? ""))
                case "assistant": request.messages.append(.assistant(content ?? ""))
                default: complain("messages: unknown role \"\(role)\"")
                }
                if strict, content == nil { complain("messages: content must be a string or an array of parts") }
            }
        case .anthropic:
            if let system = object["system"] {
                guard let systemText = text(of: system) else {
                    return (request, Invalid(message: "system: must be a string or an array of text blocks"))
                }
                request.messages.append(.system(systemText))
            }
            if strict {
                if object["max_tokens"] == nil { complain("max_tokens: Field required") }
                if request.header("anthropic-version") == nil { complain("anthropic-version: header is required") }
            }
            var previousRole: String?
            for (position, message) in (rawMessages ?? []).enumerated() {
                let role = message["role"] as? String ?? ""
                let content = text(of: message["content"])
                switch role {
                case "user": request.messages.append(.user(content ?? ""))
                case "assistant": request.messages.append(.assistant(content ?? ""))
                default: complain("messages.\(position).role: Input should be 'user' or 'assistant' (got \"\(role)\")")
                }
                guard strict else { continue }
                if position == 0, role != "user" { complain("messages: first message must use the \"user\" role") }
                if role == previousRole {
                    complain(
                        "messages: roles must alternate between \"user\" and \"assistant\" (FakeLLMServer is strict)")
                }
                if content?.isEmpty ?? true { complain("messages.\(position): text content blocks must be non-empty") }
                previousRole = role
            }
        }
        return (request, problem.map { Invalid(message: $0) })
    }

    /// A content value: a string, or an array of `{"type":"text","text":…}` blocks.
    static func text(of value: Any?) -> String? {
        if let string = value as? String { return string }
        if let blocks = value as? [[String: Any]] {
            return blocks.compactMap { block in
                (block["type"] as? String ?? "text") == "text" ? block["text"] as? String : nil
            }.joined()
        }
        return nil
    }
}

typealias WireFormat = FakeLLMServer.WireFormat
