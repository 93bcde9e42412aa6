import Foundation
import Glibc
import RLMTrajectory
import Synchronization
import Testing

@testable import RLM

/// The lines of a file, each decoded as a JSON object (`nil` for a line that is not one).
func jsonLines(_ path: String) throws -> [[String: Any]?] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    #expect(text.isEmpty || text.hasSuffix("\n"))
    return text.split(separator: "\n").map { line in
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }
}

func entry(run: String = "run-20250101-120000-aaaa1", time: Date = Date(), outcome: AuditLog.Outcome = .answered)
    -> AuditLog.Entry
{
    AuditLog.Entry(
        time: time, run: run, models: ["gpt-4o-mini", "gpt-4o"], inputTokens: 120, outputTokens: 30, costUSD: 0.0021,
        durationMs: 1500, outcome: outcome, trajectory: "/state/trajectories/\(run).jsonl")
}

@Suite("Audit log")
struct AuditLogTests {
    @Test func theLogIsBorn0600InA0700DirectoryWithEveryField() throws {
        let scratch = try Scratch()
        let path = scratch.file("state/swiftrlm/audit.jsonl")
        let log = AuditLog(path: path)
        try log.append(entry(time: Date(timeIntervalSince1970: 1_735_732_800.25)))
        try log.append(
            AuditLog.Entry(
                principal: .apiKey(id: "key_7"), run: nil, models: [], durationMs: 3, outcome: .error,
                errorKind: "setup", trajectory: nil))
        #expect(mode(path) == 0o600)
        #expect(mode(scratch.file("state/swiftrlm")) == 0o700)
        let lines = try jsonLines(path)
        #expect(lines.count == 2)
        let first = try #require(lines[0])
        #expect(
            Set(first.keys) == [
                "time", "principal", "run", "models", "input_tokens", "output_tokens", "cost_usd", "duration_ms",
                "outcome", "error_kind", "trajectory",
            ])
        #expect(first["time"] as? String == "2025-01-01T12:00:00.250Z")
        let principal = try #require(first["principal"] as? [String: Any])
        #expect(principal["kind"] as? String == "user")
        #expect(principal["uid"] as? Int == Int(getuid()))
        #expect((principal["name"] as? String)?.isEmpty == false)
        #expect(first["models"] as? [String] == ["gpt-4o-mini", "gpt-4o"])
        #expect(first["input_tokens"] as? Int == 120 && first["output_tokens"] as? Int == 30)
        #expect(first["cost_usd"] as? Double == 0.0021)
        #expect(first["outcome"] as? String == "answered")
        #expect(first["error_kind"] is NSNull)
        #expect(first["run"] as? String == "run-20250101-120000-aaaa1")
        let second = try #require(lines[1])
        #expect((second["principal"] as? [String: Any])?["id"] as? String == "key_7")
        #expect(second["run"] is NSNull && second["trajectory"] is NSNull && second["cost_usd"] is NSNull)
        #expect(second["outcome"] as? String == "error" && second["error_kind"] as? String == "setup")
    }

    @Test func concurrentAppendsProduceWholeLines() async throws {
        let scratch = try Scratch()
        let path = scratch.file("audit.jsonl")
        // Long lines (past PIPE_BUF once the path is in), from many writers at once, each with its own descriptor.
        let longPath = "/state/" + String(repeating: "p", count: 900)
        // Blocking work runs off the two-thread cooperative pool: the other suites' tests must not wait on it.
        await offThePool {
            DispatchQueue.concurrentPerform(iterations: 8) { writer in
                let log = AuditLog(path: path)
                for index in 0..<150 {
                    var line = entry(run: "run-20250101-120000-w\(writer)n\(index)")
                    line.trajectory = longPath
                    line.models = (0..<16).map { "model-\($0)-" + String(repeating: "m", count: 150) }
                    try? log.append(line)
                }
            }
        }
        let lines = try jsonLines(path)
        #expect(lines.count == 8 * 150)
        #expect(lines.allSatisfy { $0 != nil })
        #expect(Set(lines.compactMap { $0?["run"] as? String }).count == 8 * 150)
        #expect(mode(path) == 0o600)
    }

    @Test func noSecretReachesTheFile() throws {
        let scratch = try Scratch()
        let path = scratch.file("audit.jsonl")
        let secret = "k9-VERY-SECRET-VALUE-0123456789"
        let shaped = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aBcD"
        let log = AuditLog(path: path, secrets: [secret])
        var planted = entry(run: "run-\(secret)")
        planted.models = ["model-\(secret)", shaped]
        planted.trajectory = "/tmp/\(secret)/\(shaped).jsonl"
        planted.errorKind = "x\(secret)"
        planted.principal = .user(name: "user-\(secret)", uid: 1)
        try log.append(planted)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains(secret) && !text.contains("VERY-SECRET"))
        #expect(!text.contains(shaped) && !text.contains("Ab3dEf6hIj9kLm2nOp5q"))
        #expect(text.contains("[REDACTED]"))
        #expect(try jsonLines(path).count == 1)
    }

    @Test func longFieldsAreCutSoLinesStayShort() throws {
        let log = AuditLog(path: "/nonexistent/audit.jsonl")
        var big = entry()
        big.trajectory = "/" + String(repeating: "t", count: 100_000)
        big.models = (0..<1_000).map { String(repeating: "m", count: 1_000 + $0) }
        big.errorKind = String(repeating: "e", count: 10_000)
        big.run = String(repeating: "r", count: 10_000)
        big.principal = .user(name: String(repeating: "n", count: 10_000), uid: 0)
        let line = log.line(for: big)
        #expect(line.utf8.count < 4_096 + 1_024, "\(line.utf8.count) bytes")
        #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) is [String: Any])
    }

    @Test func aLinkAFIFOOrAnotherUsersFileIsNeverWritten() throws {
        let scratch = try Scratch()
        let outside = try Scratch()
        let target = try outside.write("victim", "untouched\n", mode: 0o644)
        let link = scratch.file("audit.jsonl")
        #expect(symlink(target, link) == 0)
        #expect(throws: (any Error).self) { try AuditLog(path: link).append(entry()) }
        #expect(throws: (any Error).self) { try AuditLog(path: link).prune(olderThan: .zero) }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "untouched\n")
        #expect(mode(target) == 0o644)

        let fifo = scratch.file("fifo.jsonl")
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: (any Error).self) { try AuditLog(path: fifo).append(entry()) }

        if geteuid() == 0 {
            let theirs = try scratch.write("theirs.jsonl", "", mode: 0o644)
            chown(theirs, 65_534, 65_534)
            #expect(throws: (any Error).self) { try AuditLog(path: theirs).append(entry()) }
            #expect(try String(contentsOfFile: theirs, encoding: .utf8).isEmpty)
        }
        // A file of ours found looser than 0600 is tightened before it is written.
        let loose = try scratch.write("loose.jsonl", "", mode: 0o644)
        try AuditLog(path: loose).append(entry())
        #expect(mode(loose) == 0o600)
    }

    @Test func pruneKeepsNewerLinesAndReplacesTheFileAtomically() throws {
        let scratch = try Scratch()
        let path = scratch.file("audit.jsonl")
        let log = AuditLog(path: path)
        let now = Date()
        for days in [400.0, 100, 40, 10, 1] {
            try log.append(entry(run: "run-\(Int(days))", time: now.addingTimeInterval(-days * 86_400)))
        }
        // A line the prune cannot date stays; so does a line cut short at the end.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("not json\n{\"time\":\"2020-01-01T00:00:00Z\",\"run\":\"cut".utf8))
        try handle.close()
        let before = try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int

        #expect(try log.prune(olderThan: .seconds(30 * 86_400), now: now) == 3)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let runs = text.split(separator: "\n").map { line in
            ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])?["run"] as? String
                ?? String(line.prefix(8))
        }
        #expect(runs == ["run-10", "run-1", "not json", #"{"time":"#])
        #expect(text.hasSuffix("\n"))
        #expect(mode(path) == 0o600)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int != before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["audit.jsonl"])
        #expect(try AuditLog(path: scratch.file("missing.jsonl")).prune(olderThan: .zero) == 0)
    }

    @Test func appendsDuringPrunesAreNeverLost() async throws {
        let scratch = try Scratch()
        let path = scratch.file("audit.jsonl")
        let appended = 4 * 100
        let failures = Mutex<[String]>([])
        await offThePool {
            DispatchQueue.concurrentPerform(iterations: 5) { worker in
                let log = AuditLog(path: path)
                do {
                    if worker == 4 {
                        // Rewrites that keep everything, racing the appends.
                        for _ in 0..<20 { try log.prune(olderThan: .seconds(86_400)) }
                    } else {
                        for index in 0..<100 { try log.append(entry(run: "w\(worker)-\(index)")) }
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        let lines = try jsonLines(path)
        #expect(lines.count == appended)
        #expect(Set(lines.compactMap { $0?["run"] as? String }).count == appended)
    }

    @Test func entriesFromResultsAndFailures() throws {
        let usage = {
            var usage = RunUsage()
            usage.tokens = TokenUsage(inputTokens: 5, outputTokens: 7)
            usage.costUSD = 0.5
            return usage
        }()
        let path = "/state/trajectories/run-20250101-120000-aaaa1.3.jsonl"
        let answered = AuditLog.Entry(
            result: RLMResult(answer: "42", status: .answered, iterations: 2, usage: usage, duration: .seconds(2)),
            models: ["m"], trajectory: path)
        #expect(answered.outcome == .answered && answered.run == "run-20250101-120000-aaaa1")
        #expect(answered.inputTokens == 5 && answered.outputTokens == 7 && answered.costUSD == 0.5)
        #expect(answered.durationMs == 2_000 && answered.errorKind == nil)
        let silent = AuditLog.Entry(
            result: RLMResult(answer: nil, status: .answered, iterations: 2, usage: usage, duration: .zero),
            models: ["m"], trajectory: nil)
        #expect(silent.outcome == .noAnswer && silent.run == nil)
        let exhausted = AuditLog.Entry(
            result: RLMResult(
                answer: nil, status: .budgetExhausted(BudgetExhausted(limit: .tokens, message: "out")), iterations: 2,
                usage: usage, duration: .zero),
            models: ["m"], trajectory: path)
        #expect(exhausted.outcome == .budgetExhausted)
        let failed = AuditLog.Entry(errorKind: "provider", models: ["m"], trajectory: path, duration: .seconds(1))
        #expect(failed.outcome == .error && failed.errorKind == "provider" && failed.inputTokens == 0)
        let stopped = AuditLog.Entry(
            errorKind: "interrupted", models: [], trajectory: nil, usage: usage, duration: .milliseconds(5))
        #expect(stopped.outcome == .interrupted && stopped.costUSD == 0.5 && stopped.durationMs == 5)
        #expect(
            AuditLog.Outcome.allCases.map(\.rawValue) == [
                "answered", "budget_exhausted", "no_answer", "error", "interrupted",
            ])
    }
}

/// Runs blocking work on a Dispatch thread and waits for it without holding a thread of the cooperative pool (two
/// threads on a two-core machine, shared by every test running at once).
func offThePool(_ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().async {
            body()
            done.resume()
        }
    }
}
