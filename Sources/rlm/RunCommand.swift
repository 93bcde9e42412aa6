import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMSandbox
import RLMTrajectory
import Synchronization

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

    @OptionGroup var contextOptions: ContextOptions

    @Flag(help: "Print no progress and no notes on stderr (errors still print).")
    var quiet = false

    @Flag(
        help: """
            Also mask personal data in what is written down (the trajectory, --verbose output): emails, phone, \
            card and id numbers become [EMAIL], [PHONE], [CARD], [ID]. The model still sees everything.
            """)
    var redactPII = false

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
        if contextOptions.verbose && quiet {
            throw ValidationError("--verbose and --quiet cannot be used together")
        }
        guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the question is empty")
        }
    }

    func run() async throws {
        rawTerminalOutput = raw
        let quiet = quiet
        let runtime = RLMRuntime(
            options: try modelOptions.runtimeOptions(
                maxTokens: maxTokens, maxCost: maxCost, timeout: timeout, maxSubcalls: maxSubcalls),
            environment: ProcessInfo.processInfo.environment, onLocalActivity: quiet ? nil : localActivityDisplay(),
            onNote: { note in if !quiet { printError("rlm: \(note)") } })
        let record = RunRecord()
        defer { record.close() }
        let (query, contextOptions, trajectory, json) = (query, contextOptions, trajectory, json)
        let maxIterations = modelOptions.maxIterations
        do {
            // Everything from here on stops cleanly on SIGINT/SIGTERM: the sandboxes are killed, the calls
            // cancelled, the local server this run started is stopped, and the trajectory says `interrupted`.
            // A second signal (or a wind-down that hangs, like a read of a terminal) exits at once, still reporting.
            let (result, path) = try await untilInterrupted(
                forceExit: { signal in
                    Self.reportFailure(Interrupted(signal: signal), record: record, json: json)
                    Foundation.exit(128 + signal)
                }
            ) {
                let plan = try runtime.prepare()
                record.planned(plan)
                let loaded = try contextOptions.plan(report: !quiet)
                if !quiet { for note in plan.notes { printError("rlm: \(note)") } }
                let sandbox = try contextOptions.sandbox(
                    for: loaded, python: modelOptions.python, backend: try modelOptions.backendOptions.resolve())
                let writer = try runtime.openTrajectory(plan, path: trajectory, maskPII: redactPII)
                record.opened(writer)
                let verbose = contextOptions.verbose
                // Everything printed is redacted like the trajectory: the run's secrets, credential shapes, and
                // personal data when asked.
                let progress = RunProgress(
                    maxIterations: maxIterations, display: !quiet,
                    verbose: verbose ? SecretRedactor(secrets: plan.secrets, maskPII: redactPII) : nil)
                defer { progress.finish() }
                let result = try await runtime.withConfiguration(plan, sandbox: sandbox) { configuration in
                    var configuration = configuration
                    configuration.onEvent = { event in
                        writer.write(event)
                        record.observe(event)
                        progress.update(event)
                        if !quiet { contextOptions.reportLoaded(event) }
                    }
                    return try await RLMEngine(configuration: configuration).run(
                        query: query, source: loaded?.source)
                }
                return (result, writer.path)
            }
            record.audit { models, _ in AuditLog.Entry(result: result, models: models, trajectory: path) }
            try report(result, trajectory: path)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw ExitCode(Self.reportFailure(error, record: record, json: json))
        }
    }

    /// Reports a failed run the one way every path shares: one JSON object with `--json`, else a message and the
    /// trajectory's path on stderr; an interrupted run also ends its trajectory with an `interrupted` record.
    /// - Returns: the exit status.
    @discardableResult
    static func reportFailure(_ error: any Error, record: RunRecord, json: Bool) -> Int32 {
        var failure = RunFailure.classify(error)
        var status = failure.exitCode
        if let interrupted = error as? Interrupted {
            let name = interrupted.signal == SIGTERM ? "SIGTERM" : "SIGINT"
            failure = RunFailure(.interrupted, "interrupted by \(name); the run was stopped and its sandboxes killed")
            status = 128 + interrupted.signal
            record.writeInterrupted(signal: name)
        }
        // An error message can quote what a server or the sandbox said: redacted like everything written down.
        failure.message = record.redact(failure.message)
        let path = record.path
        let kind = failure.kind.rawValue
        record.audit { models, usage in
            AuditLog.Entry(
                errorKind: kind, models: models, trajectory: path, usage: usage,
                duration: ContinuousClock.now - record.started)
        }
        if json {
            writeJSON([
                "status": "error", "answer": NSNull(), "usage": NSNull(), "trajectory": path ?? NSNull(),
                "error": ["kind": failure.kind.rawValue, "message": failure.message],
            ])
        } else {
            printError("rlm: \(failure.message)")
            if let path { printError("rlm: trajectory: \(path)") }
        }
        return status
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
            if !quiet { printError("rlm: trajectory: \(trajectory)") }
        }
        if case .budgetExhausted(let reason) = result.status {
            printError(
                "rlm: no answer: \(reason.message) (\(usage.tokens.totalTokens) tokens, "
                    + String(format: "$%.4f", usage.costUSD) + ")")
            throw ExitCode(3)
        }
    }
}

/// Writes one JSON object and a newline to stdout (keys sorted, slashes unescaped, C1 controls escaped). An object
/// that cannot be serialized (a NaN cost) still yields one JSON object, an internal error, so stdout is never empty.
func writeJSON(_ object: [String: Any]) {
    let data =
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
        ?? Data(
            #"{"answer":null,"error":{"kind":"internal","message":"the result could not be written as JSON"},"status":"error","usage":null}"#
                .utf8)
    let text = JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self))
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

/// The run's trajectory, shared by the run and whoever reports its end (a forced exit included).
final class RunRecord: Sendable {
    private let writer = Mutex<TrajectoryWriter?>(nil)
    private let seen = Mutex<(iterations: Int, usage: RunUsage?)>((0, nil))
    /// What the audit line names: the models the run could call, and the secrets its redactor must know.
    private let planning = Mutex<(models: [String], secrets: [String])>(([], []))
    /// When the run began.
    let started = ContinuousClock.now
    private var start: ContinuousClock.Instant { started }

    /// `text` with the run's secrets and every credential shape replaced (the secrets known once the run is planned).
    func redact(_ text: String) -> String {
        SecretRedactor(secrets: planning.withLock { $0.secrets }).redact(text)
    }

    /// The models and secrets the run resolved, for its audit line.
    func planned(_ plan: RLMRuntime.Plan) {
        let models = plan.models
        let names = [models.root.name] + (models.sub.map { [$0.name] } ?? []) + models.callable.keys.sorted()
        planning.withLock { $0 = (names, plan.secrets) }
    }

    /// Appends the run's line to the audit log (`$XDG_STATE_HOME/swiftrlm/audit.jsonl`), redacted with the run's
    /// secrets. A log that cannot be written is said on stderr; the run's outcome stands.
    func audit(_ entry: (_ models: [String], _ usage: RunUsage?) -> AuditLog.Entry) {
        let (models, secrets) = planning.withLock { $0 }
        let usage = seen.withLock { $0.usage }
        do {
            try AuditLog(secrets: secrets, environment: ProcessInfo.processInfo.environment)
                .append(entry(models, usage))
        } catch {
            printError("rlm: the audit log could not be written: \(error)")
        }
    }

    /// Follows the run's events, for the record of an interrupted run.
    func observe(_ event: RLMEvent) {
        seen.withLock { seen in
            if event.depth == 0 { seen.iterations = max(seen.iterations, event.iteration) }
            if let usage = event.usage { seen.usage = usage }
        }
    }

    /// Ends the trajectory with `run_finished`, status `interrupted`.
    /// - Parameter signal: `SIGINT` or `SIGTERM`.
    func writeInterrupted(signal: String) {
        let (iterations, usage) = seen.withLock { $0 }
        write(
            RLMEvent.interrupted(
                signal: signal, iterations: iterations,
                durationMilliseconds: (ContinuousClock.now - start).inMilliseconds, usage: usage))
    }

    /// The trajectory was opened.
    func opened(_ trajectory: TrajectoryWriter) { writer.withLock { $0 = trajectory } }

    /// Appends an event, if the trajectory is open.
    func write(_ event: RLMEvent) { writer.withLock { $0?.write(event) } }

    /// The trajectory's path, once opened.
    var path: String? { writer.withLock { $0?.path } }

    /// Flushes and closes the trajectory.
    func close() { writer.withLock { $0?.close() } }
}
