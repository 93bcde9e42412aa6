import Foundation
import RLMRuntime
import Testing

@testable import RLMService

/// Errors are safe to show: server paths replaced, API paths and URLs kept, internal failures generic.
@Suite("Service errors")
struct ServiceErrorTests {
    @Test(arguments: [
        ("cannot write /var/lib/rlm/trajectories/run-1.jsonl: no space", "cannot write <path>: no space"),
        ("/home/alice/.local/share/swiftrlm/keys.sqlite is locked", "<path> is locked"),
        ("files '/srv/data/a.txt' and (/tmp/x/y) differ", "files '<path>' and (<path>) differ"),
        ("the context /srv/ctx_1@v2+old is too large", "the context <path> is too large"),
    ])
    func absoluteServerPathsAreReplaced(_ text: String, _ expected: String) {
        #expect(ServiceError.withoutPaths(text) == expected)
    }

    @Test(arguments: [
        "upload with POST /v1/contexts and refer to it by id",
        "GET /v1/models lists them; DELETE /v1/sessions/{id} closes one",
        "the provider at http://127.0.0.1:8080/v1/chat/completions answered 500",
        "see https://platform.openai.com/docs/guides/error-codes/api-errors for details",
        "a ratio of 3/4 and the date 2024/10/03",
        "a single component /tmp is not a layout",
    ])
    func apiPathsURLsAndPlainTextAreKept(_ text: String) {
        #expect(ServiceError.withoutPaths(text) == text)
    }

    @Test func aRunFailureNeverQuotesAServerPath() {
        var failure = RunFailure(.setup, "cannot write the trajectory to /var/lib/rlm/trajectories/run-x.jsonl")
        failure.tooLarge = false
        let error = ServiceError(failure)
        #expect(!error.message.contains("/var/lib"))
        #expect(error.message.contains("<path>"))
        #expect(error.code == "setup_error")
        #expect(error.status >= 500)

        let hidden = ServiceError(RunFailure(.internal, "Fatal at /build/Sources/RLM/x.swift:12 secret state"))
        #expect(hidden.code == "internal_error")
        #expect(!hidden.message.contains("/build") && !hidden.message.contains("secret state"))
    }

    @Test func refusalsCarryTheirStatusAndRetry() {
        let upstream = ServiceError(RunFailure(.rateLimited, "the provider said slow down"))
        #expect(upstream.status == 429)
        #expect(upstream.retryAfter == 5)
        #expect(ServiceError.unauthorized.status == 401)
        #expect(ServiceError.unauthorized.retryAfter == nil)
        #expect(ServiceError.notFound("context 'x'").message == "no context 'x'")
        #expect(ServiceError.notFound("context 'x'").code == "context_not_found")
        #expect(ServiceError.notFound("session 'x'").code == "session_not_found")
        #expect(ServiceError.notFound("such endpoint").code == "not_found")
        #expect(ServiceError.invalid("bad").jsonRPCCode == -32602)
        #expect(ServiceError.internalError.jsonRPCCode == -32603)
    }
}
