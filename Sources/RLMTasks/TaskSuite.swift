import Foundation

/// Builds tasks from a seed. The same seed gives byte-identical tasks on every run and machine: every random draw
/// comes from ``SeededRandom``, and each task has its own stream (derived from the seed, its position, kind and size),
/// so changing one task's parameters never changes another task.
public enum TaskSuite {
    /// The sizes of the standard suite, in bytes: 100 KB, 300 KB, 1 MB, 2 MB, 5 MB.
    public static let standardSizes = [100_000, 300_000, 1_000_000, 2_000_000, 5_000_000]

    /// Twelve tasks: three of each kind, spread over 100 KB to 5 MB.
    /// - Parameter seed: the seed.
    public static func standard(seed: UInt64) -> [BenchTask] {
        let plan: [(TaskKind, Int)] = [
            (.counting, 100_000), (.needle, 300_000), (.aggregation, 100_000), (.sourceTree, 300_000),
            (.counting, 1_000_000), (.needle, 2_000_000), (.aggregation, 1_000_000), (.sourceTree, 1_000_000),
            (.counting, 5_000_000), (.needle, 5_000_000), (.aggregation, 2_000_000), (.sourceTree, 2_000_000),
        ]
        return plan.enumerated().map { index, item in
            task(seed: seed, index: index, kind: item.0, sizeBytes: item.1)
        }
    }

    /// The plan of ``full(seed:)``: one task per kind, simple kinds then hard ones, at sizes a model on a CPU can work
    /// through (100–300 KB), except `needle_decoys` at 20 MB.
    public static let fullPlan: [(kind: TaskKind, sizeBytes: Int)] = [
        (.counting, 100_000), (.needle, 300_000), (.aggregation, 100_000), (.sourceTree, 300_000),
        (.topK, 100_000), (.distinct, 300_000), (.mentions, 200_000),
        (.multiStep, 100_000), (.join, 200_000), (.jsonl, 300_000), (.csv, 100_000), (.needleDecoys, 20_000_000),
        (.meaning, 200_000), (.meaningCount, 100_000),
    ]

    /// Fourteen tasks: one per kind (``TaskKind/simple`` then ``TaskKind/hard``), 100–300 KB each except
    /// `needle_decoys` at 20 MB.
    /// - Parameter seed: the seed.
    public static func full(seed: UInt64) -> [BenchTask] {
        fullPlan.enumerated().map { index, item in
            task(seed: seed, index: index, kind: item.kind, sizeBytes: item.sizeBytes)
        }
    }

    /// The tasks of ``full(seed:)`` whose kind is in `kinds` (same ids, same contexts).
    /// - Parameters:
    ///   - seed: the seed.
    ///   - kinds: which kinds to keep (``TaskKind/simple`` or ``TaskKind/hard``).
    public static func full(seed: UInt64, kinds: [TaskKind]) -> [BenchTask] {
        fullPlan.enumerated().filter { kinds.contains($0.element.kind) }.map { index, item in
            task(seed: seed, index: index, kind: item.kind, sizeBytes: item.sizeBytes)
        }
    }

    /// `count` tasks cycling through `kinds` and `sizes`: task `i` has kind `kinds[i % K]` and size
    /// `sizes[(i + i / lcm(K, S)) % S]`, so the first `K × S` tasks meet every kind with every size, and the first
    /// `lcm(K, S)` simply alternate (4 kinds and sizes 100k, 300k: counting 100k, needle 300k, aggregation 100k, …).
    /// - Parameters:
    ///   - seed: the seed.
    ///   - count: how many tasks.
    ///   - sizes: context sizes in bytes.
    ///   - kinds: which kinds, in order (default: all generated kinds).
    public static func generate(
        seed: UInt64, count: Int, sizes: [Int], kinds: [TaskKind] = TaskKind.generated
    ) -> [BenchTask] {
        guard !sizes.isEmpty, !kinds.isEmpty else { return [] }
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let cycle = kinds.count / gcd(kinds.count, sizes.count) * sizes.count
        return (0..<max(0, count)).map { index in
            task(
                seed: seed, index: index, kind: kinds[index % kinds.count],
                sizeBytes: sizes[(index + index / cycle) % sizes.count])
        }
    }

    /// One task. Its id is `s<seed>-<index>-<kind>-<size>` (e.g. `s1-03-source_tree-300k`).
    /// - Parameters:
    ///   - seed: the suite's seed.
    ///   - index: the task's position (part of its random stream and id).
    ///   - kind: a generated kind (others fall back to counting).
    ///   - sizeBytes: the context's target size; the result lands within a few percent of it.
    public static func task(seed: UInt64, index: Int, kind requested: TaskKind, sizeBytes: Int) -> BenchTask {
        let kind = TaskKind.generated.contains(requested) ? requested : .counting
        let kindNumber = UInt64(TaskKind.generated.firstIndex(of: kind) ?? 0)
        var rng = SeededRandom(
            seed: seed, stream: UInt64(index) << 40 ^ kindNumber << 32 ^ UInt64(truncatingIfNeeded: sizeBytes))
        let size = max(1_000, sizeBytes)
        let generated: GeneratedTask
        switch kind {
        case .needle: generated = NeedleTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .aggregation: generated = AggregationTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .sourceTree: generated = SourceTreeTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .topK: generated = TopKTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .distinct: generated = DistinctTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .mentions: generated = MentionsTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .multiStep: generated = MultiStepTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .join: generated = JoinTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .jsonl: generated = JSONLinesTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .csv: generated = CSVTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .needleDecoys: generated = NeedleDecoysTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .meaning: generated = MeaningTaskGenerator.make(rng: &rng, sizeBytes: size)
        case .meaningCount: generated = MeaningCountTaskGenerator.make(rng: &rng, sizeBytes: size)
        default: generated = CountingTaskGenerator.make(rng: &rng, sizeBytes: size)
        }
        let indexLabel = index < 10 ? "0\(index)" : "\(index)"
        return BenchTask(
            id: "s\(seed)-\(indexLabel)-\(kind.rawValue)-\(sizeLabel(sizeBytes))", kind: kind,
            sizeBytes: BenchTask.byteCount(of: generated.context), query: generated.query,
            context: generated.context, answer: generated.answer, answerKind: generated.answerKind)
    }

    /// A counting task over a log, with a chosen question (for a demo whose answer is known in advance).
    /// - Parameters:
    ///   - seed: the seed.
    ///   - sizeBytes: the log's target size.
    ///   - question: what to count.
    public static func countingTask(seed: UInt64, sizeBytes: Int, question: CountingQuestion) -> BenchTask {
        var rng = SeededRandom(seed: seed, stream: 0xC0_0A7)
        let generated = CountingTaskGenerator.make(rng: &rng, sizeBytes: max(1_000, sizeBytes), question: question)
        return BenchTask(
            id: "s\(seed)-counting-\(sizeLabel(sizeBytes))", kind: .counting,
            sizeBytes: BenchTask.byteCount(of: generated.context), query: generated.query,
            context: generated.context, answer: generated.answer, answerKind: generated.answerKind)
    }

    /// The bundled demo: `samples/app.log` (≈1.5 MB, seed 2026) and "How many ERROR lines are there for service
    /// svc-7?".
    public static func sample() -> BenchTask {
        var task = countingTask(
            seed: 2026, sizeBytes: 1_500_000, question: .levelForService(level: "ERROR", service: "svc-7"))
        task.id = "sample-app-log"
        return task
    }

    /// Parses a size: `100k`, `1.5m`, `300KB`, `2MB`, `5000` (k = 1,000 bytes, m = 1,000,000).
    /// - Parameter text: the size.
    /// - Returns: bytes, or `nil` when the text is not a size.
    public static func parseSize(_ text: String) -> Int? {
        var value = text.trimmingCharacters(in: .whitespaces).lowercased()
        if value.hasSuffix("b") { value.removeLast() }
        var multiplier = 1.0
        if value.hasSuffix("k") {
            multiplier = 1_000
            value.removeLast()
        } else if value.hasSuffix("m") {
            multiplier = 1_000_000
            value.removeLast()
        }
        guard let number = Double(value), number > 0, number * multiplier <= 1e9 else { return nil }
        return Int((number * multiplier).rounded())
    }

    /// A human size in decimal units: `812 B`, `100.4 KB`, `1.50 MB`.
    /// - Parameter bytes: the size.
    public static func describeSize(_ bytes: Int) -> String {
        if bytes < 1_000 { return "\(bytes) B" }
        if bytes < 1_000_000 { return String(format: "%.1f KB", Double(bytes) / 1_000) }
        return String(format: "%.2f MB", Double(bytes) / 1_000_000)
    }

    /// A short size label: `100k`, `1m`, `1.5m`, `2500`.
    /// - Parameter bytes: the size.
    public static func sizeLabel(_ bytes: Int) -> String {
        if bytes >= 1_000_000 && bytes % 100_000 == 0 {
            let tenths = bytes / 100_000
            return tenths % 10 == 0 ? "\(tenths / 10)m" : "\(tenths / 10).\(tenths % 10)m"
        }
        if bytes >= 1_000 && bytes % 1_000 == 0 { return "\(bytes / 1_000)k" }
        return "\(bytes)"
    }
}
