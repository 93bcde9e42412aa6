import Foundation
import Glibc
import RLM
import RLMTrajectory
import Testing

/// A scratch directory, removed when the test ends.
final class Scratch {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-traj-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// `path/name`.
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Writes `text` to `name` with `mode`, last modified `modified` (default now).
    @discardableResult
    func write(_ name: String, _ text: String, mode: mode_t = 0o600, modified: Date? = nil) throws -> String {
        let target = file(name)
        try FileManager.default.createDirectory(
            atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: target))
        chmod(target, mode)
        if let modified { touch(target, modified) }
        return target
    }
}

/// Sets a file's modification time.
func touch(_ path: String, _ date: Date) {
    let seconds = Int(date.timeIntervalSince1970)
    var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
    utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
}

/// A file's permission bits (of the link itself for a link).
func mode(_ path: String) -> mode_t {
    var info = stat()
    return lstat(path, &info) == 0 ? info.st_mode & 0o7777 : 0
}

/// One trajectory line in the docs/TRAJECTORY.md shape.
func trajectoryLine(
    run: String, seq: Int, kind: String, data: [String: Any] = [:], time: Double = 1_735_732_800,
    usage: [String: Any]? = nil
) -> String {
    var object: [String: Any] = [
        "schema": 1, "run": run, "seq": seq, "time": time + Double(seq), "kind": kind, "depth": 0, "scope": "root",
        "iteration": 0, "data": data,
    ]
    if let usage { object["usage"] = usage }
    let json = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    return String(decoding: json, as: UTF8.self) + "\n"
}

/// A whole run: started, one model response, finished.
func runLines(
    _ run: String, query: String, status: String = "answered", answer: String? = "42", firstSeq: Int = 0,
    model: String = "gpt-4o-mini"
) -> String {
    trajectoryLine(run: run, seq: firstSeq, kind: "run_started", data: ["query": query, "model": model])
        + trajectoryLine(
            run: run, seq: firstSeq + 1, kind: "model_response",
            data: ["model": model, "text": "FINAL(42)", "input_tokens": 10, "output_tokens": 2])
        + trajectoryLine(
            run: run, seq: firstSeq + 2, kind: "run_finished",
            data: ["status": status, "answer": answer ?? NSNull(), "duration_ms": 1200],
            usage: ["input_tokens": 10, "output_tokens": 2, "cost_usd": 0.001])
}

@Suite("Trajectory store")
struct TrajectoryStoreTests {
    static let a = "run-20250101-120000-aaaa1"
    static let b = "run-20250102-120000-bbbb2"

    @Test func theSchemaVersionIsOne() {
        #expect(RLMTrajectory.schemaVersion == 1)
    }

    @Test func listSummarisesRotatedPartsAndConversations() throws {
        let scratch = try Scratch()
        // A conversation of two runs rotated into three parts; the first run answered, the last ran out of budget.
        try scratch.write("\(Self.a).jsonl", runLines("\(Self.a)", query: "How many errors?"))
        try scratch.write(
            "\(Self.a).2.jsonl",
            trajectoryLine(run: "\(Self.a)-2", seq: 3, kind: "run_started", data: ["query": "And warnings?"]))
        try scratch.write(
            "\(Self.a).3.jsonl",
            trajectoryLine(
                run: "\(Self.a)-2", seq: 4, kind: "run_finished",
                data: ["status": "budget_exhausted", "answer": NSNull()]))
        try scratch.write("\(Self.b).jsonl", runLines(Self.b, query: String(repeating: "long question ", count: 50)))

        let entries = try TrajectoryStore(directory: scratch.path).list()
        #expect(entries.map(\.id) == [Self.b, Self.a])
        let a = try #require(entries.last)
        #expect(a.parts == ["", ".2", ".3"].map { scratch.file("\(Self.a)\($0).jsonl") })
        #expect(a.bytes == a.parts.reduce(0) { $0 + ((try? Data(contentsOf: URL(fileURLWithPath: $1)))?.count ?? 0) })
        #expect(a.query == "How many errors?")
        #expect(a.model == "gpt-4o-mini")
        #expect(a.status == "budget_exhausted")
        #expect(a.answer == nil)
        #expect(a.runs == 2)
        #expect(a.started == Date(timeIntervalSince1970: 1_735_732_800))
        let b = try #require(entries.first)
        #expect(b.status == "answered" && b.answer == "42" && b.runs == 1)
        #expect((b.query?.count ?? 0) <= 200 && b.query?.contains("characters cut") == true)
    }

    @Test func showStreamsEveryPartInOrder() throws {
        let scratch = try Scratch()
        try scratch.write("\(Self.a).jsonl", runLines(Self.a, query: "q"))
        try scratch.write("\(Self.a).10.jsonl", runLines(Self.a, query: "q3", firstSeq: 6))
        try scratch.write("\(Self.a).2.jsonl", runLines(Self.a, query: "q2", firstSeq: 3))
        var seqs = [Int]()
        try TrajectoryStore(directory: scratch.path).show(Self.a) { line in
            guard case .event(let event) = line else {
                Issue.record("unexpected \(line)")
                return
            }
            seqs.append(event.seq ?? -1)
        }
        #expect(seqs == Array(0..<9))
    }

    @Test func aTruncatedLastLineIsTolerated() throws {
        let scratch = try Scratch()
        // SIGKILL mid-write: the last line stops halfway, and the run never finished.
        let cut = String(trajectoryLine(run: Self.a, seq: 3, kind: "code_result", data: ["stdout": "x"]).prefix(40))
        try scratch.write("\(Self.a).jsonl", runLines(Self.a, query: "q") + cut)
        let second = trajectoryLine(run: Self.b, seq: 0, kind: "run_started", data: ["query": "q", "model": "m"])
        try scratch.write("\(Self.b).jsonl", second + String(second.prefix(30)))

        let store = try TrajectoryStore(directory: scratch.path)
        let entries = try store.list()
        #expect(entries.count == 2)
        // The last whole line of a is run_finished: its status stands. b's only run never finished.
        #expect(entries.first { $0.id == Self.a }?.status == "answered")
        #expect(entries.first { $0.id == Self.b }?.status == nil)
        #expect(entries.first { $0.id == Self.b }?.query == "q")
        var kinds = [String]()
        try store.show(Self.a) { line in
            switch line {
            case .event(let event): kinds.append(event.kind)
            case .cut(let text): kinds.append("cut:\(text.prefix(10))")
            default: kinds.append("other")
            }
        }
        #expect(kinds == ["run_started", "model_response", "run_finished", "cut:\(cut.prefix(10))"])
    }

    @Test func filesThatAreNotTrajectoriesAreSkippedAndNeverDeleted() throws {
        let scratch = try Scratch()
        let old = Date(timeIntervalSinceNow: -400 * 86_400)
        try scratch.write("\(Self.a).jsonl", runLines(Self.a, query: "q"), modified: old)
        let foreign = [
            try scratch.write("notes.txt", "hello\n", modified: old),
            try scratch.write("run-20250101-120000-cccc3.jsonl", "not json at all\n", modified: old),
            try scratch.write("run-20250101-120000-dddd4.jsonl", #"{"some":"other json"}"# + "\n", modified: old),
            try scratch.write("\(Self.a).jsonl.bak", runLines(Self.a, query: "q"), modified: old),
            try scratch.write("\(Self.a).02.jsonl", runLines(Self.a, query: "q"), modified: old),
            try scratch.write("RUN-20250101-120000-EEEE5.jsonl", runLines(Self.a, query: "q"), modified: old),
        ]
        try FileManager.default.createDirectory(
            atPath: scratch.file("run-20250101-120000-ffff6.jsonl"), withIntermediateDirectories: false)

        let store = try TrajectoryStore(directory: scratch.path)
        #expect(try store.list().map(\.id) == [Self.a])
        #expect(throws: TrajectoryError.self) { try store.delete("run-20250101-120000-cccc3") }
        let pruned = try store.prune(olderThan: .seconds(86_400))
        #expect(pruned.deleted.map(\.id) == [Self.a] && pruned.files == 1)
        #expect(try store.prune(maxTotalBytes: 1).files == 0)
        for path in foreign { #expect(FileManager.default.fileExists(atPath: path), "\(path) was deleted") }
        #expect(FileManager.default.fileExists(atPath: scratch.file("run-20250101-120000-ffff6.jsonl")))
    }

    @Test func aSymlinkInTheDirectoryIsNeverFollowedReadOrDeleted() throws {
        let scratch = try Scratch()
        let outside = try Scratch()
        // A file outside, shaped like a trajectory, readable by all; links to it named like a trajectory and like a
        // part of a real one.
        let target = try outside.write("victim.jsonl", runLines(Self.b, query: "SECRET-OUTSIDE"), mode: 0o644)
        let before = try Data(contentsOf: URL(fileURLWithPath: target))
        let old = Date(timeIntervalSinceNow: -400 * 86_400)
        try scratch.write("\(Self.a).jsonl", runLines(Self.a, query: "q"), modified: old)
        let links = [scratch.file("\(Self.b).jsonl"), scratch.file("\(Self.a).2.jsonl")]
        for link in links { #expect(symlink(target, link) == 0) }
        touch(target, old)

        let store = try TrajectoryStore(directory: scratch.path)
        #expect(store.repairs.allSatisfy { !$0.path.hasSuffix("\(Self.b).jsonl") && !$0.path.hasSuffix(".2.jsonl") })
        let entries = try store.list()
        #expect(entries.map(\.id) == [Self.a])
        #expect(entries.first?.parts == [scratch.file("\(Self.a).jsonl")])
        #expect(entries.allSatisfy { $0.query != "SECRET-OUTSIDE" })
        #expect(throws: TrajectoryError.self) { try store.show(Self.b) { _ in } }
        #expect(throws: TrajectoryError.self) { try store.delete(Self.b) }
        #expect(try store.delete(Self.a) == [scratch.file("\(Self.a).jsonl")])
        _ = try store.prune(olderThan: .zero)
        _ = try store.prune(maxTotalBytes: 1)

        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == before)
        #expect(mode(target) == 0o644, "the store tightened a file through a link")
        for link in links { #expect(mode(link) != 0, "\(link) was deleted") }
    }

    @Test func aDirectoryThatIsALinkIsRefused() throws {
        let scratch = try Scratch()
        let real = scratch.file("real")
        try FileManager.default.createDirectory(atPath: real, withIntermediateDirectories: false)
        #expect(symlink(real, scratch.file("link")) == 0)
        let error = try #require(throws: TrajectoryError.self) { try TrajectoryStore(directory: scratch.file("link")) }
        #expect(error.isUnsafe)
        #expect(try TrajectoryStore(directory: scratch.file("missing")).list().isEmpty)
    }

    @Test(arguments: [
        "../../etc/passwd", "/etc/passwd", "..", ".", "", "run-20250101-120000-aaaa1/../../x",
        "run-20250101-120000-aaaa1.jsonl", "run-20250101-120000-AAAA1", "run-2025010-120000-aaaa1",
        "run-20250101-120000-", "run-20250101-120000-aaaa1 ", "run-20250101-120000-aa.a1",
    ])
    func anIDThatIsNotATrajectoryIDIsRefused(id: String) throws {
        let scratch = try Scratch()
        try scratch.write("\(Self.a).jsonl", runLines(Self.a, query: "q"))
        let store = try TrajectoryStore(directory: scratch.path)
        #expect(!TrajectoryStore.isValidID(id))
        let error = try #require(throws: TrajectoryError.self) { try store.delete(id) }
        #expect(error.isInvalidID)
        #expect(throws: TrajectoryError.self) { try store.show(id) { _ in } }
        #expect(FileManager.default.fileExists(atPath: scratch.file("\(Self.a).jsonl")))
    }

    @Test func deleteRemovesEveryPartAndNothingElse() throws {
        let scratch = try Scratch()
        try scratch.write("\(Self.a).jsonl", runLines(Self.a, query: "q"))
        try scratch.write("\(Self.a).2.jsonl", runLines(Self.a, query: "q", firstSeq: 3))
        try scratch.write("\(Self.a).7.jsonl", "")
        try scratch.write("\(Self.b).jsonl", runLines(Self.b, query: "q"))
        try scratch.write("\(Self.a).txt", "keep")
        let store = try TrajectoryStore(directory: scratch.path)
        let deleted = try store.delete(Self.a)
        #expect(Set(deleted) == Set(["", ".2", ".7"].map { scratch.file("\(Self.a)\($0).jsonl") }))
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == [
                "\(Self.a).txt", "\(Self.b).jsonl",
            ])
        let error = try #require(throws: TrajectoryError.self) { try store.delete(Self.a) }
        #expect(error.isNotFound)
    }

    @Test func pruneByAgeThenBySizeOldestFirst() throws {
        let scratch = try Scratch()
        let ids = (1...4).map { "run-2025010\($0)-120000-id\($0)" }
        let padding = String(repeating: "x", count: 1000)
        for (index, id) in ids.enumerated() {
            // ids[0] is 100 days old, ids[1] 50, ids[2] 20, ids[3] a day.
            let age = [100.0, 50, 20, 1][index] * 86_400
            try scratch.write(
                "\(id).jsonl", runLines(id, query: padding), modified: Date(timeIntervalSinceNow: -age))
        }
        try scratch.write("other.bin", String(repeating: "y", count: 100_000), modified: .distantPast)
        let store = try TrajectoryStore(directory: scratch.path)
        let byAge = try store.prune(olderThan: .seconds(60 * 86_400))
        #expect(byAge.deleted.map(\.id) == [ids[0]])
        let sizes = try store.list().reduce(into: [String: Int]()) { $0[$1.id] = $1.bytes }
        // Room for two of the three left: the oldest goes.
        let bySize = try store.prune(maxTotalBytes: sizes[ids[2]]! + sizes[ids[3]]!)
        #expect(bySize.deleted.map(\.id) == [ids[1]])
        #expect(bySize.bytes == sizes[ids[1]])
        #expect(try store.list().map(\.id) == [ids[3], ids[2]])
        #expect(FileManager.default.fileExists(atPath: scratch.file("other.bin")))
    }

    /// A run still being written (no `run_finished`, written a moment ago) is never pruned for size; an unfinished one
    /// left long ago is.
    @Test func aRunInProgressIsNotPruned() throws {
        let scratch = try Scratch()
        let live = "run-20250105-120000-live1"
        let dead = "run-20250104-120000-dead1"
        let done = "run-20250103-120000-done1"
        let started = trajectoryLine(run: live, seq: 0, kind: "run_started", data: ["query": "q", "model": "m"])
        try scratch.write("\(live).jsonl", started, modified: Date())
        try scratch.write(
            "\(dead).jsonl",
            trajectoryLine(run: dead, seq: 0, kind: "run_started", data: ["query": "q", "model": "m"]),
            modified: Date(timeIntervalSinceNow: -86_400))
        try scratch.write("\(done).jsonl", runLines(done, query: "q"), modified: Date(timeIntervalSinceNow: -60))
        let store = try TrajectoryStore(directory: scratch.path)
        let pruned = try store.prune(maxTotalBytes: 0)
        #expect(Set(pruned.deleted.map(\.id)) == [dead, done])
        #expect(try store.list().map(\.id) == [live])
    }

    @Test func openingTheStoreTightensPermissions() throws {
        let scratch = try Scratch()
        let directory = scratch.file("trajectories")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        chmod(directory, 0o755)
        let first = try scratch.write("trajectories/\(Self.a).jsonl", runLines(Self.a, query: "q"), mode: 0o644)
        let part = try scratch.write("trajectories/\(Self.a).2.jsonl", "", mode: 0o640)
        let fine = try scratch.write("trajectories/\(Self.b).jsonl", runLines(Self.b, query: "q"), mode: 0o400)
        let notes = try scratch.write("trajectories/notes.txt", "x", mode: 0o644)
        var foreign: String?
        if geteuid() == 0 {
            // Another user's file in the directory is theirs: left as it is.
            foreign = try scratch.write("trajectories/run-20250103-120000-other.jsonl", "", mode: 0o644)
            chown(foreign!, 65_534, 65_534)
        }

        let store = try TrajectoryStore(directory: directory)
        #expect(mode(directory) == 0o700)
        #expect(mode(first) == 0o600)
        #expect(mode(part) == 0o600)
        #expect(mode(fine) == 0o400)
        #expect(mode(notes) == 0o644)
        if let foreign { #expect(mode(foreign) == 0o644) }
        #expect(
            Set(store.repairs.map(\.description)) == [
                "tightened \(directory) from 0755 to 0700", "tightened \(first) from 0644 to 0600",
                "tightened \(part) from 0640 to 0600",
            ])
        #expect(try TrajectoryStore(directory: directory).repairs.isEmpty)
        if foreign != nil { #expect(try store.list().map(\.id) == [Self.b, Self.a]) }
    }

    @Test func runsAreCountedAcrossReadChunks() throws {
        let scratch = try Scratch()
        // The second run's `"kind":"run_started"` starts 7 bytes before the 1 MiB boundary the counter reads at.
        var text = runLines("\(Self.a)-0", query: "first")
        let next = trajectoryLine(run: "\(Self.a)-1", seq: 4, kind: "run_started", data: ["query": "second"])
        let offset = try #require(next.range(of: #""kind":"run_started""#)).lowerBound.utf16Offset(in: next)
        let empty = trajectoryLine(run: "\(Self.a)-0", seq: 3, kind: "note", data: ["note": ""])
        let fill = (1 << 20) - 7 - text.utf8.count - offset - empty.utf8.count
        text += trajectoryLine(
            run: "\(Self.a)-0", seq: 3, kind: "note", data: ["note": String(repeating: "z", count: fill)])
        #expect(text.utf8.count + offset == (1 << 20) - 7)
        text += next + runLines("\(Self.a)-2", query: "third", firstSeq: 5)
        try scratch.write("\(Self.a).jsonl", text)
        #expect(try TrajectoryStore(directory: scratch.path).list().first?.runs == 3)
    }

    @Test func aLargeTrajectoryIsSummarisedFromItsEnds() throws {
        let scratch = try Scratch()
        // About 24 MB: a block of runs written again and again, then a last run that found no answer.
        var block = ""
        var runsInBlock = 0
        while block.utf8.count < 1_000_000 {
            block += runLines(
                "\(Self.a)-\(runsInBlock)",
                query: "q\(runsInBlock) " + String(repeating: "z", count: 97 + runsInBlock % 1_013))
            runsInBlock += 1
        }
        let path = scratch.file("\(Self.a).jsonl")
        _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        for _ in 0..<24 { try handle.write(contentsOf: Data(block.utf8)) }
        try handle.write(
            contentsOf: Data(runLines("\(Self.a)-last", query: "last", status: "no_answer", answer: nil).utf8))
        try handle.close()
        let started = ContinuousClock.now
        let entry = try #require(try TrajectoryStore(directory: scratch.path).list().first)
        #expect(entry.runs == 24 * runsInBlock + 1)
        #expect(entry.status == "no_answer")
        #expect(entry.query == "q0 " + String(repeating: "z", count: 97))
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}
