import Foundation
import NIOHTTP1
import RLM
import RLMProviders
import Testing

@Suite("APIKeys and DotEnv")
struct APIKeysTests {
    private func temporaryFile(_ contents: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-key-\(UUID().uuidString)")
        try Data(contents.utf8).write(to: url)
        return url
    }

    @Test func readsTheVariable() throws {
        #expect(try APIKeys.resolve("OPENAI_API_KEY", environment: ["OPENAI_API_KEY": " sk-abc \n"]) == "sk-abc")
    }

    @Test func returnsNilWhenNothingIsSet() throws {
        #expect(try APIKeys.resolve("OPENAI_API_KEY", environment: ["OTHER": "x"]) == nil)
        #expect(try APIKeys.resolve("OPENAI_API_KEY", environment: ["OPENAI_API_KEY": ""]) == nil)
    }

    @Test func readsAFileNamedByNAME_FILE() throws {
        let file = try temporaryFile("sk-from-file\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let key = try APIKeys.resolve("ANTHROPIC_API_KEY", environment: ["ANTHROPIC_API_KEY_FILE": file.path])
        #expect(key == "sk-from-file")
    }

    @Test func aMissingFileIsAClearError() throws {
        let path = "/nonexistent/rlm-\(UUID().uuidString)/key"
        let error = #expect(throws: LLMError.self) {
            try APIKeys.resolve("OPENAI_API_KEY", environment: ["OPENAI_API_KEY_FILE": path])
        }
        #expect(error?.kind == .configuration)
        #expect(error?.message.contains("OPENAI_API_KEY_FILE") == true)
        #expect(error?.message.contains(path) == true)
    }

    @Test func anUnreadableFileIsAClearError() throws {
        // A directory cannot be read as a file, even by root (who reads files of any mode).
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-dir-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let error = #expect(throws: LLMError.self) {
            try APIKeys.resolve("OPENAI_API_KEY", environment: ["OPENAI_API_KEY_FILE": directory.path])
        }
        #expect(error?.kind == .configuration)
        #expect(error?.message.contains("cannot be read") == true)
    }

    @Test func anEmptyFileIsAnError() throws {
        let file = try temporaryFile("  \n")
        defer { try? FileManager.default.removeItem(at: file) }
        let error = #expect(throws: LLMError.self) {
            try APIKeys.resolve("OPENAI_API_KEY", environment: ["OPENAI_API_KEY_FILE": file.path])
        }
        #expect(error?.message.contains("empty") == true)
    }

    @Test func bothNAMEAndNAME_FILEIsAnError() throws {
        let file = try temporaryFile("sk-file")
        defer { try? FileManager.default.removeItem(at: file) }
        let error = #expect(throws: LLMError.self) {
            try APIKeys.resolve(
                "OPENAI_API_KEY",
                environment: ["OPENAI_API_KEY": "sk-env", "OPENAI_API_KEY_FILE": file.path]
            )
        }
        #expect(error?.message.contains("sk-env") == false)
        #expect(error?.message.contains("sk-file") == false)
    }

    @Test func theEnvironmentWinsOverTheDotEnvFile() throws {
        let dotEnv = ["OPENAI_API_KEY": "from-dotenv"]
        #expect(try APIKeys.resolve("OPENAI_API_KEY", environment: [:], dotEnv: dotEnv) == "from-dotenv")
        #expect(
            try APIKeys.resolve("OPENAI_API_KEY", environment: ["OPENAI_API_KEY": "from-env"], dotEnv: dotEnv)
                == "from-env"
        )
    }

    @Test func dotEnvParsesTheUsualForms() {
        let lines = [
            "# a comment",
            "PLAIN=value",
            "export EXPORTED=yes",
            "SPACED = padded value   ",
            "INLINE=abc # a comment",
            "HASH=abc#not-a-comment",
            #"DOUBLE="quoted # not a comment""#,
            #"ESCAPES="line1\nline2\t\"q\"""#,
            #"SINGLE='literal \n $HOME'"#,
            #"MULTI="first"#,
            #"second""#,
            "EMPTY=",
            #"EMPTY_QUOTES="""#,
            "CRLF=windows\r",
            "=novalue",
            "not a line",
            "1BAD=x",
            "DOTTED.NAME=ok",
            "DUP=first",
            "DUP=second",
        ]
        let text = lines.joined(separator: "\n")
        let parsed = DotEnv.parse(text)
        #expect(parsed["PLAIN"] == "value")
        #expect(parsed["EXPORTED"] == "yes")
        #expect(parsed["SPACED"] == "padded value")
        #expect(parsed["INLINE"] == "abc")
        #expect(parsed["HASH"] == "abc#not-a-comment")
        #expect(parsed["DOUBLE"] == "quoted # not a comment")
        #expect(parsed["ESCAPES"] == "line1\nline2\t\"q\"")
        #expect(parsed["SINGLE"] == "literal \\n $HOME")
        #expect(parsed["MULTI"] == "first\nsecond")
        #expect(parsed["EMPTY"] == "")
        #expect(parsed["EMPTY_QUOTES"] == "")
        #expect(parsed["CRLF"] == "windows")
        #expect(parsed["DOTTED.NAME"] == "ok")
        #expect(parsed["DUP"] == "second")
        #expect(parsed["1BAD"] == nil)
        #expect(parsed[""] == nil)
        #expect(parsed.count == 14)
    }

    @Test func dotEnvToleratesAnUnterminatedQuote() {
        let parsed = DotEnv.parse("A=\"never closed\nB=fine\n")
        #expect(parsed["A"] == nil)
        #expect(parsed["B"] == "fine")
    }

    @Test func dotEnvLoadsAFileAndReportsAMissingOne() throws {
        let file = try temporaryFile("export OPENAI_API_KEY=sk-dotenv\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let variables = try DotEnv.load(path: file.path)
        #expect(try APIKeys.resolve("OPENAI_API_KEY", environment: [:], dotEnv: variables) == "sk-dotenv")
        #expect(throws: LLMError.self) { try DotEnv.load(path: "/nonexistent/\(UUID().uuidString)/.env") }
    }
}

@Suite("RetryPolicy")
struct RetryPolicyTests {
    @Test func backoffGrowsAndIsCapped() {
        let policy = RetryPolicy(baseDelay: .milliseconds(500), maxDelay: .seconds(2), jitter: false)
        #expect(policy.delay(afterAttempt: 1) == .milliseconds(500))
        #expect(policy.delay(afterAttempt: 2) == .seconds(1))
        #expect(policy.delay(afterAttempt: 3) == .seconds(2))
        #expect(policy.delay(afterAttempt: 10) == .seconds(2))
    }

    @Test func fullJitterStaysWithinTheCeiling() {
        let policy = RetryPolicy(baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        for attempt in 1...6 {
            let delay = policy.delay(afterAttempt: attempt)
            #expect(delay >= .zero && delay <= .seconds(1))
        }
    }

    @Test func retryAfterWinsButIsCapped() {
        let policy = RetryPolicy(maxDelay: .seconds(30))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(3)) == .seconds(3))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(3600)) == .seconds(30))
    }

    @Test func readsRetryAfterInEveryForm() {
        let now = Date(timeIntervalSince1970: 1_000_000_000)
        #expect(RetryPolicy.retryAfter(from: ["Retry-After": "7"], now: now) == .seconds(7))
        #expect(RetryPolicy.retryAfter(from: ["retry-after-ms": "150"], now: now) == .milliseconds(150))
        #expect(
            RetryPolicy.retryAfter(from: ["retry-after-ms": "150", "retry-after": "9"], now: now) == .milliseconds(150)
        )
        // 2001-09-09T01:46:40Z is `now`; ten seconds later:
        #expect(
            RetryPolicy.retryAfter(from: ["Retry-After": "Sun, 09 Sep 2001 01:46:50 GMT"], now: now) == .seconds(10))
        #expect(
            RetryPolicy.retryAfter(from: ["Retry-After": "Sunday, 09-Sep-01 01:46:50 GMT"], now: now) == .seconds(10))
        #expect(RetryPolicy.retryAfter(from: ["Retry-After": "Sun Sep  9 01:46:50 2001"], now: now) == .seconds(10))
        #expect(RetryPolicy.retryAfter(from: ["Retry-After": "Sun, 09 Sep 2001 01:00:00 GMT"], now: now) == .zero)
        #expect(RetryPolicy.retryAfter(from: ["Retry-After": "soon"], now: now) == nil)
        #expect(RetryPolicy.retryAfter(from: ["Retry-After": "-5"], now: now) == nil)
        #expect(RetryPolicy.retryAfter(from: [:], now: now) == nil)
    }
}
