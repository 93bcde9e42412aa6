import Foundation
import RLM

/// The Anthropic Messages wire format.
struct AnthropicWire: ChatWire {
    var maxOutputTokens: Int
    var temperature: Double?
    var placeholderUserMessage: String

    /// The request's messages in the shape Anthropic requires: system messages joined into one top-level `system`
    /// string, consecutive same-role messages merged, a user message first, no empty content.
    static func arrange(
        _ messages: [ChatMessage],
        placeholder: String
    ) -> (system: String?, messages: [(role: String, content: String)]) {
        let system = messages.filter { $0.role == .system }.map(\.content).filter { !$0.isEmpty }
        var turns: [(role: String, content: String)] = []
        for message in messages where message.role != .system {
            let role = message.role == .assistant ? "assistant" : "user"
            if let last = turns.last, last.role == role {
                turns[turns.count - 1].content = last.content + "\n\n" + message.content
            } else {
                turns.append((role, message.content))
            }
        }
        if turns.first?.role != "user" {
            turns.insert(("user", placeholder), at: 0)
        }
        for index in turns.indices where turns[index].content.trimmed.isEmpty {
            turns[index].content = placeholder
        }
        // Anthropic refuses a final assistant turn (a prefill) that ends in whitespace.
        if let last = turns.indices.last, turns[last].role == "assistant" {
            var content = turns[last].content
            while let character = content.last, character.isWhitespace { content.removeLast() }
            turns[last].content = content
        }
        return (system.isEmpty ? nil : system.joined(separator: "\n\n"), turns)
    }

    private struct Body: Encodable {
        var model: String
        var maxTokens: Int
        var system: String?
        var messages: [(role: String, content: String)]
        var temperature: Double?
        var stop: [String]
        var stream: Bool

        enum CodingKeys: String, CodingKey {
            case model, max_tokens, system, messages, temperature, stop_sequences, stream
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(model, forKey: .model)
            try container.encode(maxTokens, forKey: .max_tokens)
            try container.encodeIfPresent(system, forKey: .system)
            try container.encode(messages.map { ["role": $0.role, "content": $0.content] }, forKey: .messages)
            try container.encodeIfPresent(temperature, forKey: .temperature)
            if !stop.isEmpty { try container.encode(stop, forKey: .stop_sequences) }
            try container.encode(stream, forKey: .stream)
        }
    }

    func encode(_ request: CompletionRequest, model: String, stream: Bool) throws -> [UInt8] {
        let arranged = Self.arrange(request.messages, placeholder: placeholderUserMessage)
        return try WireJSON.encode(
            Body(
                model: model,
                maxTokens: request.maxOutputTokens ?? maxOutputTokens,
                system: arranged.system,
                messages: arranged.messages,
                temperature: request.temperature ?? temperature,
                stop: request.stop,
                stream: stream
            )
        )
    }

    struct Usage: Decodable, Sendable {
        var input_tokens: Int?
        var output_tokens: Int?
        var cache_creation_input_tokens: Int?
        var cache_read_input_tokens: Int?

        /// Cached prompt tokens are reported apart from `input_tokens`; they are still prompt.
        var totalInput: Int? {
            guard let input_tokens else { return nil }
            return input_tokens + (cache_creation_input_tokens ?? 0) + (cache_read_input_tokens ?? 0)
        }
    }

    struct ErrorObject: Decodable, Sendable {
        var type: String?
        var message: String?
    }

    private struct Message: Decodable {
        struct Block: Decodable {
            var type: String?
            var text: String?
        }
        var type: String?
        var model: String?
        var content: [Block]?
        var stop_reason: String?
        var usage: Usage?
        var error: ErrorObject?
    }

    func decodeCompletion(_ body: [UInt8], context: DecodeContext) throws -> Completion {
        let message = try WireJSON.decode(Message.self, from: body, errors: context.errors, what: "a message")
        if message.type == "error" || message.error != nil {
            throw context.errors.streamError(
                ServerErrorInfo(message: message.error?.message ?? "", type: message.error?.type)
            )
        }
        guard let blocks = message.content else {
            throw context.errors.invalidResponse("a message without content")
        }
        let text = blocks.filter { $0.type == "text" }.compactMap(\.text).joined()
        return Completion(
            text: text,
            usage: TokenUsage(
                inputTokens: message.usage?.totalInput ?? estimatedTokens(characters: context.promptCharacters),
                outputTokens: message.usage?.output_tokens ?? estimatedTokens(characters: text.count)
            ),
            model: message.model ?? context.model,
            finishReason: message.stop_reason
        )
    }

    func makeDecoder(context: DecodeContext) -> EventDecoder { EventDecoder(context: context) }

    struct EventDecoder: StreamDecoder {
        private struct Event: Decodable {
            struct Start: Decodable {
                var model: String?
                var usage: Usage?
            }
            struct Delta: Decodable {
                var type: String?
                var text: String?
                var stop_reason: String?
            }
            var type: String?
            var message: Start?
            var delta: Delta?
            var usage: Usage?
            var error: ErrorObject?
        }

        let context: DecodeContext
        private(set) var sawEvent = false
        private var model: String?
        private var inputTokens: Int?
        private var outputTokens: Int?
        private var stopReason: String?

        init(context: DecodeContext) { self.context = context }

        mutating func decode(_ sse: SSEEvent) throws -> StreamStep {
            let data = sse.data.trimmed
            if data.isEmpty { return .none }
            let event = try WireJSON.decode(
                Event.self, from: Array(data.utf8), errors: context.errors, what: "an event")
            let type = event.type ?? sse.type
            switch type {
            case "message_start":
                sawEvent = true
                if let name = event.message?.model, !name.isEmpty { model = name }
                if let usage = event.message?.usage {
                    inputTokens = usage.totalInput ?? inputTokens
                    outputTokens = usage.output_tokens ?? outputTokens
                }
                return .none
            case "content_block_delta":
                sawEvent = true
                guard event.delta?.type == "text_delta" || event.delta?.type == nil else { return .none }
                return .text(event.delta?.text ?? "")
            case "message_delta":
                sawEvent = true
                if let reason = event.delta?.stop_reason { stopReason = reason }
                if let usage = event.usage {
                    outputTokens = usage.output_tokens ?? outputTokens
                    inputTokens = usage.totalInput ?? inputTokens
                }
                return .none
            case "message_stop":
                return .finished
            case "error":
                throw context.errors.streamError(
                    ServerErrorInfo(message: event.error?.message ?? "", type: event.error?.type)
                )
            default:
                // ping, content_block_start, content_block_stop, and event types added later.
                return .none
            }
        }

        func completion(text: String) -> Completion {
            Completion(
                text: text,
                usage: TokenUsage(
                    inputTokens: inputTokens ?? estimatedTokens(characters: context.promptCharacters),
                    outputTokens: outputTokens ?? estimatedTokens(characters: text.count)
                ),
                model: model ?? context.model,
                finishReason: stopReason
            )
        }
    }
}
