import Foundation

/// Replaces secrets in text SwiftRLM writes down (trajectories, the progress printer): the exact values of every
/// secret the process holds, and the common shapes of secrets wherever they appear — OpenAI and Anthropic keys, AWS
/// access key ids and secret assignments, GitHub and Slack tokens, JWTs, bearer credentials, private-key blocks,
/// SwiftRLM API keys — each by `[REDACTED]`; then, when asked, personal data (``PIIMask``). The model and the sandbox
/// still see the context as it is: this is about what is recorded.
///
/// Redact first, cut second: ``redactThenCut(_:limit:)`` finds a secret in the whole text before any of it is cut
/// away, so a key straddling the cut never survives in part.
public struct SecretRedactor: Sendable {
    /// Exact values (at least 8 characters; shorter ones would redact ordinary words).
    private let secrets: [String]
    /// The opt-in personal-data mask.
    private let pii: PIIMask?

    /// - Parameters:
    ///   - secrets: exact values to redact.
    ///   - maskPII: also mask emails, phone, card and id numbers (``PIIMask``).
    public init(secrets: [String] = [], maskPII: Bool = false) {
        self.secrets = Array(Set(secrets.filter { $0.count >= 8 })).sorted { $0.count > $1.count }
        self.pii = maskPII ? PIIMask() : nil
    }

    /// Shapes of well-known credentials. Anchored on their fixed prefixes so ordinary text is left alone.
    static let shapes: [NSRegularExpression] = [
        #"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)"#,
        #"\bsk-[A-Za-z0-9_\-]{20,}"#,
        #"\b(AKIA|ASIA)[0-9A-Z]{16}\b"#,
        #"(?i)\baws_secret_access_key\b\s*[=:]\s*["']?[A-Za-z0-9/+=]{30,}"#,
        #"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}"#,
        #"\bgithub_pat_[A-Za-z0-9_]{22,}"#,
        #"\bxox[abprs]-[A-Za-z0-9\-]{10,}"#,
        #"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"#,
        #"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{16,}"#,
        // SwiftRLM's own API keys (`rlm keys create`): unanchored, the shape alone is distinctive.
        #"rlm_[0-9a-f]{16}_[0-9a-f]{64}"#,
    ].compactMap { try? NSRegularExpression(pattern: $0) }

    /// `text` with every secret replaced.
    /// - Parameter text: text about to be written.
    public func redact(_ text: String) -> String {
        var result = text
        for secret in secrets where result.contains(secret) {
            result = result.replacingOccurrences(of: secret, with: "[REDACTED]")
        }
        for shape in Self.shapes {
            let range = NSRange(result.startIndex..., in: result)
            guard shape.firstMatch(in: result, range: range) != nil else { continue }
            result = shape.stringByReplacingMatches(in: result, range: range, withTemplate: "[REDACTED]")
        }
        result = Self.redactAtCuts(result)
        if let pii { result = pii.mask(result) }
        return result
    }

    /// A cut made upstream — the sandbox caps a cell's output, the engine cuts what the model reads — may have split a
    /// secret, leaving a piece no shape recognises. A marker `… [N characters cut] …` (or with `...`) with a run of 8
    /// or more non-blank characters glued to either side: the run is replaced too.
    static let cutMarker = try! NSRegularExpression(
        pattern: #"(\S*)(\n(?:…|\.\.\.) \[\d+ characters cut\] (?:…|\.\.\.)\n)(\S*)"#)

    static func redactAtCuts(_ text: String) -> String {
        guard text.contains(" characters cut] ") else { return text }
        var result = text
        for match in cutMarker.matches(in: text, range: NSRange(text.startIndex..., in: text)).reversed() {
            for group in [3, 1] {
                let range = match.range(at: group)
                guard range.length >= 8, let swift = Range(range, in: result), result[swift] != "[REDACTED]" else {
                    continue
                }
                result.replaceSubrange(swift, with: "[REDACTED]")
            }
        }
        return result
    }

    /// Text past this many characters is redacted only around what the cut keeps (see ``redactThenCut(_:limit:)``).
    static let wholeTextLimit = 1 << 20
    /// How far past the kept head and tail redaction looks in a very long text: longer than any secret shape.
    static let margin = 1 << 16

    /// `text` redacted, then cut to `limit` characters (head and tail kept, `… [N characters cut] …` between).
    /// A text of more than a MiB is redacted in two windows, the kept head and tail each with 64 KiB beyond them,
    /// so a secret crossing a cut is still seen whole.
    /// - Parameters:
    ///   - text: text about to be written.
    ///   - limit: the most characters (Unicode scalars) to keep.
    public func redactThenCut(_ text: String, limit: Int) -> String {
        let scalars = text.unicodeScalars
        guard scalars.count > Self.wholeTextLimit, limit > 40 else {
            return Prompts.headTail(redact(text), limit: limit)
        }
        let half = (limit - 40) / 2
        let head = redact(String(String.UnicodeScalarView(scalars.prefix(half + Self.margin)))).unicodeScalars
        let tail = redact(String(String.UnicodeScalarView(scalars.suffix(half + Self.margin)))).unicodeScalars
        var kept = String.UnicodeScalarView(head.prefix(half))
        kept.append(contentsOf: "\n… [\(scalars.count - 2 * half) characters cut] …\n".unicodeScalars)
        kept.append(contentsOf: tail.suffix(half))
        return String(kept)
    }
}
