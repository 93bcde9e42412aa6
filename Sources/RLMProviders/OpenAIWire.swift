import Foundation
import RLM

/// The OpenAI chat completions wire format, as also spoken by llama.cpp's server, vLLM, Ollama and most gateways.
struct OpenAIWire: ChatWire {
    var maxOutputTokens: Int?
    var temperature: Double?
    var includeStreamUsage: Bool
    var maxTokensParameter: String
    /// Whether to ask for the call's cost (`"usage": {"include": true}`, OpenRouter's usage accounting).
    var requestsReportedCost: Bool

    private struct Body: Encodable {
        var model: String
        var messages: [ChatMessage]
        var maxTokens: Int?
        var maxTokensParameter: String
        var temperature: Double?
        var stop: [String]
        var stream: Bool
        var includeUsage: Bool
        var includeCost: Bool

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: DynamicKey.self)
            try container.encode(model, forKey: DynamicKey("model"))
            try container.encode(
                messages.map { ["role": $0.role.rawValue, "content": $0.content] },
                forKey: DynamicKey("messages")
            )
            if let maxTokens { try container.encode(maxTokens, forKey: DynamicKey(maxTokensParameter)) }
            if let temperature { try container.encode(temperature, forKey: DynamicKey("temperature")) }
            if !stop.isEmpty { try container.encode(stop, forKey: DynamicKey("stop")) }
            try container.encode(stream, forKey: DynamicKey("stream"))
            if stream, includeUsage {
                try container.encode(["include_usage": true], forKey: DynamicKey("stream_options"))
            }
            if includeCost { try container.encode(["include": true], forKey: DynamicKey("usage")) }
        }
    }

    func encode(_ request: CompletionRequest, model: String, stream: Bool) throws -> [UInt8] {
        try WireJSON.encode(
            Body(
                model: model,
                messages: request.messages,
                maxTokens: request.maxOutputTokens ?? maxOutputTokens,
                maxTokensParameter: maxTokensParameter,
                temperature: request.temperature ?? temperature,
                stop: request.stop,
                stream: stream,
                includeUsage: includeStreamUsage,
                includeCost: requestsReportedCost
            )
        )
    }

    struct Usage: Decodable, Sendable {
        var prompt_tokens: Int?
        var completion_tokens: Int?
        /// OpenRouter's charge for the call, in USD.
        var cost: ReportedCost?
    }

    /// A reported cost that never fails decoding: a string, a negative or a non-finite number means none, so a
    /// gateway's odd `cost` field cannot cost us the completion.
    struct ReportedCost: Decodable, Sendable {
        var usd: Double?

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            guard let value = try? container.decode(Double.self), value.isFinite, value >= 0 else {
                usd = nil
                return
            }
            usd = value
        }
    }

    struct ErrorObject: Decodable, Sendable {
        var message: String?
        var type: String?
        var code: FlexibleCode?
    }

    /// `code` is a string at OpenAI and a number at llama.cpp and vLLM.
    struct FlexibleCode: Decodable, Sendable {
        var value: String
        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let string = try? container.decode(String.self) {
                value = string
            } else if let number = try? container.decode(Int.self) {
                value = String(number)
            } else {
                value = ""
            }
        }
    }

    private struct Response: Decodable {
        struct Choice: Decodable {
            struct Message: Decodable { var content: FlexibleText? }
            var message: Message?
            var text: String?
            var finish_reason: String?
        }
        var model: String?
        var choices: [Choice]?
        var usage: Usage?
        var error: ErrorObject?
    }

    func decodeCompletion(_ body: [UInt8], context: DecodeContext) throws -> Completion {
        let response = try WireJSON.decode(Response.self, from: body, errors: context.errors, what: "a completion")
        if let error = response.error {
            throw context.errors.streamError(
                ServerErrorInfo(message: error.message ?? "", type: error.type, code: error.code?.value)
            )
        }
        guard let choice = response.choices?.first else {
            throw context.errors.invalidResponse("a completion without choices")
        }
        let text = choice.message?.content?.text ?? choice.text ?? ""
        return Completion(
            text: text,
            usage: Self.usage(response.usage, promptCharacters: context.promptCharacters, text: text),
            model: response.model ?? context.model,
            finishReason: choice.finish_reason,
            reportedCostUSD: response.usage?.cost?.usd
        )
    }

    static func usage(_ usage: Usage?, promptCharacters: Int, text: String) -> TokenUsage {
        TokenUsage(
            inputTokens: usage?.prompt_tokens ?? estimatedTokens(characters: promptCharacters),
            outputTokens: usage?.completion_tokens ?? estimatedTokens(characters: text.count)
        )
    }

    func makeDecoder(context: DecodeContext) -> EventDecoder { EventDecoder(context: context) }

    struct EventDecoder: StreamDecoder {
        private struct Chunk: Decodable {
            struct Choice: Decodable {
                struct Delta: Decodable { var content: FlexibleText? }
                var delta: Delta?
                var text: String?
                var finish_reason: String?
            }
            var model: String?
            var choices: [Choice]?
            var usage: Usage?
            var error: ErrorObject?
        }

        let context: DecodeContext
        private(set) var sawEvent = false
        private var model: String?
        private var finishReason: String?
        private var usage: Usage?

        init(context: DecodeContext) { self.context = context }

        mutating func decode(_ event: SSEEvent) throws -> StreamStep {
            let data = event.data.trimmed
            if data == "[DONE]" { return .finished }
            if data.isEmpty { return .none }
            let chunk = try WireJSON.decode(
                Chunk.self,
                from: Array(data.utf8),
                errors: context.errors,
                what: "a stream chunk"
            )
            if let error = chunk.error {
                throw context.errors.streamError(
                    ServerErrorInfo(message: error.message ?? "", type: error.type, code: error.code?.value)
                )
            }
            if event.type == "error" {
                throw context.errors.streamError(ServerErrorInfo(message: data))
            }
            sawEvent = true
            if let chunkModel = chunk.model, !chunkModel.isEmpty { model = chunkModel }
            if let chunkUsage = chunk.usage { usage = chunkUsage }
            guard let choice = chunk.choices?.first else { return .none }
            if let reason = choice.finish_reason { finishReason = reason }
            return .text(choice.delta?.content?.text ?? choice.text ?? "")
        }

        func completion(text: String) -> Completion {
            Completion(
                text: text,
                usage: OpenAIWire.usage(usage, promptCharacters: context.promptCharacters, text: text),
                model: model ?? context.model,
                finishReason: finishReason,
                reportedCostUSD: usage?.cost?.usd
            )
        }
    }
}
