import Foundation
import RLM
import Testing

/// What SwiftRLM writes down holds no secret: exact values it knows, and credential shapes wherever they appear.
@Suite("Secret redaction")
struct SecretRedactorTests {
    static let planted: [(String, String)] = [
        ("OpenAI key", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aBcD"),
        ("Anthropic key", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
        ("AWS access key id", "AKIAIOSFODNN7EXAMPLE"),
        ("AWS secret", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("GitHub token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
        ("GitHub fine-grained token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
        ("Slack token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
        ("JWT", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
        ("bearer header", "Authorization: Bearer abcDEF123456ghiJKL789mno"),
        ("private key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75\nabc\n-----END RSA PRIVATE KEY-----"),
        ("SwiftRLM key", "rlm_0123456789abcdef_9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    ]

    @Test(arguments: planted.map(\.0))
    func aCredentialShapeIsRedacted(kind: String) throws {
        let secret = try #require(Self.planted.first { $0.0 == kind }?.1)
        let text = "log line before\n\(secret)\nlog line after"
        let redacted = SecretRedactor().redact(text)
        #expect(redacted.contains("[REDACTED]"), "\(kind) survived: \(redacted)")
        #expect(redacted.contains("log line before") && redacted.contains("log line after"))
        // No run of the secret's distinctive body survives.
        let body = secret.suffix(16)
        #expect(!redacted.contains(body), "\(kind): \(redacted)")
    }

    @Test func aTruncatedPrivateKeyIsRedactedToTheEnd() {
        let text =
            "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n… [900 characters cut]"
        let redacted = SecretRedactor().redact(text)
        #expect(!redacted.contains("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"))
    }

    @Test func ordinaryTextIsLeftAlone() {
        let text = "skip the sk- prefix; ASIA is a continent; eyJ is base64 for {\"; the bearer of news"
        #expect(SecretRedactor().redact(text) == text)
    }

    @Test func exactSecretsAreRedactedEvenWhenJSONWouldEscapeThem() throws {
        let secret = "pa\"ss\\word-with/quotes"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-red-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: path) }
        let writer = try TrajectoryWriter(path: path.path, secrets: [secret])
        writer.write(
            RLMEvent(
                kind: .codeResult, depth: 0, iteration: 1,
                data: ["stdout": "found \(secret) and \(Self.planted[0].1) and \(Self.planted[2].1)"]))
        writer.close()
        let text = try String(contentsOf: path, encoding: .utf8)
        #expect(!text.contains("quotes"), "\(text)")
        #expect(!text.contains(Self.planted[0].1.suffix(16)))
        #expect(!text.contains("AKIAIOSFODNN7EXAMPLE"))
    }

    /// Redaction comes before the cut: every shape, placed across the head's end of a cut, is gone whole — not one
    /// piece of its body is kept.
    @Test(arguments: planted.map(\.0))
    func aCredentialShapeCrossingACutIsRedactedWhole(kind: String) throws {
        let secret = try #require(Self.planted.first { $0.0 == kind }?.1)
        let half = (2000 - 40) / 2
        let text =
            String(repeating: "a", count: half - secret.count / 2) + "\n" + secret + "\n"
            + String(repeating: "b", count: 5000)
        let written = SecretRedactor().redactThenCut(text, limit: 2000)
        #expect(written.contains("characters cut"))
        #expect(!written.contains(secret.suffix(8)), "\(kind): \(written.suffix(2000).prefix(80))")
        #expect(!written.contains(secret.suffix(16).prefix(8)), "\(kind)")
    }
}
