import Foundation
import RLM

/// Reads API keys from the environment, the way containers pass secrets: `NAME` holds the key, or `NAME_FILE` holds
/// the path of a file that does (its contents trimmed). Keys are never taken from a command-line flag.
public enum APIKeys {
    /// The largest key file read: a key is a few hundred bytes; a bigger file is the wrong file.
    public static let maxKeyFileBytes = 64 << 10

    /// Finds a key.
    ///
    /// Looks in `environment` first, then in `dotEnv` (an opt-in `.env` file, see ``DotEnv``); in each, `NAME` or
    /// `NAME_FILE`, and refuses both at once. Empty values count as unset.
    /// - Parameters:
    ///   - name: the variable, e.g. `OPENAI_API_KEY`.
    ///   - environment: the process environment (`ProcessInfo.processInfo.environment`).
    ///   - dotEnv: variables from a `.env` file, when the user asked for one.
    /// - Returns: the key, or `nil` when none is set.
    /// - Throws: ``LLMError`` of kind `.configuration` when `NAME_FILE` names a file that cannot be read or is
    ///   empty, or both `NAME` and `NAME_FILE` are set. The message names the variable and path, never the key.
    public static func resolve(
        _ name: String,
        environment: [String: String],
        dotEnv: [String: String] = [:]
    ) throws -> String? {
        for (source, variables) in [("the environment", environment), ("the .env file", dotEnv)] {
            let direct = variables[name].flatMap { $0.isEmpty ? nil : $0 }
            let file = variables[name + "_FILE"].flatMap { $0.isEmpty ? nil : $0 }
            switch (direct, file) {
            case (.some, .some):
                throw LLMError(
                    .configuration,
                    "both \(name) and \(name)_FILE are set in \(source); set only one"
                )
            case (.some(let key), nil):
                let trimmed = key.trimmingCharacters(in: .whitespacesAndNewlines)
                if !trimmed.isEmpty { return trimmed }
            case (nil, .some(let path)):
                return try readKeyFile(path, variable: name + "_FILE")
            case (nil, nil):
                continue
            }
        }
        return nil
    }

    private static func readKeyFile(_ path: String, variable: String) throws -> String {
        let url = URL(fileURLWithPath: path)
        let data: Data
        do {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            data = try handle.read(upToCount: maxKeyFileBytes + 1) ?? Data()
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "it does not exist or is not readable"
            throw LLMError(.configuration, "\(variable) names \(path), which cannot be read (\(reason))")
        }
        guard data.count <= maxKeyFileBytes else {
            throw LLMError(.configuration, "\(variable) names \(path), which is too large to hold an API key")
        }
        let key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !key.isEmpty else {
            throw LLMError(.configuration, "\(variable) names \(path), which is empty")
        }
        return key
    }
}

/// A `.env` file: `KEY=VALUE` lines, read only when the user opts in.
///
/// Understands `export KEY=VALUE`, `#` comments (whole lines, and after whitespace in unquoted values), double quotes
/// (with `\n`, `\t`, `\"` and `\\` escapes, may span lines), single quotes (literal, may span lines), and blank
/// lines. Variables are not expanded. Malformed lines are skipped.
public enum DotEnv {
    /// Parses `.env` text.
    /// - Parameter text: the file's contents.
    /// - Returns: the variables; a later line wins over an earlier one.
    public static func parse(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        let characters = Array(text.replacingOccurrences(of: "\r\n", with: "\n"))
        var index = 0

        func skipRestOfLine() {
            while index < characters.count, characters[index] != "\n" { index += 1 }
            if index < characters.count { index += 1 }
        }
        func skipSpaces() {
            while index < characters.count, characters[index] == " " || characters[index] == "\t" { index += 1 }
        }

        while index < characters.count {
            skipSpaces()
            guard index < characters.count else { break }
            if characters[index] == "\n" {
                index += 1
                continue
            }
            if characters[index] == "#" {
                skipRestOfLine()
                continue
            }
            // The key, with an optional `export ` before it.
            var keyStart = index
            if characters[index...].starts(with: Array("export")), index + 6 < characters.count,
                characters[index + 6] == " " || characters[index + 6] == "\t"
            {
                index += 6
                skipSpaces()
                keyStart = index
            }
            while index < characters.count,
                characters[index].isLetter || characters[index].isNumber
                    || characters[index] == "_" || characters[index] == "."
            {
                index += 1
            }
            let key = String(characters[keyStart..<index])
            skipSpaces()
            guard !key.isEmpty, !(key.first?.isNumber ?? true), index < characters.count, characters[index] == "="
            else {
                skipRestOfLine()
                continue
            }
            index += 1
            skipSpaces()
            guard let value = readValue(characters, &index) else {
                skipRestOfLine()
                continue
            }
            result[key] = value
        }
        return result
    }

    private static func readValue(_ characters: [Character], _ index: inout Int) -> String? {
        guard index < characters.count else { return "" }
        switch characters[index] {
        case "\"":
            var value = ""
            var cursor = index + 1
            while cursor < characters.count {
                let character = characters[cursor]
                if character == "\"" {
                    index = cursor + 1
                    skipToLineEnd(characters, &index)
                    return value
                }
                if character == "\\", cursor + 1 < characters.count {
                    let next = characters[cursor + 1]
                    switch next {
                    case "n": value.append("\n")
                    case "t": value.append("\t")
                    case "r": value.append("\r")
                    case "\"", "\\", "$": value.append(next)
                    default: value.append(contentsOf: ["\\", next])
                    }
                    cursor += 2
                    continue
                }
                value.append(character)
                cursor += 1
            }
            return nil  // unterminated
        case "'":
            guard let close = characters[(index + 1)...].firstIndex(of: "'") else { return nil }
            let value = String(characters[(index + 1)..<close])
            index = close + 1
            skipToLineEnd(characters, &index)
            return value
        default:
            var value = ""
            while index < characters.count, characters[index] != "\n" {
                if characters[index] == "#", let last = value.last, last == " " || last == "\t" { break }
                value.append(characters[index])
                index += 1
            }
            skipToLineEnd(characters, &index)
            return value.trimmingCharacters(in: .whitespaces)
        }
    }

    private static func skipToLineEnd(_ characters: [Character], _ index: inout Int) {
        while index < characters.count, characters[index] != "\n" { index += 1 }
        if index < characters.count { index += 1 }
    }

    /// Reads and parses a `.env` file.
    /// - Parameter path: the file.
    /// - Returns: its variables.
    /// - Throws: ``LLMError`` of kind `.configuration` when the file cannot be read.
    public static func load(path: String) throws -> [String: String] {
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return parse(String(decoding: data, as: UTF8.self))
        } catch {
            throw LLMError(.configuration, "cannot read the .env file at \(path): it does not exist or is not readable")
        }
    }
}
