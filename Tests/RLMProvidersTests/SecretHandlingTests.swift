import Foundation
import RLM
import RLMProviders
import RLMTesting
import Testing

/// The key never appears in an error, a description or a log line.
@Suite("Providers: secrets")
struct SecretHandlingTests {
    static let secret = "sk-test-SUPERSECRET-0123456789abcdef"

    @Test(arguments: FakeLLMServer.WireFormat.allCases)
    func theKeyNeverAppearsInErrorsOrLogs(_ format: FakeLLMServer.WireFormat) async throws {
        let (logger, store) = CapturingLogHandler.logger()
        // Servers sometimes echo what they got; ours echoes the key in every error.
        let echo = "Incorrect API key provided: \(Self.secret)."
        let script = FakeLLMServer.scripted([
            .error(status: 503, message: echo),
            .error(status: 401, message: echo),
            .error(status: 400, message: echo),
            .stream(["x"], then: .error(type: "api_error", message: echo)),
            .error(status: 500, message: echo),
            .error(status: 500, message: echo),
        ])
        try await FakeLLMServer.withServer(script) { server async throws in
            var settings = CommonSettings()
            settings.key = Self.secret
            settings.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(1), maxDelay: .milliseconds(5))
            let model = model(format, server, logger: logger, settings)
            var errors: [any Error] = []
            for _ in 0..<2 {
                do { _ = try await model.complete(CompletionRequest(messages: [.user("hi")])) } catch {
                    errors.append(error)
                }
            }
            let streamed = await collect(model.stream(CompletionRequest(messages: [.user("hi")])))
            errors += [streamed.error].compactMap { $0 }
            let final = await collect(model.stream(CompletionRequest(messages: [.user("hi")])))
            errors += [final.error].compactMap { $0 }

            #expect(errors.count == 4)
            for error in errors {
                let texts = [String(describing: error), String(reflecting: error), "\(error)"]
                for text in texts {
                    #expect(!text.contains(Self.secret), "leaked in: \(text)")
                }
                #expect((error as? LLMError)?.message.contains("[REDACTED]") == true)
            }
            #expect(!store.all.isEmpty, "the provider logs at debug")
            for line in store.all {
                #expect(!line.contains(Self.secret), "leaked in log: \(line)")
                #expect(!line.contains("SUPERSECRET"))
            }
            // The key did reach the server, where it belongs.
            let sent = await server.requests.first
            let header = format == .openAI ? sent?.header("authorization") : sent?.header("x-api-key")
            #expect(header?.contains(Self.secret) == true)
        }
    }

    @Test func configurationsNeverPrintTheKey() {
        let openAI = OpenAIChatModel.Configuration(apiKey: Self.secret)
        let anthropic = AnthropicModel.Configuration(apiKey: Self.secret)
        for value in [openAI as Any, anthropic as Any] {
            var dumped = ""
            dump(value, to: &dumped)
            for text in [String(describing: value), String(reflecting: value), dumped] {
                #expect(!text.contains(Self.secret), "leaked in: \(text)")
            }
        }
        #expect(openAI.hasAPIKey)
        #expect(String(describing: openAI).contains("apiKey: set"))
        let model = OpenAIChatModel(configuration: openAI)
        #expect(!model.name.contains(Self.secret))
        var dumpedModel = ""
        dump(model, to: &dumpedModel)
        #expect(!dumpedModel.contains(Self.secret), "a dumped model must not show the key")
    }

    @Test func keysAreTrimmedAndEmptyKeysAreNone() {
        var configuration = OpenAIChatModel.Configuration(apiKey: "  \n")
        #expect(!configuration.hasAPIKey)
        configuration.setAPIKey("sk-x\n")
        #expect(configuration.hasAPIKey)
        configuration.setAPIKey(nil)
        #expect(!configuration.hasAPIKey)
    }
}
