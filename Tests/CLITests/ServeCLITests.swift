import Foundation
import Testing

/// `rlm serve`'s refusals before it listens (contract 4): they exit 2 with a message a user can act on, and bind
/// nothing.
@Suite("rlm serve")
struct ServeCLITests {
    private func serve(_ arguments: [String]) async throws -> CLIResult {
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-servecli-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: store) }
        return try await runProgram(
            try rlmBinary(), ["serve", "--store", store, "--provider", "openai", "--port", "0"] + arguments,
            environment: ["OPENAI_API_KEY": "sk-test-serve-cli"])
    }

    @Test func aNonLoopbackHostNeedsTLSOrInsecure() async throws {
        let refused = try await serve(["--host", "0.0.0.0"])
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("--insecure") && refused.stderr.contains("--tls-cert"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("listening on"))

        let halfTLS = try await serve(["--tls-cert", "/nonexistent.pem"])
        #expect(halfTLS.status == 2)
        #expect(halfTLS.stderr.contains("--tls-cert and --tls-key go together"), "\(halfTLS.stderr)")
    }

    @Test func unreadableTLSFilesAreAUsageErrorNamingThem() async throws {
        let result = try await serve(["--tls-cert", "/nonexistent-cert.pem", "--tls-key", "/nonexistent-key.pem"])
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("/nonexistent-cert.pem"), "\(result.stderr)")
        #expect(!result.stderr.contains("listening on"))
    }

    @Test func aWildcardOrPathCORSOriginIsRefused() async throws {
        for origin in ["*", "https://app.example.com/path", "app.example.com"] {
            let result = try await serve(["--cors-origin", origin])
            #expect(result.status == 2, "\(origin): \(result.stderr)")
            #expect(result.stderr.contains("--cors-origin"), "\(result.stderr)")
        }
    }
}
