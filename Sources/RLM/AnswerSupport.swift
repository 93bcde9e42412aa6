import Foundation

/// Whether an answer is backed by what the REPL printed. Small models answer with numbers and names no cell ever
/// showed (a `0` after two empty results, a key they made up); the engine refuses such an answer once and asks for
/// the output that supports it.
enum AnswerSupport {
    /// `answer` is supported when it, or every item of a comma-separated list, appears in `outputs`: numbers as numbers
    /// (`243776` matches a printed `243776.0`, and `12.35` a printed `12.3456` that it rounds), text ignoring case.
    /// - Parameters:
    ///   - answer: the final answer as written.
    ///   - outputs: what the question's cells printed (and the question itself, for choices it names).
    static func isSupported(_ answer: String, by outputs: [String]) -> Bool {
        let trimmed = answer.trimmingCharacters(in: CharacterSet(charactersIn: " \t\n\"'`*.")).lowercased()
        guard !trimmed.isEmpty else { return false }
        let corpus = outputs.joined(separator: "\n").lowercased()
        if let value = number(in: trimmed) {
            let decimals = value.decimals
            let printed = corpus.matches(of: numberPattern).compactMap {
                Double($0.output.1.replacingOccurrences(of: ",", with: ""))
            }
            let tolerance = 0.5 * pow(10, -Double(decimals ?? 0)) + 1e-9
            return printed.contains { abs($0 - value.value) <= tolerance }
        }
        if corpus.contains(trimmed) { return true }
        let items = trimmed.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if items.count > 1 {
            return items.allSatisfy { !$0.isEmpty && corpus.contains($0.replacing(#/^and\s+/#, with: "")) }
        }
        return false
    }

    /// The answer's one number (`$1,024.50`, `42 lines`), with how many decimals it was written with; `nil` when it
    /// holds none or several.
    static func number(in text: String) -> (value: Double, decimals: Int?)? {
        let found = text.matches(of: numberPattern)
        guard found.count == 1, let match = found.first else { return nil }
        let digits = match.output.1.replacingOccurrences(of: ",", with: "")
        guard let value = Double(digits) else { return nil }
        let decimals = digits.firstIndex(of: ".").map { digits.distance(from: $0, to: digits.endIndex) - 1 }
        return (value, decimals)
    }

    /// A standalone number: not part of an identifier such as `svc-7` or `C-0421`.
    nonisolated(unsafe) private static let numberPattern =
        #/(?:^|[^\w.-])(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?!\w)/#
}
