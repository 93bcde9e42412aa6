import AsyncHTTPClient
import Foundation
import NIOCore
import RLM

/// What a decoder made of one server-sent event.
enum StreamStep: Sendable, Equatable {
    /// Nothing to yield (a ping, a role header, usage…).
    case none
    /// Generated text to yield.
    case text(String)
    /// The stream's end marker.
    case finished
}

/// Decodes one provider's streamed events, accumulating usage and the stop reason.
protocol StreamDecoder: Sendable {
    /// Handles one event.
    /// - Throws: ``LLMError`` for an error event or malformed data.
    mutating func decode(_ event: SSEEvent) throws -> StreamStep
    /// Whether any event was understood (a body that ends without a marker is accepted only then).
    var sawEvent: Bool { get }
    /// The completion, once the stream ended.
    func completion(text: String) -> Completion
}

/// One provider's wire format: how a request is encoded and a response decoded.
protocol ChatWire: Sendable {
    associatedtype EventDecoder: StreamDecoder

    /// The JSON body.
    func encode(_ request: CompletionRequest, model: String, stream: Bool) throws -> [UInt8]
    /// Decodes a non-streamed response body.
    func decodeCompletion(_ body: [UInt8], context: DecodeContext) throws -> Completion
    /// A fresh decoder for one streamed attempt.
    func makeDecoder(context: DecodeContext) -> EventDecoder
}

/// What decoding needs to know about the request, for defaults and usage estimates.
struct DecodeContext: Sendable {
    var model: String
    var promptCharacters: Int
    var errors: ErrorMapper
}

/// Runs calls for one wire format over one transport. Both public models are thin wrappers around this.
struct ChatCaller<Wire: ChatWire>: Sendable {
    var wire: Wire
    var transport: ProviderTransport
    var defaultModel: String
    var streamCompletions: Bool

    func resolveModel(_ request: CompletionRequest) throws -> String {
        let model = request.model ?? defaultModel
        guard !model.trimmed.isEmpty else {
            throw LLMError(.configuration, "no model is configured for \(transport.providerName); set a model name")
        }
        return model
    }

    func context(_ request: CompletionRequest, model: String) -> DecodeContext {
        DecodeContext(
            model: model,
            promptCharacters: request.messages.reduce(0) { $0 + $1.content.count },
            errors: transport.errors
        )
    }

    func complete(_ request: CompletionRequest) async throws -> Completion {
        if streamCompletions {
            return try await stream(request, onText: { _ in })
        }
        let model = try resolveModel(request)
        let body = try wire.encode(request, model: model, stream: false)
        let context = context(request, model: model)
        let wire = self.wire
        return try await transport.post(body: body, streaming: false) { attempt in
            let bytes = try await attempt.collect()
            return try wire.decodeCompletion(bytes, context: context)
        }
    }

    func stream(_ request: CompletionRequest, onText: @escaping @Sendable (String) -> Void) async throws -> Completion {
        let model = try resolveModel(request)
        let body = try wire.encode(request, model: model, stream: true)
        let context = context(request, model: model)
        let wire = self.wire
        let yielded = YieldFlag()
        return try await transport.post(body: body, streaming: true, canRetry: { !yielded.isSet }) { attempt in
            // A server that ignores `stream: true` answers with one JSON document.
            if attempt.isJSON {
                let completion = try wire.decodeCompletion(try await attempt.collect(), context: context)
                if !completion.text.isEmpty {
                    yielded.set()
                    onText(completion.text)
                }
                return completion
            }
            var parser = SSEParser()
            var decoder = wire.makeDecoder(context: context)
            var text = ""
            func handle(_ events: [SSEEvent]) throws -> Bool {
                for event in events {
                    switch try decoder.decode(event) {
                    case .none: continue
                    case .finished: return true
                    case .text(let piece):
                        guard !piece.isEmpty else { continue }
                        text += piece
                        yielded.set()
                        onText(piece)
                    }
                }
                return false
            }
            var body = attempt.response.body.makeAsyncIterator()
            while let buffer = try await body.next() {
                attempt.monitor.markActivity()
                try Task.checkCancellation()
                if try handle(parser.feed(buffer.readableBytesView)) {
                    // Read the (tiny) rest of the body so the connection can be reused.
                    var drained = 0
                    while drained < 64 << 10, let rest = try await body.next() {
                        attempt.monitor.markActivity()
                        drained += rest.readableBytes
                    }
                    return decoder.completion(text: text)
                }
            }
            try Task.checkCancellation()
            if try handle(parser.finish()) || decoder.sawEvent {
                return decoder.completion(text: text)
            }
            throw context.errors.invalidResponse("an event stream that ended before any event")
        }
    }

    func streamChunks(_ request: CompletionRequest) -> AsyncThrowingStream<CompletionChunk, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let completion = try await stream(request) { continuation.yield(.text($0)) }
                    continuation.yield(.done(completion))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// JSON helpers shared by the wire formats.
enum WireJSON {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }()

    static func encode(_ value: some Encodable) throws -> [UInt8] {
        do {
            return Array(try encoder.encode(value))
        } catch {
            throw LLMError(.configuration, "could not encode the request: \(error)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], errors: ErrorMapper, what: String) throws -> T
    {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            let preview = errors.sanitize(String(decoding: bytes.prefix(200), as: UTF8.self), limit: 200)
            throw errors.invalidResponse("\(what) that could not be decoded (\(preview))")
        }
    }
}

/// A message's content: a string, or an array of parts of which the text ones count.
struct FlexibleText: Decodable, Sendable {
    var text: String?

    private struct Part: Decodable {
        var type: String?
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            text = nil
        } else if let string = try? container.decode(String.self) {
            text = string
        } else if let parts = try? container.decode([Part].self) {
            text = parts.filter { $0.type == nil || $0.type == "text" }.compactMap(\.text).joined()
        } else {
            text = nil
        }
    }
}

/// A JSON object key chosen at run time.
struct DynamicKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
