import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMSandbox

/// The context options `rlm run` and `rlm chat` share — what is loaded, how it is decoded, the limits it sets — and
/// the planning and reporting behind them: one definition, so the two cannot drift apart.
struct ContextOptions: ParsableArguments {
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
            Name every file the context left out, and say how each was decoded when not as asked; with rlm run, \
            also stream each code block and each cell's output to stderr as they happen (redacted).
            """)
    var verbose = false

    func validate() throws {
        _ = try limits()
        _ = try contextEncoding()
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

    /// Plans the context the flags name (files are opened when the sandbox loads it, not here) and reports on
    /// stderr what planning left out.
    /// - Returns: the plan, or `nil` when no `--context` was given.
    /// - Throws: a usage error for bad flags; ``ContextLoadError`` for a context that cannot be read or is too large.
    /// - Parameter report: say on stderr what planning left out (`--quiet` does not).
    func plan(report: Bool = true) throws -> ContextPlanner.Plan? {
        let planned =
            context.isEmpty
            ? nil : try ContextPlanner(maxBytes: try limits().maxContext, encoding: try contextEncoding()).plan(context)
        if report { reportPlanned(planned) }
        return planned
    }

    /// The chosen backend's sandbox sized for the planned context.
    /// - Parameters:
    ///   - planned: from ``plan()``.
    ///   - python: the interpreter inside the process backend's sandbox.
    ///   - backend: which sandbox (`--backend`).
    func sandbox(for planned: ContextPlanner.Plan?, python: String, backend: SandboxBackend) throws -> any Sandbox {
        backend.sandbox(
            try limits().sandbox(
                forContextBytes: planned?.totalBytes ?? 0, shape: planned?.source.shape,
                base: RLMRuntime.sandboxLimits(python: python)))
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
    /// Call it with every event: it acts on the root's `context_loaded`.
    /// - Parameter event: an event of the run.
    func reportLoaded(_ event: RLMEvent) {
        guard event.kind == .contextLoaded, event.depth == 0 else { return }
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

    /// "2 symbolic link, skipped; 1 not a regular file, skipped" → counts by reason.
    private static func tally(_ notices: [ContextSummary.Notice]) -> String {
        var counts = [String: Int]()
        for notice in notices { counts[notice.reason, default: 0] += 1 }
        return counts.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: "; ")
    }
}
