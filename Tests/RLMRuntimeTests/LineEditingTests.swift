import RLMRuntime
import Testing

/// The line editor's logic without a terminal: bytes in, keys out, keys in, buffer and cursor out.
@Suite struct LineEditingTests {
    /// Types `bytes` (as a terminal in raw mode sends them) into a fresh editor.
    static func typed(
        _ bytes: String, history: [String] = [], limit: Int = 1000
    ) -> (editing: LineEditing, outcomes: [LineEditing.Outcome]) {
        var decoder = KeyDecoder()
        var editing = LineEditing(history: history, historyLimit: limit)
        var outcomes = [LineEditing.Outcome]()
        for key in decoder.feed(Array(bytes.utf8)) + decoder.flush() {
            let outcome = editing.apply(key)
            if outcome != .editing { outcomes.append(outcome) }
        }
        return (editing, outcomes)
    }

    @Test(arguments: [
        ("hello", "hello", 5),
        ("helo\u{1B}[Dl", "hello", 4),  // Left, insert
        ("ello\u{01}h\u{05}!", "hello!", 6),  // Ctrl-A, Ctrl-E
        ("ello\u{1B}[Hh\u{1B}[F!", "hello!", 6),  // Home, End (xterm)
        ("ello\u{1B}OHh\u{1B}OF!", "hello!", 6),  // Home, End (VT100 application mode)
        ("ello\u{1B}[1~h\u{1B}[4~!", "hello!", 6),  // Home, End (rxvt, linux console)
        ("hellox\u{7F}", "hello", 5),  // Backspace
        ("hellox\u{08}", "hello", 5),  // Ctrl-H
        ("xhello\u{01}\u{1B}[3~", "hello", 0),  // Delete
        ("hello\u{1B}[D\u{1B}[D\u{04}", "helo", 3),  // Ctrl-D deletes on a non-empty line
        ("junk junk\u{15}hello", "hello", 5),  // Ctrl-U
        ("hello world\u{1B}[D\u{1B}[D\u{1B}[D\u{1B}[D\u{1B}[D\u{0B}", "hello ", 6),  // Ctrl-K
        ("hello big world\u{17}", "hello big ", 10),  // Ctrl-W
        ("hello big  \u{17}", "hello ", 6),  // Ctrl-W takes the blanks after the word too
        ("say hello\u{1B}[1;5D\u{1B}b", "say hello", 0),  // Ctrl-Left, Alt-B
        ("say hello\u{01}\u{1B}[1;5C", "say hello", 3),  // Ctrl-Right
        ("a\u{1B}[5~\u{1B}[200~b\u{1B}[201~\u{1A}", "ab", 2),  // Page Up, paste markers, Ctrl-Z: nothing
        ("a\u{1B}", "a", 1),  // a lone Escape, then a pause
    ])
    func editing(bytes: String, line: String, cursor: Int) {
        let (editing, outcomes) = Self.typed(bytes)
        #expect(outcomes.isEmpty)
        #expect(editing.line == line)
        #expect(editing.cursor == cursor)
    }

    @Test func multiByteCharactersAreOneCharacterEach() {
        let (editing, _) = Self.typed("日本\u{1B}[Dx🙂\u{7F}é")
        #expect(editing.line == "日xé本")
        #expect(editing.cursor == 3)
    }

    @Test func aCharacterSplitAcrossReadsWaitsForItsLastByte() {
        var decoder = KeyDecoder()
        let bytes = Array("é本🙂".utf8)
        var keys = [LineEditing.Key]()
        for byte in bytes {
            keys += decoder.feed([byte])
        }
        #expect(keys == [.text("é"), .text("本"), .text("🙂")])
        #expect(!decoder.hasPending)
        // An escape sequence split across reads too.
        #expect(decoder.feed([0x1B]) == [])
        #expect(decoder.hasPending)
        #expect(decoder.feed([UInt8(ascii: "[")]) == [])
        #expect(decoder.feed([UInt8(ascii: "A")]) == [.up])
    }

    @Test func controlCharactersAndInvalidBytesNeverBecomeText() {
        var decoder = KeyDecoder()
        // C1 control U+009B (a CSI of its own on some terminals), a stray continuation byte, an overlong encoding,
        // a lead byte followed by ASCII.
        let keys = decoder.feed([0xC2, 0x9B, 0x80, 0xC0, 0xAF, 0xE6, 0x41, 0x00, 0x1C])
        let text = keys.compactMap { key -> String? in
            if case .text(let text) = key { return text }
            return nil
        }
        #expect(text == ["A"], "\(keys)")
    }

    @Test func enterSubmitsAndCRLFIsOneEnter() {
        let (editing, outcomes) = Self.typed("first\r\nsecond\rthird\n")
        #expect(outcomes == [.submitted("first"), .submitted("second"), .submitted("third")])
        #expect(editing.line.isEmpty)
    }

    @Test func ctrlCDropsTheLineAndCtrlDOnAnEmptyLineEnds() {
        let (editing, outcomes) = Self.typed("typed\u{03}\u{04}")
        #expect(outcomes == [.interrupted, .endOfInput])
        #expect(editing.line.isEmpty)
    }

    @Test func upAndDownWalkTheHistoryAndKeepTheDraft() {
        var (editing, _) = Self.typed("draft\u{1B}[A", history: ["one", "two"])
        #expect(editing.line == "two")
        _ = editing.apply(.up)
        #expect(editing.line == "one")
        _ = editing.apply(.up)
        #expect(editing.line == "one", "the oldest line stays")
        _ = editing.apply(.down)
        _ = editing.apply(.down)
        #expect(editing.line == "draft")
        #expect(editing.cursor == 5)
        _ = editing.apply(.down)
        #expect(editing.line == "draft")
        // A recalled line, edited and submitted.
        _ = editing.apply(.up)
        _ = editing.apply(.text("!"))
        #expect(editing.apply(.enter) == .submitted("two!"))
    }

    @Test func theHistorySkipsBlanksAndRepeatsAndKeepsTheLimit() {
        var editing = LineEditing(history: ["a", "b", "c"], historyLimit: 3)
        let added = [editing.remember("d"), editing.remember("d"), editing.remember("   ")]
        #expect(added == [true, false, false])
        #expect(editing.history == ["b", "c", "d"])
        #expect(LineEditing(history: (0..<10).map(String.init), historyLimit: 4).history == ["6", "7", "8", "9"])
    }

    @Test func aLineWiderThanTheTerminalScrollsAndTheBufferStaysWhole() {
        let text = String(repeating: "あい", count: 30) + "end"
        var (editing, _) = Self.typed(text)
        let columns = 20
        var view = editing.view(columns: columns)
        #expect(LineEditing.width(of: view.text) <= columns - 1)
        #expect(view.text.hasSuffix("end"))
        #expect(view.cursorColumn == LineEditing.width(of: view.text))
        for _ in 0..<text.count { _ = editing.apply(.left) }
        view = editing.view(columns: columns)
        #expect(view.cursorColumn == 0)
        #expect(view.text.hasPrefix("あい"))
        #expect(LineEditing.width(of: view.text) <= columns - 1)
        _ = editing.apply(.text("X"))
        for _ in 0..<25 { _ = editing.apply(.right) }
        view = editing.view(columns: columns)
        #expect(view.cursorColumn <= columns - 1)
        #expect(editing.line == "X" + text)
    }

    @Test(arguments: [("a", 1), ("本", 2), ("🙂", 2), ("e\u{301}", 1), ("\u{301}", 0), ("👍🏽", 2), ("한", 2)])
    func widths(character: String, columns: Int) {
        #expect(LineEditing.width(of: character) == columns)
    }
}
