import RLMProviders
import Testing

@Suite("SSEParser")
struct SSEParserTests {
    /// Parses `text` fed in one piece, then finishes.
    private func parse(_ text: String, maxEventBytes: Int = SSEParser.defaultMaxEventBytes) throws -> [SSEEvent] {
        try parse(bytes: Array(text.utf8), chunkSizes: [Int.max], maxEventBytes: maxEventBytes)
    }

    /// Parses `bytes` fed in chunks of the given sizes (cycled), then finishes.
    private func parse(
        bytes: [UInt8],
        chunkSizes: [Int],
        maxEventBytes: Int = SSEParser.defaultMaxEventBytes
    ) throws -> [SSEEvent] {
        var parser = SSEParser(maxEventBytes: maxEventBytes)
        var events: [SSEEvent] = []
        var offset = 0
        var turn = 0
        while offset < bytes.count {
            let size = min(chunkSizes[turn % chunkSizes.count], bytes.count - offset)
            events += try parser.feed(bytes[offset..<(offset + size)])
            offset += size
            turn += 1
        }
        return events + parser.finish()
    }

    @Test func parsesBasicEvents() throws {
        let events = try parse("data: hello\n\ndata: world\n\n")
        #expect(events == [SSEEvent(data: "hello"), SSEEvent(data: "world")])
    }

    @Test func joinsMultiLineDataWithNewlines() throws {
        let events = try parse("data: one\ndata: two\ndata:\ndata: four\n\n")
        #expect(events.map(\.data) == ["one\ntwo\n\nfour"])
    }

    @Test func readsEventTypeIdAndRetry() throws {
        let events = try parse("event: message_start\nid: 7\nretry: 1500\ndata: {}\n\ndata: next\n\n")
        #expect(events.count == 2)
        #expect(events[0] == SSEEvent(type: "message_start", data: "{}", id: "7", retry: 1500))
        // The id persists; the type and retry do not.
        #expect(events[1] == SSEEvent(type: "message", data: "next", id: "7", retry: nil))
    }

    @Test func ignoresCommentsUnknownFieldsAndBadRetry() throws {
        let events = try parse(": keep-alive\nfoo: bar\nretry: 12a\ndata: x\n: another comment\n\n")
        #expect(events == [SSEEvent(data: "x")])
    }

    @Test func handlesFieldsWithoutSpaceOrColon() throws {
        // Only one space after the colon is removed; a line without a colon is a field with an empty value.
        let events = try parse("data:no-space\ndata:  two-spaces\ndata\n\n")
        #expect(events.map(\.data) == ["no-space\n two-spaces\n"])
    }

    @Test func doesNotDispatchEventsWithoutData() throws {
        let events = try parse("event: ping\n\nid: 3\n\n\n\ndata: real\n\n")
        #expect(events == [SSEEvent(data: "real", id: "3")])
    }

    @Test(arguments: ["\n", "\r\n", "\r"])
    func acceptsEveryLineEnding(_ ending: String) throws {
        let text = ["event: a", "data: 1", "data: 2", "", "data: 3", "", ""].joined(separator: ending)
        let events = try parse(text)
        #expect(events == [SSEEvent(type: "a", data: "1\n2"), SSEEvent(data: "3")])
    }

    @Test func acceptsMixedLineEndings() throws {
        let events = try parse("data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r")
        #expect(events.map(\.data) == ["a\nb\nc", "d"])
    }

    private static let hostileStream =
        "\u{FEFF}: comment\r\nevent: message_start\r\ndata: {\"text\":\"héllo wörld ✓ 🎉\"}\r\n\r\n"
        + "data: line1\rdata: line2\r\rid: 42\ndata: [DONE]\n\n"

    private static let hostileExpected = [
        SSEEvent(type: "message_start", data: #"{"text":"héllo wörld ✓ 🎉"}"#),
        SSEEvent(data: "line1\nline2"),
        SSEEvent(data: "[DONE]", id: "42"),
    ]

    @Test func survivesASplitAtEveryByte() throws {
        let bytes = Array(Self.hostileStream.utf8)
        #expect(try parse(bytes: bytes, chunkSizes: [1]) == Self.hostileExpected)
    }

    @Test func survivesEverySingleSplitPoint() throws {
        let bytes = Array(Self.hostileStream.utf8)
        for split in 0...bytes.count {
            var parser = SSEParser()
            let events = try parser.feed(bytes[..<split]) + parser.feed(bytes[split...]) + parser.finish()
            #expect(events == Self.hostileExpected, "split at byte \(split)")
        }
    }

    @Test func survivesIrregularChunks() throws {
        let bytes = Array(Self.hostileStream.utf8)
        #expect(try parse(bytes: bytes, chunkSizes: [3, 1, 7, 2, 13]) == Self.hostileExpected)
    }

    @Test func crAtTheEndOfAChunkThenLFIsOneLineEnd() throws {
        var parser = SSEParser()
        var events = try parser.feed(Array("data: a\r".utf8))
        events += try parser.feed(Array("\n\r".utf8))
        events += try parser.feed(Array("\ndata: b\n\n".utf8))
        #expect(events.map(\.data) == ["a", "b"])
    }

    @Test func stripsALeadingByteOrderMarkOnlyAtTheStart() throws {
        let events = try parse("\u{FEFF}data: a\n\n\u{FEFF}data: b\n\n")
        // A BOM later in the stream is part of a field name, which is then unknown.
        #expect(events.map(\.data) == ["a"])
    }

    @Test func keepsAPartialBOMThatIsNotOne() throws {
        var parser = SSEParser()
        let events = try parser.feed([0xEF]) + parser.feed(Array("data: x\n\n".utf8)) + parser.finish()
        // EF alone is not a BOM: it stays, invalid UTF-8 in an unknown field name.
        #expect(events.isEmpty)
        let clean = try parse("data: x\n\n")
        #expect(clean.map(\.data) == ["x"])
    }

    @Test func finishDeliversAnUnterminatedEvent() throws {
        var parser = SSEParser()
        let events = try parser.feed(Array("data: first\n\ndata: last".utf8))
        #expect(events.map(\.data) == ["first"])
        #expect(parser.finish().map(\.data) == ["last"])
        #expect(parser.finish().isEmpty)
    }

    @Test func capsAHugeLine() throws {
        var parser = SSEParser(maxEventBytes: 1024)
        let huge = Array("data: ".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 2000)
        #expect(throws: SSEParser.Error(limit: 1024)) {
            _ = try parser.feed(huge)
        }
    }

    @Test func capsAnEventMadeOfManyLines() throws {
        var parser = SSEParser(maxEventBytes: 1024)
        let line = Array("data: \(String(repeating: "y", count: 100))\n".utf8)
        #expect(throws: SSEParser.Error.self) {
            for _ in 0..<20 { _ = try parser.feed(line) }
        }
    }

    @Test func capsAHugeLineFedByteByByte() throws {
        var parser = SSEParser(maxEventBytes: 256)
        var thrown: SSEParser.Error?
        do {
            _ = try parser.feed(Array("data: ".utf8))
            for _ in 0..<1000 { _ = try parser.feed([UInt8(ascii: "z")]) }
        } catch let error as SSEParser.Error {
            thrown = error
        }
        #expect(thrown == SSEParser.Error(limit: 256))
        #expect(thrown?.description.contains("256 bytes") == true)
    }

    @Test func manySmallEventsDoNotTripTheCap() throws {
        let text = String(repeating: "data: \(String(repeating: "a", count: 100))\n\n", count: 200)
        let events = try parse(text, maxEventBytes: 1024)
        #expect(events.count == 200)
    }

    @Test func theDefaultCapIsEightMebibytes() {
        #expect(SSEParser().maxEventBytes == 8 << 20)
    }
}
