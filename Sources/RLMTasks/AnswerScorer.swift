import Foundation

/// Decides whether a predicted answer matches the expected one: exact after a light normalization, never a superset.
///
/// Normalization (both sides): surrounding whitespace, surrounding quotes, backticks or `**`, and one trailing period
/// are removed, repeatedly. Then, by ``AnswerKind``:
/// - `integer`, `number`: compared as decimal numbers (`256623.0` = `256623`, `1,024` = `$1,024` = `1024`). When the
///   prediction is not a number by itself but contains exactly one standalone number (`42 lines`, `The answer is 42.`),
///   that number is compared; two numbers (`41 or 42`) are wrong. Digits inside identifiers (`svc-7`, `C-0421`) are
///   not numbers.
/// - `text`: equal ignoring case (runs of whitespace count as one space).
/// - `path`: equal after removing a leading `./` or `### ` (case-sensitive, as file systems are).
/// - `list`: comma-separated items, equal in number and order, each compared as `text` (`svc-3, svc-7 and svc-12` =
///   `svc-3,svc-7,svc-12`; `svc-7, svc-3, svc-12` is wrong).
public enum AnswerScorer {
    /// Whether `predicted` is a correct answer.
    /// - Parameters:
    ///   - predicted: the model's answer; `nil` (no answer) is never correct.
    ///   - expected: the task's answer.
    ///   - kind: how to compare.
    public static func isCorrect(predicted: String?, expected: String, kind: AnswerKind) -> Bool {
        guard let predicted else { return false }
        let got = normalize(predicted)
        let want = normalize(expected)
        guard !got.isEmpty else { return false }
        switch kind {
        case .integer, .number:
            guard let wanted = parseNumber(want) else { return sameText(got, want) }
            guard let value = parseNumber(got) ?? singleNumber(in: got) else { return false }
            return value == wanted
        case .text:
            return sameText(got, want)
        case .path:
            return stripPathPrefix(got) == stripPathPrefix(want)
        case .list:
            let wanted = listItems(want, allowAnd: false)
            let allowAnd = !wanted.contains { $0.lowercased().contains(" and ") }
            // Items are normalized one by one, so `a`, `b` works as well as "a, b".
            return [got, predicted].contains { text in
                let items = listItems(text, allowAnd: allowAnd)
                return !wanted.isEmpty && items.count == wanted.count && zip(items, wanted).allSatisfy(sameText)
            }
        }
    }

    /// The items of a comma-separated list, each normalized; with `allowAnd`, an "and" before the last item (`a, b
    /// and c`, `a, b, and c`) separates too.
    private static func listItems(_ text: String, allowAnd: Bool) -> [String] {
        var body = text
        if allowAnd {
            body = body.replacingOccurrences(
                of: #"(,\s*|\s+)and\s+"#, with: ",", options: [.regularExpression, .caseInsensitive])
        }
        let items = body.split(separator: ",", omittingEmptySubsequences: false).map { normalize(String($0)) }
        return items.contains(where: \.isEmpty) ? [] : items
    }

    /// Removes surrounding whitespace, quotes (straight or curly), backticks, `**`, and a trailing period, until none
    /// is left.
    /// - Parameter text: an answer.
    public static func normalize(_ text: String) -> String {
        var value = Substring(text)
        let pairs: [(Character, Character)] = [
            ("\"", "\""), ("'", "'"), ("`", "`"), ("\u{201C}", "\u{201D}"), ("\u{2018}", "\u{2019}"), ("*", "*"),
        ]
        while true {
            let before = value
            value = value.trimmingCharacters(in: .whitespacesAndNewlines)[...]
            if value.hasSuffix(".") { value = value.dropLast() }
            if value.count >= 2, let first = value.first, let last = value.last,
                pairs.contains(where: { $0.0 == first && $0.1 == last })
            {
                value = value.dropFirst().dropLast()
            }
            if value == before { return String(value) }
        }
    }

    /// The value of a text that is one number: optional sign, optional `$`, digits with optional thousands commas,
    /// optional decimals (`-1,024.50`, `$99`, `256623.0`).
    /// - Parameter text: a normalized answer.
    public static func parseNumber(_ text: String) -> Decimal? {
        var body = Substring(text)
        var negative = false
        if let sign = body.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            body = body.dropFirst()
        }
        if body.first == "$" { body = body.dropFirst() }
        let parts = body.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty else { return nil }
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].allSatisfy(\.isASCIIDigit) else { return nil }
        }
        if whole.contains(",") {
            let groups = whole.split(separator: ",", omittingEmptySubsequences: false)
            guard (1...3).contains(groups[0].count), groups.dropFirst().allSatisfy({ $0.count == 3 }) else {
                return nil
            }
        }
        let digits = whole.replacingOccurrences(of: ",", with: "")
        guard !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit) else { return nil }
        let plain = digits + (parts.count == 2 ? "." + parts[1] : "")
        guard let value = Decimal(string: plain, locale: Locale(identifier: "en_US_POSIX")) else { return nil }
        return negative ? -value : value
    }

    /// The one standalone number in a sentence, or `nil` when there are none or several. Words are split on
    /// whitespace and stripped of surrounding punctuation; `svc-7` or `C-0421` are words, not numbers.
    /// - Parameter text: a normalized answer.
    public static func singleNumber(in text: String) -> Decimal? {
        let punctuation = CharacterSet(charactersIn: "()[]{},;:!?\"'`*\u{201C}\u{201D}\u{2018}\u{2019}")
        var found = [Decimal]()
        for word in text.split(whereSeparator: { $0.isWhitespace }) {
            var token = word.trimmingCharacters(in: punctuation)
            while token.hasSuffix(".") { token.removeLast() }
            token = token.trimmingCharacters(in: punctuation)
            if let value = parseNumber(token) { found.append(value) }
        }
        return found.count == 1 ? found[0] : nil
    }

    private static func sameText(_ a: String, _ b: String) -> Bool {
        func squeeze(_ text: String) -> String {
            text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ").lowercased()
        }
        return squeeze(a) == squeeze(b)
    }

    private static func stripPathPrefix(_ text: String) -> String {
        var value = Substring(text)
        while true {
            if value.hasPrefix("### ") {
                value = value.dropFirst(4)
            } else if value.hasPrefix("./") {
                value = value.dropFirst(2)
            } else {
                return String(value).trimmingCharacters(in: .whitespaces)
            }
        }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
