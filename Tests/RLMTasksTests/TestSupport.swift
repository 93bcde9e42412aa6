import Foundation
import RLM
import RLMSandbox
import RLMTesting
import Synchronization

func sandboxForTests() -> ProcessSandbox {
    var configuration = ProcessSandbox.Configuration()
    configuration.cellTimeout = .seconds(20)
    configuration.memoryLimitBytes = 512 << 20
    configuration.workDirBytes = 64 << 20
    return ProcessSandbox(configuration: configuration)
}

/// The lines of a text, without the final empty one.
func lines(_ text: String) -> [Substring] {
    text.split(separator: "\n", omittingEmptySubsequences: false).dropLast(text.hasSuffix("\n") ? 1 : 0).map { $0 }
}

/// Compiled expressions, so a pattern used on thousands of documents is compiled once.
private let regexCache = Mutex<[String: NSRegularExpression]>([:])

func regex(_ pattern: String, _ options: NSRegularExpression.Options = []) -> NSRegularExpression? {
    let key = "\(options.rawValue):\(pattern)"
    if let cached = regexCache.withLock({ $0[key] }) { return cached }
    guard let compiled = try? NSRegularExpression(pattern: pattern, options: options) else { return nil }
    regexCache.withLock { $0[key] = compiled }
    return compiled
}

/// Whether `pattern` matches somewhere in `text`.
func contains(_ pattern: String, in text: some StringProtocol, options: NSRegularExpression.Options = []) -> Bool {
    let text = String(text)
    return regex(pattern, options)?.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
}

/// The first capture group of `pattern` in `text`, or `nil`.
func capture(_ pattern: String, in text: String) -> String? {
    guard let regex = regex(pattern),
        let match = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
        match.numberOfRanges > 1, let range = Range(match.range(at: 1), in: text)
    else { return nil }
    return String(text[range])
}

/// Every match of `pattern` in `text`, as the first capture group (or the whole match when there is none).
func matches(_ pattern: String, in text: String, options: NSRegularExpression.Options = []) -> [String] {
    guard let regex = regex(pattern, options) else { return [] }
    return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
        Range(match.range(at: match.numberOfRanges > 1 ? 1 : 0), in: text).map { String(text[$0]) }
    }
}
