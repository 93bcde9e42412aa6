import Foundation
import Glibc
import RLM
import Synchronization
import Testing

@testable import RLMSandbox

/// Attacks on the host around the sandbox (issue 8): each would leave a mark the host can see — too many sandboxes
/// alive, memory past the ceiling, a cgroup left behind, a file written by host code, a poisoned worker answering, a
/// REPL lost, memory growing per sub-call — if it worked.
extension SandboxTests {
    @Suite("Host edges: global limits")
    struct HostLimitTests {
        /// Six concurrent sessions against a cap of three: never more than three alive, and all six get their turn.
        @Test func liveSessionsAreCappedPerProcess() async throws {
            var configuration = testConfiguration()
            configuration.maxLiveSessionsPerProcess = 3
            let sandbox = ProcessSandbox(configuration: configuration)
            let alive = EdgeBox(0)
            let maxAlive = EdgeBox(0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        let session = try await sandbox.startSession(handler: nil)
                        let now = alive.update {
                            $0 += 1
                            return $0
                        }
                        maxAlive.update { $0 = max($0, now) }
                        let result = try await session.run("import time\ntime.sleep(0.3)\nprint(\(index))")
                        #expect(result.stdout == "\(index)\n")
                        alive.update { $0 -= 1 }
                        await session.shutdown()
                    }
                }
                try await group.waitForAll()
            }
            #expect(maxAlive.value <= 3, "\(maxAlive.value) sandboxes alive at once past a cap of 3")
            #expect(maxAlive.value >= 2, "the sessions never overlapped; the test proves nothing")
        }

        /// A session beyond the cap waits a bounded time, then fails with an error naming the limit.
        @Test func aSessionBeyondTheCapFailsNamingTheLimit() async throws {
            var configuration = testConfiguration()
            configuration.maxLiveSessionsPerProcess = 1
            try await withTestSession(configuration) { (_: any SandboxSession) async throws in
                var waiting = configuration
                waiting.sessionSlotWait = .milliseconds(300)
                let clock = ContinuousClock()
                let start = clock.now
                do {
                    let extra = try await ProcessSandbox(configuration: waiting).startSession(handler: nil)
                    await extra.shutdown()
                    Issue.record("a second sandbox started past a per-process cap of 1")
                } catch let error as SandboxError {
                    #expect(error.message.contains("maxLiveSessionsPerProcess = 1"), "\(error)")
                }
                let waited = clock.now - start
                #expect(waited >= .milliseconds(300) && waited < .seconds(20), "waited \(waited)")
            }
        }

        /// Every sandbox's cgroups sit inside one `swiftrlm-<pid>` group per controller, which carries the
        /// process-wide memory and pids ceilings; two sandboxes that each fit their own limit cannot both hold
        /// their memory past the shared ceiling, and the parent's peak usage never passes it.
        @Test(.enabled(if: Edge.cgroupsUsable)) func allSandboxesTogetherStayUnderOneMemoryCeiling() async throws {
            var configuration = testConfiguration(memoryMB: 512)
            configuration.totalMemoryLimitBytes = 480 << 20
            configuration.totalMaxProcesses = 300
            // The session that makes the parent sets its limits; with another sandbox of this process alive (a
            // parallel test target) the parent already exists with that one's limits.
            let ownParent = SessionSlots.shared.live == 0
            let sandbox = ProcessSandbox(configuration: configuration)
            try await sandbox.withSession { first in
                try await sandbox.withSession { second in
                    let probes = try [first, second].map { try #require($0 as? WorkerSession).processesForTesting }
                    let parents = HostCgroups.parentsForTesting
                    #expect(Set(parents.keys) == ["memory", "pids"])
                    for probe in probes {
                        #expect(probe.cgroups.count == 2)
                        for dir in probe.cgroups {
                            let parent = URL(fileURLWithPath: dir).deletingLastPathComponent().path
                            #expect(parents.values.contains(parent), "\(dir) is not inside the process's group")
                            #expect(parent.hasSuffix("/swiftrlm-\(getpid())"))
                        }
                    }
                    guard ownParent, let memory = parents["memory"], let pids = parents["pids"] else { return }
                    #expect(Edge.readTrimmed(memory + "/memory.limit_in_bytes") == "\(480 << 20)")
                    #expect(Edge.readTrimmed(memory + "/memory.use_hierarchy") == "1")
                    #expect(Edge.readTrimmed(pids + "/pids.max") == "300")
                    // Each allocation fits its own sandbox (512 MiB); together they pass the 480 MiB ceiling.
                    let fill = "x = b'x' * (300 << 20)\nprint('held')"
                    let one = try await first.run(fill)
                    #expect(one.stdout == "held\n", "\(one)")
                    _ = try? await second.run(fill)
                    // Read while the first session still holds the group (it goes when the last session ends).
                    let peak = Int(Edge.readTrimmed(memory + "/memory.max_usage_in_bytes")) ?? .max
                    #expect(peak <= 480 << 20, "the sandboxes together peaked at \(peak >> 20) MiB")
                    var holding = 0
                    for session in [first, second] where await session.isAlive {
                        let check = try await session.run("print(len(x) if 'x' in dir() else 0)")
                        if check.stdout == "\(300 << 20)\n" { holding += 1 }
                    }
                    #expect(holding <= 1, "both sandboxes hold 300 MiB past a 480 MiB ceiling")
                }
            }
            if SessionSlots.shared.live == 0 {
                #expect(HostCgroups.parentsForTesting.isEmpty)
                for base in Edge.cgroupBases() {
                    #expect(!FileManager.default.fileExists(atPath: base + "/swiftrlm-\(getpid())"))
                }
            }
        }
    }

    @Suite("Host edges: stale cgroups")
    struct StaleCgroupTests {
        /// Groups named for a dead process (as a SIGKILLed `rlm` leaves them, a sandbox group and a parent with a
        /// child) are removed when a sandbox starts; a live process's group is left alone.
        @Test(.enabled(if: Edge.cgroupsUsable)) func staleGroupsOfDeadProcessesAreSwept() async throws {
            let dead = try Edge.runTool(["/bin/true"]).pid
            let sleeper = Process()
            sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
            sleeper.arguments = ["30"]
            try sleeper.run()
            defer {
                kill(sleeper.processIdentifier, SIGKILL)
                sleeper.waitUntilExit()
            }
            var stale = [String]()
            var live = [String]()
            for base in Edge.cgroupBases() {
                for path in ["swiftrlm-\(dead)-x", "swiftrlm-\(dead)", "swiftrlm-\(dead)/swiftrlm-\(dead)-y"] {
                    try Edge.makeDirectory(base + "/" + path)
                    stale.append(base + "/" + path)
                }
                try Edge.makeDirectory(base + "/swiftrlm-\(sleeper.processIdentifier)-z")
                live.append(base + "/swiftrlm-\(sleeper.processIdentifier)-z")
            }
            defer { for dir in live { rmdir(dir) } }
            try await withTestSession { (session: any SandboxSession) async throws in
                #expect(try await session.run("print(1)").stdout == "1\n")
            }
            for dir in stale { #expect(!FileManager.default.fileExists(atPath: dir), "\(dir) was left") }
            for dir in live { #expect(FileManager.default.fileExists(atPath: dir), "a live process's \(dir) went") }
        }

        /// The attack as it happens: `rlm sandbox exec` on a sleeping program, SIGKILLed mid-cell, leaves its
        /// groups behind; the next sandbox start in any process removes them.
        @Test(.enabled(if: Edge.cgroupsUsable && Edge.rlmBinary != nil))
        func aSIGKILLedHostsGroupsAreSweptAtTheNextStart()
            async throws
        {
            let scratch = try Edge.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            try Data("import time\ntime.sleep(60)\n".utf8).write(to: URL(fileURLWithPath: scratch + "/sleep.py"))
            let helper = Process()
            helper.executableURL = URL(fileURLWithPath: try #require(Edge.rlmBinary))
            helper.arguments = ["sandbox", "exec", "--timeout", "120", scratch + "/sleep.py"]
            helper.environment = ["PATH": "/usr/bin:/bin", "HOME": scratch]
            helper.standardOutput = FileHandle.nullDevice
            helper.standardError = FileHandle.nullDevice
            try helper.run()
            let pid = helper.processIdentifier
            // Its groups: the parent `swiftrlm-<pid>` and, inside, the sandbox's own.
            var groups = [String]()
            for _ in 0..<200 {
                groups = Edge.cgroupBases().flatMap { base in
                    let parent = base + "/swiftrlm-\(pid)"
                    let children = (try? FileManager.default.contentsOfDirectory(atPath: parent))?
                        .filter { $0.hasPrefix("swiftrlm-\(pid)-") }
                        .map { parent + "/" + $0 }
                    return children.map { [parent] + $0 } ?? []
                }
                if groups.count >= 4 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            try #require(groups.count >= 4, "the helper's sandbox did not start: \(groups)")
            kill(pid, SIGKILL)
            helper.waitUntilExit()
            // Its sandbox dies with it (parent-death signal); its groups stay: that is the mark.
            for _ in 0..<100 where groups.contains(where: { !SandboxCgroups.members(of: $0).isEmpty }) {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(groups.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "nothing was left to sweep")
            try await withTestSession { (session: any SandboxSession) async throws in
                _ = try await session.run("pass")
            }
            for dir in groups { #expect(!FileManager.default.fileExists(atPath: dir), "\(dir) was left") }
        }
    }

    @Suite("Host edges: the compiled worker")
    struct WorkerCacheTests {
        /// A venv whose site-packages holds a `.pth` hook that writes a marker when Python starts with `site`: the
        /// host compiles the worker with that venv's Python (as root) and must not run the hook.
        @Test func compilingTheWorkerRunsNoVenvStartupHook() async throws {
            let scratch = try Edge.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let venv = scratch + "/venv"
            let made = try Edge.runTool(["/usr/bin/python3", "-m", "venv", "--without-pip", venv])
            try #require(made.status == 0, "python3 -m venv failed (apt-get install python3-venv)")
            let lib = try #require(
                try FileManager.default.contentsOfDirectory(atPath: venv + "/lib").first { $0.hasPrefix("python3") })
            let marker = venv + "/host-ran-the-hook"
            try Data("import os; open(\(marker.debugDescription), 'w').write(str(os.getuid()))\n".utf8)
                .write(to: URL(fileURLWithPath: venv + "/lib/\(lib)/site-packages/rlm_hook.pth"))
            // The hook is live: plain start-up of that Python runs it.
            _ = try Edge.runTool([venv + "/bin/python3", "-c", "pass"])
            try #require(FileManager.default.fileExists(atPath: marker), "the .pth hook did not run; no attack")
            try FileManager.default.removeItem(atPath: marker)

            var configuration = testConfiguration()
            configuration.pythonPath = venv + "/bin/python3"
            configuration.workerCacheDirectory = URL(fileURLWithPath: scratch + "/cache")
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                #expect(try await session.run("print(6 * 7)").stdout == "42\n")
            }
            #expect(!FileManager.default.fileExists(atPath: marker), "host code ran the venv's .pth hook")
            // The compiled worker was used (not the source fallback), so the compiler really ran.
            let file = try #require(
                WorkerSource.cacheFile(python: venv + "/bin/python3", directory: Edge.cacheURL(scratch)))
            #expect(SwiftRLMPaths.isPrivateFile(file))
        }

        enum Poison: String, CaseIterable, Sendable {
            case ownedByAnotherUser, writableByOthers, alteredContent, symlink

            /// The cases this machine can stage: giving a file to another owner needs root.
            static var stageable: [Poison] { geteuid() == 0 ? allCases : allCases.filter { $0 != .ownedByAnotherUser } }
        }

        @Test(.enabled(if: geteuid() == 0, "staging a cache file owned by another user needs root (chown)"))
        func aCacheOwnedByAnotherUserIsStageableHere() {
            #expect(Poison.stageable.contains(.ownedByAnotherUser))
        }

        /// A cached worker someone else could have written (owned by uid 65534, mode 0666, a symlink) or whose code
        /// does not match its checksum is ignored and rebuilt: the poisoned worker never answers.
        @Test(arguments: Poison.stageable) func aPoisonedWorkerCacheIsNotUsed(poison: Poison) async throws {
            let scratch = try Edge.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let python = "/usr/bin/python3"
            let directory = Edge.cacheURL(scratch)
            try SwiftRLMPaths.createDirectory(directory, privateToOwner: true)
            let file = try #require(WorkerSource.cacheFile(python: python, directory: directory))
            let identity = try #require(WorkerSource.Identity(python: python))
            let poisoned = try Edge.compiledPoisonedWorker(in: scratch)
            switch poison {
            case .ownedByAnotherUser:
                WorkerSource.writeCache(file, identity: identity, code: poisoned)
                #expect(chown(file, 65534, 65534) == 0)
            case .writableByOthers:
                WorkerSource.writeCache(file, identity: identity, code: poisoned)
                #expect(chmod(file, 0o666) == 0)
            case .alteredContent:
                // A valid file for other code, its code then replaced: the checksum no longer matches.
                WorkerSource.writeCache(file, identity: identity, code: Data("other".utf8))
                var contents = try Data(contentsOf: URL(fileURLWithPath: file))
                contents = contents.prefix(WorkerSource.fileMarker.count + 17) + poisoned
                try contents.write(to: URL(fileURLWithPath: file + ".new"))
                #expect(rename(file + ".new", file) == 0)
            case .symlink:
                WorkerSource.writeCache(scratch + "/elsewhere.bin", identity: identity, code: poisoned)
                #expect(symlink(scratch + "/elsewhere.bin", file) == 0)
            }
            #expect(WorkerSource.readCache(file, identity: identity) == nil, "the poisoned cache passed the checks")
            var configuration = testConfiguration()
            configuration.workerCacheDirectory = directory
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                #expect(await session.info.pythonVersion != "POISONED", "the poisoned worker answered")
                #expect(try await session.run("print(6 * 7)").stdout == "42\n")
            }
            // Rebuilt in place: now a private file of ours holding the real worker.
            #expect(SwiftRLMPaths.isPrivateFile(file))
            let rebuilt = try #require(WorkerSource.readCache(file, identity: identity))
            #expect(rebuilt != poisoned)
        }

        /// The control for the test above: the same tampered worker, written as a private file of ours with a
        /// matching checksum, is what the sandbox runs — so the mark that test looks for is real.
        @Test func aCacheThatPassesTheChecksIsWhatTheSandboxRuns() async throws {
            let scratch = try Edge.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let directory = Edge.cacheURL(scratch)
            try SwiftRLMPaths.createDirectory(directory, privateToOwner: true)
            let file = try #require(WorkerSource.cacheFile(python: "/usr/bin/python3", directory: directory))
            let identity = try #require(WorkerSource.Identity(python: "/usr/bin/python3"))
            WorkerSource.writeCache(file, identity: identity, code: try Edge.compiledPoisonedWorker(in: scratch))
            var configuration = testConfiguration()
            configuration.workerCacheDirectory = directory
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                #expect(await session.info.pythonVersion == "POISONED")
            }
        }

        @Test func validCacheIsReusedAndFoundPrivate() async throws {
            let scratch = try Edge.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let identity = try #require(WorkerSource.Identity(python: "/usr/bin/python3"))
            #expect(identity.fileName.hasPrefix("worker-u\(getuid())-"))
            let file = scratch + "/" + identity.fileName
            WorkerSource.writeCache(file, identity: identity, code: Data("code".utf8))
            #expect(WorkerSource.readCache(file, identity: identity) == Data("code".utf8))
            var info = stat()
            #expect(lstat(file, &info) == 0 && info.st_mode & 0o777 == 0o600)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch).filter { $0.hasSuffix(".tmp") }
            #expect(leftovers.isEmpty)
        }
    }

    @Suite("Host edges: oversize batches and replies")
    struct OversizeTests {
        /// A batch past the limit raises `ValueError` in the cell before anything is sent; the REPL lives on.
        @Test func anOversizeBatchRaisesInTheCell() async throws {
            let calls = EdgeBox(0)
            let handler = ClosureSubcallHandler { request in
                calls.update { $0 += 1 }
                guard case .llmQueryBatched(let prompts, _) = request else { return .text("?") }
                return .batch(prompts.map { _ in "a" })
            }
            try await withTestSession(handler: handler) { (session: any SandboxSession) async throws in
                _ = try await session.run("kept = 'state'")
                let over = try await session.run(
                    "try:\n    llm_query_batched(['p'] * 4097)\nexcept ValueError as e:\n    print('ValueError:', e)")
                #expect(over.stdout.contains("ValueError:") && over.stdout.contains("4096"), "\(over)")
                #expect(calls.value == 0, "the oversize batch reached the host")
                let full = try await session.run("print(len(llm_query_batched(['p'] * 4096)), kept)")
                #expect(full.stdout == "4096 state\n", "\(full)")
            }
        }

        /// Code that lifts the worker's own limit still meets the host's: the batch is refused as a protocol
        /// violation and never reaches the handler.
        @Test func theHostStillRefusesABatchPastTheLimit() async throws {
            let calls = EdgeBox(0)
            let handler = ClosureSubcallHandler { _ in
                calls.update { $0 += 1 }
                return .batch([])
            }
            let session = try await ProcessSandbox(configuration: testConfiguration()).startSession(handler: handler)
            let probe = try #require(session as? WorkerSession).processesForTesting
            do {
                let result = try await session.run(
                    "llm_query_batched.__globals__['_MAX_BATCH'][0] = 10 ** 6\nllm_query_batched(['p'] * 5000)")
                Issue.record("the host accepted a batch of 5000: \(result)")
            } catch let error as SandboxError {
                #expect(error.isProtocolViolation && error.message.contains("4096"), "\(error)")
            }
            #expect(calls.value == 0)
            await session.shutdown()
            try await expectGone(probe)
        }

        /// A 9 MB reply of `/` is delivered whole (`/` is not escaped, so it stays 9 MB on the wire); a reply, or a
        /// batch of replies, over the 16 MiB frame cap becomes a `RuntimeError` in the cell, and the REPL is kept.
        @Test func aReplyOverTheFrameCapIsAnErrorInTheCell() async throws {
            let handler = ClosureSubcallHandler { request in
                switch request {
                case .llmQuery(let prompt, _) where prompt == "slashes":
                    return .text(String(repeating: "/", count: 9_000_000))
                case .llmQuery:
                    return .text(String(repeating: "x", count: 17_000_000))
                case .llmQueryBatched(let prompts, _):
                    return .batch(prompts.map { _ in String(repeating: "y", count: 6_000_000) })
                case .rlmQuery:
                    return .text("")
                }
            }
            try await withTestSession(handler: handler) { (session: any SandboxSession) async throws in
                _ = try await session.run("kept = 'state'")
                let slashes = try await session.run("r = llm_query('slashes')\nprint(len(r), r.count('/'))")
                #expect(slashes.stdout == "9000000 9000000\n", "\(slashes)")
                for call in ["llm_query('huge')", "llm_query_batched(['a', 'b', 'c'])"] {
                    let huge = try await session.run(
                        "try:\n    \(call)\nexcept RuntimeError as e:\n    print('RuntimeError:', e)")
                    #expect(huge.stdout.contains("RuntimeError:") && huge.stdout.contains("too large"), "\(huge)")
                    #expect(!huge.stateLost)
                }
                #expect(try await session.run("print(kept)").stdout == "state\n")
            }
        }
    }

    @Suite("Host edges: sub-call bookkeeping")
    struct SubcallBookkeepingTests {
        /// 20,000 sub-calls in one cell: what the session keeps per sub-call (tasks in flight, remembered ids) is
        /// sampled mid-cell and stays bounded, instead of growing by one task per call until the cell ends.
        @Test func subcallTasksAreReleasedAsTheyFinish() async throws {
            let session = EdgeBox<WorkerSession?>(nil)
            let samples = EdgeBox([Int]())
            let count = EdgeBox(0)
            let handler = ClosureSubcallHandler { _ in
                let number = count.update {
                    $0 += 1
                    return $0
                }
                if number % 500 == 0, let session = session.value {
                    let kept = await session.subcallBookkeepingForTesting
                    samples.update { $0.append(kept) }
                }
                return .text("ok")
            }
            let configuration = testConfiguration(timeout: .seconds(120))
            let rssBefore = Edge.residentBytes()
            try await withTestSession(configuration, handler: handler) { (started: any SandboxSession) async throws in
                session.update { $0 = started as? WorkerSession }
                let clock = ContinuousClock()
                let start = clock.now
                let result = try await started.run(
                    "n = 0\nfor i in range(20000):\n    n += llm_query('q') == 'ok'\nprint(n)")
                #expect(result.stdout == "20000\n", "\(result)")
                print("20,000 sub-calls in \(clock.now - start)")
                let after = try #require(started as? WorkerSession)
                #expect(await after.subcallBookkeepingForTesting == 0)
            }
            session.update { $0 = nil }
            #expect(samples.value.count == 40)
            #expect((samples.value.max() ?? 0) <= 8, "bookkeeping grew during the cell: \(samples.value)")
            // ~16 KB per sub-call kept until the cell ended would be 300 MB here.
            let growth = Edge.residentBytes() - rssBefore
            #expect(growth < 150 << 20, "host memory grew by \(growth >> 20) MiB over 20,000 sub-calls")
        }
    }
}

// MARK: - Helpers

/// A value shared between the test and its concurrent closures.
final class EdgeBox<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    var value: Value { mutex.withLock { $0 } }
    @discardableResult
    func update<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

/// Helpers of the host-edge and churn tests.
enum Edge {
    /// Root with cgroup v1 memory and pids controllers: the parent group and the sweep can be observed.
    static let cgroupsUsable =
        geteuid() == 0 && SandboxCgroups.hierarchy("memory") != nil && SandboxCgroups.hierarchy("pids") != nil

    /// The built `rlm` beside the test bundle (`swift build --build-tests` builds both).
    static let rlmBinary: String? = {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        let candidate = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("rlm").path
        return access(candidate, X_OK) == 0 ? candidate : nil
    }()

    /// Where this process makes cgroups, per controller.
    static func cgroupBases() -> [String] {
        HostCgroups.controllers.flatMap { SandboxCgroups.bases($0) }
    }

    static func readTrimmed(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func makeDirectory(_ path: String) throws {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw SandboxError.setup("mkdir \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// A fresh directory under /tmp that the sandbox uid can traverse (a venv there is usable inside).
    static func makeScratchDirectory() throws -> String {
        let path = "/tmp/rlm-edge-\(UUID().uuidString)"
        try makeDirectory(path)
        return path
    }

    static func cacheURL(_ scratch: String) -> URL {
        URL(fileURLWithPath: scratch + "/cache")
    }

    /// Runs a tool to completion; returns its pid (dead by then) and status.
    @discardableResult
    static func runTool(_ argv: [String]) throws -> (pid: pid_t, status: Int32, output: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.processIdentifier, process.terminationStatus, output)
    }

    /// A marshalled worker that answers `ready` as "POISONED".
    static func compiledPoisonedWorker(in scratch: String) throws -> Data {
        // The real worker, tampered with: it reports its Python version as "POISONED".
        let genuine = String(decoding: WorkerSource.data, as: UTF8.self)
        let version = "'python': f'{v[0]}.{v[1]}.{v[2]}'"
        guard genuine.contains(version) else { throw SandboxError.setup("the worker's ready frame changed") }
        let path = scratch + "/poisoned.py"
        try Data(genuine.replacingOccurrences(of: version, with: "'python': 'POISONED'").utf8)
            .write(to: URL(fileURLWithPath: path))
        let compiled = try runTool([
            "/usr/bin/python3", "-I", "-S", "-c",
            "import marshal,sys;sys.stdout.buffer.write(marshal.dumps(compile(open(sys.argv[1]).read(),"
                + "'<rlm-worker>','exec')))",
            path,
        ])
        guard compiled.status == 0, !compiled.output.isEmpty else { throw SandboxError.setup("compiling failed") }
        return compiled.output
    }

    /// This process's resident memory.
    static func residentBytes() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) << 10
        }
        return 0
    }
}
