import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMTrajectory

/// `rlm trajectories`: list, show, delete and prune the trajectories of past runs.
struct TrajectoriesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trajectories",
        abstract: "List, show, delete and prune the trajectories of past runs.",
        discussion: """
            Trajectories live in $XDG_STATE_HOME/swiftrlm/trajectories (else ~/.local/state/swiftrlm/trajectories) \
            unless --dir or --store says otherwise. An id is a file name without .jsonl (run-20250101-120000-k3j9x2); \
            a trajectory's parts (<id>.jsonl, <id>.2.jsonl, …) go together. Only regular files of this user named \
            and shaped like trajectories are read or deleted; symbolic links are never followed, other files never \
            touched. Every subcommand first tightens a directory looser than 0700 and trajectory files looser than \
            0600, and says so on stderr.
            Exit status: 0 ok, 1 no trajectory with that id (or a file that could not be read or deleted), 2 usage or \
            setup error (a malformed id such as ../x, a directory that is a symbolic link).
            """,
        subcommands: [List.self, Show.self, Delete.self, Prune.self]
    )

    /// Where the trajectories are: the options every subcommand takes.
    struct Location: ParsableArguments {
        @Option(help: "The trajectories directory (default: $XDG_STATE_HOME/swiftrlm/trajectories).")
        var dir: String?

        @Option(
            help: """
                A server store, as `rlm serve --store PATH` and `rlm keys --store PATH` take it: its trajectories \
                are in PATH/trajectories. Not with --dir.
                """)
        var store: String?

        func validate() throws {
            if dir != nil && store != nil { throw ValidationError("give --dir or --store, not both") }
        }

        /// Opens the store, reporting the permissions it tightened.
        func open() throws -> TrajectoryStore {
            let directory = dir ?? store.map { ($0 as NSString).appendingPathComponent("trajectories") }
            let trajectories = try TrajectoriesCommand.guarded { try TrajectoryStore(directory: directory) }
            for repair in trajectories.repairs { printError("rlm: \(repair)") }
            return trajectories
        }
    }

    /// Runs `body`, turning a ``TrajectoryError`` into its message on stderr and the documented exit status.
    static func guarded<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as TrajectoryError {
            printError("rlm: \(error.message)")
            throw ExitCode(error.isInvalidID || error.isUnsafe ? 2 : 1)
        }
    }

    // MARK: list

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List trajectories, newest first: id, start, status, model, size, question.",
            discussion: """
                STATUS is the last run's: answered, budget_exhausted, no_answer, error, interrupted, or unfinished \
                (still running, or killed before it could say). With --json, one object: \
                {"directory", "trajectories": [{"id", "parts", "bytes", "modified", "started", "query", "model", \
                "status", "answer", "runs"}]} (times in ISO 8601 UTC; query and answer cut to 200 characters).
                """)

        @OptionGroup var location: Location

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() async throws {
            let store = try location.open()
            let entries = try guarded { try store.list() }
            if json {
                writeJSON(["directory": store.directory, "trajectories": entries.map(Self.object)])
                return
            }
            guard !entries.isEmpty else {
                printError("rlm: no trajectories in \(store.directory)")
                return
            }
            let rows =
                [["ID", "STARTED", "STATUS", "MODEL", "SIZE", "QUERY"]]
                + entries.map { entry in
                    [
                        entry.id, entry.started.map(Self.localTime) ?? "-",
                        entry.status.map { flat($0, 20) } ?? "unfinished",
                        entry.model.map { flat($0, 28) } ?? "-", ByteSize.describe(entry.bytes),
                        entry.query.map { flat($0, 60) } ?? "-",
                    ]
                }
            let widths = (0..<5).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = (0..<5).map { row[$0] + String(repeating: " ", count: widths[$0] - row[$0].count) }
                writeOut((padded + [row[5]]).joined(separator: "  ") + "\n")
            }
        }

        static func object(_ entry: TrajectoryStore.Entry) -> [String: Any] {
            [
                "id": entry.id, "parts": entry.parts, "bytes": entry.bytes, "modified": isoTime(entry.modified),
                "started": entry.started.map(isoTime) ?? NSNull(), "query": entry.query ?? NSNull(),
                "model": entry.model ?? NSNull(), "status": entry.status ?? NSNull(),
                "answer": entry.answer ?? NSNull(), "runs": entry.runs,
            ]
        }

        static func localTime(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.dateFormat = "yyyy-MM-dd HH:mm"
            return formatter.string(from: date)
        }
    }

    // MARK: show

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a trajectory, every part in order.",
            discussion: """
                By default each event is rendered for reading (control characters made visible on a terminal); \
                with --json the lines are printed as stored, one JSON object per line (a last line cut short by a \
                killed run is left out and said on stderr).
                """)

        @OptionGroup var location: Location

        @Flag(help: "Print the JSONL lines as stored.")
        var json = false

        @Argument(help: "The trajectory id (run-…).")
        var id: String

        func run() async throws {
            let store = try location.open()
            var renderer = Renderer()
            var skipped = 0
            try guarded {
                try store.show(id) { line in
                    switch line {
                    case .event(let event):
                        // The same JSON value, with C1 controls and DEL escaped, so the lines are safe to cat.
                        if json {
                            writeOut(JSONText.escapingControlCharacters(event.text) + "\n")
                        } else {
                            writeOut(renderer.render(event))
                        }
                    case .unreadable, .oversized:
                        skipped += 1
                    case .cut(let text):
                        printError("rlm: the last line is cut short (the run was killed mid-write): \(text)")
                    }
                }
            }
            if skipped > 0 { printError("rlm: \(skipped) lines that are not trajectory lines were skipped") }
        }
    }

    /// Turns events into indented text: a header per event, short fields on one line, long or multi-line text as an
    /// indented block.
    struct Renderer {
        private var run: String?

        mutating func render(_ event: TrajectoryLine) -> String {
            var text = ""
            if let run = event.run, run != self.run {
                self.run = run
                text += "── run \(run) ──\n"
            }
            var header = [String]()
            if let seq = event.seq { header.append("#\(seq)") }
            if let time = event.time { header.append(Self.clock(time)) }
            header.append(event.kind)
            var place = [String]()
            if let depth = event.depth, depth > 0 { place.append("depth \(depth)") }
            if let scope = event.scope, scope != "root" { place.append("in \(scope)") }
            if let iteration = event.iteration, iteration > 0 { place.append("iteration \(iteration)") }
            if !place.isEmpty { header.append("(" + place.joined(separator: ", ") + ")") }
            text += header.joined(separator: "  ") + "\n"
            var short = [String]()
            var blocks = [String]()
            for key in event.data.keys.sorted() {
                guard let value = event.text(key) else { continue }
                if value.contains("\n") || value.count > 80 {
                    let body = value.split(separator: "\n", omittingEmptySubsequences: false)
                        .map { "      " + $0 }.joined(separator: "\n")
                    blocks.append("    \(key):\n\(body)\n")
                } else {
                    short.append("\(key): \(value)")
                }
            }
            if !short.isEmpty { text += "    " + short.joined(separator: "  ") + "\n" }
            text += blocks.joined()
            if event.kind == "run_finished", let usage = event.usage {
                let fields = usage.keys.sorted().compactMap { key in usage[key].map { "\(key): \(Self.scalar($0))" } }
                text += "    usage: " + fields.joined(separator: "  ") + "\n"
            }
            return text
        }

        private static func scalar(_ value: JSONValue) -> String {
            switch value {
            case .int(let number): return String(number)
            case .double(let number): return String(number)
            case .string(let string): return string
            case .bool(let flag): return String(flag)
            default: return "…"
            }
        }

        private static func clock(_ time: Double) -> String {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
            return formatter.string(from: Date(timeIntervalSince1970: time))
        }
    }

    // MARK: delete

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete trajectories: every part of each, and nothing else.",
            discussion: """
                Every id is checked before anything is deleted: a malformed one (../x, a path) deletes nothing and \
                exits 2. An id with no trajectory is said on stderr and exits 1 after the others are deleted.
                """)

        @OptionGroup var location: Location

        @Argument(help: "Trajectory ids (run-…).")
        var ids: [String]

        func validate() throws {
            guard !ids.isEmpty else { throw ValidationError("name at least one trajectory id") }
            for id in ids where !TrajectoryStore.isValidID(id) {
                throw ValidationError(
                    "\(id.debugDescription) is not a trajectory id: ids look like run-20250101-120000-k3j9x2 "
                        + "(see `rlm trajectories list`)")
            }
        }

        func run() async throws {
            let store = try location.open()
            var deleted = 0
            var missing = false
            for id in ids {
                do {
                    deleted += try guarded { try store.delete(id) }.count
                } catch let exit as ExitCode where exit.rawValue == 1 {
                    missing = true
                }
            }
            writeOut("deleted \(deleted) file\(deleted == 1 ? "" : "s")\n")
            if missing { throw ExitCode(1) }
        }
    }

    // MARK: prune

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete old trajectories: by age, by total size (oldest first), or both.",
            discussion: """
                Age is the time since a trajectory was last written. --max-total then deletes the oldest until the \
                rest fit. Files that are not trajectories neither count nor go. A run still being written (no \
                run_finished yet, written in the last 10 minutes) is kept.
                """)

        @OptionGroup var location: Location

        @Option(help: "Delete trajectories last written more than DAYS days ago (fractions allowed: 0.5).")
        var olderThan: Double?

        @Option(help: "Then delete the oldest until the rest hold at most SIZE (512M, 2G; a plain number is MiB).")
        var maxTotal: String?

        func validate() throws {
            guard olderThan != nil || maxTotal != nil else {
                throw ValidationError("say what to prune: --older-than DAYS, --max-total SIZE, or both")
            }
            if let olderThan, !(olderThan >= 0 && olderThan.isFinite) {
                throw ValidationError("--older-than takes a number of days, 0 or more")
            }
            if let maxTotal, ByteSize.parse(maxTotal) == nil {
                throw ValidationError("--max-total \(maxTotal) is not a size: write e.g. 512M or 2G")
            }
        }

        func run() async throws {
            let store = try location.open()
            var files = 0
            var bytes = 0
            var trajectories = 0
            try guarded {
                if let olderThan {
                    let result = try store.prune(olderThan: .seconds(olderThan * 86_400))
                    (files, bytes, trajectories) = (result.files, result.bytes, result.deleted.count)
                }
                if let maxTotal, let limit = ByteSize.parse(maxTotal) {
                    let result = try store.prune(maxTotalBytes: limit)
                    files += result.files
                    bytes += result.bytes
                    trajectories += result.deleted.count
                }
            }
            writeOut(
                "deleted \(files) file\(files == 1 ? "" : "s") (\(trajectories) trajector\(trajectories == 1 ? "y" : "ies"), "
                    + "\(ByteSize.describe(bytes)))\n")
        }
    }
}

/// Untrusted text for a table cell: whitespace runs become one space, then cut to `limit` characters.
private func flat(_ text: String, _ limit: Int) -> String {
    let words = text.split(whereSeparator: { $0.isWhitespace || $0.isNewline }).joined(separator: " ")
    return words.count > limit ? String(words.prefix(limit - 1)) + "…" : words
}

private func isoTime(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
}
