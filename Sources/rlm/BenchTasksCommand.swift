import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMTasks
import Synchronization

/// `rlm bench tasks`: the long-context task suite — generate task files, run them through the RLM and a baseline,
/// regenerate the bundled sample.
struct TasksBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tasks",
        abstract: "Long-context tasks with exact answers: generate them, and score the RLM against a baseline.",
        discussion: """
            Tasks come from a seeded generator (the same seed gives byte-identical tasks everywhere). Simple kinds: \
            counting lines in a log, finding a planted fact among decoys, aggregating over many documents, questions \
            about a generated source tree, top-k rankings, distinct counts, word mentions. Hard kinds: two dependent \
            steps, joins across files, nested JSON lines, CSV with quoted fields, a needle among close decoys (20 MB \
            in the full suite), and questions about meaning. See docs/TASKS.md.
            """,
        subcommands: [Generate.self, Run.self, Sample.self]
    )

    /// How the tasks of a command are chosen: a task file, or a seed with sizes and a count.
    struct Selection: ParsableArguments {
        @Option(help: "Seed of the generator.")
        var seed: UInt64 = 1

        @Option(help: "Number of tasks (default: the standard suite of 12, or one per kind and size with --sizes).")
        var count: Int?

        @Option(help: "Context sizes, comma-separated: 100k, 300k, 1m, 1.5m, 5m (k = 1000 bytes).")
        var sizes: String?

        @Option(
            help: """
                Kinds, comma-separated: counting, needle, aggregation, source_tree, top_k, distinct, mentions, \
                multi_step, join, jsonl, csv, needle_decoys, meaning, meaning_count, or the groups simple and hard \
                (default: all).
                """)
        var kinds: String?

        @Option(
            help: """
                A fixed suite: standard (12 tasks, 100k to 5m), full (one task per kind at 100k-300k, needle_decoys \
                at 20m), simple or hard (the full suite's tasks of that group). Default: standard, unless --count, \
                --sizes or --kinds is given.
                """)
        var suite: String?

        static let suites = ["standard", "full", "simple", "hard"]

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
            _ = try parsedSizes()
            _ = try parsedKinds()
            if let suite {
                guard Self.suites.contains(suite) else {
                    throw ValidationError(
                        "--suite: unknown suite '\(suite)'; choose from \(Self.suites.joined(separator: ", "))")
                }
                if count != nil || sizes != nil || kinds != nil {
                    throw ValidationError(
                        "--suite is a fixed set of tasks: do not combine it with --count, --sizes or --kinds")
                }
            }
        }

        func parsedSizes() throws -> [Int]? {
            guard let sizes else { return nil }
            let values = try sizes.split(separator: ",").map { item -> Int in
                guard let value = TaskSuite.parseSize(String(item)), value >= 1_000, value <= 50_000_000 else {
                    throw ValidationError("--sizes: '\(item)' is not a size between 1k and 50m (e.g. 100k, 1m)")
                }
                return value
            }
            guard !values.isEmpty else { throw ValidationError("--sizes is empty") }
            return values
        }

        func parsedKinds() throws -> [TaskKind] {
            guard let kinds else { return TaskKind.generated }
            let values = try kinds.split(separator: ",").flatMap { item -> [TaskKind] in
                let name = item.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "-", with: "_")
                if name == "simple" { return TaskKind.simple }
                if name == "hard" { return TaskKind.hard }
                let kind = TaskKind(rawValue: name)
                guard TaskKind.generated.contains(kind) else {
                    throw ValidationError(
                        "--kinds: unknown kind '\(item)'; choose from "
                            + TaskKind.generated.map(\.rawValue).joined(separator: ", ") + ", or simple or hard")
                }
                return [kind]
            }
            guard !values.isEmpty else { throw ValidationError("--kinds is empty") }
            return values
        }

        /// The tasks this selection names.
        func tasks() throws -> [BenchTask] {
            let kinds = try parsedKinds()
            switch suite {
            case "full": return TaskSuite.full(seed: seed)
            case "simple": return TaskSuite.full(seed: seed, kinds: TaskKind.simple)
            case "hard": return TaskSuite.full(seed: seed, kinds: TaskKind.hard)
            case "standard": return TaskSuite.standard(seed: seed)
            default: break
            }
            if count == nil && sizes == nil && self.kinds == nil { return TaskSuite.standard(seed: seed) }
            let sizes = try parsedSizes() ?? TaskSuite.standardSizes
            return TaskSuite.generate(seed: seed, count: count ?? kinds.count * sizes.count, sizes: sizes, kinds: kinds)
        }
    }

    // MARK: generate

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a task file (JSON), or list its tasks.",
            discussion: "Without --out the JSON goes to stdout. Exit status: 0 written, 2 usage or I/O error."
        )

        @OptionGroup var selection: Selection

        @Option(help: "Write the task file here.")
        var out: String?

        @Flag(help: "Print a table (id, kind, size, answer type, question, answer) instead of the JSON.")
        var list = false

        func run() async throws {
            let tasks = try selection.tasks()
            if list {
                writeOut(TasksBench.listing(tasks))
                return
            }
            let data = try TaskFile(tasks: tasks, seed: selection.seed).encoded()
            guard let out else {
                writeOut(String(decoding: data, as: UTF8.self) + "\n")
                return
            }
            do {
                try data.write(to: URL(fileURLWithPath: out))
            } catch {
                printError("rlm: cannot write \(out): \(error.localizedDescription)")
                throw ExitCode(2)
            }
            printError("rlm: wrote \(tasks.count) tasks (\("\(data.count) bytes")) to \(out)")
        }
    }

    static func listing(_ tasks: [BenchTask]) -> String {
        var rows = [["id", "kind", "size", "type", "question", "answer"]]
        for task in tasks {
            rows.append([
                task.id, task.kind.rawValue, TaskSuite.describeSize(task.sizeBytes), task.answerKind.rawValue,
                task.query, task.answer,
            ])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    // MARK: sample

    struct Sample: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Regenerate the bundled sample log (samples/app.log) byte for byte.",
            discussion: "Prints the demo's question and its exact answer."
        )

        @Option(help: "Where to write the log.")
        var out: String = "samples/app.log"

        func run() async throws {
            let task = TaskSuite.sample()
            guard case .text(let text) = task.context else { throw ExitCode(1) }
            do {
                try Data(text.utf8).write(to: URL(fileURLWithPath: out))
            } catch {
                printError("rlm: cannot write \(out): \(error.localizedDescription)")
                throw ExitCode(2)
            }
            writeOut("\(out): \(text.utf8.count) bytes\nquestion: \(task.query)\nanswer: \(task.answer)\n")
        }
    }

    // MARK: run

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run tasks through the RLM and the baseline; print accuracy, tokens, time and cost.",
            discussion: """
                Each task runs through the RLM engine exactly as `rlm run` would (same providers, keys and \
                local-model settings) and, unless --no-baseline, through the baseline: the same model asked once, \
                with the head of the context that fits its window, to reply with the answer only. A task that \
                errors or times out counts as wrong and the run goes on. The local server starts once for the \
                whole run. Progress goes to stderr on a terminal; the table (or --json) to stdout.
                Exit status: 0 the run finished (whatever the accuracy), 2 usage or setup error, 1 other failure.
                """
        )

        @Option(
            help:
                "A task file (JSON, as written by `generate`); otherwise tasks come from --seed with --suite or --count/--sizes/--kinds."
        )
        var tasks: String?

        @OptionGroup var selection: Selection

        @OptionGroup var modelOptions: ModelOptions

        @Flag(inversion: .prefixedNo, help: "Also ask the model directly (context cut to its window).")
        var baseline = true

        @Flag(inversion: .prefixedNo, help: "Run the RLM (--no-rlm: the baseline only).")
        var rlm = true

        @Option(help: "Wall-clock limit in seconds per task and method.")
        var timeout: Double?

        @Option(help: "Tokens reserved for the baseline's reply.")
        var baselineReplyTokens: Int = 256

        @Option(help: "Write each RLM run's trajectory (JSONL) to DIR/<task id>.jsonl.")
        var trajectoryDir: String?

        @Flag(help: "Print the whole report as JSON instead of the table.")
        var json = false

        @Option(help: "Also write the whole report (JSON) here.")
        var out: String?

        func validate() throws {
            if let timeout { _ = try seconds(timeout, flag: "--timeout") }
            guard baselineReplyTokens >= 16 else {
                throw ValidationError("--baseline-reply-tokens must be at least 16")
            }
            guard rlm || baseline else { throw ValidationError("--no-rlm and --no-baseline leave nothing to run") }
            if tasks != nil
                && (selection.count != nil || selection.sizes != nil || selection.kinds != nil
                    || selection.suite != nil)
            {
                throw ValidationError(
                    "--tasks reads a task file: do not combine it with --count, --sizes, --kinds or --suite")
            }
        }

        func run() async throws {
            let taskList = try loadTasks()
            guard !taskList.isEmpty else {
                printError("rlm: no tasks to run")
                throw ExitCode(2)
            }
            let runtime = RLMRuntime(
                options: try modelOptions.runtimeOptions(), environment: ProcessInfo.processInfo.environment,
                onLocalActivity: localActivityDisplay())
            let report: BenchReport
            do {
                let plan = try runtime.prepare()
                for note in plan.notes { printError("rlm: \(note)") }
                if let trajectoryDir {
                    try SwiftRLMPaths.createDirectory(URL(fileURLWithPath: trajectoryDir))
                }
                report = try await runtime.withConfiguration(plan) { configuration in
                    let runner = BenchRunner(
                        configuration: configuration,
                        options: BenchRunner.Options(
                            runRLM: rlm, runBaseline: baseline,
                            taskTimeout: timeout.flatMap { Duration(userSeconds: $0) },
                            baselineReplyTokens: baselineReplyTokens))
                    // Per-task trajectories go through the runtime, so they are redacted exactly as `rlm run`'s.
                    let display = BenchProgress(maxIterations: modelOptions.maxIterations) { task in
                        guard let trajectoryDir else { return nil }
                        // A task id comes from a task file: keep only a safe file name of it.
                        let name = String(task.id.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
                        let file = "\(trajectoryDir)/\(name.hasPrefix(".") ? "_" + name : name).jsonl"
                        do {
                            return try runtime.openTrajectory(plan, path: file)
                        } catch {
                            printError("rlm: \(RunFailure.classify(error).message)")
                            return nil
                        }
                    }
                    defer { display.close() }
                    return try await runner.run(taskList, observer: display.observer)
                }
            } catch {
                let failure = RunFailure.classify(error)
                printError("rlm: \(failure.message)")
                throw ExitCode(failure.exitCode)
            }

            let data = try report.json()
            if let out {
                do {
                    try data.write(to: URL(fileURLWithPath: out))
                } catch {
                    printError("rlm: cannot write the report to \(out): \(error.localizedDescription)")
                    throw ExitCode(1)
                }
            }
            if json {
                writeOut(String(decoding: data, as: UTF8.self) + "\n")
            } else {
                writeOut("model: \(report.model)\n\n" + report.table())
            }
        }

        private func loadTasks() throws -> [BenchTask] {
            guard let tasks else { return try selection.tasks() }
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: tasks))
                return try TaskFile.decode(data).tasks
            } catch let error as TaskFile.FormatError {
                printError("rlm: \(tasks): \(error)")
                throw ExitCode(2)
            } catch {
                printError("rlm: cannot read \(tasks): \(error.localizedDescription)")
                throw ExitCode(2)
            }
        }
    }
}

/// Progress of a benchmark run on stderr (a terminal only): a line per task and method, the engine's live step line
/// while the RLM works, and a verdict when it ends. Also writes per-task trajectories when asked.
final class BenchProgress: Sendable {
    private let tty = StatusLine.isTerminal
    private let maxIterations: Int
    private let openTrajectory: @Sendable (BenchTask) -> TrajectoryWriter?
    private let current = Mutex<(reporter: RunProgress?, writer: TrajectoryWriter?)>((nil, nil))

    /// - Parameters:
    ///   - maxIterations: for the step line.
    ///   - openTrajectory: opens a task's trajectory file (`nil`: none).
    init(maxIterations: Int, openTrajectory: @escaping @Sendable (BenchTask) -> TrajectoryWriter?) {
        self.maxIterations = maxIterations
        self.openTrajectory = openTrajectory
    }

    var observer: BenchRunner.Observer {
        BenchRunner.Observer(
            started: { [self] task, method, index, total in
                let writer = method == .rlm ? openTrajectory(task) : nil
                let old = current.withLock { value in
                    defer { value = (RunProgress(maxIterations: maxIterations), writer) }
                    return value
                }
                old.writer?.close()
                if tty {
                    printError(
                        "[bench] \(index + 1)/\(total) \(task.id) (\(TaskSuite.describeSize(task.sizeBytes))) · "
                            + "\(method.rawValue) · \(task.query)")
                }
            },
            event: { [self] _, event in
                let (reporter, writer) = current.withLock { $0 }
                writer?.write(event)
                if event.depth == 0 { reporter?.update(event) }
            },
            finished: { [self] task, outcome in
                let (reporter, writer) = current.withLock { value in
                    defer { value = (nil, nil) }
                    return value
                }
                reporter?.finish()
                writer?.close()
                guard tty else { return }
                let verdict = outcome.correct ? "correct" : "wrong"
                let answer = outcome.predicted.map { "\"\($0.prefix(60))\"" } ?? "(\(outcome.status.rawValue))"
                printError(
                    "[bench]   \(outcome.method.rawValue): \(verdict) — \(answer), expected \"\(task.answer)\" · "
                        + String(format: "%.0f s", outcome.wallSeconds)
                        + " · \(outcome.inputTokens + outcome.outputTokens) tokens")
            })
    }

    func close() {
        let (reporter, writer) = current.withLock { value in
            defer { value = (nil, nil) }
            return value
        }
        reporter?.finish()
        writer?.close()
    }
}
