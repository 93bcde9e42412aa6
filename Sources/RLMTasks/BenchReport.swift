import Foundation

/// Which way a task was answered.
public enum BenchMethod: String, Sendable, Hashable, Codable, CaseIterable {
    /// The RLM engine: the model writes code over `context` in the sandboxed REPL.
    case rlm
    /// The same model asked once, with the head of the context that fits its window.
    case baseline
}

/// How one method's attempt at one task ended.
public enum OutcomeStatus: String, Sendable, Hashable, Codable {
    /// An answer came back (right or wrong).
    case answered
    /// The RLM used its iterations (or another budget) without a final answer.
    case noAnswer = "no_answer"
    /// The per-task timeout passed.
    case timeout
    /// The model or the sandbox failed.
    case error
}

/// One method's attempt at one task.
public struct MethodOutcome: Sendable, Hashable, Codable {
    /// Which method.
    public var method: BenchMethod
    /// How it ended.
    public var status: OutcomeStatus
    /// Whether ``predicted`` matches the expected answer (``AnswerScorer``).
    public var correct: Bool
    /// The answer given, if any.
    public var predicted: String?
    /// Root iterations (RLM only).
    public var iterations: Int?
    /// Input tokens of every model call.
    public var inputTokens: Int
    /// Output tokens of every model call.
    public var outputTokens: Int
    /// Sub-calls made by the code (RLM only).
    public var subcalls: Int?
    /// Wall time in seconds.
    public var wallSeconds: Double
    /// Cost in USD (0 for the local model).
    public var costUSD: Double
    /// Why there is no answer (the budget's or the error's message), or for the baseline how much context it saw.
    public var detail: String?

    /// - Parameters: as the properties.
    public init(
        method: BenchMethod, status: OutcomeStatus, correct: Bool, predicted: String?, iterations: Int?,
        inputTokens: Int, outputTokens: Int, subcalls: Int? = nil, wallSeconds: Double, costUSD: Double,
        detail: String? = nil
    ) {
        self.method = method
        self.status = status
        self.correct = correct
        self.predicted = predicted
        self.iterations = iterations
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.subcalls = subcalls
        self.wallSeconds = wallSeconds
        self.costUSD = costUSD
        self.detail = detail
    }

    /// Input plus output tokens.
    public var totalTokens: Int { inputTokens + outputTokens }

    private enum CodingKeys: String, CodingKey {
        case method, status, correct, predicted, iterations, subcalls, detail
        case inputTokens = "input_tokens"
        case outputTokens = "output_tokens"
        case wallSeconds = "wall_seconds"
        case costUSD = "cost_usd"
    }
}

/// One task and how each method did.
public struct TaskResult: Sendable, Hashable, Codable {
    /// The task's id.
    public var id: String
    /// Its kind.
    public var kind: TaskKind
    /// Its context size in bytes.
    public var sizeBytes: Int
    /// The question.
    public var query: String
    /// The expected answer.
    public var expected: String
    /// How answers were compared.
    public var answerKind: AnswerKind
    /// The RLM's attempt (absent when it was not run).
    public var rlm: MethodOutcome?
    /// The baseline's attempt (absent when it was not run).
    public var baseline: MethodOutcome?

    /// - Parameter task: the task (its context is not kept).
    public init(task: BenchTask) {
        self.id = task.id
        self.kind = task.kind
        self.sizeBytes = task.sizeBytes
        self.query = task.query
        self.expected = task.answer
        self.answerKind = task.answerKind
    }

    /// The outcome of one method.
    /// - Parameter method: which one.
    public func outcome(_ method: BenchMethod) -> MethodOutcome? {
        method == .rlm ? rlm : baseline
    }

    private enum CodingKeys: String, CodingKey {
        case id, kind, query, expected, rlm, baseline
        case sizeBytes = "size_bytes"
        case answerKind = "answer_kind"
    }
}

/// Totals for one method over a run.
public struct MethodSummary: Sendable, Hashable, Codable {
    /// Which method.
    public var method: BenchMethod
    /// Tasks attempted.
    public var tasks: Int
    /// Tasks answered correctly.
    public var correct: Int
    /// `correct / tasks` (0 when there were none).
    public var accuracy: Double
    /// Input tokens over all tasks.
    public var inputTokens: Int
    /// Output tokens over all tasks.
    public var outputTokens: Int
    /// Input plus output tokens over all tasks.
    public var totalTokens: Int
    /// Mean tokens per task.
    public var meanTokens: Double
    /// Wall time over all tasks, in seconds.
    public var wallSeconds: Double
    /// Mean wall time per task, in seconds.
    public var meanWallSeconds: Double
    /// Cost over all tasks in USD.
    public var costUSD: Double
    /// Cost divided by correct answers; `nil` when none was correct.
    public var costPerCorrectUSD: Double?
    /// Tokens divided by correct answers; `nil` when none was correct.
    public var tokensPerCorrect: Double?
    /// The median task's wall time, in seconds.
    public var medianWallSeconds: Double
    /// The median task's tokens (input plus output).
    public var medianTokens: Double

    /// Sums the outcomes of one method.
    /// - Parameters:
    ///   - method: which method.
    ///   - outcomes: its outcomes.
    public init(method: BenchMethod, outcomes: [MethodOutcome]) {
        self.method = method
        tasks = outcomes.count
        correct = outcomes.filter(\.correct).count
        accuracy = tasks == 0 ? 0 : Double(correct) / Double(tasks)
        inputTokens = outcomes.reduce(0) { $0 + $1.inputTokens }
        outputTokens = outcomes.reduce(0) { $0 + $1.outputTokens }
        totalTokens = inputTokens + outputTokens
        meanTokens = tasks == 0 ? 0 : Double(totalTokens) / Double(tasks)
        wallSeconds = outcomes.reduce(0) { $0 + $1.wallSeconds }
        meanWallSeconds = tasks == 0 ? 0 : wallSeconds / Double(tasks)
        costUSD = outcomes.reduce(0) { $0 + $1.costUSD }
        costPerCorrectUSD = correct == 0 ? nil : costUSD / Double(correct)
        tokensPerCorrect = correct == 0 ? nil : Double(totalTokens) / Double(correct)
        medianWallSeconds = Self.median(outcomes.map(\.wallSeconds))
        medianTokens = Self.median(outcomes.map { Double($0.inputTokens + $0.outputTokens) })
    }

    /// The middle value (the mean of the two middle ones for an even count); 0 for none.
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    private enum CodingKeys: String, CodingKey {
        case method, tasks, correct, accuracy
        case inputTokens = "input_tokens"
        case outputTokens = "output_tokens"
        case totalTokens = "total_tokens"
        case meanTokens = "mean_tokens"
        case wallSeconds = "wall_seconds"
        case meanWallSeconds = "mean_wall_seconds"
        case costUSD = "cost_usd"
        case costPerCorrectUSD = "cost_per_correct_usd"
        case tokensPerCorrect = "tokens_per_correct"
        case medianWallSeconds = "median_wall_seconds"
        case medianTokens = "median_tokens"
    }
}

/// One method's results on the tasks of one kind.
public struct KindSummary: Sendable, Hashable, Codable {
    /// The kind.
    public var kind: TaskKind
    /// The method's totals on it.
    public var summary: MethodSummary
}

/// The result of `rlm bench tasks run`: every task's outcomes and a summary per method.
public struct BenchReport: Sendable, Hashable, Codable {
    /// The model's name (`local:qwen2.5-coder-1.5b`, `openai:gpt-4o-mini`, …).
    public var model: String
    /// When the run started (ISO 8601, UTC).
    public var startedAt: String
    /// The settings that shape the numbers (max iterations, timeout, baseline window…).
    public var settings: [String: String]
    /// One entry per task, in run order.
    public var tasks: [TaskResult]

    /// - Parameters: as the properties.
    public init(model: String, startedAt: String, settings: [String: String] = [:], tasks: [TaskResult]) {
        self.model = model
        self.startedAt = startedAt
        self.settings = settings
        self.tasks = tasks
    }

    /// Methods that were run, in a fixed order.
    public var methods: [BenchMethod] {
        BenchMethod.allCases.filter { method in tasks.contains { $0.outcome(method) != nil } }
    }

    /// The summary of each method that was run.
    public var summaries: [MethodSummary] {
        methods.map { method in MethodSummary(method: method, outcomes: tasks.compactMap { $0.outcome(method) }) }
    }

    /// Each method's results per kind, kinds in the order they first appear.
    public var byKind: [KindSummary] {
        var kinds = [TaskKind]()
        for task in tasks where !kinds.contains(task.kind) { kinds.append(task.kind) }
        return kinds.flatMap { kind in
            methods.map { method in
                KindSummary(
                    kind: kind,
                    summary: MethodSummary(
                        method: method, outcomes: tasks.filter { $0.kind == kind }.compactMap { $0.outcome(method) }))
            }
        }
    }

    private enum CodingKeys: String, CodingKey {
        case model, settings, tasks, summaries
        case byKind = "by_kind"
        case startedAt = "started_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decode(String.self, forKey: .model)
        startedAt = try container.decode(String.self, forKey: .startedAt)
        settings = try container.decodeIfPresent([String: String].self, forKey: .settings) ?? [:]
        tasks = try container.decode([TaskResult].self, forKey: .tasks)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(model, forKey: .model)
        try container.encode(startedAt, forKey: .startedAt)
        try container.encode(settings, forKey: .settings)
        try container.encode(tasks, forKey: .tasks)
        try container.encode(summaries, forKey: .summaries)
        try container.encode(byKind, forKey: .byKind)
    }

    /// The report as pretty JSON with sorted keys.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        return try encoder.encode(self)
    }

    /// A plain-text table: one row per task and method, then one summary row per method.
    public func table() -> String {
        var rows = [
            [
                "task", "kind", "size", "method", "ok", "predicted", "expected", "iter", "tokens in/out", "time",
                "cost",
            ]
        ]
        for task in tasks {
            for method in methods {
                guard let outcome = task.outcome(method) else { continue }
                let first = method == methods.first
                rows.append([
                    first ? task.id : "", first ? task.kind.rawValue : "",
                    first ? TaskSuite.sizeLabel(roundedSize(task.sizeBytes)) : "", method.rawValue,
                    outcome.correct ? "yes" : "no", Self.shown(outcome), first ? Self.clip(task.expected, 18) : "",
                    outcome.iterations.map(String.init) ?? "-",
                    "\(Self.tokens(outcome.inputTokens))/\(Self.tokens(outcome.outputTokens))",
                    Self.time(outcome.wallSeconds), Self.money(outcome.costUSD),
                ])
            }
        }
        var out = Self.align(rows)
        var summary = [
            [
                "method", "accuracy", "tokens total", "tokens mean", "wall time", "mean time", "cost",
                "cost/correct", "tokens/correct",
            ]
        ]
        for item in summaries {
            summary.append([
                item.method.rawValue,
                "\(item.correct)/\(item.tasks) (\(Int((item.accuracy * 100).rounded()))%)",
                Self.tokens(item.totalTokens), Self.tokens(Int(item.meanTokens.rounded())),
                Self.time(item.wallSeconds), Self.time(item.meanWallSeconds), Self.money(item.costUSD),
                item.costPerCorrectUSD.map(Self.money) ?? "-",
                item.tokensPerCorrect.map { Self.tokens(Int($0.rounded())) } ?? "-",
            ])
        }
        out += "\n" + Self.align(summary)
        let kinds = byKind
        if Set(kinds.map(\.kind)).count > 1 {
            var perKind = [["kind", "method", "accuracy", "median time", "median tokens"]]
            for item in kinds {
                perKind.append([
                    item.kind.rawValue, item.summary.method.rawValue, "\(item.summary.correct)/\(item.summary.tasks)",
                    Self.time(item.summary.medianWallSeconds), Self.tokens(Int(item.summary.medianTokens.rounded())),
                ])
            }
            out += "\n" + Self.align(perKind)
        }
        return out
    }

    private func roundedSize(_ bytes: Int) -> Int {
        bytes >= 1_000_000 ? (bytes + 50_000) / 100_000 * 100_000 : (bytes + 500) / 1_000 * 1_000
    }

    private static func shown(_ outcome: MethodOutcome) -> String {
        if let predicted = outcome.predicted { return clip(predicted, 18) }
        switch outcome.status {
        case .answered: return "(empty)"
        case .noAnswer: return "(no answer)"
        case .timeout: return "(timeout)"
        case .error: return "(error)"
        }
    }

    static func clip(_ text: String, _ limit: Int) -> String {
        let flat = text.split(whereSeparator: { $0.isNewline || $0 == "\t" }).joined(separator: " ")
        return flat.count <= limit ? flat : String(flat.prefix(limit - 1)) + "…"
    }

    static func tokens(_ value: Int) -> String {
        value >= 10_000
            ? String(format: "%.0fk", Double(value) / 1000)
            : value >= 1_000 ? String(format: "%.1fk", Double(value) / 1000) : "\(value)"
    }

    static func time(_ seconds: Double) -> String {
        seconds >= 60
            ? String(format: "%dm%02ds", Int(seconds) / 60, Int(seconds) % 60) : String(format: "%.1fs", seconds)
    }

    static func money(_ value: Double) -> String { String(format: "$%.4f", value) }

    static func align(_ rows: [[String]]) -> String {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ").replacingOccurrences(of: " +$", with: "", options: .regularExpression)
        }.joined(separator: "\n") + "\n"
    }
}
