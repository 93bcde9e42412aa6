import Foundation
import RLM
import RLMSandbox
import RLMTasks
import Testing

/// Every generated answer is recomputed here from the context alone, with regular expressions the generators do not
/// use, for several seeds and sizes.
@Suite("Task generators")
struct GeneratorTests {
    static let seeds: [UInt64] = [1, 2, 7, 1234]
    static let sizes = [20_000, 100_000, 300_000]

    static func text(_ task: BenchTask) throws -> String {
        guard case .text(let text) = task.context else { throw Failure("expected a text context for \(task.id)") }
        return text
    }

    static func documents(_ task: BenchTask) throws -> [String] {
        guard case .documents(let documents) = task.context else {
            throw Failure("expected documents for \(task.id)")
        }
        return documents
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    // MARK: determinism

    @Test func sameSeedGivesByteIdenticalFiles() throws {
        let first = try TaskFile(tasks: TaskSuite.generate(seed: 42, count: 4, sizes: [30_000, 60_000])).encoded()
        let second = try TaskFile(tasks: TaskSuite.generate(seed: 42, count: 4, sizes: [30_000, 60_000])).encoded()
        #expect(first == second)
    }

    @Test func differentSeedsGiveDifferentTasks() throws {
        let a = TaskSuite.generate(seed: 1, count: 4, sizes: [30_000])
        let b = TaskSuite.generate(seed: 2, count: 4, sizes: [30_000])
        for (x, y) in zip(a, b) {
            #expect(x.context != y.context, "\(x.id) and \(y.id)")
        }
        #expect(try TaskFile(tasks: a).encoded() != TaskFile(tasks: b).encoded())
    }

    /// A fingerprint of seed 1, so a change in any generator (or in the RNG) is noticed: regenerated task files and
    /// the bundled sample would no longer match. Update it deliberately, with the sample (samples/generate.sh).
    @Test func generatorOutputIsPinned() throws {
        var rng = SeededRandom(seed: 1)
        #expect([rng.next(), rng.next()] == [0x910A_2DEC_8902_5CC1, 0xBEEB_8DA1_658E_EC67])
        let digest = fnv1a(try TaskFile(tasks: TaskSuite.generate(seed: 1, count: 4, sizes: [5_000])).encoded())
        #expect(digest == Self.pinnedDigest, "seed 1 changed: fnv1a is \(String(digest, radix: 16))")
    }

    static let pinnedDigest: UInt64 = 0x95DD_B331_E7CC_D9FA

    func fnv1a(_ data: Data) -> UInt64 {
        data.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    @Test func eachTaskHasItsOwnStream() {
        // Asking for fewer tasks, or other sizes for later tasks, does not change the first task.
        let few = TaskSuite.generate(seed: 9, count: 1, sizes: [20_000])
        let more = TaskSuite.generate(seed: 9, count: 3, sizes: [20_000, 40_000])
        #expect(few[0] == more[0])
    }

    @Test func rngDrawsStayInRange() {
        var rng = SeededRandom(seed: 5)
        for _ in 0..<10_000 {
            #expect((3...9).contains(rng.int(in: 3...9)))
            let unit = rng.unit()
            #expect(unit >= 0 && unit < 1)
        }
        #expect(rng.shuffled(Array(0..<50)).sorted() == Array(0..<50))
        var counts = [0, 0, 0]
        for _ in 0..<3_000 { counts[rng.weightedIndex([1, 0, 2])] += 1 }
        #expect(counts[1] == 0)
        #expect(counts[2] > counts[0])
    }

    // MARK: sizes

    @Test(arguments: Array(TaskKind.generated.prefix(4)), [100_000, 300_000, 1_000_000])
    func sizesLandWithinTenPercent(kind: TaskKind, size: Int) {
        let task = TaskSuite.task(seed: 3, index: 0, kind: kind, sizeBytes: size)
        let actual = BenchTask.byteCount(of: task.context)
        #expect(task.sizeBytes == actual)
        #expect(abs(Double(actual - size)) <= Double(size) * 0.1, "\(task.id): \(actual) bytes for \(size)")
    }

    @Test(arguments: [1, 2, 3, 4, 5])
    func defaultCountMeetsEveryKindWithEverySize(sizeCount: Int) {
        let sizes = (1...sizeCount).map { $0 * 1_000 }
        let kinds = TaskKind.generated
        let tasks = TaskSuite.generate(seed: 1, count: kinds.count * sizes.count, sizes: sizes, kinds: kinds)
        // The id ends with the requested size's label.
        let pairs = Set(tasks.map { "\($0.kind.rawValue) \($0.id.split(separator: "-").last!)" })
        #expect(pairs.count == kinds.count * sizes.count)
    }

    @Test func fewTasksAlternateSizes() {
        let tasks = TaskSuite.generate(seed: 1, count: 4, sizes: [100_000, 300_000])
        #expect(
            tasks.map(\.id) == [
                "s1-00-counting-100k", "s1-01-needle-300k", "s1-02-aggregation-100k", "s1-03-source_tree-300k",
            ])
    }

    @Test func unknownKindsFallBackToCounting() {
        let task = TaskSuite.task(seed: 1, index: 0, kind: TaskKind(rawValue: "poetry"), sizeBytes: 5_000)
        #expect(task.kind == .counting)
        #expect(task.id.contains("-counting-"))
    }

    @Test func standardSuiteMixesKindsAndSizes() {
        let plan = TaskSuite.standard(seed: 1).map { ($0.kind, $0.id) }
        #expect(plan.count == 12)
        for kind in TaskKind.generated.prefix(4) { #expect(plan.filter { $0.0 == kind }.count == 3) }
        #expect(Set(plan.map(\.1)).count == 12)
    }

    @Test func sizesParse() {
        #expect(TaskSuite.parseSize("100k") == 100_000)
        #expect(TaskSuite.parseSize("1m") == 1_000_000)
        #expect(TaskSuite.parseSize("1.5M") == 1_500_000)
        #expect(TaskSuite.parseSize("300KB") == 300_000)
        #expect(TaskSuite.parseSize("5000") == 5_000)
        #expect(TaskSuite.parseSize("abc") == nil)
        #expect(TaskSuite.parseSize("-1k") == nil)
        #expect(TaskSuite.sizeLabel(100_000) == "100k")
        #expect(TaskSuite.sizeLabel(1_500_000) == "1.5m")
        #expect(TaskSuite.sizeLabel(2_000_000) == "2m")
    }

    // MARK: answers, recomputed

    @Test(arguments: seeds, sizes)
    func countingAnswersAreRight(seed: UInt64, size: Int) throws {
        for index in 0..<2 {
            let task = TaskSuite.task(seed: seed, index: index, kind: .counting, sizeBytes: size)
            let text = try Self.text(task)
            let count: Int
            if let level = capture(#"^How many (\w+) lines are there for service (svc-\d+)\?$"#, in: task.query) {
                let service = try #require(capture(#"service (svc-\d+)\?"#, in: task.query))
                count =
                    matches(
                        #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \#(level) \#(service) req="#, in: text,
                        options: .anchorsMatchLines
                    ).count
            } else {
                let path = try #require(capture(#"requests to (\S+) returned"#, in: task.query))
                let status = try #require(capture(#"status (\d+)\?"#, in: task.query))
                count =
                    matches(
                        #"^\S+Z \w+ svc-\d+ req=[0-9a-f]{8} method=\w+ path=\#(path) status=\#(status) "#, in: text,
                        options: .anchorsMatchLines
                    ).count
            }
            #expect(task.answer == String(count), "\(task.id): \(task.query)")
            #expect(task.answerKind == .integer)
            #expect(count > 0 || task.query.contains(" lines "), "\(task.id): a status question always has hits")
        }
    }

    @Test func logLinesHaveTheDocumentedShape() throws {
        let text = try Self.text(TaskSuite.task(seed: 1, index: 0, kind: .counting, sizeBytes: 50_000))
        let shaped = lines(text).filter { $0.hasPrefix("2026-") }
        #expect(shaped.count > 300)
        for line in shaped {
            #expect(
                contains(
                    #"^2026-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARN|ERROR) svc-([1-9]|1\d|20) req=([0-9a-f]{8} method=[A-Z]+ path=/\S+ status=\d{3} dur_ms=\d+|-) msg="[^"]+"$"#,
                    in: line), "\(line)")
        }
        // Traceback lines exist but carry no level or service.
        let others = lines(text).filter { !$0.hasPrefix("2026-") }
        #expect(others.allSatisfy { !$0.contains("svc-") && !$0.contains("ERROR ") })
        // Services and levels are varied.
        #expect(Set(shaped.map { $0.split(separator: " ")[2] }).count == 20)
        #expect(Set(shaped.map { $0.split(separator: " ")[1] }).count == 4)
    }

    @Test(arguments: seeds, sizes)
    func needleAnswersAreRightAndUnique(seed: UInt64, size: Int) throws {
        for index in 0..<3 {
            let task = TaskSuite.task(seed: seed, index: index, kind: .needle, sizeBytes: size)
            let text = try Self.text(task)
            let thing = try #require(capture(#"^What is the (.+) for \w+ \S+\?$"#, in: task.query))
            let holder = try #require(capture(#" for (\w+) \S+\?$"#, in: task.query))
            let name = try #require(capture(#" (\S+)\?$"#, in: task.query))
            let escaped = NSRegularExpression.escapedPattern(for: name)
            let found = matches(#"the \#(thing) for \#(holder) \#(escaped) is ([A-Za-z0-9_-]+)"#, in: text)
            #expect(found == [task.answer], "\(task.id): \(found)")
            // Decoys: the same fact for at least three other names.
            let all = matches(#"the \#(thing) for \#(holder) (\S+) is "#, in: text)
            #expect(Set(all).count >= 4, "\(task.id): \(all)")
            #expect(all.filter { $0 == name }.count == 1)
            // The fact is not in the sample the engine shows first.
            #expect(!text.prefix(600).contains(task.answer))
            #expect(task.answerKind == .text)
        }
    }

    @Test(arguments: seeds, sizes)
    func aggregationAnswersAreRight(seed: UInt64, size: Int) throws {
        for index in 0..<4 {
            let task = TaskSuite.task(seed: seed, index: index, kind: .aggregation, sizeBytes: size)
            let documents = try Self.documents(task)
            #expect(documents.allSatisfy { $0.hasPrefix("### ") })
            #expect(Set(documents.map { $0.prefix(while: { $0 != "\n" }) }).count == documents.count)
            let expected: String
            if let customer = capture(#"orders from customer (C-\d{4})\?"#, in: task.query) {
                let sum = documents.filter { $0.contains("\nCustomer: \(customer)\n") }.map { document in
                    Int(capture(#"\nTotal: \$(\d+)\.00\n"#, in: document) ?? "") ?? -1_000_000
                }.reduce(0, +)
                expected = String(sum)
            } else if task.query.hasPrefix("Which customer") {
                var counts = [String: Int]()
                for document in documents {
                    if let customer = capture(#"\nCustomer: (C-\d{4})\n"#, in: document) {
                        counts[customer, default: 0] += 1
                    }
                }
                let top = counts.values.max() ?? 0
                let leaders = counts.filter { $0.value == top }.map(\.key)
                #expect(leaders.count == 1, "\(task.id): a tie for the most")
                expected = leaders.first ?? ""
                if task.query.contains("orders") { #expect(documents[0].contains("\nOrder ORD-")) }
                if task.query.contains("tickets") { #expect(documents[0].contains("\nTicket TCK-")) }
            } else if task.query == "How many invoices have the status overdue?" {
                expected = String(documents.filter { $0.hasSuffix("\nStatus: overdue\n") }.count)
            } else if task.query.hasPrefix("What is the total amount due") {
                expected = String(
                    documents.filter { $0.hasSuffix("\nStatus: overdue\n") }.map { document in
                        Int(capture(#"\nAmount due: \$(\d+)\.00\n"#, in: document) ?? "") ?? -1_000_000
                    }.reduce(0, +))
            } else if task.query == "How many tickets with priority P1 have the status open?" {
                expected = String(
                    documents.filter { $0.contains("\nPriority: P1\n") && $0.contains("\nStatus: open\n") }.count)
            } else {
                Issue.record("unrecognized question: \(task.query)")
                continue
            }
            #expect(task.answer == expected, "\(task.id): \(task.query)")
        }
    }

    @Test(arguments: seeds, sizes)
    func sourceTreeAnswersAreRight(seed: UInt64, size: Int) throws {
        for index in 0..<4 {
            let task = TaskSuite.task(seed: seed, index: index, kind: .sourceTree, sizeBytes: size)
            let documents = try Self.documents(task)
            let paths = documents.map { String($0.prefix(while: { $0 != "\n" }).dropFirst(4)) }
            #expect(documents.allSatisfy { $0.hasPrefix("### ") })
            #expect(Set(paths).count == paths.count, "paths are unique")
            if let name = capture(#"defines the function `(\w+)`\?"#, in: task.query) {
                let definers = zip(paths, documents).filter { _, document in
                    contains(#"^[ \t]*def \#(name)\("#, in: document, options: .anchorsMatchLines)
                }.map(\.0)
                #expect(definers == [task.answer], "\(task.id): \(definers)")
                #expect(task.answerKind == .path)
                // The near miss and the caller exist (in a tree with enough files).
                let mentions = documents.filter { $0.contains(name) }.count
                #expect(mentions >= 2 || documents.count < 10, "\(task.id): \(mentions) files mention \(name)")
            } else {
                let prefix = try #require(capture(#"files under (\S+/)\?"#, in: task.query))
                var count = 0
                for (path, document) in zip(paths, documents) where path.hasPrefix(prefix) {
                    count += matches(#"^[ \t]*def \w+\("#, in: document, options: .anchorsMatchLines).count
                }
                #expect(task.answer == String(count), "\(task.id): \(task.query)")
                #expect(count > 0)
                #expect(task.answerKind == .integer)
            }
        }
    }

    @Test func sourceTreeHasNearMissDirectories() throws {
        let task = TaskSuite.task(seed: 2, index: 0, kind: .sourceTree, sizeBytes: 600_000)
        let paths = try Self.documents(task).map { $0.prefix(while: { $0 != "\n" }) }
        #expect(paths.contains { $0.hasPrefix("### tests/") })
        #expect(paths.contains { $0.hasPrefix("### src/") && $0.split(separator: "/").count >= 4 })
        #expect(paths.first == "### README.md")
    }

    @Test func sampleIsTheDocumentedDemo() throws {
        let task = TaskSuite.sample()
        let text = try Self.text(task)
        #expect(task.query == "How many ERROR lines are there for service svc-7?")
        #expect(task.answer == "43", "samples/README.md names 43")
        #expect(task.answer == String(lines(text).filter { $0.contains(" ERROR svc-7 ") }.count))
        #expect(abs(text.utf8.count - 1_500_000) < 1_000)
        // The committed file is exactly what the generator makes.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let committed = try Data(contentsOf: root.appendingPathComponent("samples/app.log"))
        #expect(committed == Data(text.utf8), "samples/app.log differs from the generator: run samples/generate.sh")
    }
}
