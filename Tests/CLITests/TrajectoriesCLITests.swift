import Foundation
import Glibc
import RLMTesting
import Testing

/// `rlm trajectories list|show|delete|prune` against a temporary `--dir` of hand-written trajectories in the
/// docs/TRAJECTORY.md shape.
@Suite("rlm trajectories")
struct TrajectoriesCLITests {
    static let first = "run-20250101-120000-aaaa1"
    static let second = "run-20250301-090000-bbbb2"

    /// A directory with two trajectories (the first rotated into two parts, last written 100 days ago), a file that
    /// is not a trajectory, and a link named like a trajectory pointing outside.
    private static func makeDirectory() throws -> (directory: String, outside: String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-trajcli-\(UUID().uuidString)")
        let directory = root.appendingPathComponent("trajectories").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let old = Date(timeIntervalSinceNow: -100 * 86_400)
        try write(
            directory, "\(first).jsonl",
            line(first, 0, "run_started", ["query": "How many ERROR lines?\u{1B}[2J", "model": "gpt-4o-mini"])
                + line(first, 1, "model_response", ["model": "gpt-4o-mini", "text": "```repl\nprint(1)\n```"]),
            modified: old)
        try write(
            directory, "\(first).2.jsonl",
            line(first, 2, "code_result", ["code": "print(1)", "stdout": "1\n", "stderr": ""])
                + line(first, 3, "run_finished", ["status": "answered", "answer": "17", "duration_ms": 900]),
            modified: old)
        try write(
            directory, "\(second).jsonl",
            line(second, 0, "run_started", ["query": "Summarise the README\u{9B}31m", "model": "claude"])
                + String(line(second, 1, "model_response", ["text": "cut"]).prefix(25)))
        try write(directory, "notes.txt", "not a trajectory\n", modified: old)
        let outside = root.appendingPathComponent("outside.jsonl").path
        try line(first, 0, "run_started", ["query": "outside"]).write(
            toFile: outside, atomically: false, encoding: .utf8)
        symlink(outside, directory + "/run-20250101-000000-link1.jsonl")
        touch(outside, old)
        return (directory, outside)
    }

    private static func line(_ run: String, _ seq: Int, _ kind: String, _ data: [String: Any]) -> String {
        let object: [String: Any] = [
            "schema": 1, "run": run, "seq": seq, "time": (run == second ? 1_740_819_600 : 1_735_732_800) + Double(seq),
            "kind": kind, "depth": 0,
            "scope": "root", "iteration": seq == 0 ? 0 : 1, "data": data,
        ]
        let json = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: json, as: UTF8.self) + "\n"
    }

    private static func write(_ directory: String, _ name: String, _ text: String, modified: Date? = nil) throws {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, 0o600)
        if let modified { touch(path, modified) }
    }

    private static func touch(_ path: String, _ date: Date) {
        let seconds = Int(date.timeIntervalSince1970)
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    private static func names(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    @Test func listPrintsATableAndJSON() async throws {
        let (directory, _) = try Self.makeDirectory()
        let table = try await runRLM(["trajectories", "list", "--dir", directory])
        #expect(table.status == 0, "\(table.stderr)")
        let rows = table.stdout.split(separator: "\n").map(String.init)
        #expect(rows.count == 3, "\(table.stdout)")
        #expect(rows[0].hasPrefix("ID") && rows[0].contains("STATUS") && rows[0].contains("QUERY"))
        #expect(rows[1].hasPrefix(Self.second) && rows[1].contains("unfinished") && rows[1].contains("claude"))
        #expect(rows[2].hasPrefix(Self.first) && rows[2].contains("answered") && rows[2].contains("How many ERROR"))
        #expect(!table.stdout.contains("link1") && !table.stdout.contains("outside"))

        let json = try await runRLM(["trajectories", "list", "--json", "--dir", directory])
        #expect(json.status == 0)
        let object = try #require(json.json)
        let entries = try #require(object["trajectories"] as? [[String: Any]])
        #expect(entries.map { $0["id"] as? String } == [Self.second, Self.first])
        let first = entries[1]
        #expect(first["status"] as? String == "answered" && first["answer"] as? String == "17")
        #expect((first["parts"] as? [String])?.count == 2 && first["runs"] as? Int == 1)
        #expect(first["started"] as? String == "2025-01-01T12:00:00.000Z")
        #expect(entries[0]["status"] is NSNull)
    }

    @Test func showPrintsTheLinesOrARendering() async throws {
        let (directory, _) = try Self.makeDirectory()
        let json = try await runRLM(["trajectories", "show", "--json", "--dir", directory, Self.first])
        #expect(json.status == 0, "\(json.stderr)")
        let lines = json.stdout.split(separator: "\n")
        #expect(lines.count == 4)
        let kinds = lines.map {
            ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["kind"] as? String
        }
        #expect(kinds == ["run_started", "model_response", "code_result", "run_finished"])

        let readable = try await runRLM(["trajectories", "show", Self.first, "--dir", directory])
        #expect(readable.status == 0)
        #expect(readable.stdout.contains("run_finished") && readable.stdout.contains("status: answered"))
        #expect(readable.stdout.contains("      print(1)"))

        // A run killed mid-write: its whole lines, and a word about the cut one.
        let cut = try await runRLM(["trajectories", "show", "--json", Self.second, "--dir", directory])
        #expect(cut.status == 0)
        #expect(cut.stdout.split(separator: "\n").count == 1)
        #expect(cut.stderr.contains("cut short"))
        // C1 controls, which JSON may hold raw, come out escaped: the same value, safe to cat.
        #expect(cut.stdout.contains(#"README\u009b31m"#))
        #expect(!cut.stdout.unicodeScalars.contains { $0.value == 0x9B })
    }

    @Test func aHostileTrajectoryIsNeutralisedOnATerminal() async throws {
        let (directory, _) = try Self.makeDirectory()
        let payload = "A\u{1B}]52;c;cHduZWQ=\u{07}B\u{1B}[2JC\u{9B}31mD\rE"
        try Self.write(
            directory, "run-20250401-000000-evil1.jsonl",
            Self.line("run-20250401-000000-evil1", 0, "run_started", ["query": payload, "model": payload])
                + Self.line("run-20250401-000000-evil1", 1, "final_answer", ["answer": payload]))
        // The helper puts rlm's stdout on a pseudo-terminal and prints what the terminal received.
        let helper = """
            import os, pty, subprocess, sys
            master, slave = pty.openpty()
            p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL)
            os.close(slave)
            data = b''
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            sys.stdout.buffer.write(data)
            sys.exit(p.wait())
            """
        let script = try writeTemporary(helper, name: "on_terminal.py")
        for arguments in [
            ["list"], ["show", "run-20250401-000000-evil1"], ["show", "--json", "run-20250401-000000-evil1"],
        ] {
            let result = try await runProgram(
                "/usr/bin/python3", [script, try rlmBinary(), "trajectories"] + arguments + ["--dir", directory])
            #expect(result.status == 0, "\(arguments)")
            let text = result.stdout
            #expect(!text.contains("\u{1B}]52") && !text.contains("\u{1B}[2J"), "\(arguments): \(text)")
            #expect(!text.unicodeScalars.contains { $0.value == 0x9B }, "\(arguments)")
            #expect(!text.contains("D\rE"), "\(arguments)")
        }
    }

    @Test func deleteRemovesEveryPartAndRefusesPathsAndUnknownIDs() async throws {
        let (directory, outside) = try Self.makeDirectory()
        for hostile in ["../../etc/passwd", "/etc/passwd", "\(Self.first)/../x", "run-20250101-000000-link1.jsonl"] {
            let refused = try await runRLM(["trajectories", "delete", "--dir", directory, Self.second, hostile])
            #expect(refused.status == 2, "\(hostile): \(refused.stderr)")
            #expect(refused.stderr.contains("not a trajectory id"))
        }
        #expect(Self.names(directory).count == 5)

        let link = try await runRLM(["trajectories", "delete", "--dir", directory, "run-20250101-000000-link1"])
        #expect(link.status == 1)
        #expect(link.stderr.contains("no trajectory run-20250101-000000-link1"))
        #expect(FileManager.default.fileExists(atPath: outside))

        let deleted = try await runRLM(["trajectories", "delete", "--dir", directory, Self.first])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(deleted.stdout == "deleted 2 files\n")
        #expect(Self.names(directory) == ["notes.txt", "run-20250101-000000-link1.jsonl", "\(Self.second).jsonl"])
        let again = try await runRLM(["trajectories", "delete", "--dir", directory, Self.first, Self.second])
        #expect(again.status == 1)
        #expect(again.stdout == "deleted 1 file\n")
    }

    @Test func pruneByAgeAndSizeLeavesOtherFilesAlone() async throws {
        let (directory, outside) = try Self.makeDirectory()
        let byAge = try await runRLM(["trajectories", "prune", "--older-than", "30", "--dir", directory])
        #expect(byAge.status == 0, "\(byAge.stderr)")
        #expect(byAge.stdout.hasPrefix("deleted 2 files (1 trajectory,"))
        #expect(Self.names(directory) == ["notes.txt", "run-20250101-000000-link1.jsonl", "\(Self.second).jsonl"])

        // An unfinished run written a moment ago may still be going: it is never pruned for size. This one was cut
        // off (a SIGKILL) a day ago.
        let stillGoing = try await runRLM(["trajectories", "prune", "--max-total", "0.0001M", "--dir", directory])
        #expect(stillGoing.stdout.hasPrefix("deleted 0 files"), "\(stillGoing.stdout)")
        try FileManager.default.setAttributes(
            [.modificationDate: Date(timeIntervalSinceNow: -86_400)], ofItemAtPath: directory + "/\(Self.second).jsonl")

        // --store PATH means PATH/trajectories.
        let store = (directory as NSString).deletingLastPathComponent
        let bySize = try await runRLM(
            ["trajectories", "prune", "--older-than", "365", "--max-total", "1K", "--store", store])
        #expect(bySize.status == 0, "\(bySize.stderr)")
        #expect(bySize.stdout.hasPrefix("deleted 0 files"))
        let all = try await runRLM(["trajectories", "prune", "--max-total", "0.0001M", "--store", store])
        #expect(all.stdout.hasPrefix("deleted 1 file (1 trajectory,"), "\(all.stdout)")
        #expect(Self.names(directory) == ["notes.txt", "run-20250101-000000-link1.jsonl"])
        #expect(FileManager.default.fileExists(atPath: outside))
    }

    @Test func usageErrorsExitTwo() async throws {
        let (directory, _) = try Self.makeDirectory()
        for arguments in [
            ["prune", "--dir", directory],
            ["prune", "--older-than", "-1", "--dir", directory],
            ["prune", "--max-total", "lots", "--dir", directory],
            ["list", "--dir", directory, "--store", directory],
            ["show", "--dir", directory, "../\(Self.first)"],
            ["delete", "--dir", directory],
        ] {
            let result = try await runRLM(["trajectories"] + arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
        }
        let unknown = try await runRLM(["trajectories", "show", "--dir", directory, "run-20990101-000000-nope"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("no trajectory run-20990101-000000-nope"))
    }

    @Test func loosePermissionsAreTightenedAndSaid() async throws {
        let (directory, outside) = try Self.makeDirectory()
        chmod(directory, 0o755)
        chmod(directory + "/\(Self.first).jsonl", 0o644)
        chmod(outside, 0o644)
        let result = try await runRLM(["trajectories", "list", "--dir", directory])
        #expect(result.status == 0)
        #expect(result.stderr.contains("tightened \(directory) from 0755 to 0700"))
        #expect(result.stderr.contains("tightened \(directory)/\(Self.first).jsonl from 0644 to 0600"))
        var info = stat()
        stat(directory, &info)
        #expect(info.st_mode & 0o777 == 0o700)
        stat(outside, &info)
        #expect(info.st_mode & 0o777 == 0o644)
    }

    /// `rlm run` appends one audit line per run — who, models, tokens, outcome, trajectory — to a 0600 file in a 0700
    /// directory, with the run's key nowhere in it; a failed run gets a line too.
    @Test func aRunAppendsOneAuditLineWithoutItsKey() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-audit-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: state) }
        let key = "sk-audit-0123456789abcdefghijklmnop"
        let environment = ["OPENAI_API_KEY": key, "XDG_STATE_HOME": state.path]
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(42)"])) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "q"], environment: environment)
            #expect(result.status == 0, "\(result.stderr)")
        }
        let failed = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "q"], environment: environment)
        #expect(failed.status == 1)
        let path = state.appendingPathComponent("swiftrlm/audit.jsonl").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(lines.count == 2, "\(text)")
        #expect(lines.first?["outcome"] as? String == "answered")
        #expect((lines.first?["models"] as? [String])?.contains("m") == true)
        #expect((lines.first?["principal"] as? [String: Any])?["kind"] as? String == "user")
        #expect(lines.last?["outcome"] as? String == "error")
        #expect(lines.last?["error_kind"] as? String == "unreachable")
        #expect(!text.contains(key) && !text.contains("0123456789abcdef"))
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(state.appendingPathComponent("swiftrlm").path, &info) == 0 && info.st_mode & 0o777 == 0o700)
    }
}
