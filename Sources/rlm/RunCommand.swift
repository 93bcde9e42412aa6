import ArgumentParser
import Foundation
import RLM
import RLMRuntime

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Answer a question over a context with a Recursive Language Model.",
        discussion: """
            Keys come from OPENAI_API_KEY / ANTHROPIC_API_KEY or OPENAI_API_KEY_FILE / ANTHROPIC_API_KEY_FILE \
            (or a .env file with --env-file), never from a flag; OPENAI_BASE_URL / ANTHROPIC_BASE_URL set the \
            base URL. See --provider for how the provider is chosen when it is not given.
            With --json, stdout holds exactly one JSON object for every outcome, errors included.
            Exit status: 0 answered, 3 a budget ran out without an answer, 2 usage or setup error, 1 other failure.
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "A file, a directory (recursive, text files only) or - for stdin. Repeatable.")
    var context: [String] = []

    @Option(help: "Token budget (input + output) for the whole run.")
    var maxTokens: Int?

    @Option(help: "Cost budget in USD for the whole run (every model needs a known price).")
    var maxCost: Double?

    @Option(help: "Wall-time budget in seconds for the whole run.")
    var timeout: Double?

    @Option(help: "Sub-call budget (each batched prompt counts).")
    var maxSubcalls: Int?

    @Option(help: "Write the trajectory (JSONL) here (default: under ~/.local/state/swiftrlm/trajectories).")
    var trajectory: String?

    @Flag(help: "Print one JSON object: status, answer, iterations, usage, trajectory (or error).")
    var json = false

    @Flag(
        help: "Print the answer's bytes as they are, control characters included (default: made visible on a terminal)."
    )
    var raw = false

    @Argument(help: "The question.")
    var query: String

    func validate() throws {
        if let timeout { _ = try seconds(timeout, flag: "--timeout") }
        guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the question is empty")
        }
    }

    func run() async throws {
        rawTerminalOutput = raw
        let environment = ProcessInfo.processInfo.environment
        let runtime = RLMRuntime(
            options: modelOptions.runtimeOptions(
                maxTokens: maxTokens, maxCost: maxCost, timeout: timeout, maxSubcalls: maxSubcalls),
            environment: environment, onLocalActivity: localActivityDisplay())
        var trajectoryPath: String?
        var trajectoryWriter: TrajectoryWriter?
        defer { trajectoryWriter?.close() }
        do {
            let plan = try runtime.prepare()
            let loaded = context.isEmpty ? nil : try ContextLoader().load(context)
            for notice in loaded?.notices ?? [] { printError("rlm: note: \(notice.path): \(notice.reason)") }
            for note in plan.notes { printError("rlm: \(note)") }
            let writer = try runtime.openTrajectory(plan, path: trajectory)
            trajectoryPath = writer.path
            trajectoryWriter = writer
            let progress = RunProgress(maxIterations: modelOptions.maxIterations)
            defer { progress.finish() }
            let query = query
            // SIGINT/SIGTERM cancel the run: its sandboxes are killed, its calls cancelled, the local server it
            // started is stopped, and the trajectory records that it was interrupted.
            let result = try await untilInterrupted {
                try await runtime.withConfiguration(plan) { configuration in
                    var configuration = configuration
                    configuration.onEvent = { event in
                        writer.write(event)
                        progress.update(event)
                    }
                    return try await RLMEngine(configuration: configuration).run(
                        query: query, context: loaded?.context)
                }
            }
            progress.finish()
            try report(result, trajectory: writer.path)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            var failure = RunFailure.classify(error)
            var status = failure.exitCode
            if let interrupted = error as? Interrupted {
                let name = interrupted.signal == SIGTERM ? "SIGTERM" : "SIGINT"
                failure = RunFailure(
                    .interrupted, "interrupted by \(name); the run was stopped and its sandboxes killed")
                status = 128 + interrupted.signal
                trajectoryWriter?.write(
                    RLMEvent(
                        kind: .runFinished, depth: 0, iteration: 0, data: ["status": "interrupted", "signal": name]))
            }
            if json {
                var object: [String: Any] = [
                    "status": "error", "answer": NSNull(), "usage": NSNull(),
                    "error": ["kind": failure.kind.rawValue, "message": failure.message],
                ]
                object["trajectory"] = trajectoryPath ?? NSNull()
                writeJSON(object)
            } else {
                printError("rlm: \(failure.message)")
                if let trajectoryPath { printError("rlm: trajectory: \(trajectoryPath)") }
            }
            throw ExitCode(status)
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
                "duration_ms": Int(result.duration.inMilliseconds),
            ]
            switch result.status {
            case .answered: object["status"] = "answered"
            case .budgetExhausted(let reason):
                object["status"] = "budget_exhausted"
                object["limit"] = reason.limit.rawValue
                object["message"] = reason.message
            }
            writeJSON(object)
        } else {
            if let answer = result.answer { writeOut(answer + "\n") }
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

/// Writes one JSON object and a newline to stdout (keys sorted, slashes unescaped).
func writeJSON(_ object: [String: Any]) {
    guard
        let data = try? JSONSerialization.data(
            withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    else { return }
    // Exact and escaped: JSON's own escapes for C0, and C1 escaped too, whatever stdout is.
    FileHandle.standardOutput.write(
        Data((JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self)) + "\n").utf8))
}
