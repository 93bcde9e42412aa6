import Foundation

/// What the engine reads out of one model reply.
public struct ParsedReply: Sendable, Hashable {
    /// Code to run, in order: the ```` ```repl ```` blocks, or when there are none the ```` ```python ```` /
    /// ```` ```py ```` blocks.
    public var codeBlocks: [String]
    /// A final answer given in the text outside every code fence, if any.
    public var finalAnswer: FinalAnswer?
}

/// A final answer as written by the model.
public enum FinalAnswer: Sendable, Hashable {
    /// `FINAL(value)`: the value itself (surrounding quotes of a single string literal removed).
    case value(String)
    /// `FINAL_VAR(name)`: the answer is `str()` of a REPL variable.
    case variable(String)
}

/// Parses model replies: code fences, and `FINAL(…)` / `FINAL_VAR(…)` lines outside them.
///
/// Text inside any fence never counts as an answer. `FINAL(` must start a line (after optional whitespace or
/// Markdown emphasis, bullets or quote marks); its argument runs to the matching parenthesis, across lines, with
/// quotes respected.
public enum ReplyParser {
    /// Parses one reply.
    /// - Parameter text: the model's whole reply.
    public static func parse(_ text: String) -> ParsedReply {
        let (blocks, prose) = splitFences(repairMissingOpeningFence(text))
        var repl = [String]()
        var python = [String]()
        for var block in blocks {
            // A bare fence whose first line is only the language word (```⏎repl⏎code): read it as that language.
            if block.language.isEmpty, let newline = block.code.firstIndex(of: "\n") {
                let word = block.code[..<newline].trimmingCharacters(in: .whitespaces).lowercased()
                if ["repl", "python", "py", "python3"].contains(word) {
                    block.language = word
                    block.code = String(block.code[block.code.index(after: newline)...])
                }
            }
            switch block.language {
            case "repl": repl.append(block.code)
            case "python", "py", "python3": python.append(block.code)
            default: break
            }
        }
        let code = (repl.isEmpty ? python : repl).filter {
            !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        }
        return ParsedReply(codeBlocks: code, finalAnswer: findFinal(in: prose))
    }

    /// A cell that is only `FINAL(word)` with a bare word: small models mean the word as the answer text, and Python
    /// raises `NameError`. Returns the word when `code` is exactly such a call.
    public static func bareFinalArgument(in code: String) -> String? {
        let trimmed = code.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix("FINAL("), trimmed.hasSuffix(")"), !trimmed.contains("\n") else { return nil }
        let argument = trimmed.dropFirst("FINAL(".count).dropLast().trimmingCharacters(in: .whitespaces)
        guard !argument.isEmpty, !argument.contains("("), !argument.contains("\""), !argument.contains("'") else {
            return nil
        }
        return argument
    }

    /// Small models sometimes drop the opening backticks and begin their reply with the fence's language word:
    /// `repl⏎code⏎```. When the first line is only such a word and a closing fence follows, restore the opening.
    static func repairMissingOpeningFence(_ text: String) -> String {
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\t" }
        guard let newline = trimmed.firstIndex(of: "\n") else { return text }
        let word = trimmed[..<newline].trimmingCharacters(in: .whitespaces).lowercased()
        guard ["repl", "python", "py", "python3"].contains(word) else { return text }
        let rest = trimmed[newline...]
        // `repl⏎```python⏎code⏎```: the word was a label above a fence of its own; drop the word.
        if rest.drop(while: { $0 == "\n" || $0 == " " }).hasPrefix("```") {
            return String(rest.drop(while: { $0 == "\n" || $0 == " " }))
        }
        let hasClosing = rest.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "```" }
        return hasClosing ? "```" + trimmed : text
    }

    struct Block {
        var language: String
        var code: String
    }

    /// Splits text into fenced blocks and the prose outside them (fenced lines replaced by empty lines).
    static func splitFences(_ text: String) -> (blocks: [Block], prose: String) {
        var blocks = [Block]()
        var prose = [Substring]()
        var open: (marker: Character, length: Int, language: String, lines: [Substring])?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let stripped = line.drop { $0 == " " || $0 == "\t" }
            if var current = open {
                let run = stripped.prefix { $0 == current.marker }.count
                if run >= current.length,
                    stripped.dropFirst(run).trimmingCharacters(in: .whitespaces).isEmpty
                {
                    blocks.append(Block(language: current.language, code: current.lines.joined(separator: "\n")))
                    open = nil
                } else {
                    current.lines.append(line)
                    open = current
                }
                prose.append("")
                continue
            }
            if let first = stripped.first, first == "`" || first == "~" {
                let run = stripped.prefix { $0 == first }.count
                if run >= 3 {
                    let info = stripped.dropFirst(run).trimmingCharacters(in: .whitespaces)
                    let language = info.split(whereSeparator: { $0 == " " || $0 == "{" }).first.map {
                        $0.lowercased()
                    }
                    open = (first, run, language ?? "", [])
                    prose.append("")
                    continue
                }
            }
            prose.append(line)
        }
        // An unclosed fence runs to the end of the reply (small models forget the closing fence).
        if let current = open {
            blocks.append(Block(language: current.language, code: current.lines.joined(separator: "\n")))
        }
        return (blocks, prose.joined(separator: "\n"))
    }

    /// Finds the first `FINAL(` or `FINAL_VAR(` that starts a line of prose.
    static func findFinal(in prose: String) -> FinalAnswer? {
        let scalars = Array(prose.unicodeScalars)
        var lineStart = 0
        while lineStart < scalars.count {
            var index = lineStart
            // Allow leading whitespace and Markdown decoration: "  ", "**", "- ", "> ", "`".
            while index < scalars.count, " \t*->#`_".unicodeScalars.contains(scalars[index]) { index += 1 }
            for (keyword, isVariable) in [("FINAL_VAR(", true), ("FINAL(", false)] {
                let key = Array(keyword.unicodeScalars)
                if index + key.count <= scalars.count, Array(scalars[index..<index + key.count]) == key {
                    let argument = balancedArgument(scalars, from: index + key.count)
                    let cleaned = argument.trimmingCharacters(in: .whitespacesAndNewlines)
                    if isVariable {
                        let name = unquote(cleaned).trimmingCharacters(in: .whitespacesAndNewlines)
                        return name.isEmpty ? nil : .variable(name)
                    }
                    return .value(unquote(cleaned))
                }
            }
            guard let next = scalars[lineStart...].firstIndex(of: "\n") else { break }
            lineStart = next + 1
        }
        return nil
    }

    /// The text from `start` up to the parenthesis that closes the one before it, respecting quotes. Without a
    /// closing parenthesis: the rest of that line, minus trailing `)` and decoration.
    static func balancedArgument(_ scalars: [Unicode.Scalar], from start: Int) -> String {
        var depth = 1
        var index = start
        var quote: [Unicode.Scalar]?
        while index < scalars.count {
            let ch = scalars[index]
            if let q = quote {
                if ch == "\\" {
                    index += 2
                    continue
                }
                if index + q.count <= scalars.count, Array(scalars[index..<index + q.count]) == q {
                    quote = nil
                    index += q.count
                    continue
                }
                index += 1
                continue
            }
            switch ch {
            case "\"", "'":
                if index + 2 < scalars.count, scalars[index + 1] == ch, scalars[index + 2] == ch {
                    quote = [ch, ch, ch]
                    index += 3
                } else {
                    quote = [ch]
                    index += 1
                }
                continue
            case "(", "[", "{":
                depth += 1
            case ")", "]", "}":
                depth -= 1
                if depth == 0 { return String(String.UnicodeScalarView(scalars[start..<index])) }
            default:
                break
            }
            index += 1
        }
        let end = scalars[start...].firstIndex(of: "\n") ?? scalars.count
        var line = String(String.UnicodeScalarView(scalars[start..<end]))
        while let last = line.last, ")*`. ".contains(last) { line.removeLast() }
        return line
    }

    /// Removes the quotes of a lone Python string literal (`"x"`, `'x'`, `"""x"""`, with an optional r/f prefix
    /// ignored); anything else is returned as is.
    static func unquote(_ text: String) -> String {
        var body = Substring(text)
        if let first = body.first, "rRfFbBuU".contains(first), body.count > 2,
            body.dropFirst().first == "\"" || body.dropFirst().first == "'"
        {
            body = body.dropFirst()
        }
        for q in ["\"\"\"", "'''", "\"", "'"] where body.count >= 2 * q.count && body.hasPrefix(q) && body.hasSuffix(q)
        {
            let inner = body.dropFirst(q.count).dropLast(q.count)
            // Only a single literal: the closing quote must not appear unescaped inside.
            if q.count == 1 && containsUnescaped(inner, quote: Character(q)) { return text }
            return unescape(String(inner))
        }
        return text
    }

    private static func containsUnescaped(_ text: Substring, quote: Character) -> Bool {
        var escaped = false
        for ch in text {
            if escaped {
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else if ch == quote {
                return true
            }
        }
        return false
    }

    private static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var out = ""
        var iterator = text.makeIterator()
        while let ch = iterator.next() {
            guard ch == "\\", let next = iterator.next() else {
                out.append(ch)
                continue
            }
            switch next {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "\\": out.append("\\")
            case "\"": out.append("\"")
            case "'": out.append("'")
            default:
                out.append("\\")
                out.append(next)
            }
        }
        return out
    }
}
