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

    @Option(
        help: """
            A file, a directory or - for stdin. Repeatable. A directory inside a git work tree loads what git \
            tracks or would track (.gitignore applies); elsewhere hidden and build folders are skipped. Symbolic \
            links, FIFOs, sockets and devices are never read.
            """)
    var context: [String] = []

    @Option(help: "The most bytes of context to load (e.g. 2G; default: a quarter of RAM, at most 16G).")
    var maxContext: String?

    @Option(help: "Memory of each sandbox (e.g. 4G; default: twice the context plus 512M, at least 1G).")
    var memory: String?

    @Option(help: "Size of each sandbox's work dir (e.g. 1G; default: the context's size, at least 256M).")
    var workdirSize: String?

    @Option(
        help: """
            How context files are decoded: auto (a byte-order mark, else UTF-8, else Latin-1 for a file that is \
            not UTF-8 and has no NUL byte) or a Python codec name (utf-8, latin-1, utf-16, cp1252, …).
            """)
    var encoding: String = "auto"

    @Option(help: "Bytes the encoding cannot decode: strict (refuse or skip the file) or replace (U+FFFD).")
    var encodingErrors: String = "strict"

    @Flag(
        help: """
            Name every file the context left out, and say how each was decoded when not as asked; stream each code \
            block and each cell's output to stderr as they happen (redacted).
            """)
    var verbose = false

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
        if verbose && quiet { throw ValidationError("--verbose and --quiet cannot be used together") }
        _ = try limits()
        _ = try contextEncoding()
        guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("the question is empty")
        }
    }

    func run() async throws {
        rawTerminalOutput = raw
        let quiet = quiet
        let runtime = RLMRuntime(
            options: modelOptions.runtimeOptions(
                maxTokens: maxTokens, maxCost: maxCost, timeout: timeout, maxSubcalls: maxSubcalls),
            environment: ProcessInfo.processInfo.environment, onLocalActivity: quiet ? nil : localActivityDisplay(),
            onNote: { note in if !quiet { printError("rlm: \(note)") } })
        let record = RunRecord()
        defer { record.close() }
        let (query, contextPaths, trajectory, json) = (query, context, trajectory, json)
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
                let limits = try limits()
                let loaded =
                    contextPaths.isEmpty
                    ? nil
                    : try ContextPlanner(maxBytes: limits.maxContext, encoding: try contextEncoding())
                        .plan(contextPaths)
                if !quiet {
                    reportPlanned(loaded)
                    for note in plan.notes { printError("rlm: \(note)") }
                }
                let sandbox = ProcessSandbox(
                    configuration: try limits.sandbox(
                        forContextBytes: loaded?.totalBytes ?? 0, shape: loaded?.source.shape,
                        base: RLMRuntime.processSandbox(python: modelOptions.python).configuration))
                let writer = try runtime.openTrajectory(plan, path: trajectory, maskPII: redactPII)
                record.opened(writer)
                let verbose = verbose
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
                        if event.kind == .contextLoaded, event.depth == 0, !quiet {
                            Self.reportLoaded(event, verbose: verbose)
                        }
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

    /// The limits the flags set.
    func limits() throws -> ContextLimits {
        func size(_ text: String?, flag: String) throws -> Int? {
            guard let text else { return nil }
            guard let bytes = ByteSize.parse(text) else {
                throw ValidationError(
                    "\(flag) \(text) is not a size: write e.g. 512M, 2G or 1.5GiB (a plain number is MiB)")
            }
            return bytes
        }
        return ContextLimits(
            memoryBytes: try size(memory, flag: "--memory"),
            workDirBytes: try size(workdirSize, flag: "--workdir-size"),
            maxContextBytes: try size(maxContext, flag: "--max-context"))
    }

    /// The decoding the flags ask for.
    func contextEncoding() throws -> ContextEncoding {
        guard let errors = ContextEncoding.Errors(rawValue: encodingErrors) else {
            throw ValidationError("--encoding-errors must be strict or replace, not \(encodingErrors)")
        }
        let name = encoding.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
        else { throw ValidationError("--encoding \(encoding) is not an encoding name (auto, utf-8, latin-1, …)") }
        return ContextEncoding(name: name.lowercased(), errors: errors)
    }

    /// What the host left out of the context while planning it, on stderr: counts always, names with --verbose.
    private func reportPlanned(_ planned: ContextPlanner.Plan?) {
        guard let planned else {
            printError("rlm: note: no --context given: the model answers from the question alone")
            return
        }
        for note in planned.notes { printError("rlm: note: \(note)") }
        if planned.ignored > 0 {
            printError("rlm: note: \(planned.ignored) files left out by .gitignore rules")
        }
        if !planned.skipped.isEmpty {
            printError(
                "rlm: note: \(planned.skipped.count) files skipped (\(Self.tally(planned.skipped)))"
                    + (verbose ? ":" : "; --verbose names them"))
            if verbose { for notice in planned.skipped { printError("rlm:   \(notice.label): \(notice.reason)") } }
        }
    }

    /// What the sandbox left out or decoded otherwise while it built the context, and an empty context, on stderr.
    /// - Parameters:
    ///   - event: the root's `context_loaded`.
    ///   - verbose: name the files, not only count them.
    static func reportLoaded(_ event: RLMEvent, verbose: Bool) {
        let data = event.data
        if data["empty"]?.boolValue == true {
            printError("rlm: note: the context is empty: the model is told there is no data")
        }
        func notices(_ key: String) -> [String] {
            (data[key]?.arrayValue ?? []).map { notice in
                "\(notice["label"]?.stringValue ?? "?"): \(notice["reason"]?.stringValue ?? "")"
            }
        }
        let skipped = notices("skipped")
        if !skipped.isEmpty {
            let count = data["skipped_count"]?.intValue ?? skipped.count
            printError("rlm: note: \(count) files left out while reading" + (verbose ? ":" : "; --verbose names them"))
            if verbose { for line in skipped { printError("rlm:   \(line)") } }
        }
        let decoded = notices("decoded_as")
        if !decoded.isEmpty {
            printError(
                "rlm: note: \(decoded.count) files were not decoded as asked"
                    + (verbose ? ":" : "; --verbose names them"))
            if verbose { for line in decoded { printError("rlm:   \(line)") } }
        }
    }

    /// "2 symbolic link, skipped, 1 not a regular file, skipped" → counts by reason.
    private static func tally(_ notices: [ContextSummary.Notice]) -> String {
        var counts = [String: Int]()
        for notice in notices { counts[notice.reason, default: 0] += 1 }
        return counts.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: "; ")
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
