import ArgumentParser
import Dispatch
import Foundation
import RLM
import RLMRuntime
import RLMSandbox
import RLMTrajectory
import Synchronization

/// `rlm chat`: question after question over one context, loaded once into one REPL whose variables persist.
struct ChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Ask question after question over one context, loaded once.",
        discussion: """
            The context is loaded into one sandbox, once; every question is answered in the same REPL, so the \
            variables of earlier answers persist and follow-ups see the earlier answers. Each answer is printed on \
            stdout and recorded as its own run in one trajectory file.
            On a terminal: line editing and history (Up/Down, kept in $XDG_STATE_HOME/swiftrlm/history/chat). \
            Ctrl-C while a question runs stops that question: code it was running is stopped by killing its sandbox, \
            and the next question gets a fresh sandbox with the context loaded again (earlier variables are gone). \
            Ctrl-C at the prompt clears the line; Ctrl-D, exit or quit ends the conversation.
            Without a terminal on stdin, questions are read one per line and only answers are printed on stdout. \
            Exit status: 0 every question answered (or the conversation was ended), 3 a budget ran out for a \
            question (without a terminal), 1 a question failed otherwise (without a terminal), 2 usage or setup \
            error, 130/143/129 SIGINT/SIGTERM/SIGHUP.
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var contextOptions: ContextOptions

    @Option(help: "Token budget (input + output) for each question.")
    var maxTokens: Int?

    @Option(help: "Cost budget in USD for each question (every model needs a known price).")
    var maxCost: Double?

    @Option(help: "Wall-time budget in seconds for each question.")
    var timeout: Double?

    @Option(help: "Sub-call budget for each question (each batched prompt counts).")
    var maxSubcalls: Int?

    @Option(help: "Write the trajectory (JSONL) here (default: under ~/.local/state/swiftrlm/trajectories).")
    var trajectory: String?

    @Flag(
        help: "Print the answers' bytes as they are, control characters included (default: made visible on a terminal)."
    )
    var raw = false

    func validate() throws {
        if let timeout { _ = try seconds(timeout, flag: "--timeout") }
        guard !contextOptions.context.contains("-") else {
            throw ValidationError("rlm chat reads its questions from stdin: give --context a file or a directory")
        }
    }

    func run() async throws {
        rawTerminalOutput = raw
        let environment = ProcessInfo.processInfo.environment
        let runtime = RLMRuntime(
            options: try modelOptions.runtimeOptions(
                maxTokens: maxTokens, maxCost: maxCost, timeout: timeout, maxSubcalls: maxSubcalls),
            environment: environment, onLocalActivity: localActivityDisplay(),
            onNote: { note in printError("rlm: \(note)") })
        let editor = LineEditor.forTerminal(historyName: "chat", environment: environment)
        let interactive = isatty(0) != 0
        let conversation = Conversation()
        defer { conversation.close() }
        let (contextOptions, trajectory, python) = (contextOptions, trajectory, modelOptions.python)
        let backend = try modelOptions.backendOptions.resolve()
        let maxIterations = modelOptions.maxIterations
        // Everything from here on listens for SIGINT and SIGTERM itself: SIGINT while a question runs stops that
        // question; otherwise (or SIGTERM) the conversation ends, its sandbox killed and the local server it started
        // stopped. A second signal, or a wind-down that hangs, exits at once.
        let signals = terminationSignals()
        let work = Task {
            let plan = try runtime.prepare()
            let planned = try contextOptions.plan()
            for note in plan.notes { printError("rlm: \(note)") }
            let sandbox = try contextOptions.sandbox(for: planned, python: python, backend: backend)
            let writer = try runtime.openTrajectory(plan, path: trajectory)
            conversation.opened(writer)
            conversation.planned(plan)
            return try await runtime.withConfiguration(plan, sandbox: sandbox) { configuration in
                var configuration = configuration
                configuration.onEvent = { event in
                    writer.write(event)
                    conversation.progress?.update(event)
                    contextOptions.reportLoaded(event)
                }
                let session = RLMSession(configuration: configuration, source: planned?.source)
                let status = await Self.converse(
                    session: session, conversation: conversation, editor: editor, interactive: interactive,
                    maxIterations: maxIterations)
                await session.close()
                return status
            }
        }
        let handle: @Sendable (Int32) -> Void = { signal in
            // A script's SIGINT (no terminal on stdin) ends the whole conversation, like any command's.
            if signal == SIGINT, interactive, conversation.interruptQuestion() { return }
            guard conversation.stop(signal) else { Self.forceExit(signal, conversation: conversation) }
            work.cancel()
            Task {
                try? await Task.sleep(for: .seconds(10))
                Self.forceExit(signal, conversation: conversation)
            }
        }
        let listener = Task { for await signal in signals { handle(signal) } }
        defer { listener.cancel() }
        // A closed terminal (SIGHUP) ends the conversation as SIGTERM does: sandbox killed, cgroups removed.
        signal(SIGHUP, SIG_IGN)
        let hangups = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangups.setEventHandler { handle(SIGHUP) }
        hangups.resume()
        defer { hangups.cancel() }
        let status: Int32
        do {
            status = try await work.value
        } catch {
            if let signal = conversation.stoppedBy { throw ExitCode(128 + signal) }
            let failure = RunFailure.classify(error)
            printError("rlm: \(failure.message)")
            if let path = conversation.path { printError("rlm: trajectory: \(path)") }
            throw ExitCode(failure.exitCode)
        }
        if let path = conversation.path { printError("rlm: trajectory: \(path)") }
        if let signal = conversation.stoppedBy { throw ExitCode(128 + signal) }
        if status != 0 { throw ExitCode(status) }
    }

    /// Reads question after question and answers each until the input ends, `exit`/`quit`, or cancellation.
    /// - Returns: the exit status: 0, or without a terminal the worst question's (3 a budget, 1 a failure).
    private static func converse(
        session: RLMSession, conversation: Conversation, editor: LineEditor?, interactive: Bool, maxIterations: Int
    ) async -> Int32 {
        var status: Int32 = 0
        asking: while !Task.isCancelled {
            let reading: LineEditor.Reading? =
                if let editor {
                    await readOffPool { editor.readLine(prompt: "rlm> ") }
                } else {
                    await readOffPool { () -> LineEditor.Reading in
                        Swift.readLine(strippingNewline: true).map { .line($0) } ?? .endOfInput
                    }
                }
            guard let reading, !Task.isCancelled else { break }
            let question: String
            switch reading {
            case .endOfInput: break asking
            case .interrupted: continue asking
            case .line(let line): question = line.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            if question.isEmpty { continue }
            if ["exit", "quit", "exit()", "quit()"].contains(question) { break }
            let outcome = await conversation.ask(
                question, session: session, progress: RunProgress(maxIterations: maxIterations))
            switch outcome {
            case .answered(let answer):
                writeOut(answer.hasSuffix("\n") ? answer : answer + "\n")
            case .noAnswer(let message):
                printError("rlm: no answer: \(message)")
                status = max(status, 3)
            case .failed(let failure):
                printError("rlm: \(failure.message)")
                if status == 0 { status = 1 }
            case .interrupted where !Task.isCancelled:
                printError(
                    "rlm: interrupted: the question was stopped; if code was running its sandbox was killed, and the "
                        + "next question starts a fresh one with the context loaded again (earlier variables are gone)"
                )
            case .interrupted: break
            }
        }
        return interactive ? 0 : status
    }

    /// Ends the process now, the trajectory saying why.
    private static func forceExit(_ signal: Int32, conversation: Conversation) -> Never {
        conversation.recordInterrupted(signal, onlyWhileAsking: true)
        conversation.close()
        Foundation.exit(128 + signal)
    }
}

/// The conversation's shared state: the trajectory, the question running (so SIGINT can stop it), and how the
/// conversation was stopped.
final class Conversation: Sendable {
    /// How one question ended.
    enum Outcome: Sendable {
        case answered(String)
        case noAnswer(String)
        case failed(RunFailure)
        case interrupted
    }

    private struct State {
        var writer: TrajectoryWriter?
        /// The trajectory's own id; question N is run `<id>-qN`.
        var baseRunID = ""
        var asked = 0
        var question: Task<RLMResult, any Error>?
        var questionInterrupted = false
        var progress: RunProgress?
        var stoppedBy: Int32?
        /// What each question's audit line names: the models the run could call, and the secrets to redact.
        var models: [String] = []
        var secrets: [String] = []
    }

    private let state = Mutex(State())

    /// The trajectory was opened.
    func opened(_ writer: TrajectoryWriter) {
        state.withLock { state in
            state.writer = writer
            state.baseRunID = writer.runID
        }
    }

    /// The trajectory's path, once opened.
    var path: String? { state.withLock { $0.writer?.path } }

    /// The models and secrets the conversation resolved, for the audit lines.
    func planned(_ plan: RLMRuntime.Plan) {
        let models = plan.models
        let names = [models.root.name] + (models.sub.map { [$0.name] } ?? []) + models.callable.keys.sorted()
        state.withLock { state in
            state.models = names
            state.secrets = plan.secrets
        }
    }

    /// Appends one question's line to the audit log (each answer is a run). A log that cannot be written is said.
    private func audit(_ entry: (_ models: [String]) -> AuditLog.Entry) {
        let (models, secrets) = state.withLock { ($0.models, $0.secrets) }
        do {
            try AuditLog(secrets: secrets, environment: ProcessInfo.processInfo.environment).append(entry(models))
        } catch {
            printError("rlm: the audit log could not be written: \(error)")
        }
    }

    /// The progress line of the question running.
    var progress: RunProgress? { state.withLock { $0.progress } }

    /// The signal that ended the conversation.
    var stoppedBy: Int32? { state.withLock { $0.stoppedBy } }

    /// Answers one question as its own run of the trajectory. Cancelling the caller, or ``interruptQuestion()``,
    /// stops it: the engine then kills the sandbox if a cell was running.
    func ask(_ question: String, session: RLMSession, progress: RunProgress) async -> Outcome {
        let started = ContinuousClock.now
        // Each question is its own run of the one trajectory file.
        state.withLock { state in
            state.asked += 1
            state.writer?.startRun(id: "\(state.baseRunID)-q\(state.asked)")
        }
        let task = Task { try await session.ask(question) }
        state.withLock { state in
            state.question = task
            state.questionInterrupted = false
            state.progress = progress
        }
        let result = await withTaskCancellationHandler {
            await task.result
        } onCancel: {
            task.cancel()
        }
        progress.finish()
        let interrupted = state.withLock { state in
            state.question = nil
            state.progress = nil
            return state.questionInterrupted
        }
        let trajectory = path
        switch result {
        case .success(let result):
            audit { AuditLog.Entry(result: result, models: $0, trajectory: trajectory) }
            switch result.status {
            case .answered: return .answered(result.answer ?? "")
            case .budgetExhausted(let reason): return .noAnswer(reason.message)
            }
        case .failure(let error):
            if interrupted || Task.isCancelled || error is CancellationError {
                if let signal = interrupted ? SIGINT : stoppedBy { recordInterrupted(signal) }
                audit {
                    AuditLog.Entry(
                        errorKind: "interrupted", models: $0, trajectory: trajectory,
                        duration: ContinuousClock.now - started)
                }
                return .interrupted
            }
            let failure = RunFailure.classify(error)
            audit {
                AuditLog.Entry(
                    errorKind: failure.kind.rawValue, models: $0, trajectory: trajectory,
                    duration: ContinuousClock.now - started)
            }
            return .failed(failure)
        }
    }

    /// Stops the question running, if any and not stopped already.
    /// - Returns: whether there was one to stop.
    func interruptQuestion() -> Bool {
        let task = state.withLock { state -> Task<RLMResult, any Error>? in
            guard let question = state.question, !state.questionInterrupted else { return nil }
            state.questionInterrupted = true
            return question
        }
        task?.cancel()
        return task != nil
    }

    /// The conversation is to end because of `signal`.
    /// - Returns: `false` when it was ending already (a second signal).
    func stop(_ signal: Int32) -> Bool {
        state.withLock { state in
            defer { if state.stoppedBy == nil { state.stoppedBy = signal } }
            return state.stoppedBy == nil
        }
    }

    /// Ends the trajectory's current run with an `interrupted` record.
    /// - Parameters:
    ///   - signal: the signal that stopped it.
    ///   - onlyWhileAsking: write it only when a question is running (not at the prompt, between runs).
    func recordInterrupted(_ signal: Int32, onlyWhileAsking: Bool = false) {
        let name = [SIGTERM: "SIGTERM", SIGHUP: "SIGHUP"][signal] ?? "SIGINT"
        state.withLock {
            guard !onlyWhileAsking || $0.question != nil else { return }
            $0.writer?.write(RLMEvent.interrupted(signal: name))
        }
    }

    /// Flushes and closes the trajectory.
    func close() { state.withLock { $0.writer?.close() } }
}
