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
