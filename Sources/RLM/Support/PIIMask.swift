import Foundation

/// An opt-in mask for personal data in text SwiftRLM writes down (`rlm run --redact-pii`): email addresses become
/// `[EMAIL]`, card-like numbers that pass the Luhn check `[CARD]`, national-id-like numbers (the US SSN shape
/// `123-45-6789`) `[ID]`, and phone-like numbers (`+` and a country code, or the North American `555-123-4567`
/// shape) `[PHONE]`. Shapes, not knowledge: it catches the common forms and leaves dates, versions and IP addresses
/// alone. The model and the sandbox still see everything.
public struct PIIMask: Sendable {
    /// - Parameters: none; the shapes are fixed.
    public init() {}

    static let email = try! NSRegularExpression(
        pattern: #"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"#)
    /// 13 to 19 digits, optionally grouped by single spaces or dashes.
    static let card = try! NSRegularExpression(pattern: #"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d]|-\d)"#)
    static let nationalID = try! NSRegularExpression(pattern: #"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d]|-\d)"#)
    static let phone = try! NSRegularExpression(
        pattern:
            #"(?<![\w+\-.])(?:\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}|\(?\d{3}\)?[ .\-]?\d{3}[ .\-]\d{4})(?![\w]|[.\-]\d)"#
    )

    /// `text` with every email, card-like, id-like and phone-like number replaced.
    /// - Parameter text: text about to be written.
    public func mask(_ text: String) -> String {
        var result = Self.replace(Self.email, in: text, with: "[EMAIL]")
        result = Self.replace(Self.card, in: result, with: "[CARD]") { Self.passesLuhn($0) }
        result = Self.replace(Self.nationalID, in: result, with: "[ID]")
        result = Self.replace(Self.phone, in: result, with: "[PHONE]") { match in
            (8...15).contains(match.filter(\.isNumber).count)
        }
        return result
    }

    /// Whether the digits of `candidate` pass the Luhn checksum (every payment card number does).
    /// - Parameter candidate: digits, possibly grouped by spaces or dashes.
    public static func passesLuhn(_ candidate: String) -> Bool {
        let digits = candidate.compactMap(\.wholeNumberValue)
        guard digits.count >= 12 else { return false }
        var sum = 0
        for (index, digit) in digits.reversed().enumerated() {
            if index % 2 == 1 {
                let doubled = digit * 2
                sum += doubled > 9 ? doubled - 9 : doubled
            } else {
                sum += digit
            }
        }
        return sum % 10 == 0
    }

    private static func replace(
        _ pattern: NSRegularExpression, in text: String, with replacement: String,
        where accept: (String) -> Bool = { _ in true }
    ) -> String {
        let matches = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text))
        guard !matches.isEmpty else { return text }
        var result = text
        for match in matches.reversed() {
            guard let range = Range(match.range, in: result), accept(String(result[range])) else { continue }
            result.replaceSubrange(range, with: replacement)
        }
        return result
    }
}
