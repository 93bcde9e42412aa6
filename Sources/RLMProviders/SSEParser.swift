/// One server-sent event, as dispatched by ``SSEParser``.
public struct SSEEvent: Sendable, Hashable {
    /// The event type: the last `event:` field, or `message` when the event had none.
    public var type: String
    /// The `data:` lines joined with `\n`.
    public var data: String
    /// The last event id seen so far in the stream (`id:` fields persist across events), when any.
    public var id: String?
    /// The reconnection time in milliseconds, when this event carried a valid `retry:` field.
    public var retry: Int?

    /// - Parameters:
    ///   - type: the event type (`message` by default).
    ///   - data: the joined data lines.
    ///   - id: the last event id.
    ///   - retry: the reconnection time in milliseconds.
    public init(type: String = "message", data: String, id: String? = nil, retry: Int? = nil) {
        self.type = type
        self.data = data
        self.id = id
        self.retry = retry
    }
}

/// An incremental parser for `text/event-stream` bodies (the WHATWG server-sent events format).
///
/// Feed it bytes as they arrive, in chunks of any size and split anywhere (inside a line, inside a UTF-8 sequence,
/// between `\r` and `\n`); it returns the events completed so far. It accepts `\n`, `\r\n` and `\r` line endings,
/// multi-line `data:`, comments (lines starting with `:`), `event:`, `id:` and `retry:`, and strips a leading byte
/// order mark. One event (its pending line plus its data) is capped at ``maxEventBytes``: a stream that exceeds it
/// throws ``SSEParser/Error`` instead of growing without bound.
///
/// ```swift
/// var parser = SSEParser()
/// for try await buffer in response.body {
///     for event in try parser.feed(buffer.readableBytesView) { handle(event) }
/// }
/// for event in parser.finish() { handle(event) }
/// ```
public struct SSEParser: Sendable {
    /// A stream the parser refuses.
    public struct Error: Swift.Error, Sendable, Hashable, CustomStringConvertible {
        /// The cap that was exceeded, in bytes.
        public var limit: Int

        /// - Parameter limit: the cap that was exceeded, in bytes.
        public init(limit: Int) { self.limit = limit }

        /// What went wrong, for logs and error messages.
        public var description: String {
            "a server-sent event exceeds \(limit) bytes; the stream is malformed or hostile"
        }
    }

    /// The default cap on one event: 8 MiB.
    public static let defaultMaxEventBytes = 8 << 20

    /// The most bytes one event may take (its current line plus its accumulated data).
    public let maxEventBytes: Int

    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var eventType = ""
    private var lastEventID: String?
    private var retry: Int?
    private var lastByteWasCR = false
    private var atStreamStart = true
    private var bomCandidate: [UInt8] = []

    /// - Parameter maxEventBytes: the most bytes one event may take; 8 MiB by default.
    public init(maxEventBytes: Int = SSEParser.defaultMaxEventBytes) {
        self.maxEventBytes = max(1, maxEventBytes)
    }

    /// Parses more bytes.
    /// - Parameter bytes: the next bytes of the stream, split anywhere.
    /// - Returns: the events completed by these bytes, in order.
    /// - Throws: ``SSEParser/Error`` when one event grows beyond ``maxEventBytes``.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws -> [SSEEvent] {
        var events: [SSEEvent] = []
        for byte in bytes {
            if atStreamStart {
                // A UTF-8 BOM (EF BB BF) may open the stream; hold bytes until we know.
                let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
                if byte == bom[bomCandidate.count] {
                    bomCandidate.append(byte)
                    if bomCandidate.count == bom.count {
                        bomCandidate.removeAll()
                        atStreamStart = false
                    }
                    continue
                }
                atStreamStart = false
                let held = bomCandidate
                bomCandidate.removeAll()
                for heldByte in held { try consume(heldByte, into: &events) }
            }
            try consume(byte, into: &events)
        }
        return events
    }

    /// Ends the stream.
    ///
    /// Unlike a browser, which drops an event that the stream ends before its blank line, this returns that event
    /// when it has data: some servers close right after their last `data:` line.
    /// - Returns: the last, unterminated event, if any.
    public mutating func finish() -> [SSEEvent] {
        var events: [SSEEvent] = []
        if atStreamStart, !bomCandidate.isEmpty {
            atStreamStart = false
            let held = bomCandidate
            bomCandidate.removeAll()
            for heldByte in held { try? consume(heldByte, into: &events) }
        }
        if !line.isEmpty {
            processLine()
        }
        if let event = dispatch() { events.append(event) }
        lastByteWasCR = false
        return events
    }

    private mutating func consume(_ byte: UInt8, into events: inout [SSEEvent]) throws {
        switch byte {
        case UInt8(ascii: "\n"):
            if lastByteWasCR {
                // The second half of a CRLF that was already handled at the CR.
                lastByteWasCR = false
                return
            }
            try endLine(into: &events)
        case UInt8(ascii: "\r"):
            lastByteWasCR = true
            try endLine(into: &events)
        default:
            lastByteWasCR = false
            guard line.count + data.count < maxEventBytes else { throw Error(limit: maxEventBytes) }
            line.append(byte)
        }
    }

    private mutating func endLine(into events: inout [SSEEvent]) throws {
        if line.isEmpty {
            if let event = dispatch() { events.append(event) }
            return
        }
        processLine()
        guard data.count <= maxEventBytes else { throw Error(limit: maxEventBytes) }
    }

    private mutating func processLine() {
        defer { line.removeAll(keepingCapacity: true) }
        if line.first == UInt8(ascii: ":") { return }
        let field: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = line[..<colon]
            value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        } else {
            field = line[...]
            value = []
        }
        switch String(decoding: field, as: UTF8.self) {
        case "data":
            if hasData { data.append(UInt8(ascii: "\n")) }
            data.append(contentsOf: value)
            hasData = true
        case "event":
            eventType = String(decoding: value, as: UTF8.self)
        case "id":
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        case "retry":
            if !value.isEmpty, value.count < 19, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                retry = Int(String(decoding: value, as: UTF8.self))
            }
        default:
            break
        }
    }

    private mutating func dispatch() -> SSEEvent? {
        defer {
            data.removeAll(keepingCapacity: true)
            hasData = false
            eventType = ""
            retry = nil
        }
        guard hasData else { return nil }
        return SSEEvent(
            type: eventType.isEmpty ? "message" : eventType,
            data: String(decoding: data, as: UTF8.self),
            id: lastEventID,
            retry: retry
        )
    }
}
