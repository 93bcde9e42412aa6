import RLM
import Synchronization

extension FakeLLMServer {
    /// How a finished stream ends, after its pieces.
    public enum StreamEnding: Sendable, Hashable {
        /// The format's normal end (`[DONE]`, `message_stop`).
        case finish
        /// The connection is closed without the end marker (a chunked body cut short).
        case drop
        /// Nothing more is sent until the client goes away or the server shuts down.
        case stall
        /// An error event in the format's shape (Anthropic `event: error`, OpenAI `data: {"error": …}`).
        case error(type: String, message: String)
    }

    /// Which usage the server reports.
    public enum UsageReport: Sendable, Hashable {
        /// One token per four characters of the prompt and of the reply, at least one each.
        case estimated
        /// Exactly these numbers.
        case exact(TokenUsage)
        /// No usage at all (some local servers), so the client must estimate.
        case omitted
    }

    /// A context-overflow error as a particular server writes it.
    public enum ContextOverflowStyle: String, Sendable, Hashable, CaseIterable {
        /// OpenAI: 400, `code: context_length_exceeded`.
        case openAI
        /// llama.cpp's server: 400, `type: exceed_context_size_error`.
        case llamaCpp
        /// vLLM: 400, a top-level `message` saying "maximum context length".
        case vLLM
        /// Anthropic: 400 `invalid_request_error`, "prompt is too long".
        case anthropic
    }

    /// What the server answers to one request. A reply adapts to the request: a text reply is streamed in the
    /// request's format when the client asked for a stream, and sent whole otherwise.
    public struct Reply: Sendable {
        enum Content: Sendable {
            case completion(
                pieces: [String],
                pieceDelay: Duration,
                usage: UsageReport,
                finishReason: String?,
                model: String?,
                ending: StreamEnding
            )
            case error(status: Int, type: String?, message: String, code: String?, headers: [(String, String)])
            case raw(status: Int, headers: [(String, String)], body: [UInt8])
            case drop
            case stall
        }

        var content: Content
        var delay: Duration = .zero

        /// A completion. Streamed as one piece when the client asks for a stream.
        /// - Parameters:
        ///   - text: the generated text.
        ///   - usage: the usage to report (estimated by default).
        ///   - finishReason: the finish/stop reason (`stop` / `end_turn` by default).
        ///   - model: the model name to report (the requested one by default).
        public static func text(
            _ text: String,
            usage: UsageReport = .estimated,
            finishReason: String? = nil,
            model: String? = nil
        ) -> Reply {
            Reply(
                content: .completion(
                    pieces: [text],
                    pieceDelay: .zero,
                    usage: usage,
                    finishReason: finishReason,
                    model: model,
                    ending: .finish
                )
            )
        }

        /// A completion streamed in these pieces, `delay` apart (sent whole to a client that did not ask for a
        /// stream, unless `ending` is not `.finish`).
        /// - Parameters:
        ///   - pieces: the text pieces, each in its own event.
        ///   - delay: the pause between two pieces.
        ///   - usage: the usage to report.
        ///   - finishReason: the finish/stop reason.
        ///   - ending: how the stream ends.
        public static func stream(
            _ pieces: [String],
            delay: Duration = .zero,
            usage: UsageReport = .estimated,
            finishReason: String? = nil,
            then ending: StreamEnding = .finish
        ) -> Reply {
            Reply(
                content: .completion(
                    pieces: pieces,
                    pieceDelay: delay,
                    usage: usage,
                    finishReason: finishReason,
                    model: nil,
                    ending: ending
                )
            )
        }

        /// An HTTP error with a JSON body in the request format's own error shape.
        /// - Parameters:
        ///   - status: the HTTP status.
        ///   - message: the error message.
        ///   - type: the error type (by default the format's usual type for the status).
        ///   - code: OpenAI's `code` field.
        ///   - headers: extra response headers, such as `Retry-After`.
        public static func error(
            status: Int,
            message: String,
            type: String? = nil,
            code: String? = nil,
            headers: [(String, String)] = []
        ) -> Reply {
            Reply(content: .error(status: status, type: type, message: message, code: code, headers: headers))
        }

        /// A 429 with a `Retry-After` header (seconds or an HTTP date), when given.
        /// - Parameter retryAfter: the header's value.
        public static func rateLimited(retryAfter: String? = nil) -> Reply {
            .error(
                status: 429,
                message: "Rate limit reached. Please try again later.",
                code: "rate_limit_exceeded",
                headers: retryAfter.map { [("retry-after", $0)] } ?? []
            )
        }

        /// Anthropic's 529 `overloaded_error`.
        public static let overloaded = Reply.error(status: 529, message: "Overloaded", type: "overloaded_error")

        /// A 500 server error.
        public static let serverError = Reply.error(status: 500, message: "Internal server error")

        /// A context-overflow error exactly as `style`'s server writes it (whatever the request's format).
        /// - Parameter style: which server to imitate.
        public static func contextOverflow(_ style: ContextOverflowStyle) -> Reply {
            let body: String
            switch style {
            case .openAI:
                body = #"""
                    {"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}
                    """#
            case .llamaCpp:
                body = #"""
                    {"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}
                    """#
            case .vLLM:
                body = #"""
                    {"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}
                    """#
            case .anthropic:
                body = #"""
                    {"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}
                    """#
            }
            return .raw(status: 400, headers: [("content-type", "application/json")], body: body)
        }

        /// Exactly this response.
        /// - Parameters:
        ///   - status: the HTTP status.
        ///   - headers: the response headers.
        ///   - body: the body.
        public static func raw(status: Int, headers: [(String, String)] = [], body: String) -> Reply {
            Reply(content: .raw(status: status, headers: headers, body: Array(body.utf8)))
        }

        /// The connection is closed without any response.
        public static let drop = Reply(content: .drop)

        /// No response at all until the client goes away or the server shuts down.
        public static let stall = Reply(content: .stall)

        /// This reply, sent after a pause (added to the server's fixed latency).
        /// - Parameter delay: the pause before the response head.
        public func delayed(by delay: Duration) -> Reply {
            var copy = self
            copy.delay += delay
            return copy
        }
    }

    /// Decides the reply to each request.
    public struct Handler: Sendable {
        let respond: @Sendable (Request) async -> Reply

        /// - Parameter respond: returns the reply to a request.
        public init(_ respond: @escaping @Sendable (Request) async -> Reply) {
            self.respond = respond
        }

        /// The same reply to every request.
        /// - Parameter reply: the reply.
        public static func always(_ reply: Reply) -> Handler { Handler { _ in reply } }

        /// Replies with the last user message, prefixed with `prefix`.
        /// - Parameter prefix: text before the echo.
        public static func echo(prefix: String = "") -> Handler {
            Handler { .text(prefix + ($0.lastUserMessage ?? "")) }
        }

        /// These replies, in the order requests arrive; a request past the end gets a 500 saying so.
        /// - Parameter replies: the script.
        public static func scripted(_ replies: [Reply]) -> Handler {
            let counter = Counter()
            return Handler { _ in
                let index = counter.next()
                guard index < replies.count else {
                    return .error(
                        status: 500,
                        message: "FakeLLMServer: the script has \(replies.count) replies and request #\(index + 1) "
                            + "came after the last one",
                        type: "script_exhausted"
                    )
                }
                return replies[index]
            }
        }
    }

    /// A handler that plays `replies` in order; see ``Handler/scripted(_:)``.
    /// - Parameter replies: the script.
    public static func scripted(_ replies: [Reply]) -> Handler { .scripted(replies) }
}

/// A thread-safe counter for scripted handlers.
final class Counter: Sendable {
    private let value = Mutex(0)

    /// Returns the current value and increments it.
    func next() -> Int {
        value.withLock { value in
            defer { value += 1 }
            return value
        }
    }
}
