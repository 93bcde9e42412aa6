import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RLM

/// What a server said in an error body, in any of the shapes we meet: OpenAI and llama.cpp
/// (`{"error":{"message","type","code"}}`), vLLM (`{"object":"error","message","type","code"}`), Anthropic
/// (`{"type":"error","error":{"type","message"}}`), FastAPI (`{"detail": …}`), or plain text.
struct ServerErrorInfo: Sendable, Hashable {
    var message: String
    var type: String?
    var code: String?

    init(message: String, type: String? = nil, code: String? = nil) {
        self.message = message
        self.type = type
        self.code = code
    }

    init(body: [UInt8]) {
        let text = String(decoding: body, as: UTF8.self)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            self.init(message: text.trimmed)
            return
        }
        self.init(json: object, fallback: text)
    }

    init(json object: [String: Any], fallback: String = "") {
        let inner: [String: Any]
        if let nested = object["error"] as? [String: Any] {
            inner = nested
        } else {
            inner = object
        }
        var message = Self.string(inner["message"])
        if message == nil, let error = object["error"] as? String { message = error }
        if message == nil { message = Self.string(object["detail"]) ?? Self.string(object["message"]) }
        self.init(
            message: message ?? fallback.trimmed,
            type: Self.string(inner["type"]),
            code: Self.string(inner["code"])
        )
    }

    private static func string(_ value: Any?) -> String? {
        switch value {
        case let string as String: string
        case let number as NSNumber: number.stringValue
        case let array as [Any]: array.map { "\($0)" }.joined(separator: "; ")
        default: nil
        }
    }

    /// Whether the server refused the prompt because it does not fit the model's context window.
    var isContextOverflow: Bool {
        if code == "context_length_exceeded" || type == "exceed_context_size_error" { return true }
        if type == "request_too_large" { return true }
        let lowered = message.lowercased()
        let phrases = [
            "context_length_exceeded",  // OpenAI's code, sometimes only in the text
            "exceed_context_size_error",  // llama.cpp's type
            "exceeds the available context size",  // llama.cpp
            "maximum context length",  // OpenAI, vLLM
            "context length exceeded",
            "prompt is too long",  // Anthropic
            "input is too long",  // Bedrock-style Anthropic proxies
            "too many tokens",
            "context window",
        ]
        return phrases.contains { lowered.contains($0) }
    }
}

/// Builds ``LLMError`` values with safe, helpful messages.
struct ErrorMapper: Sendable {
    /// Where the calls go, for messages: the base URL as configured.
    var baseURL: String
    /// The full endpoint URL.
    var endpoint: String
    /// The environment variable that holds the key, for messages.
    var keySource: String?
    /// Whether a key was configured.
    var hasKey: Bool
    /// The key itself, only to scrub it out of anything the server echoes back.
    var secret: RedactedKey?

    static let messageLimit = 500

    /// Removes the key from `text` and truncates it.
    func sanitize(_ text: String, limit: Int = ErrorMapper.messageLimit) -> String {
        var result = text
        if let secret, !secret.value.isEmpty {
            result = result.replacingOccurrences(of: secret.value, with: "[REDACTED]")
        }
        result = result.replacingOccurrences(of: "\n", with: " ").trimmed
        if result.count > limit { result = String(result.prefix(limit)) + "…" }
        return result
    }

    /// Maps an HTTP error response to an ``LLMError``.
    func httpError(status: Int, body: [UInt8]) -> LLMError {
        let info = ServerErrorInfo(body: body)
        let said = info.message.isEmpty ? "" : ": \(sanitize(info.message))"
        switch status {
        case 401, 403:
            let hint: String
            if let keySource {
                hint =
                    hasKey ? "check \(keySource)" : "no API key is configured; set \(keySource) (or \(keySource)_FILE)"
            } else {
                hint = hasKey ? "check the configured API key" : "no API key is configured"
            }
            return LLMError(
                .unauthorized,
                "the server at \(baseURL) rejected the API key (HTTP \(status)); \(hint)\(said)",
                statusCode: status
            )
        case 429:
            return LLMError(
                .rateLimited,
                "the server at \(baseURL) is rate limiting requests (HTTP 429) and retries did not help\(said)",
                statusCode: status
            )
        case _ where info.isContextOverflow || status == 413:
            return LLMError(
                .contextOverflow,
                "the prompt does not fit the model's context window (HTTP \(status))\(said)",
                statusCode: status
            )
        case 404:
            return LLMError(
                .badRequest,
                "\(endpoint) answered HTTP 404; check the base URL and the model name\(said)",
                statusCode: status
            )
        case 400..<500:
            return LLMError(
                .badRequest, "the server at \(baseURL) refused the request (HTTP \(status))\(said)", statusCode: status)
        case 500..<600:
            return LLMError(
                .server,
                "the server at \(baseURL) failed (HTTP \(status)) and retries did not help\(said)",
                statusCode: status
            )
        default:
            return LLMError(
                .invalidResponse,
                "unexpected HTTP \(status) from \(endpoint)\(said)",
                statusCode: status
            )
        }
    }

    /// Maps an error event inside a 200 stream.
    func streamError(_ info: ServerErrorInfo) -> LLMError {
        let said = info.message.isEmpty ? "" : ": \(sanitize(info.message))"
        if info.isContextOverflow {
            return LLMError(.contextOverflow, "the prompt does not fit the model's context window\(said)")
        }
        if info.type == "overloaded_error" || info.type == "api_error" || info.type == "server_error" {
            return LLMError(.server, "the server at \(baseURL) failed while streaming (\(info.type ?? "error"))\(said)")
        }
        if info.type == "rate_limit_error" {
            return LLMError(.rateLimited, "the server at \(baseURL) is rate limiting requests\(said)")
        }
        if info.type == "authentication_error" || info.type == "permission_error" {
            return httpError(status: 401, body: Array("{}".utf8))
        }
        return LLMError(.server, "the server at \(baseURL) reported an error while streaming\(said)")
    }

    func invalidResponse(_ what: String) -> LLMError {
        LLMError(.invalidResponse, "the server at \(baseURL) sent \(what)")
    }

    func transport(_ what: String) -> LLMError {
        LLMError(
            .transport,
            "could not reach \(endpoint) (\(what)); check that the server is running, the base URL is right and the "
                + "network allows the connection"
        )
    }

    func timeout(_ kind: TimeoutKind, after duration: Duration) -> LLMError {
        let seconds = duration.inSeconds.formatted(.number.precision(.fractionLength(0...1)))
        switch kind {
        case .connect:
            return transport("nothing accepted the connection within \(seconds) s")
        case .response:
            return transport("nothing answered within \(seconds) s")
        case .read:
            return LLMError(
                .timeout,
                "\(endpoint) sent nothing for \(seconds) s (read timeout); the server may be stuck or overloaded"
            )
        case .total:
            return LLMError(.timeout, "the call to \(endpoint) did not finish within \(seconds) s (total timeout)")
        }
    }
}

/// Which of the three timeouts fired.
enum TimeoutKind: Sendable, Hashable {
    case connect, read, total
    /// The connect timeout of a request without a body, which cannot tell connecting from waiting for the head.
    case response
}

/// How a low-level error should be treated.
enum TransportFailure {
    /// The connection could not be made or broke: worth retrying.
    case connection(String)
    /// One of the HTTP client's own timeouts fired: worth retrying.
    case timedOut(String)
    /// Something else: not retried.
    case other(String)

    /// Classifies an error thrown by AsyncHTTPClient or NIO. Types are matched by name where they live in modules we
    /// do not import (NIOPosix's `NIOConnectionError`).
    init(_ error: any Error) {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: self = .connection("connect timed out")
            case .remoteConnectionClosed: self = .connection("the server closed the connection")
            case .readTimeout: self = .timedOut("read timeout")
            case .writeTimeout: self = .timedOut("write timeout")
            case .deadlineExceeded: self = .timedOut("deadline exceeded")
            case .getConnectionFromPoolTimeout: self = .timedOut("no connection became available")
            case .tlsHandshakeTimeout: self = .timedOut("TLS handshake timeout")
            case .uncleanShutdown: self = .connection("the connection was shut down uncleanly")
            case .invalidURL, .emptyHost, .emptyScheme: self = .other("the URL is invalid")
            default: self = .other(String(describing: error))
            }
            return
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout: self = .connection("connect timed out")
            case .eof, .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed:
                self = .connection("the connection closed")
            default: self = .other(String(describing: error))
            }
            return
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: self = .connection("connection refused")
            case ECONNRESET: self = .connection("connection reset by peer")
            case EPIPE: self = .connection("broken pipe")
            case ETIMEDOUT: self = .connection("connection timed out")
            case EHOSTUNREACH, ENETUNREACH: self = .connection("host unreachable")
            default: self = .connection(String(describing: error))
            }
            return
        }
        let typeName = String(reflecting: type(of: error))
        let text = String(describing: error)
        if typeName.contains("NIOConnectionError") || typeName.contains("SocketAddressError")
            || typeName.contains("DNS") || typeName.contains("ConnectionError")
        {
            let lowered = text.lowercased()
            if lowered.contains("refused") || lowered.contains("econnrefused") {
                self = .connection("connection refused")
            } else if lowered.contains("resolve") || typeName.contains("SocketAddressError") {
                self = .connection("the host name could not be resolved")
            } else {
                self = .connection("connection failed")
            }
            return
        }
        self = .other(text)
    }
}
