import Foundation

/// Replaces secrets in text SwiftRLM writes down (trajectories): the exact values of every secret the process holds,
/// and the common shapes of secrets wherever they appear — OpenAI and Anthropic keys, AWS access key ids and secret
/// assignments, GitHub and Slack tokens, JWTs, bearer credentials, private-key blocks — each by `[REDACTED]`. The
/// model and the sandbox still see the context as it is: this is about what is recorded.
public struct SecretRedactor: Sendable {
    /// Exact values (at least 8 characters; shorter ones would redact ordinary words).
    private let secrets: [String]

    /// - Parameter secrets: exact values to redact, longest first.
    public init(secrets: [String] = []) {
        self.secrets = secrets.filter { $0.count >= 8 }.sorted { $0.count > $1.count }
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
        return result
    }
}
