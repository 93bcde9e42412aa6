import Foundation

/// The specific things a question names — ids, paths, numbers, quoted values, upper-case words — and two checks a
/// small model needs: whether its code tests each of them at all, and whether its output holds near misses of them
/// (`initech-3530` for `initech-353`, `svc-10` for `svc-1`) that a substring test lets through.
enum QuestionTerms {
    /// The terms of `question`, in order, without repeats.
    static func terms(of question: String) -> [String] {
        var found = [String]()
        func add(_ raw: Substring) {
            let term = raw.trimmingCharacters(in: CharacterSet(charactersIn: " ?!,;:()[]{}\"'`"))
            let trimmed = term.hasSuffix(".") ? String(term.dropLast()) : term
            guard trimmed.count >= 2, trimmed.count <= 60, trimmed.contains(where: { $0.isLetter || $0.isNumber }),
                !found.contains(trimmed)
            else { return }
            found.append(trimmed)
        }
        for match in question.matches(of: #/`([^`\n]{1,60})`|"([^"\n]{1,60})"/#) {
            add(match.output.1 ?? match.output.2 ?? "")
        }
        for word in question.split(whereSeparator: \.isWhitespace) {
            let core = word.trimmingCharacters(in: CharacterSet(charactersIn: "?!,;:()[]{}\"'`"))
            let text = core.hasSuffix(".") ? String(core.dropLast()) : core
            // Format words and abbreviations (JSON, CSV, e.g, U.S) name no condition.
            if formatWords.contains(text.uppercased()) || (text.contains(".") && text.filter(\.isLetter).count <= 2) {
                continue
            }
            let digits = text.filter(\.isNumber).count
            let special = text.contains { "/_-.=@#".contains($0) }
            let isNumber = digits == text.count
            let upper = text.count >= 3 && text.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" }
            if (isNumber && digits >= 3) || (!isNumber && (digits > 0 || special) && text.contains(where: \.isLetter))
                || upper
            {
                add(Substring(text))
            }
        }
        return found
    }

    private static let formatWords: Set<String> = [
        "JSON", "JSONL", "CSV", "TSV", "XML", "YAML", "API", "URL", "HTTP", "HTTPS", "UTC", "SQL", "PDF", "README",
        "ID", "IDS",
    ]

    /// The terms no cell of `code` tests: neither the term nor its longest word appears in it (ignoring case).
    static func untested(_ terms: [String], in code: String) -> [String] {
        let haystack = code.lowercased()
        return terms.filter { term in
            let lower = term.lowercased()
            if haystack.contains(lower) { return false }
            let parts = lower.split { !($0.isLetter || $0.isNumber) }.map(String.init)
            if parts.count > 1, let longest = parts.max(by: { $0.count < $1.count }), longest.count >= 3 {
                return !haystack.contains(longest)
            }
            return true
        }
    }

    /// Tokens in `output` that contain a term followed or preceded by more of an identifier: near misses a substring
    /// test matched. Returns each term with the longer tokens seen (at most three).
    static func nearMisses(of terms: [String], in output: String) -> [(term: String, seen: [String])] {
        var result = [(term: String, seen: [String])]()
        for term in terms where term.contains(where: \.isNumber) && term.contains(where: \.isLetter) {
            var seen = [String]()
            var start = output.startIndex
            // Searched in the output itself, ignoring case: indices of a lowercased copy do not fit the original
            // (lowercasing can change a string's length).
            while let range = output.range(of: term, options: .caseInsensitive, range: start..<output.endIndex) {
                var low = range.lowerBound
                var high = range.upperBound
                while low > output.startIndex, isIdentifier(output[output.index(before: low)]) {
                    low = output.index(before: low)
                }
                while high < output.endIndex, isIdentifier(output[high]) { high = output.index(after: high) }
                if low != range.lowerBound || high != range.upperBound {
                    let token = String(output[low..<high])
                    if !seen.contains(token) && seen.count < 3 { seen.append(token) }
                }
                start = range.upperBound
            }
            if !seen.isEmpty { result.append((term, seen)) }
        }
        return result
    }

    /// String literals of `code` that the previous step's code did not have, that its output printed, and that the
    /// question does not name (no word of one is in the other): conditions copied from data the model happened to see.
    static func copiedConditions(in code: String, previousCode: String, previousOutput: String, question: String)
        -> [String]
    {
        guard !previousOutput.isEmpty else { return [] }
        let asked = question.lowercased()
        let askedWords = Set(asked.split { !($0.isLetter || $0.isNumber) }.map(String.init).filter { $0.count >= 4 })
        return ContextProbe.searchLiterals(in: code).filter { literal in
            guard !previousCode.contains(literal), previousOutput.contains(literal) else { return false }
            let lower = literal.lowercased()
            if asked.contains(lower) { return false }
            let words = lower.split { !($0.isLetter || $0.isNumber) }.map(String.init)
            return !words.contains { askedWords.contains($0) } && words.contains { $0.count >= 4 }
        }
    }

    /// Whether `code` names `token` as a whole name (not as part of a longer one).
    static func mentions(_ code: String, _ token: String) -> Bool {
        var start = code.startIndex
        while let range = code.range(of: token, range: start..<code.endIndex) {
            let before = range.lowerBound > code.startIndex ? code[code.index(before: range.lowerBound)] : " "
            let after = range.upperBound < code.endIndex ? code[range.upperBound] : " "
            if !isIdentifier(before) && !isIdentifier(after) { return true }
            start = range.upperBound
        }
        return false
    }

    private static func isIdentifier(_ character: Character) -> Bool {
        character.isLetter || character.isNumber || character == "_" || character == "-"
    }
}
