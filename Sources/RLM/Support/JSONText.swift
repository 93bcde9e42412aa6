/// JSON text that no terminal can obey: `JSONEncoder` and `JSONSerialization` escape C0 controls but write C1
/// controls (U+0080–U+009F, which some terminals take as 8-bit escape sequences) and DEL as they are. Every writer of
/// JSON a person may `cat` — `--json` output, trajectories — passes its text through here: the same JSON value,
/// with those characters as `\u` escapes.
public enum JSONText {
    /// `json` with DEL and every C1 control written as a `\u` escape.
    /// - Parameter json: serialized JSON.
    public static func escapingControlCharacters(_ json: String) -> String {
        guard json.unicodeScalars.contains(where: needsEscape) else { return json }
        var result = String.UnicodeScalarView()
        for scalar in json.unicodeScalars {
            if needsEscape(scalar) {
                let hex = String(scalar.value, radix: 16)
                result.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).unicodeScalars)
            } else {
                result.append(scalar)
            }
        }
        return String(result)
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value)
    }
}

/// Text the model or the sandbox wrote, made safe for a terminal or a log line: every C0 control but newline and tab,
/// DEL and every C1 control becomes a visible escape (`\x1b`, `\r`, `\u009b`). A final answer holding
/// `ESC ] 52 ; c ; …` would otherwise write the clipboard, `ESC [ 2 J` clear the screen, a bare carriage return
/// overwrite the line before it.
public enum UntrustedText {
    /// `text` with every control character but `\n` and `\t` replaced by a visible escape.
    /// - Parameter text: untrusted text.
    public static func visible(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard isControl(scalar) else {
                result.append(scalar)
                continue
            }
            let hex = String(scalar.value, radix: 16)
            let escaped: String
            switch scalar.value {
            case 0x0D: escaped = "\\r"
            case 0x00..<0x80: escaped = "\\x" + String(repeating: "0", count: 2 - hex.count) + hex
            default: escaped = "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            }
            result.append(contentsOf: escaped.unicodeScalars)
        }
        return String(result)
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x0A, 0x09: return false
        case 0x00..<0x20, 0x7F, 0x80...0x9F: return true
        default: return false
        }
    }
}
