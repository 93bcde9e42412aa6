/// The editing state of one prompt line, without a terminal: a buffer of characters, a cursor, the history Up and
/// Down recall, and the window of the line a terminal of a given width shows. The CLI's line editor feeds it keys
/// (decoded by ``KeyDecoder``) and draws ``view(columns:)``; tests feed it keys and read the buffer.
public struct LineEditing: Sendable {
    /// One editing key, already decoded from the terminal's bytes.
    public enum Key: Sendable, Hashable {
        /// Printable text typed or pasted (never a control character).
        case text(String)
        case left, right, wordLeft, wordRight, home, end
        case backspace, delete
        /// Ctrl-U: deletes from the start of the line to the cursor.
        case killToStart
        /// Ctrl-K: deletes from the cursor to the end of the line.
        case killToEnd
        /// Ctrl-W: deletes the word before the cursor (and the blanks after it).
        case killWord
        case up, down, enter
        /// Ctrl-C.
        case interrupt
        /// Ctrl-D: the end of input on an empty line, else delete.
        case endOfInput
        /// Anything the editor does not act on (an unknown escape sequence, Ctrl-Z).
        case ignored
    }

    /// What a key did.
    public enum Outcome: Sendable, Hashable {
        /// The line is still being edited.
        case editing
        /// Enter: the line, which the buffer no longer holds.
        case submitted(String)
        /// Ctrl-C: the line was dropped.
        case interrupted
        /// Ctrl-D on an empty line.
        case endOfInput
    }

    /// The characters of the line.
    public private(set) var buffer: [Character] = []
    /// Where the next character goes: 0 … `buffer.count`.
    public private(set) var cursor = 0
    /// Earlier lines, oldest first.
    public private(set) var history: [String]
    /// The most lines ``history`` keeps.
    public let historyLimit: Int
    /// Which history line is shown: `history.count` is the line being written.
    private var historyIndex: Int
    /// The line being written, kept while Up shows older ones.
    private var draft: [Character] = []
    /// The first character shown when the line is wider than the terminal.
    private var scroll = 0

    /// - Parameters:
    ///   - history: earlier lines, oldest first (only the last `historyLimit` are kept).
    ///   - historyLimit: the most lines the history keeps.
    public init(history: [String] = [], historyLimit: Int = 1000) {
        self.historyLimit = max(0, historyLimit)
        self.history = Array(history.suffix(self.historyLimit))
        self.historyIndex = self.history.count
    }

    /// The line as text.
    public var line: String { String(buffer) }

    /// Applies one key.
    /// - Parameter key: the key.
    /// - Returns: whether the line goes on, was submitted, dropped or ended the input.
    public mutating func apply(_ key: Key) -> Outcome {
        switch key {
        case .text(let text): insert(text)
        case .left: cursor = max(0, cursor - 1)
        case .right: cursor = min(buffer.count, cursor + 1)
        case .wordLeft: cursor = wordStart(before: cursor)
        case .wordRight: cursor = wordEnd(after: cursor)
        case .home: cursor = 0
        case .end: cursor = buffer.count
        case .backspace:
            if cursor > 0 {
                buffer.remove(at: cursor - 1)
                cursor -= 1
            }
        case .delete:
            if cursor < buffer.count { buffer.remove(at: cursor) }
        case .killToStart:
            buffer.removeSubrange(0..<cursor)
            cursor = 0
        case .killToEnd:
            buffer.removeSubrange(cursor...)
        case .killWord:
            let start = wordStart(before: cursor)
            buffer.removeSubrange(start..<cursor)
            cursor = start
        case .up: recall(historyIndex - 1)
        case .down: recall(historyIndex + 1)
        case .enter:
            let submitted = line
            reset()
            return .submitted(submitted)
        case .interrupt:
            reset()
            return .interrupted
        case .endOfInput:
            if buffer.isEmpty {
                reset()
                return .endOfInput
            }
            if cursor < buffer.count { buffer.remove(at: cursor) }
        case .ignored: break
        }
        return .editing
    }

    /// Adds a submitted line to the history: blank lines and a repeat of the last line are not kept, and the oldest
    /// lines go beyond ``historyLimit``.
    /// - Parameter line: the line.
    /// - Returns: whether the line was added.
    @discardableResult
    public mutating func remember(_ line: String) -> Bool {
        guard historyLimit > 0, !line.allSatisfy(\.isWhitespace), line != history.last else { return false }
        history.append(line)
        if history.count > historyLimit { history.removeFirst(history.count - historyLimit) }
        historyIndex = history.count
        return true
    }

    /// What a terminal shows of the line in `columns` columns (the prompt's excluded): the line itself when it fits,
    /// else a window that scrolls sideways to keep the cursor in view. Never more than `columns - 1` columns, so a
    /// terminal never wraps the line and a redraw from column 0 always overwrites all of it.
    /// - Parameter columns: the columns after the prompt.
    /// - Returns: the text shown and the cursor's column within it.
    public mutating func view(columns: Int) -> (text: String, cursorColumn: Int) {
        let room = max(1, columns - 1)
        let widths = buffer.map(Self.width(of:))
        if widths.reduce(0, +) <= room {
            scroll = 0
        } else {
            scroll = min(scroll, cursor)
            // The cursor needs a column of its own after the characters before it.
            while scroll < cursor, widths[scroll..<cursor].reduce(0, +) + 1 > room { scroll += 1 }
        }
        var shown = ""
        var used = 0
        var cursorColumn = 0
        for index in scroll..<buffer.count {
            if index == cursor { cursorColumn = used }
            guard used + widths[index] <= room else { break }
            shown.append(buffer[index])
            used += widths[index]
        }
        if cursor == buffer.count { cursorColumn = used }
        return (shown, cursorColumn)
    }

    /// The columns a terminal gives a character: 2 for East Asian wide and fullwidth characters and emoji, 0 for a
    /// combining mark alone, 1 otherwise.
    /// - Parameter character: the character.
    public static func width(of character: Character) -> Int {
        let scalars = character.unicodeScalars
        guard let first = scalars.first else { return 0 }
        if scalars.contains(where: { isWide($0) || ($0.properties.isEmojiPresentation) }) { return 2 }
        // An emoji written with the emoji variation selector.
        if scalars.contains("\u{FE0F}") && scalars.contains(where: { $0.properties.isEmoji }) { return 2 }
        switch first.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: return scalars.count == 1 ? 0 : 1
        default: return 1
        }
    }

    /// The columns a terminal gives a text.
    /// - Parameter text: the text.
    public static func width(of text: String) -> Int { text.reduce(0) { $0 + width(of: $1) } }

    // MARK: - Steps

    private mutating func insert(_ text: String) {
        guard !text.isEmpty else { return }
        // Joined as a string, so a combining mark typed after a letter becomes one character with it.
        let before = String(buffer[..<cursor]) + text
        let joined = before + String(buffer[cursor...])
        buffer = Array(joined)
        cursor = min(before.count, buffer.count)
    }

    private mutating func recall(_ index: Int) {
        guard index >= 0, index <= history.count, index != historyIndex else { return }
        if historyIndex == history.count { draft = buffer }
        historyIndex = index
        buffer = index == history.count ? draft : Array(history[index])
        cursor = buffer.count
    }

    private mutating func reset() {
        buffer = []
        cursor = 0
        draft = []
        scroll = 0
        historyIndex = history.count
    }

    private func wordStart(before position: Int) -> Int {
        var index = position
        while index > 0, !isWordCharacter(buffer[index - 1]) { index -= 1 }
        while index > 0, isWordCharacter(buffer[index - 1]) { index -= 1 }
        return index
    }

    private func wordEnd(after position: Int) -> Int {
        var index = position
        while index < buffer.count, !isWordCharacter(buffer[index]) { index += 1 }
        while index < buffer.count, isWordCharacter(buffer[index]) { index += 1 }
        return index
    }

    private func isWordCharacter(_ character: Character) -> Bool {
        character.isLetter || character.isNumber || character == "_"
    }

    private static func isWide(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x1100...0x115F, 0x231A...0x231B, 0x2329...0x232A, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF,
            0x4E00...0x9FFF, 0xA000...0xA4CF, 0xA960...0xA97F, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE10...0xFE19,
            0xFE30...0xFE6F, 0xFF00...0xFF60, 0xFFE0...0xFFE6, 0x1F300...0x1F64F, 0x1F900...0x1F9FF,
            0x20000...0x2FFFD, 0x30000...0x3FFFD:
            return true
        default:
            return false
        }
    }
}

/// Turns the bytes a terminal in raw mode sends into ``LineEditing/Key``s: UTF-8 (a character split across reads
/// waits for its last byte), control keys, and the escape sequences of arrows, Home, End and Delete (xterm, VT100 and
/// rxvt forms). Control characters never become text.
public struct KeyDecoder: Sendable {
    private var pending: [UInt8] = []
    private var afterCarriageReturn = false

    public init() {}

    /// Whether bytes wait for the rest of a sequence (a lone Escape, or a split character): after a pause with no
    /// more input, ``flush()`` them.
    public var hasPending: Bool { !pending.isEmpty }

    /// Decodes `bytes` (and whatever was pending).
    /// - Parameter bytes: what the terminal sent.
    /// - Returns: the complete keys; consecutive text comes as one `.text`.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [LineEditing.Key] {
        pending.append(contentsOf: bytes)
        var keys = [LineEditing.Key]()
        var index = 0
        func add(_ key: LineEditing.Key) {
            if case .text(let more) = key, case .text(let text)? = keys.last {
                keys[keys.count - 1] = .text(text + more)
            } else {
                keys.append(key)
            }
        }
        decoding: while index < pending.count {
            let byte = pending[index]
            // A terminal that sends CR LF for Enter (or a paste of such lines) is one Enter, not two.
            let wasCarriageReturn = afterCarriageReturn
            afterCarriageReturn = byte == 0x0D
            switch byte {
            case 0x1B:
                guard let (key, length) = Self.escape(pending[index...]) else { break decoding }
                add(key)
                index += length
            case 0x0D:
                add(.enter)
                index += 1
            case 0x0A:
                if !wasCarriageReturn { add(.enter) }
                index += 1
            case 0x00..<0x20, 0x7F:
                add(Self.control(byte))
                index += 1
            case 0x20..<0x80:
                add(.text(String(UnicodeScalar(byte))))
                index += 1
            default:
                let length = Self.utf8Length(byte)
                guard length > 1 else {
                    index += 1  // a stray continuation byte or an invalid lead byte
                    continue
                }
                // Only continuation bytes may follow the lead byte: anything else drops the lead alone.
                let available = pending[(index + 1)..<min(index + length, pending.count)]
                guard available.allSatisfy({ $0 & 0xC0 == 0x80 }) else {
                    index += 1
                    continue
                }
                guard index + length <= pending.count else { break decoding }
                let sequence = pending[index..<index + length]
                index += length
                guard let scalar = Self.scalar(sequence) else { continue }
                if (0x80...0x9F).contains(scalar.value) { continue }  // C1 controls are not text either
                add(.text(String(scalar)))
            }
        }
        pending.removeFirst(index)
        return keys
    }

    /// After a pause: a lone Escape is dropped, and so are the first bytes of a character that never came whole.
    /// - Returns: the keys the pending bytes make on their own.
    public mutating func flush() -> [LineEditing.Key] {
        guard !pending.isEmpty else { return [] }
        var rest = pending
        pending = []
        if rest.first == 0x1B {
            // Escape then a key pressed slowly: the key still counts.
            rest.removeFirst()
            return feed(rest)
        }
        return []
    }

    private static func control(_ byte: UInt8) -> LineEditing.Key {
        switch byte {
        case 0x01: return .home  // Ctrl-A
        case 0x02: return .left  // Ctrl-B
        case 0x03: return .interrupt  // Ctrl-C
        case 0x04: return .endOfInput  // Ctrl-D
        case 0x05: return .end  // Ctrl-E
        case 0x06: return .right  // Ctrl-F
        case 0x08, 0x7F: return .backspace  // Ctrl-H, Backspace
        case 0x09: return .text("    ")  // Tab: indentation (a tab's width is the terminal's guess)
        case 0x0B: return .killToEnd  // Ctrl-K
        case 0x0E: return .down  // Ctrl-N
        case 0x10: return .up  // Ctrl-P
        case 0x15: return .killToStart  // Ctrl-U
        case 0x17: return .killWord  // Ctrl-W
        default: return .ignored
        }
    }

    /// The key an escape sequence at the start of `bytes` stands for, and its length; `nil` while it is incomplete.
    private static func escape(_ bytes: ArraySlice<UInt8>) -> (LineEditing.Key, Int)? {
        let start = bytes.startIndex
        guard bytes.count >= 2 else { return nil }
        let second = bytes[start + 1]
        switch second {
        case UInt8(ascii: "["):
            // CSI: parameters and intermediates, then one final byte.
            var index = start + 2
            while index < bytes.endIndex, (0x20...0x3F).contains(bytes[index]) { index += 1 }
            guard index < bytes.endIndex else { return bytes.count > 32 ? (.ignored, bytes.count) : nil }
            let parameters = String(decoding: bytes[(start + 2)..<index], as: UTF8.self)
            return (csi(parameters: parameters, final: bytes[index]), index - start + 1)
        case UInt8(ascii: "O"):
            guard bytes.count >= 3 else { return nil }
            return (csi(parameters: "", final: bytes[start + 2]), 3)
        case UInt8(ascii: "b"): return (.wordLeft, 2)  // Alt-B
        case UInt8(ascii: "f"): return (.wordRight, 2)  // Alt-F
        case 0x7F, 0x08: return (.killWord, 2)  // Alt-Backspace
        case 0x1B: return (.ignored, 1)  // Escape pressed twice: the first one alone
        default: return (.ignored, second < 0x80 ? 2 : 1)
        }
    }

    private static func csi(parameters: String, final: UInt8) -> LineEditing.Key {
        let fields = parameters.split(separator: ";", omittingEmptySubsequences: false)
        // xterm's modifier field: 3 Alt, 5 Ctrl (either moves by words).
        let modified = fields.count > 1 && ["3", "5"].contains(fields[1])
        switch final {
        case UInt8(ascii: "A"): return .up
        case UInt8(ascii: "B"): return .down
        case UInt8(ascii: "C"): return modified ? .wordRight : .right
        case UInt8(ascii: "D"): return modified ? .wordLeft : .left
        case UInt8(ascii: "H"): return .home
        case UInt8(ascii: "F"): return .end
        case UInt8(ascii: "~"):
            switch fields.first {
            case "1", "7": return .home
            case "4", "8": return .end
            case "3": return .delete
            default: return .ignored  // Insert, Page Up/Down, function keys, bracketed paste markers
            }
        default: return .ignored
        }
    }

    private static func utf8Length(_ lead: UInt8) -> Int {
        switch lead {
        case 0xC2...0xDF: return 2
        case 0xE0...0xEF: return 3
        case 0xF0...0xF4: return 4
        default: return 1
        }
    }

    private static func scalar(_ bytes: ArraySlice<UInt8>) -> Unicode.Scalar? {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        if case .scalarValue(let scalar) = decoder.decode(&iterator) { return scalar }
        return nil
    }
}
