import ArgumentParser
import Foundation
import Logging
import RLM
import RLMLocal
import RLMProviders
import RLMSandbox

enum ProviderChoice: String, ExpressibleByArgument, CaseIterable {
    case openai, anthropic, local
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Answer a question over a context with a Recursive Language Model.",
        discussion: """
            Keys come from OPENAI_API_KEY / ANTHROPIC_API_KEY or OPENAI_API_KEY_FILE / ANTHROPIC_API_KEY_FILE \
            (or a .env file with --env-file), never from a flag. Without --provider: openai when an OpenAI key is \
            set, else anthropic when an Anthropic key is set, else the local offline model.
            Exit status: 0 answered, 3 a budget ran out without an answer, 2 usage or setup error, 1 other failure.
            """
    )

    @Option(help: "openai (any OpenAI-compatible server), anthropic, or local (offline llama.cpp).")
    var provider: ProviderChoice?

    @Option(help: "API base URL, e.g. http://127.0.0.1:8080/v1 (OpenAI-compatible) or https://api.anthropic.com.")
    var baseURL: String?

    @Option(help: "Root model name.")
    var model: String?

    @Option(help: "Model for llm_query sub-calls (default: the root model).")
    var subModel: String?

    @Option(help: "A file, a directory (recursive, text files only) or - for stdin. Repeatable.")
    var context: [String] = []

    @Option(help: "Root iterations.")
    var maxIterations: Int = 20

    @Option(help: "Recursion depth for rlm_query (0: plain llm_query).")
    var maxDepth: Int = 1

    @Option(help: "Token budget (input + output) for the whole run.")
    var maxTokens: Int?

    @Option(help: "Cost budget in USD for the whole run.")
    var maxCost: Double?

    @Option(help: "Wall-time budget in seconds for the whole run.")
    var timeout: Double?

    @Option(help: "Sub-call budget (each batched prompt counts).")
    var maxSubcalls: Int?

    @Option(help: "Wall-clock limit per code cell in seconds.")
    var cellTimeout: Double = 60

    @Option(help: "Concurrent prompts per llm_query_batched.")
    var batchConcurrency: Int = 16

    @Option(help: "The model's context window in tokens (for servers that do not say).")
    var contextWindow: Int?

    @Option(help: "Write the trajectory (JSONL) here (default: under ~/.local/state/swiftrlm/trajectories).")
    var trajectory: String?

    @Option(help: "Read keys from this .env file (opt-in).")
    var envFile: String?

    @Option(help: "A JSON price table: {\"model\": {\"input\": USD per 1M, \"output\": USD per 1M}}.")
    var prices: String?

    @Option(help: "Python interpreter inside the sandbox.")
    var python: String = "/usr/bin/python3"

    @Option(help: "Local model for --provider local.")
    var localModel: String = "qwen2.5-coder-1.5b"

    @Flag(help: "Print one JSON object: answer, iterations, usage, trajectory.")
    var json = false

    @Argument(help: "The question.")
    var query: String

    func validate() throws {
        guard maxIterations >= 1 else { throw ValidationError("--max-iterations must be at least 1") }
        guard maxDepth >= 0 else { throw ValidationError("--max-depth must be 0 or more") }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive") }
        guard cellTimeout > 0 else { throw ValidationError("--cell-timeout must be positive") }
        guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the question is empty")
        }
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        var setup: ModelSetup
        let loaded: ContextLoader.Loaded?
        do {
            loaded = context.isEmpty ? nil : try ContextLoader().load(context)
            setup = try ModelSetup.resolve(
                provider: provider, baseURL: baseURL, model: model, subModel: subModel, contextWindow: contextWindow,
                envFile: envFile, environment: environment)
        } catch let error as ContextLoader.LoadError {
            printError("rlm: \(error)")
            throw ExitCode(2)
        } catch let error as LLMError {
            printError("rlm: \(error)")
            throw ExitCode(2)
        }
        // --local-model names the offline model (also when the local provider was chosen for want of a key).
        if case .local = setup.kind { setup.kind = .local(model: model ?? localModel) }
        for notice in loaded?.notices ?? [] { printError("rlm: note: \(notice.path): \(notice.reason)") }
        if let note = setup.note { printError("rlm: \(note)") }

        var pricing = ModelPricing.defaults
        if let prices {
            do {
                let text = try String(contentsOfFile: prices, encoding: .utf8)
                pricing = pricing.merging(try ModelPricing.parse(json: text))
            } catch {
                printError("rlm: cannot read the price table \(prices): \(error)")
                throw ExitCode(2)
            }
        }
        let priceTable = pricing
        let trajectoryPath = trajectory ?? TrajectoryWriter.defaultPath(environment: environment)
        let writer: TrajectoryWriter
        do {
            writer = try TrajectoryWriter(path: trajectoryPath, secrets: setup.secrets)
        } catch {
            printError("rlm: cannot write the trajectory to \(trajectoryPath): \(error)")
            throw ExitCode(2)
        }
        defer { writer.close() }

        do {
            let result = try await setup.withModels { root, sub in
                var sandboxConfiguration = ProcessSandbox.Configuration()
                sandboxConfiguration.pythonPath = python
                var configuration = RLMConfiguration(
                    rootModel: root, subModel: sub, sandbox: ProcessSandbox(configuration: sandboxConfiguration),
                    budget: Budget(
                        maxIterations: maxIterations, maxDepth: maxDepth, maxTokens: maxTokens, maxCostUSD: maxCost,
                        maxWallTime: timeout.map { .milliseconds(Int64($0 * 1000)) }, maxSubcalls: maxSubcalls))
                configuration.cellTimeout = .milliseconds(Int64(cellTimeout * 1000))
                configuration.batchConcurrency = batchConcurrency
                if setup.isLocal { configuration.tuneForSmallModels() }
                configuration.cost = { model, usage in priceTable.cost(of: usage, model: model) ?? 0 }
                let progress = ProgressReporter(maxIterations: maxIterations)
                configuration.onEvent = { event in
                    writer.write(event)
                    progress.update(event)
                }
                defer { progress.finish() }
                return try await RLMEngine(configuration: configuration).run(query: query, context: loaded?.context)
            }
            try report(result, trajectory: trajectoryPath)
        } catch let error as LLMError {
            printError("rlm: \(error)")
            printError("rlm: trajectory: \(trajectoryPath)")
            throw ExitCode(error.kind == .configuration || error.kind == .unauthorized ? 2 : 1)
        } catch let error as SandboxError {
            printError("rlm: \(error)")
            throw ExitCode(error.isSetupError ? 2 : 1)
        } catch let error as LocalModelError {
            printError("rlm: \(error)")
            throw ExitCode(2)
        }
    }

    private func report(_ result: RLMResult, trajectory: String) throws {
        let usage = result.usage
        if json {
            var object: [String: Any] = [
                "answer": result.answer as Any? ?? NSNull(),
                "iterations": result.iterations,
                "usage": [
                    "input_tokens": usage.tokens.inputTokens, "output_tokens": usage.tokens.outputTokens,
                    "total_tokens": usage.tokens.totalTokens, "cost_usd": usage.costUSD,
                    "model_calls": usage.modelCalls, "subcalls": usage.subcalls,
                ],
                "trajectory": trajectory,
                "duration_ms": Int(seconds(result.duration) * 1000),
            ]
            switch result.status {
            case .answered: object["status"] = "answered"
            case .budgetExhausted(let reason):
                object["status"] = "budget_exhausted"
                object["limit"] = reason.limit.rawValue
                object["message"] = reason.message
            }
            let data = try JSONSerialization.data(
                withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            writeOut(String(decoding: data, as: UTF8.self) + "\n")
        } else if let answer = result.answer {
            writeOut(answer + "\n")
        }
        if !json {
            printError("rlm: trajectory: \(trajectory)")
        }
        if case .budgetExhausted(let reason) = result.status {
            printError(
                "rlm: no answer: \(reason.message) (\(usage.tokens.totalTokens) tokens, "
                    + String(format: "$%.4f", usage.costUSD) + ")")
            throw ExitCode(3)
        }
    }
}

/// Shows progress on a TTY (stderr): step, sub-calls, tokens, cost. Silent when stderr is not a terminal.
final class ProgressReporter: Sendable {
    private let enabled = isatty(2) != 0
    private let maxIterations: Int
    private let start = Date()
    private let state = Locked((iteration: 0, depth: 0))

    init(maxIterations: Int) { self.maxIterations = maxIterations }

    func update(_ event: RLMEvent) {
        guard enabled else { return }
        let (iteration, _) = state.withLock { value in
            if event.depth == 0 && event.iteration > 0 { value.iteration = event.iteration }
            return value
        }
        let usage = event.usage ?? RunUsage()
        let line = String(
            format: "\r\u{1B}[2K[rlm] step %d/%d · sub-calls %d · tokens %@ in / %@ out · $%.4f · %.0fs%@",
            iteration, maxIterations, usage.subcalls, Self.short(usage.tokens.inputTokens) as NSString,
            Self.short(usage.tokens.outputTokens) as NSString, usage.costUSD, Date().timeIntervalSince(start),
            (event.depth > 0 ? " · depth \(event.depth)" : "") as NSString)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }

    static func short(_ value: Int) -> String {
        value >= 1000 ? String(format: "%.1fk", Double(value) / 1000) : "\(value)"
    }
}

/// A value behind a lock, for the CLI's small shared state.
final class Locked<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
