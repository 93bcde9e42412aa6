import ArgumentParser
import Foundation
import RLM
import RLMProviders
import RLMSandbox
import RLMTesting

/// `rlm-bench`: benchmarks that need the test fakes, kept out of the shipping `rlm` binary.
@main
struct RLMBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rlm-bench",
        abstract: "SwiftRLM benchmarks that run against the fake LLM server (figures for docs/BENCHMARKS.md).",
        subcommands: [SubcallsBench.self, ContextBench.self, ServeBench.self]
    )
}

/// Writes text to stdout without adding anything.
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Sub-call figures: the cost of one `llm_query` round trip (sandbox → host → HTTP → server → back) against a
/// zero-latency server, and 1,000 prompts through `llm_query_batched` against a server with 20 ms latency. The
/// timing happens inside the sandbox, around the calls the model's code would make.
struct SubcallsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subcalls",
        abstract: "llm_query overhead per call, and llm_query_batched throughput, against a local fake server."
    )

    @Option(help: "llm_query calls to time.")
    var calls: Int = 500

    @Option(help: "Prompts in the batch.")
    var prompts: Int = 1000

    @Option(help: "Concurrency of llm_query_batched.")
    var concurrency: Int = 64

    @Option(help: "Server latency for the batch, in milliseconds.")
    var latencyMS: Int = 20

    func run() async throws {
        let single = try await measure(
            latency: .zero, concurrency: 16,
            code: """
                import time
                for _ in range(20):
                    llm_query('warm up')
                t = time.perf_counter()
                for i in range(\(calls)):
                    llm_query('ping')
                FINAL((time.perf_counter() - t) / \(calls) * 1000)
                """)
        let batch = try await measure(
            latency: .milliseconds(latencyMS), concurrency: concurrency,
            code: """
                import time
                llm_query_batched(['warm up'] * \(concurrency))
                t = time.perf_counter()
                answers = llm_query_batched(['p'] * \(prompts))
                assert len(answers) == \(prompts)
                FINAL((time.perf_counter() - t) * 1000)
                """)
        let ideal = Double(prompts) / Double(concurrency) * Double(latencyMS)
        writeOut(
            String(
                format: "llm_query round trip, zero-latency server: %.3f ms per call (n=%d, target ≤ 1 ms)\n", single,
                calls))
        writeOut(
            String(
                format:
                    "llm_query_batched: %d prompts, %d ms latency, concurrency %d: %.1f ms; ideal %.1f ms; ratio %.3fx (target ≤ 1.15x)\n",
                prompts, latencyMS, concurrency, batch, ideal, batch / ideal))
    }

    private func measure(latency: Duration, concurrency: Int, code: String) async throws -> Double {
        var serverConfiguration = FakeLLMServer.Configuration()
        serverConfiguration.latency = latency
        let script = "```repl\n\(code)\n```"
        let handler = FakeLLMServer.Handler { request in
            request.messages.contains { $0.role == .system } ? .text(script) : .text("ok")
        }
        return try await FakeLLMServer.withServer(configuration: serverConfiguration, handler) { server in
            var model = OpenAIChatModel.Configuration(baseURL: server.openAIBaseURL, apiKey: nil, defaultModel: "bench")
            model.providerName = "bench"
            let client = OpenAIChatModel(configuration: model, httpClient: ProviderHTTPClient.shared)
            var configuration = RLMConfiguration(rootModel: client, sandbox: ProcessSandbox())
            configuration.batchConcurrency = concurrency
            configuration.cellTimeout = .seconds(300)
            let result = try await RLMEngine(configuration: configuration).run(query: "bench", context: nil)
            guard let answer = result.answer, let value = Double(answer) else {
                throw ValidationError(
                    "the benchmark cell did not report a figure: \(String(describing: result.answer))")
            }
            return value
        }
    }
}
