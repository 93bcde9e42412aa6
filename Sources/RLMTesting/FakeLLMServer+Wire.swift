import Foundation
import RLM

/// Renders replies in the request's wire format, with the real APIs' shapes.
struct WireRenderer {
    typealias Reply = FakeLLMServer.Reply

    let request: FakeLLMServer.Request
    let model: String
    let writer: ResponseWriter
    /// The cost reported in `usage.cost` when the request asks for it.
    var reportedCostUSD: Double? = nil

    private var format: WireFormat { request.format }

    func render(_ reply: Reply) async throws -> AfterResponse {
        switch reply.content {
        case .drop:
            throw DropConnection()
        case .stall:
            return .stall
        case .raw(let status, let headers, let body):
            return try await writer.send(status: status, headers: headers, body: body)
        case .error(let status, let type, let message, let code, let headers):
            return try await writer.json(
                status: status,
                Self.errorBody(format: format, status: status, type: type, message: message, code: code),
                headers: headers
            )
        case .completion(let pieces, let delay, let usageReport, let finishReason, let replyModel, let ending):
            let completion = Completion(
                pieces: pieces,
                usage: usage(usageReport, text: pieces.joined()),
                finishReason: finishReason ?? (format == .openAI ? "stop" : "end_turn"),
                model: replyModel ?? model,
                id: format == .openAI ? "chatcmpl-fake-\(request.index)" : "msg_fake_\(request.index)"
            )
            if request.stream {
                return try await stream(completion, delay: delay, ending: ending)
            }
            switch ending {
            case .finish:
                return try await writer.json(status: 200, whole(completion))
            case .drop:
                throw DropConnection()
            case .stall:
                return .stall
            case .error(let type, let message):
                let status = type == "overloaded_error" ? 529 : 500
                return try await writer.json(
                    status: status,
                    Self.errorBody(format: format, status: status, type: type, message: message, code: nil)
                )
            }
        }
    }

    struct Completion {
        var pieces: [String]
        var usage: TokenUsage?
        var finishReason: String
        var model: String
        var id: String
        var text: String { pieces.joined() }
    }

    private func usage(_ report: FakeLLMServer.UsageReport, text: String) -> TokenUsage? {
        switch report {
        case .omitted:
            return nil
        case .exact(let usage):
            return usage
        case .estimated:
            let promptCharacters = request.messages.reduce(0) { $0 + $1.content.count }
            return TokenUsage(
                inputTokens: max(1, (promptCharacters + 3) / 4),
                outputTokens: max(1, (text.count + 3) / 4)
            )
        }
    }

    private var created: Int { 1_700_000_000 + request.index }

    // MARK: Whole responses

    private func whole(_ completion: Completion) -> String {
        switch format {
        case .openAI:
            var object: [String: Any] = [
                "id": completion.id,
                "object": "chat.completion",
                "created": created,
                "model": completion.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    [
                        "index": 0,
                        "message": ["role": "assistant", "content": completion.text, "refusal": NSNull()],
                        "logprobs": NSNull(),
                        "finish_reason": completion.finishReason,
                    ] as [String: Any]
                ],
            ]
            if let usage = completion.usage { object["usage"] = openAIUsage(usage) }
            return FakeJSON.string(object)
        case .anthropic:
            var object: [String: Any] = [
                "id": completion.id,
                "type": "message",
                "role": "assistant",
                "model": completion.model,
                "content": [["type": "text", "text": completion.text]],
                "stop_reason": completion.finishReason,
                "stop_sequence": NSNull(),
            ]
            if let usage = completion.usage {
                object["usage"] = ["input_tokens": usage.inputTokens, "output_tokens": usage.outputTokens]
            }
            return FakeJSON.string(object)
        }
    }

    private func openAIUsage(_ usage: TokenUsage) -> [String: Any] {
        var object: [String: Any] = [
            "prompt_tokens": usage.inputTokens,
            "completion_tokens": usage.outputTokens,
            "total_tokens": usage.totalTokens,
        ]
        if request.includeCost, let cost = reportedCostUSD { object["cost"] = cost }
        return object
    }

    // MARK: Streams

    private func stream(
        _ completion: Completion,
        delay: Duration,
        ending: FakeLLMServer.StreamEnding
    ) async throws -> AfterResponse {
        try await writer.head(
            status: 200,
            headers: [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")],
            contentLength: nil
        )
        try await writer.write(prelude(completion))
        for (position, piece) in completion.pieces.enumerated() {
            if position > 0, delay > .zero { try await Task.sleep(for: delay) }
            try await writer.write(event(piece: piece, completion: completion))
        }
        switch ending {
        case .finish:
            try await writer.write(epilogue(completion))
            return try await writer.finishStream()
        case .drop:
            throw DropConnection()
        case .stall:
            return .stall
        case .error(let type, let message):
            switch format {
            case .openAI:
                let body = Self.errorBody(format: .openAI, status: 500, type: type, message: message, code: nil)
                try await writer.write("data: \(body)\n\n")
            case .anthropic:
                let body = Self.errorBody(format: .anthropic, status: 500, type: type, message: message, code: nil)
                try await writer.write("event: error\ndata: \(body)\n\n")
            }
            return try await writer.finishStream()
        }
    }

    private func openAIChunk(_ completion: Completion, delta: [String: Any], finishReason: String?) -> String {
        let chunk: [String: Any] = [
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": completion.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                [
                    "index": 0,
                    "delta": delta,
                    "logprobs": NSNull(),
                    "finish_reason": finishReason.map { $0 as Any } ?? NSNull(),
                ] as [String: Any]
            ],
        ]
        return "data: \(FakeJSON.string(chunk))\n\n"
    }

    private func anthropicEvent(_ type: String, _ object: [String: Any]) -> String {
        var object = object
        object["type"] = type
        return "event: \(type)\ndata: \(FakeJSON.string(object))\n\n"
    }

    private func prelude(_ completion: Completion) -> String {
        switch format {
        case .openAI:
            return openAIChunk(completion, delta: ["role": "assistant", "content": ""], finishReason: nil)
        case .anthropic:
            var message: [String: Any] = [
                "id": completion.id,
                "type": "message",
                "role": "assistant",
                "model": completion.model,
                "content": [Any](),
                "stop_reason": NSNull(),
                "stop_sequence": NSNull(),
            ]
            if let usage = completion.usage {
                message["usage"] = ["input_tokens": usage.inputTokens, "output_tokens": 1]
            }
            return anthropicEvent("message_start", ["message": message])
                + anthropicEvent(
                    "content_block_start",
                    ["index": 0, "content_block": ["type": "text", "text": ""]]
                )
                + anthropicEvent("ping", [:])
        }
    }

    private func event(piece: String, completion: Completion) -> String {
        switch format {
        case .openAI:
            return openAIChunk(completion, delta: ["content": piece], finishReason: nil)
        case .anthropic:
            return anthropicEvent(
                "content_block_delta",
                ["index": 0, "delta": ["type": "text_delta", "text": piece]]
            )
        }
    }

    private func epilogue(_ completion: Completion) -> String {
        switch format {
        case .openAI:
            var text = openAIChunk(completion, delta: [:], finishReason: completion.finishReason)
            if request.includeUsage || request.includeCost, let usage = completion.usage {
                let chunk: [String: Any] = [
                    "id": completion.id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": completion.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [Any](),
                    "usage": openAIUsage(usage),
                ]
                text += "data: \(FakeJSON.string(chunk))\n\n"
            }
            return text + "data: [DONE]\n\n"
        case .anthropic:
            var delta: [String: Any] = [
                "delta": ["stop_reason": completion.finishReason, "stop_sequence": NSNull()] as [String: Any]
            ]
            if let usage = completion.usage { delta["usage"] = ["output_tokens": usage.outputTokens] }
            return anthropicEvent("content_block_stop", ["index": 0])
                + anthropicEvent("message_delta", delta)
                + anthropicEvent("message_stop", [:])
        }
    }

    // MARK: Errors

    /// An error body in `format`'s shape.
    static func errorBody(format: WireFormat, status: Int, type: String?, message: String, code: String?) -> String {
        switch format {
        case .openAI:
            let defaultType: String
            switch status {
            case 429: defaultType = "requests"
            case 500...: defaultType = "server_error"
            default: defaultType = "invalid_request_error"
            }
            let error: [String: Any] = [
                "message": message,
                "type": type ?? defaultType,
                "param": NSNull(),
                "code": code.map { $0 as Any } ?? NSNull(),
            ]
            return FakeJSON.string(["error": error])
        case .anthropic:
            let defaultType: String
            switch status {
            case 401: defaultType = "authentication_error"
            case 403: defaultType = "permission_error"
            case 404: defaultType = "not_found_error"
            case 413: defaultType = "request_too_large"
            case 429: defaultType = "rate_limit_error"
            case 529: defaultType = "overloaded_error"
            case 500...: defaultType = "api_error"
            default: defaultType = "invalid_request_error"
            }
            return FakeJSON.string(["type": "error", "error": ["type": type ?? defaultType, "message": message]])
        }
    }
}
