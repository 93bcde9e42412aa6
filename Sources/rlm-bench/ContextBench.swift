import ArgumentParser
import Foundation
import Glibc
import RLM
import RLMTesting
import Synchronization

/// Issue 9's figures (`rlm-bench context`): how soon `rlm run --context` has the first cell's result, and how much
/// memory `rlm` and its sandbox use, for generated log files of several sizes and a git source tree — each beside plain
/// Python reading the same files in the same run.
///
/// The release `rlm` runs as a child process against a zero-latency fake model in this process, which answers with
/// one cell (printing the context's length and the worker's peak RSS) and then `FINAL(done)`.
struct ContextBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "context",
        abstract: "Time to the first cell's result and peak memory of `rlm run --context`, beside plain Python.",
        discussion: """
            Generates log files of the sizes asked and a git source tree of small files, then runs the release \
            rlm on each against an in-process fake model, alternating with plain Python reading the same files. \
            Prints a Markdown table of medians (figures for docs/BENCHMARKS.md).
            """
    )

    @Option(help: "Sizes of the generated log contexts, comma-separated (binary units: 10M is 10 MiB).")
    var sizes = "10M,100M,1G"

    @Option(help: "Files in the generated source tree (0: no tree).")
    var files = 50_000

    @Option(name: .customLong("repeat"), help: "Runs of each measurement; the median is reported.")
    var repetitions = 3

    @Option(help: "Generate the contexts in this directory and keep them; contexts already there are reused.")
    var keep: String?

    @Option(help: "The release rlm binary (rlm-sandbox-launch must be next to it).")
    var rlm = ".build-release/release/rlm"

    @Option(help: "The interpreter inside the sandbox, and the one the plain-Python baseline runs.")
    var python = "/usr/bin/python3"

    func validate() throws {
        _ = try logSizes()
        guard repetitions >= 1 else { throw ValidationError("--repeat must be at least 1") }
        guard files >= 0 else { throw ValidationError("--files must not be negative") }
    }

    func run() async throws {
        let rlmPath = try Self.releaseBinary(rlm)
        let progress = BenchProgress()
        let workspace = try Workspace(keeping: keep)
        defer { workspace.remove() }

        var contexts: [BenchContext] = []
        for (label, bytes) in try logSizes() {
            contexts.append(try workspace.logFile(label: label, bytes: bytes, progress: progress))
        }
        if files > 0 { contexts.append(try workspace.sourceTree(files: files, progress: progress)) }
        let oneLine = try workspace.oneLineFile()

        let probe = RunProbe()
        try await FakeLLMServer.withServer(probe.handler) { server in
            let runner = BenchRunner(
                rlm: rlmPath, python: python, baseURL: server.openAIBaseURL, probe: probe, scratch: workspace.runs)
            var rows: [ContextRow] = []
            for context in contexts {
                rows.append(try await measure(context, runner: runner, progress: progress))
            }
            progress.say("fixed costs: a one-line context, and python3 -c pass")
            var fixed: [RLMFigures] = []
            var idle: [PythonFigures] = []
            for _ in 0..<repetitions {
                fixed.append(try await runner.rlm(oneLine))
                idle.append(try await runner.pythonIdle())
            }
            writeOut(
                Report(rows: rows, fixed: fixed, idle: idle, repetitions: repetitions).markdown(
                    command: CommandLine.arguments))
        }
    }

    /// Runs rlm and plain Python `repetitions` times each on `context`, alternating which goes first so that a
    /// warming or drifting machine favours neither.
    private func measure(_ context: BenchContext, runner: BenchRunner, progress: BenchProgress) async throws
        -> ContextRow
    {
        // One untimed read first: whichever side runs first must not be the one that pays for a cold page cache.
        progress.say("\(context.label): warming the page cache")
        _ = try await runner.python(context)
        var row = ContextRow(context: context)
        for index in 0..<repetitions {
            progress.say("\(context.label): run \(index + 1) of \(repetitions)")
            if index.isMultiple(of: 2) {
                row.python.append(try await runner.python(context))
                row.rlm.append(try await runner.rlm(context))
            } else {
                row.rlm.append(try await runner.rlm(context))
                row.python.append(try await runner.python(context))
            }
        }
        return row
    }

    /// `10M,100M,1G` as labels and byte counts.
    private func logSizes() throws -> [(label: String, bytes: Int)] {
        try sizes.split(separator: ",").map { part in
            let text = part.trimmingCharacters(in: .whitespaces)
            guard let bytes = Self.byteCount(text) else {
                throw ValidationError("--sizes: \(text) is not a size (write e.g. 10M, 100M, 1G)")
            }
            return (text, bytes)
        }
    }

    /// `10M` → 10 MiB; `512K`, `1G`, or a plain number of bytes.
    static func byteCount(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var number = text.uppercased()
        var unit = 1
        if let last = number.last, let value = units[last] {
            unit = value
            number.removeLast()
        }
        guard let value = Double(number), value > 0, value * Double(unit) < Double(1 << 40) else { return nil }
        return Int(value * Double(unit))
    }

    /// The release `rlm`, with its launcher beside it, or an error saying how to build them.
    private static func releaseBinary(_ path: String) throws -> String {
        let launcher = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(
            "rlm-sandbox-launch"
        ).path
        for binary in [path, launcher] where !FileManager.default.isExecutableFile(atPath: binary) {
            throw ValidationError(
                """
                \(binary) is not built. Build the release binaries first (this takes several minutes):
                  swift build -c release --scratch-path .build-release --product rlm
                  swift build -c release --scratch-path .build-release --product rlm-sandbox-launch
                or pass --rlm PATH.
                """)
        }
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }
}

// MARK: - The contexts

/// One context to measure: what `rlm run --context` is given and what plain Python reads.
struct BenchContext: Sendable {
    enum Kind: Sendable {
        /// One text file: rlm builds a `str`; Python runs `open(f).read()`.
        case file
        /// A directory: rlm builds a `list[str]` of documents; Python walks it and keeps every file's text.
        case tree(files: Int)
    }

    var label: String
    var path: String
    var kind: Kind
}

/// Where the contexts are generated (the `--keep` directory, or a scratch directory), and a scratch directory for
/// the runs' own files. Both scratch directories are removed at the end.
struct Workspace {
    let contexts: String
    let runs: String
    private let scratch: String

    init(keeping keep: String?) throws {
        let base = FileManager.default.temporaryDirectory.path
        var template = Array("\(base)/rlm-bench-context-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ValidationError("cannot make a scratch directory in \(base): \(String(cString: strerror(errno)))")
        }
        scratch = String(cString: made)
        runs = scratch + "/runs"
        try FileManager.default.createDirectory(atPath: runs, withIntermediateDirectories: true)
        if let keep {
            contexts = URL(fileURLWithPath: keep).standardizedFileURL.path
            try FileManager.default.createDirectory(atPath: contexts, withIntermediateDirectories: true)
        } else {
            contexts = scratch + "/contexts"
        }
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// A log file of at least `bytes` (whole lines), reused when `--keep` already holds it.
    func logFile(label: String, bytes: Int, progress: BenchProgress) throws -> BenchContext {
        let path = "\(contexts)/logs-\(label).txt"
        let context = BenchContext(label: label, path: path, kind: .file)
        if FileManager.default.fileExists(atPath: path) { return context }
        progress.say("\(label): generating \(ContextBench.mebibytes(bytes)) of log lines")
        try FileManager.default.createDirectory(atPath: contexts, withIntermediateDirectories: true)
        // Written under another name and renamed at the end, so a run cut short never leaves a file to reuse.
        let partial = path + ".partial"
        var lines = LogLines(seed: UInt64(bytes))
        try ByteFile.write(to: partial) { file in
            var buffer: [UInt8] = []
            buffer.reserveCapacity((4 << 20) + 1024)
            var written = 0
            while written + buffer.count < bytes {
                lines.append(to: &buffer)
                if buffer.count >= 4 << 20 {
                    try file.write(buffer)
                    written += buffer.count
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            try file.write(buffer)
        }
        try FileManager.default.moveItem(atPath: partial, toPath: path)
        return context
    }

    /// A git work tree of `files` small source files, reused when `--keep` already holds it.
    func sourceTree(files: Int, progress: BenchProgress) throws -> BenchContext {
        let path = "\(contexts)/tree-\(files)"
        let context = BenchContext(label: "tree", path: path, kind: .tree(files: files))
        if FileManager.default.fileExists(atPath: path) { return context }
        let partial = path + ".partial"
        try? FileManager.default.removeItem(atPath: partial)
        progress.say("tree: generating \(files) files")
        try SourceTree.write(files: files, into: partial)
        progress.say("tree: git init and git add")
        try Git.run(["init", "-q"], in: partial)
        try Git.run(["add", "-A"], in: partial)
        try FileManager.default.moveItem(atPath: partial, toPath: path)
        return context
    }

    /// A one-line context, for the costs that do not depend on the context's size.
    func oneLineFile() throws -> BenchContext {
        let path = "\(runs)/one-line.txt"
        try ByteFile.write(to: path) { try $0.write(Array("2024-03-01T00:00:00.000Z INFO  api: ready\n".utf8)) }
        return BenchContext(label: "one line", path: path, kind: .file)
    }
}

/// A file written with write(2) from byte buffers (Foundation's handles would copy every buffer into `Data`).
struct ByteFile {
    let fd: Int32
    let path: String

    static func write(to path: String, _ body: (ByteFile) throws -> Void) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ValidationError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try body(ByteFile(fd: fd, path: path))
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let count = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += count
            }
        }
    }
}

/// SplitMix64: seeded, so the same sizes give the same files on every machine.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound`.
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }
}

extension [UInt8] {
    fileprivate mutating func put(_ text: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// `value` in decimal, zero-padded to `width` digits.
    fileprivate mutating func put(_ value: Int, width: Int = 1) {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        digits = Swift.max(digits, width)
        let start = count
        append(contentsOf: repeatElement(UInt8(ascii: "0"), count: digits))
        var left = value
        var index = start + digits - 1
        while left > 0 {
            self[index] = UInt8(48 + left % 10)
            left /= 10
            index -= 1
        }
    }

    fileprivate mutating func putHex(_ value: UInt64, digits: Int) {
        let hex = Array("0123456789abcdef".utf8)
        for shift in stride(from: (digits - 1) * 4, through: 0, by: -4) {
            append(hex[Int((value >> UInt64(shift)) & 0xF)])
        }
    }
}

/// Service log lines: ISO timestamps a few milliseconds apart, levels (mostly INFO), service names and pids, HTTP
/// requests with status codes, latencies and sizes, cache lookups, slow queries and upstream errors. Built as bytes,
/// because a gigabyte of them is made per run.
struct LogLines {
    private var random: SplitMix64
    /// 2024-03-01T00:00:00Z, in milliseconds since 1970.
    private var millis = 1_709_251_200_000

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    private static let services: [(name: [UInt8], pid: Int)] = [
        "api-gateway", "auth", "billing", "payments", "search", "inventory", "notifications", "orders", "users",
        "shipping", "recommendations", "media",
    ].enumerated().map { (Array($0.element.utf8), 1200 + $0.offset * 317) }
    private static let paths: [[UInt8]] = [
        "/v1/orders/", "/v1/users/", "/v2/search?page=", "/v1/cart/", "/v1/invoices/", "/v1/products/",
    ].map { Array($0.utf8) }
    private static let methods: [[UInt8]] = ["GET", "GET", "GET", "POST", "PUT", "DELETE"].map { Array($0.utf8) }
    private static let statuses = [200, 200, 200, 200, 200, 201, 204, 301, 400, 401, 404, 404, 500, 503]
    private static let tables: [[UInt8]] = ["orders", "users", "line_items", "sessions", "payments", "events"].map {
        Array($0.utf8)
    }
    private static let errors: [[UInt8]] = [
        "connection reset by peer", "deadline exceeded", "connection refused", "TLS handshake timeout",
        "503 Service Unavailable",
    ].map { Array($0.utf8) }

    mutating func append(to out: inout [UInt8]) {
        millis += random.below(40)
        putTimestamp(&out)
        let service = random.pick(Self.services)
        let roll = random.below(100)
        out.put(roll < 70 ? " INFO  " : roll < 85 ? " DEBUG " : roll < 95 ? " WARN  " : " ERROR ")
        out.append(contentsOf: service.name)
        out.put("[")
        out.put(service.pid + random.below(8))
        out.put("]: ")
        switch roll {
        case ..<70:
            out.append(contentsOf: random.pick(Self.methods))
            out.put(" ")
            out.append(contentsOf: random.pick(Self.paths))
            out.put(random.below(100_000))
            out.put(" status=")
            out.put(random.pick(Self.statuses))
            out.put(" latency_ms=")
            out.put(1 + random.below(random.below(10) == 0 ? 5000 : 250))
            out.put(" bytes=")
            out.put(random.below(65_536))
            out.put(" user=u")
            out.put(random.below(1_000_000), width: 6)
            out.put(" request_id=")
            out.putHex(random.next(), digits: 16)
        case ..<85:
            out.put(random.below(3) == 0 ? "cache miss" : "cache hit")
            out.put(" key=session:")
            out.put(random.below(10_000_000))
            out.put(" ttl_s=")
            out.put(60 * (1 + random.below(60)))
        case ..<95:
            out.put("slow query table=")
            out.append(contentsOf: random.pick(Self.tables))
            out.put(" rows=")
            out.put(random.below(2_000_000))
            out.put(" duration_ms=")
            out.put(500 + random.below(9500))
        default:
            out.put("upstream 10.0.")
            out.put(random.below(16))
            out.put(".")
            out.put(2 + random.below(250))
            out.put(":8080 failed attempt=")
            out.put(1 + random.below(5))
            out.put(" error=\"")
            out.append(contentsOf: random.pick(Self.errors))
            out.put("\"")
        }
        out.put("\n")
    }

    /// `2024-03-01T12:34:56.789Z`.
    private func putTimestamp(_ out: inout [UInt8]) {
        let (year, month, day) = Self.civilDate(daysSince1970: millis / 86_400_000)
        let time = millis % 86_400_000
        out.put(year, width: 4)
        out.put("-")
        out.put(month, width: 2)
        out.put("-")
        out.put(day, width: 2)
        out.put("T")
        out.put(time / 3_600_000, width: 2)
        out.put(":")
        out.put(time / 60_000 % 60, width: 2)
        out.put(":")
        out.put(time / 1000 % 60, width: 2)
        out.put(".")
        out.put(time % 1000, width: 3)
        out.put("Z")
    }

    /// Howard Hinnant's `civil_from_days`.
    private static func civilDate(daysSince1970 days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shifted = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shifted + 2) / 5 + 1
        let month = shifted < 10 ? shifted + 3 : shifted - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

/// A source tree of small `.py`, `.swift` and `.md` files (1–6 KiB each) nested two to four levels deep, with a
/// `.gitignore` and a few files it ignores (build output, bytecode, logs), so the planner's git path does real work.
enum SourceTree {
    private static let words = [
        "account", "batch", "cache", "client", "config", "cursor", "event", "filter", "handler", "index", "invoice",
        "ledger", "loader", "merge", "metric", "order", "parser", "payload", "queue", "record", "request", "retry",
        "route", "schema", "session", "shard", "signal", "snapshot", "stream", "token", "total", "window",
    ]

    static func write(files: Int, into root: String) throws {
        var random = SplitMix64(seed: UInt64(files))
        let manager = FileManager.default
        var made = Set<String>()
        func directory(_ path: String) throws {
            guard made.insert(path).inserted else { return }
            try manager.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        try directory(root)
        try ByteFile.write(to: root + "/.gitignore") {
            try $0.write(Array("__pycache__/\n*.pyc\nbuild/\n*.log\n".utf8))
        }
        for index in 0..<files {
            var folder = "\(root)/src/pkg\(index % 20)/mod\(index / 20 % 25)"
            if index % 4 == 1 { folder += "/impl" }
            if index % 8 == 3 { folder += "/impl/detail" }
            try directory(folder)
            let word = random.pick(words)
            let kind = random.below(10)
            let (ext, text) =
                kind < 5
                ? ("py", python(&random, size: 1024 + random.below(5 * 1024)))
                : kind < 8
                    ? ("swift", swift(&random, size: 1024 + random.below(5 * 1024)))
                    : ("md", markdown(&random, size: 1024 + random.below(5 * 1024)))
            try ByteFile.write(to: "\(folder)/\(word)_\(index).\(ext)") { try $0.write(Array(text.utf8)) }
        }
        // What .gitignore leaves out: rlm never reads these; the plain-Python walk reads them (about 0.1% more).
        try directory(root + "/build")
        try directory(root + "/src/pkg0/__pycache__")
        for index in 0..<50 {
            let filler = String(repeating: "x", count: 1000) + "\n"
            try ByteFile.write(to: "\(root)/build/out\(index).o") { try $0.write(Array(filler.utf8)) }
            try ByteFile.write(to: "\(root)/src/pkg0/__pycache__/m\(index).cpython-311.pyc") {
                try $0.write(Array(filler.utf8))
            }
        }
        try ByteFile.write(to: root + "/debug.log") { try $0.write(Array("ignored\n".utf8)) }
    }

    private static func python(_ random: inout SplitMix64, size: Int) -> String {
        var text = "\"\"\"The \(random.pick(words)) \(random.pick(words)) module.\"\"\"\nimport os\nimport sys\n\n"
        while text.utf8.count < size {
            let (name, field, other) = (random.pick(words), random.pick(words), random.pick(words))
            text += """
                def \(name)_\(field)(items, limit=\(random.below(1000))):
                    \"\"\"Return the \(field) \(other) of items up to limit.\"\"\"
                    total = 0
                    for item in items[:limit]:
                        if item.\(field) > \(random.below(100)):
                            total += item.\(other) * \(random.below(50))
                    return total


                """
        }
        return text
    }

    private static func swift(_ random: inout SplitMix64, size: Int) -> String {
        var text = "import Foundation\n\n"
        while text.utf8.count < size {
            let (name, field, other) = (random.pick(words), random.pick(words), random.pick(words))
            text += """
                struct \(name.capitalized)\(other.capitalized)\(random.below(1000)) {
                    var \(field): Int = \(random.below(10_000))
                    var \(other)Ratio: Double = \(random.below(100)).\(random.below(100))

                    func \(field)Total(_ values: [Int]) -> Int {
                        values.filter { $0 > \(random.below(500)) }.reduce(\(field), +)
                    }
                }


                """
        }
        return text
    }

    private static func markdown(_ random: inout SplitMix64, size: Int) -> String {
        var text = "# \(random.pick(words).capitalized) \(random.pick(words))\n\n"
        while text.utf8.count < size {
            let (name, field, other) = (random.pick(words), random.pick(words), random.pick(words))
            text += """
                ## \(name.capitalized) \(field)

                The \(name) service handles \(field) requests at \(random.below(5000)) per second and keeps \
                \(other) data for \(random.below(90)) days. See `\(field)_\(random.below(50_000)).py` for details.

                - \(other): \(random.below(100_000))
                - \(field) limit: \(random.below(1000))


                """
        }
        return text
    }
}

/// `git` in a directory, waited for.
enum Git {
    static func run(_ arguments: [String], in directory: String) throws {
        let git = ["/usr/bin/git", "/usr/local/bin/git"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let git else { throw ValidationError("git is not installed (apt-get install -y git)") }
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let pid = try Child.spawn(
            git, ["-C", directory] + arguments, environment: environment, stdout: "/dev/null", stderr: "/dev/null")
        let usage = Child.waitBlocking(pid)
        guard usage.exitCode == 0 else {
            throw ValidationError("git \(arguments.joined(separator: " ")) failed in \(directory)")
        }
    }
}

// MARK: - Running rlm and Python

/// A child process started with posix_spawn and reaped with wait4 here (not by Foundation's `Process`, whose own
/// reaping would take the child's rusage).
enum Child {
    /// Starts `path` with exactly `environment`, standard input on /dev/null and its output in files.
    static func spawn(
        _ path: String, _ arguments: [String], environment: [String], stdout: String, stderr: String
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // NIO ignores SIGPIPE in this process, and an ignored signal stays ignored across exec: reset them all.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw ValidationError("cannot start \(path): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Waits for `pid` (blocking the calling thread) and returns what wait4 reports.
    static func waitBlocking(_ pid: pid_t) -> ChildUsage {
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        return ChildUsage(status: status, exited: .now, maxRSSKiB: usage.ru_maxrss, sampledHWMKiB: 0)
    }

    /// Waits for `pid`, reading its `VmHWM` from /proc every 5 ms while it runs (blocking the calling thread).
    ///
    /// wait4's `ru_maxrss` cannot give rlm's peak: it is the largest of the child's own peak, the peaks of the
    /// descendants it reaped (rlm reaps its sandbox), and the resident set of the memory the child had before exec —
    /// a posix_spawn'ed child runs on this process's memory until it execs, so that is this process's. `VmHWM` is the
    /// high-water mark of the one process's own memory since exec, and only grows, so the last value read before the
    /// process exits is its peak, short of whatever it gained in its last 5 ms (while it shuts down).
    static func waitSampling(_ pid: pid_t) -> ChildUsage {
        var status: Int32 = 0
        var usage = rusage()
        var highest = 0
        while true {
            highest = max(highest, highWaterMark(of: pid) ?? 0)
            let reaped = wait4(pid, &status, WNOHANG, &usage)
            if reaped == pid || (reaped < 0 && errno != EINTR) { break }
            usleep(5000)
        }
        return ChildUsage(status: status, exited: .now, maxRSSKiB: usage.ru_maxrss, sampledHWMKiB: highest)
    }

    /// `VmHWM` of a running process, in KiB; `nil` once it has exited (a zombie has no memory to report).
    static func highWaterMark(of pid: pid_t) -> Int? {
        let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return highWaterMark(inStatus: String(decoding: buffer[..<count], as: UTF8.self))
    }

    /// The `VmHWM` line's figure in the text of a /proc/PID/status file, in KiB.
    static func highWaterMark(inStatus text: String) -> Int? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
        return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap { Int($0) }
    }
}

/// What a finished child used.
struct ChildUsage: Sendable {
    /// The raw wait status.
    var status: Int32
    /// When wait4 returned.
    var exited: ContinuousClock.Instant
    /// wait4's `ru_maxrss`, in KiB: the largest of the child's own peak, a reaped descendant's, and this process's
    /// resident set when it spawned the child (see ``Child/waitSampling(_:)``).
    var maxRSSKiB: Int
    /// The highest `VmHWM` read from /proc while the child ran, in KiB (0 when not sampled).
    var sampledHWMKiB: Int

    /// The exit code, or `nil` when a signal ended the child.
    var exitCode: Int32? { status & 0x7F == 0 ? (status >> 8) & 0xFF : nil }
}

/// One plain-Python run.
struct PythonFigures: Sendable {
    /// Spawning Python → it exited.
    var seconds: Double
    /// Python's `VmHWM`, which it prints as it ends.
    var peakKiB: Int
    /// wait4's `ru_maxrss`, which counts this process's memory too (see ``Child/waitSampling(_:)``).
    var waitMaxRSSKiB: Int
}

/// One rlm run.
struct RLMFigures: Sendable {
    /// Spawning rlm → the fake server receives request 2, which carries the first cell's result.
    var readySeconds: Double
    /// Spawning rlm → it exited.
    var totalSeconds: Double
    /// rlm's own peak RSS (sampled `VmHWM`).
    var peakKiB: Int
    /// wait4's `ru_maxrss` for rlm, which counts the sandbox it reaped and this process's memory too.
    var waitMaxRSSKiB: Int
    /// What the cell printed.
    var cell: CellFigures
}

/// What the benchmark cell printed inside the sandbox.
struct CellFigures: Sendable {
    /// `len(context)`: characters of a `str`, documents of a list.
    var length: Int
    /// Characters in the whole context (all ASCII here, so also its bytes).
    var characters: Int
    /// The worker's `VmHWM` and `VmRSS`, in KiB.
    var peakKiB: Int
    var residentKiB: Int
    /// The sandbox cgroup's `memory.peak` when the sandbox can read it, in bytes.
    var cgroupPeakBytes: Int?

    /// The marker the cell prints before its figures (written split in the code, so the code never matches).
    static let marker = "BENCH_RESULT "

    static let code = """
        status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
        kib = lambda key: status.get(key, ' 0 kB').split()[0]
        try:
            cgroup_peak = open('/sys/fs/cgroup/memory.peak').read().strip()
        except OSError:
            cgroup_peak = '-'
        chars = len(context) if isinstance(context, str) else sum(map(len, context))
        print('BENCH' + '_RESULT', len(context), chars, kib('VmHWM'), kib('VmRSS'), cgroup_peak)
        """

    /// The figures in a message's text, when the cell's line is there.
    init?(in text: String) {
        guard let start = text.range(of: Self.marker) else { return nil }
        let fields = text[start.upperBound...].prefix { $0 != "\n" }.split(separator: " ")
        guard fields.count >= 5, let length = Int(fields[0]), let characters = Int(fields[1]),
            let peak = Int(fields[2]), let resident = Int(fields[3])
        else { return nil }
        self.length = length
        self.characters = characters
        self.peakKiB = peak
        self.residentKiB = resident
        self.cgroupPeakBytes = Int(fields[4])
    }
}

/// The fake model's side of a run: reply 1 is the benchmark cell, reply 2 `FINAL(done)`. Request 2 carries the
/// cell's result; its arrival is recorded the moment the handler sees it.
final class RunProbe: Sendable {
    private let state = Mutex<(arrived: ContinuousClock.Instant?, cell: CellFigures?)>((nil, nil))

    var handler: FakeLLMServer.Handler {
        FakeLLMServer.Handler { [self] request in
            let now = ContinuousClock.now
            guard request.messages.contains(where: { $0.role == .assistant }) else {
                return .text("```repl\n\(CellFigures.code)\n```")
            }
            let cell = request.messages.lazy.filter { $0.role == .user }.compactMap { CellFigures(in: $0.content) }
                .first
            state.withLock { state in
                if state.arrived == nil { state = (now, cell) }
            }
            return .text("FINAL(done)")
        }
    }

    func reset() { state.withLock { $0 = (nil, nil) } }

    var result: (arrived: ContinuousClock.Instant?, cell: CellFigures?) { state.withLock { $0 } }
}

/// Runs `rlm` and plain Python on a context, one process at a time.
struct BenchRunner {
    let rlm: String
    let python: String
    let baseURL: String
    let probe: RunProbe
    let scratch: String

    /// The environment both sides run with: no user configuration, a scratch home.
    private var environment: [String: String] {
        var environment = [
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch + "/home", "LANG": "C.UTF-8",
            "XDG_STATE_HOME": scratch + "/state", "XDG_CACHE_HOME": scratch + "/cache",
        ]
        if let tmp = ProcessInfo.processInfo.environment["TMPDIR"] { environment["TMPDIR"] = tmp }
        return environment
    }

    func rlm(_ context: BenchContext) async throws -> RLMFigures {
        probe.reset()
        var environment = environment
        environment["OPENAI_API_KEY"] = "fake"
        let arguments = [
            "run", "--provider", "openai", "--base-url", baseURL, "--model", "scripted", "--python", python,
            "--context", context.path, "--json", "--trajectory", scratch + "/trajectory.jsonl", "--timeout", "900",
            "how many lines?",
        ]
        let (stdout, stderr) = (scratch + "/rlm.out", scratch + "/rlm.err")
        let started = ContinuousClock.now
        let pid = try Child.spawn(
            rlm, arguments, environment: environment.map { "\($0.key)=\($0.value)" }, stdout: stdout, stderr: stderr)
        let usage = await offPool { Child.waitSampling(pid) }
        let output = (try? String(contentsOfFile: stdout, encoding: .utf8)) ?? ""
        let answer = (try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])?["answer"]
        guard usage.exitCode == 0, answer as? String == "done" else {
            let errors = ((try? String(contentsOfFile: stderr, encoding: .utf8)) ?? "").suffix(2000)
            throw ValidationError(
                "rlm on \(context.label) did not answer (wait status \(usage.status)):\n\(output)\n\(errors)")
        }
        let result = probe.result
        guard let arrived = result.arrived, let cell = result.cell else {
            throw ValidationError("rlm on \(context.label): the first cell's result never reached the server")
        }
        return RLMFigures(
            readySeconds: (arrived - started).seconds, totalSeconds: (usage.exited - started).seconds,
            peakKiB: usage.sampledHWMKiB, waitMaxRSSKiB: usage.maxRSSKiB, cell: cell)
    }

    func python(_ context: BenchContext) async throws -> PythonFigures {
        let code: String
        switch context.kind {
        case .file:
            code = ContextRow.pythonFileCode
        case .tree:
            code = ContextRow.pythonTreeCode
        }
        return try await runPython(["-c", code + ContextRow.pythonPeakCode, context.path])
    }

    /// Python doing nothing: the interpreter's own footprint.
    func pythonIdle() async throws -> PythonFigures {
        try await runPython(["-c", ContextRow.pythonPeakCode])
    }

    private func runPython(_ arguments: [String]) async throws -> PythonFigures {
        let started = ContinuousClock.now
        let pid = try Child.spawn(
            python, arguments, environment: environment.map { "\($0.key)=\($0.value)" },
            stdout: scratch + "/python.out", stderr: scratch + "/python.err")
        let usage = await offPool { Child.waitBlocking(pid) }
        guard usage.exitCode == 0 else {
            let errors = (try? String(contentsOfFile: scratch + "/python.err", encoding: .utf8)) ?? ""
            throw ValidationError("\(python) \(arguments.prefix(2).joined(separator: " ")) failed:\n\(errors)")
        }
        let output = (try? String(contentsOfFile: scratch + "/python.out", encoding: .utf8)) ?? ""
        guard let peak = Child.highWaterMark(inStatus: output) else {
            throw ValidationError("\(python) did not print its VmHWM:\n\(output.prefix(2000))")
        }
        return PythonFigures(
            seconds: (usage.exited - started).seconds, peakKiB: peak, waitMaxRSSKiB: usage.maxRSSKiB)
    }
}

/// Runs blocking work (waiting for a child) on a Dispatch thread, so the cooperative pool — two threads on a
/// two-core machine — keeps serving the fake model meanwhile.
private func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}

extension Duration {
    fileprivate var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// Progress lines on stderr, only when stderr is a terminal.
struct BenchProgress {
    private let enabled = isatty(STDERR_FILENO) == 1

    func say(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("rlm-bench context: \(text)\n".utf8))
    }
}

// MARK: - The report

/// Every run on one context.
struct ContextRow {
    var context: BenchContext
    var python: [PythonFigures] = []
    var rlm: [RLMFigures] = []

    static let pythonFileCode = "import sys; open(sys.argv[1]).read()"
    /// Appended to both: Python prints its own peak as it ends (the way the sandbox's cell does), because wait4's
    /// `ru_maxrss` would also count the benchmark's memory (see ``Child/waitSampling(_:)``).
    static let pythonPeakCode = "\nprint(open('/proc/self/status').read())"
    static let pythonTreeCode = """
        import os, sys
        docs = []
        for root, dirs, names in os.walk(sys.argv[1]):
            dirs[:] = [d for d in dirs if d != '.git']
            for name in names:
                with open(os.path.join(root, name)) as f:
                    docs.append(f.read())
        """
}

/// The Markdown the command prints.
struct Report {
    var rows: [ContextRow]
    var fixed: [RLMFigures]
    var idle: [PythonFigures]
    var repetitions: Int

    func markdown(command: [String]) -> String {
        var lines = [
            "`\(command.joined(separator: " "))`", "",
            "| context | python read (s) | rlm ready (s) | ratio | rlm peak RSS | sandbox peak RSS | sandbox/context "
                + "| python peak RSS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows {
            let python = median(row.python.map(\.seconds))
            let ready = median(row.rlm.map(\.readySeconds))
            let sandbox = median(row.rlm.map { Double($0.cell.peakKiB) * 1024 })
            let characters = median(row.rlm.map { Double($0.cell.characters) })
            lines.append(
                "| \(describe(row, characters: characters)) | \(format("%.3f", python)) | \(format("%.3f", ready)) "
                    + "| \(format("%.2f", ready / python))× | \(mebibytes(row.rlm.map(\.peakKiB))) "
                    + "| \(mebibytes(row.rlm.map(\.cell.peakKiB))) | \(format("%.2f", sandbox / characters))× "
                    + "| \(mebibytes(row.python.map(\.peakKiB))) |")
        }
        lines += ["", "Medians of \(repetitions) runs each, rlm and Python alternating. Every run:", ""]
        for row in rows {
            let runs = zip(row.python, row.rlm).map { python, rlm in
                format("python %.3f s", python.seconds) + format(" / rlm ready %.3f s", rlm.readySeconds)
                    + format(" (exit %.3f s)", rlm.totalSeconds)
            }
            let rlmWait = row.rlm.map { ContextBench.mebibytes($0.waitMaxRSSKiB * 1024) }
            let pythonWait = row.python.map { ContextBench.mebibytes($0.waitMaxRSSKiB * 1024) }
            lines.append(
                "- \(row.context.label): \(runs.joined(separator: "; ")); wait4's ru_maxrss: rlm "
                    + "\(rlmWait.joined(separator: ", ")), python \(pythonWait.joined(separator: ", "))")
        }
        lines += [
            "- fixed costs: a one-line context is ready in \(format("%.3f", median(fixed.map(\.readySeconds)))) s, "
                + "rlm peaks at \(mebibytes(fixed.map(\.peakKiB))), its sandbox at "
                + "\(mebibytes(fixed.map(\.cell.peakKiB))); Python doing nothing peaks at "
                + "\(mebibytes(idle.map(\.peakKiB)))",
            "- wait4's ru_maxrss is not used above: it is the largest of the child's own peak, the peaks of what it "
                + "reaped (rlm's sandbox) and this benchmark's resident set when it spawned the child (at most "
                + "\(ContextBench.mebibytes((Child.highWaterMark(of: getpid()) ?? 0) * 1024)))",
            "",
        ]
        lines += targets()
        return lines.joined(separator: "\n") + "\n"
    }

    private func targets() -> [String] {
        var lines = ["Targets:"]
        if let row = rows.first(where: { ContextBench.byteCount($0.context.label) == 100 << 20 }) {
            let ratio = median(row.rlm.map(\.readySeconds)) / median(row.python.map(\.seconds))
            lines.append(
                "- 100 MiB ready within 1.5× of Python's read: \(format("%.2f", ratio))× — \(verdict(ratio <= 1.5))")
        }
        let peaks = rows.map { (label: $0.context.label, kib: median($0.rlm.map { Double($0.peakKiB) })) }
        if let worst = peaks.max(by: { $0.kib < $1.kib }) {
            lines.append(
                "- rlm's peak RSS under 64 MiB at every size: at most \(format("%.1f", worst.kib / 1024)) MiB "
                    + "(\(worst.label)) — \(verdict(worst.kib < 64 * 1024))")
        }
        let ratios = rows.map { row in
            (
                label: row.context.label,
                ratio: median(row.rlm.map { Double($0.cell.peakKiB) * 1024 })
                    / median(row.rlm.map { Double($0.cell.characters) })
            )
        }
        for (label, ratio) in ratios {
            lines.append(
                "- sandbox within 1.3× of the context (\(label)): \(format("%.2f", ratio))× — \(verdict(ratio <= 1.3))")
        }
        return lines
    }

    private func describe(_ row: ContextRow, characters: Double) -> String {
        switch row.context.kind {
        case .file:
            return "\(row.context.label) log (\(ContextBench.mebibytes(Int(characters))))"
        case .tree(let files):
            return "tree, \(ContextBench.grouped(files)) files (\(ContextBench.mebibytes(Int(characters))) as text)"
        }
    }

    private func verdict(_ met: Bool) -> String { met ? "met" : "**missed**" }

    private func mebibytes(_ kib: [Int]) -> String {
        ContextBench.mebibytes(Int(median(kib.map(Double.init)) * 1024))
    }

    private func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        let middle = sorted.count / 2
        return sorted.count.isMultiple(of: 2) ? (sorted[middle - 1] + sorted[middle]) / 2 : sorted[middle]
    }

    private func format(_ pattern: String, _ value: Double) -> String { String(format: pattern, value) }
}

extension ContextBench {
    /// `50000` → `50,000`.
    static func grouped(_ value: Int) -> String {
        let digits = Array(String(value))
        var text = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { text.append(",") }
            text.append(digit)
        }
        return text
    }

    /// `12.3 MiB`.
    static func mebibytes(_ bytes: Int) -> String {
        String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
    }
}
