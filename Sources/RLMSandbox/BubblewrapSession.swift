import Foundation
import Glibc
import Logging
import RLM
import Synchronization

/// One running bubblewrap sandbox with its worker.
actor BubblewrapSession: SandboxSession {
    private let process: ChildProcess
    private let channel: FrameChannel
    private let cgroups: SandboxCgroups?
    private let configuration: ProcessSandbox.Configuration
    private let handler: (any SubcallHandler)?
    private let logger: Logger
    private var sessionInfo: SessionInfo
    private var nextRequest = 1
    private var busy = false
    /// Why the session ended, once it has.
    private var endReason: String?
    private var seenSubcallIDs = Set<String>()
    /// The worker's last words, from a `fatal` frame.
    private var fatalMessage: String?

    private init(
        process: ChildProcess, channel: FrameChannel, cgroups: SandboxCgroups?,
        configuration: ProcessSandbox.Configuration, handler: (any SubcallHandler)?, logger: Logger, info: SessionInfo
    ) {
        self.process = process
        self.channel = channel
        self.cgroups = cgroups
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
        self.sessionInfo = info
    }

    static func start(
        plan: LaunchPlan, configuration: ProcessSandbox.Configuration, handler: (any SubcallHandler)?, logger: Logger
    ) async throws -> BubblewrapSession {
        _ = ignoreSIGPIPE
        let name = "swiftrlm-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let cgroups =
            configuration.cgroups
            ? SandboxCgroups.create(
                name: name,
                // The tmpfs work dir is charged to the group too; leave room for it and for bwrap itself.
                memoryLimitBytes: configuration.memoryLimitBytes + configuration.workDirBytes + (64 << 20),
                maxProcesses: configuration.maxProcesses)
            : nil
        // Both run a helper process the first time (then they are cached): keep that off the cooperative pool.
        let bwrapPath = plan.bubblewrapPath
        let features = await offPool { BubblewrapFeatures.probe(bwrapPath) }
        if configuration.workerSourceOverride == nil {
            let python = configuration.pythonPath
            _ = await offPool { WorkerSource.payload(python: python) }
        }
        let argv = plan.arguments(configuration: configuration, cgroups: cgroups, bubblewrapFeatures: features)
        let process: ChildProcess
        do {
            process = try ChildProcess.spawn(path: plan.launcherPath, arguments: argv, environment: [])
        } catch {
            cgroups?.remove()
            throw error
        }
        let channel = FrameChannel(
            readFD: process.stdoutFD, writeFD: process.stdinFD, maxFrameBytes: configuration.maxFrameBytes)
        let session = BubblewrapSession(
            process: process, channel: channel, cgroups: cgroups, configuration: configuration, handler: handler,
            logger: logger,
            info: SessionInfo(
                pythonVersion: "", landlock: configuration.landlock ? "pending" : "disabled",
                cgroups: cgroups != nil, hostUID: plan.runningAsRoot ? configuration.sandboxUID : getuid()))
        try await session.handshake()
        return session
    }

    private func handshake() async throws {
        let init_ = HostMessage.Initialize(
            id: "h0", outputLimit: configuration.outputLimit, maxFrame: configuration.maxFrameBytes,
            workDir: LaunchPlan.workDir, landlock: configuration.landlock)
        do {
            let reply = try await exchange(
                id: "h0",
                sending: [
                    configuration.workerSourceOverride ?? WorkerSource.payload(python: configuration.pythonPath),
                    HostMessage.encode(init_),
                ],
                timeout: configuration.startTimeout,
                startTimer: false, allowSubcalls: false)
            guard case .ready(_, _, let python, let landlock) = reply.message else {
                throw await violation("expected 'ready', got another frame")
            }
            sessionInfo.pythonVersion = python
            if configuration.landlock { sessionInfo.landlock = landlock }
            logger.debug(
                "sandbox started",
                metadata: ["rlm.sandbox.pid": "\(process.pid)", "rlm.sandbox.landlock": "\(landlock)"])
        } catch let error as SandboxError where error.isProtocolViolation {
            throw error
        } catch {
            let detail = await terminate(reason: "the sandbox did not start")
            throw SandboxError.startFailed(Self.explainStartFailure(detail: detail, error: error))
        }
    }

    private static func explainStartFailure(detail: String, error: any Error) -> String {
        var message = "the sandbox did not start"
        if let reply = error as? ExchangeOutcome { message += " (\(reply.description))" }
        let stderr = detail.trimmingCharacters(in: .whitespacesAndNewlines)
        if !stderr.isEmpty { message += ": " + stderr }
        if stderr.contains("No permissions to creating new namespace")
            || stderr.contains("Creating new namespace failed")
        {
            message +=
                ". Unprivileged user namespaces look disabled: set `sysctl kernel.unprivileged_userns_clone=1`"
                + " or `user.max_user_namespaces` > 0"
        }
        return message
    }

    /// For tests: the launcher's pid and the sandbox's cgroup directories, to check nothing outlives the session.
    nonisolated var processesForTesting: (pid: pid_t, cgroups: [String]) {
        (process.pid, cgroups?.directories ?? [])
    }

    // MARK: - SandboxSession

    var isAlive: Bool { endReason == nil }
    var info: SessionInfo { sessionInfo }

    func run(_ code: String, timeout: Duration?) async throws -> CellResult {
        try enter()
        defer { busy = false }
        let id = requestID()
        let limit = timeout ?? configuration.cellTimeout
        let start = ContinuousClock.now
        let outcome: Exchange
        do {
            outcome = try await exchange(
                id: id, sending: [HostMessage.encode(HostMessage.Execute(id: id, code: code))], timeout: limit,
                startTimer: true, allowSubcalls: true)
        } catch let failure as ExchangeOutcome {
            return await died(during: start, timedOut: failure == .killedAfterTimeout, limit: limit)
        } catch is CancellationError {
            await terminate(reason: "the cell was cancelled; the sandbox was killed")
            throw CancellationError()
        }
        guard case .result(_, let payload) = outcome.message else {
            throw await violation("expected a 'result' frame for \(id)")
        }
        var result = CellResult(
            stdout: payload.stdout, stderr: payload.stderr, error: payload.error,
            duration: ContinuousClock.now - start, finalAnswer: payload.final)
        if outcome.interrupted {
            result.timedOut = true
            result.error = CellError(
                type: "TimeoutError",
                message: "the cell ran past its \(Self.seconds(limit)) timeout and was interrupted; "
                    + "the REPL state is kept",
                traceback: payload.error?.traceback ?? "")
        }
        if result.error?.type == "MemoryError" { result.memoryExceeded = true }
        return result
    }

    func loadContext(_ context: ContextValue, name: String) async throws {
        guard Self.isIdentifier(name) else {
            throw SandboxError.setup("'\(name)' is not a valid Python variable name")
        }
        let (kind, bytes) = try Self.serialize(context)
        guard bytes.count < configuration.workDirBytes - (1 << 20) else {
            throw SandboxError.setup(
                "the context is \(bytes.count >> 20) MiB, which does not fit the sandbox work dir "
                    + "(\(configuration.workDirBytes >> 20) MiB); raise the work dir size")
        }
        try enter()
        defer { busy = false }
        let id = requestID()
        let chunkSize = 4 << 20
        var frames = [Data]()
        var offset = 0
        var seq = 0
        repeat {
            let end = min(offset + chunkSize, bytes.count)
            let chunk = bytes[offset..<end]
            frames.append(
                HostMessage.encode(
                    HostMessage.ContextChunk(
                        id: id, name: name, kind: kind, seq: seq, last: end == bytes.count,
                        data: chunk.base64EncodedString())))
            offset = end
            seq += 1
        } while offset < bytes.count
        // Writing can block while the worker stores chunks, so the deadline covers it too.
        let limit = configuration.cellTimeout + .seconds(bytes.count / (20 << 20))
        do {
            let outcome = try await exchange(
                id: id, sending: frames, timeout: limit, startTimer: true, allowSubcalls: false)
            guard case .ok = outcome.message else { throw await violation("expected 'ok' for \(id)") }
        } catch is CancellationError {
            await terminate(reason: "loading the context was cancelled; the sandbox was killed")
            throw CancellationError()
        } catch let failure as ExchangeOutcome {
            await terminate(reason: "the sandbox died while loading the context")
            throw SandboxError.terminated("the sandbox died while loading the context (\(failure.description))")
        }
    }

    func variable(named name: String) async throws -> VariableValue? {
        try enter()
        defer { busy = false }
        let id = requestID()
        do {
            let outcome = try await exchange(
                id: id, sending: [HostMessage.encode(HostMessage.GetVariable(id: id, name: name))],
                timeout: configuration.cellTimeout, startTimer: true, allowSubcalls: false)
            guard case .variable(_, let value) = outcome.message else {
                throw await violation("expected 'var' for \(id)")
            }
            return value
        } catch let failure as ExchangeOutcome {
            await terminate(reason: "the sandbox died while reading a variable")
            throw SandboxError.terminated("the sandbox died while reading a variable (\(failure.description))")
        } catch is CancellationError {
            await terminate(reason: "reading a variable was cancelled; the sandbox was killed")
            throw CancellationError()
        }
    }

    func interrupt() async {
        guard busy, endReason == nil else { return }
        try? await channel.send(HostMessage.encode(HostMessage.Control.interrupt))
    }

    func shutdown() async {
        await terminate(reason: "the session was shut down")
    }

    // MARK: - Exchange

    /// How an exchange ended without its reply.
    enum ExchangeOutcome: Error, Equatable, CustomStringConvertible {
        case killedAfterTimeout
        case died
        case startTimeout

        var description: String {
            switch self {
            case .killedAfterTimeout: return "killed after a timeout"
            case .died: return "the worker exited"
            case .startTimeout: return "no answer in time"
            }
        }
    }

    struct Exchange {
        let message: WorkerMessage
        /// The timeout fired and an interrupt was sent before the reply came.
        let interrupted: Bool
    }

    private enum Phase: Sendable {
        case running
        case interrupted
        case killed
    }

    /// Reads frames until the reply to `id` arrives, answering sub-calls on the way, under a deadline: past it the
    /// worker is interrupted (when `startTimer`) and, after the grace period, killed.
    private func exchange(
        id: String, sending frames: [Data], timeout: Duration, startTimer: Bool, allowSubcalls: Bool
    ) async throws -> Exchange {
        let phase = Locked(Phase.running)
        let process = process
        let channel = channel
        let grace = configuration.interruptGrace
        return try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Writing may block on a worker that does not read; the deadline below covers it.
                let sent = Locked(false)
                group.addTask {
                    try? await channel.send(frames: frames)
                    sent.set(true)
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    if startTimer {
                        phase.set(.interrupted)
                        try? await channel.send(HostMessage.encode(HostMessage.Control.interrupt))
                        try await Task.sleep(for: grace)
                    }
                    phase.set(.killed)
                    process.kill()
                }
                defer { group.cancelAll() }
                while true {
                    let payload: Data
                    do {
                        payload = try await channel.receive()
                    } catch ChannelFailure.oversized(let size) {
                        throw await violation(
                            "a frame of \(size) bytes exceeds the \(configuration.maxFrameBytes)-byte cap")
                    } catch ChannelFailure.stalled {
                        throw await violation("the worker stopped in the middle of a frame")
                    } catch ChannelFailure.truncated {
                        if phase.value == .killed { throw ExchangeOutcome.killedAfterTimeout }
                        throw await violation("the worker's output ended in the middle of a frame")
                    } catch {
                        try Task.checkCancellation()
                        switch phase.value {
                        case .killed: throw startTimer ? ExchangeOutcome.killedAfterTimeout : .startTimeout
                        default: throw ExchangeOutcome.died
                        }
                    }
                    let message: WorkerMessage
                    do {
                        message = try WorkerMessage.parse(payload)
                    } catch {
                        throw await violation((error as? WorkerMessage.ParseFailure)?.reason ?? "\(error)")
                    }
                    switch message {
                    case .ready(let replyID, _, _, _), .result(let replyID, _), .ok(let replyID),
                        .variable(let replyID, _):
                        guard replyID == id else {
                            throw await violation("a reply carries id '\(replyID.prefix(64))', expected '\(id)'")
                        }
                        let interrupted = phase.value == .interrupted
                        // A worker cannot answer a request it has not read; one that does is forging replies.
                        for _ in 0..<1000 where !sent.value { try? await Task.sleep(for: .milliseconds(1)) }
                        guard sent.value else {
                            throw await violation("a reply to '\(id)' arrived before the request was read")
                        }
                        return Exchange(message: message, interrupted: interrupted)
                    case .subcall(let subcallID, let request):
                        guard allowSubcalls else { throw await violation("a sub-call outside a running cell") }
                        guard seenSubcallIDs.insert(subcallID).inserted else {
                            throw await violation("sub-call id '\(subcallID)' was used before")
                        }
                        let handler = handler
                        group.addTask {
                            let reply = await Self.answer(request, id: subcallID, handler: handler)
                            try? await channel.send(HostMessage.encode(reply))
                        }
                    case .fatal(let text):
                        fatalMessage = String(text.prefix(2000))
                        logger.warning("sandbox worker failed", metadata: ["rlm.sandbox.message": "\(text)"])
                        process.kill()
                        throw ExchangeOutcome.died
                    }
                }
            }
        } onCancel: {
            process.kill()
        }
    }

    private static func answer(_ request: SubcallRequest, id: String, handler: (any SubcallHandler)?) async
        -> HostMessage.SubcallResult
    {
        guard let handler else {
            return HostMessage.SubcallResult(
                id: id, ok: false, value: nil,
                error: "no language model is connected to this sandbox, so llm_query, llm_query_batched and "
                    + "rlm_query are unavailable here")
        }
        do {
            let response = try await handler.handle(request)
            switch (request, response) {
            case (.llmQueryBatched(let prompts, _), .batch(let answers)):
                guard answers.count == prompts.count else {
                    return HostMessage.SubcallResult(
                        id: id, ok: false, value: nil,
                        error: "internal error: \(answers.count) answers for \(prompts.count) prompts")
                }
                return HostMessage.SubcallResult(id: id, ok: true, value: .batch(answers), error: nil)
            case (.llmQueryBatched, .text):
                return HostMessage.SubcallResult(
                    id: id, ok: false, value: nil, error: "internal error: one answer for a batch")
            case (_, .text(let text)):
                return HostMessage.SubcallResult(id: id, ok: true, value: .text(text), error: nil)
            case (_, .batch):
                return HostMessage.SubcallResult(
                    id: id, ok: false, value: nil, error: "internal error: a batch answer for a single prompt")
            }
        } catch {
            return HostMessage.SubcallResult(id: id, ok: false, value: nil, error: String(describing: error))
        }
    }

    // MARK: - Ending

    private func violation(_ reason: String) async -> SandboxError {
        logger.warning("sandbox protocol violation", metadata: ["rlm.sandbox.reason": "\(reason)"])
        await terminate(reason: "the worker broke the channel protocol (\(reason)); the sandbox was killed")
        return SandboxError.protocolViolation(reason)
    }

    /// The worker died or was killed during a cell: report it as the cell's outcome.
    private func died(during start: ContinuousClock.Instant, timedOut: Bool, limit: Duration = .zero) async
        -> CellResult
    {
        let oom = (cgroups?.oomKills() ?? 0) > 0
        let detail = await terminate(reason: "the sandbox was killed; its REPL state is lost")
        var result = CellResult(duration: ContinuousClock.now - start, stateLost: true)
        if timedOut {
            result.timedOut = true
            result.error = CellError(
                type: "Timeout",
                message: "the cell ran past its \(Self.seconds(limit)) timeout and did not stop when interrupted; "
                    + "the sandbox was killed and the REPL state is lost")
        } else if oom {
            result.memoryExceeded = true
            result.error = CellError(
                type: "MemoryError",
                message: "the sandbox hit its memory limit (\(configuration.memoryLimitBytes >> 20) MiB) and was "
                    + "killed by the kernel; the REPL state is lost")
        } else {
            let tail = (fatalMessage ?? detail).trimmingCharacters(in: .whitespacesAndNewlines).suffix(2000)
            result.error = CellError(
                type: "SandboxDied",
                message: "the sandbox worker exited during the cell; the REPL state is lost"
                    + (tail.isEmpty ? "" : " (\(tail))"))
        }
        return result
    }

    /// Kills the sandbox and everything in it, reaps it and removes its cgroups. Returns what it wrote to stderr.
    @discardableResult
    private func terminate(reason: String) async -> String {
        guard endReason == nil else { return "" }
        endReason = reason
        process.kill()
        let cgroups = cgroups
        await offPool { cgroups?.killAll() }
        let status = await process.waitForExit()
        await offPool {
            cgroups?.killAll()
            cgroups?.remove()
        }
        let stderr = process.drainStderr()
        process.closeStderr()
        channel.close()
        logger.debug(
            "sandbox ended",
            metadata: ["rlm.sandbox.pid": "\(process.pid)", "rlm.sandbox.status": "\(describeWaitStatus(status))"])
        return stderr
    }

    // MARK: - Helpers

    private func enter() throws {
        if let endReason { throw SandboxError.terminated("the sandbox session is over: \(endReason)") }
        if busy { throw SandboxError.busy() }
        busy = true
    }

    private func requestID() -> String {
        defer { nextRequest += 1 }
        return "h\(nextRequest)"
    }

    private static func seconds(_ duration: Duration) -> String {
        let value = duration.inSeconds
        return value == value.rounded() ? "\(Int(value)) s" : String(format: "%.2f s", value)
    }

    static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || first.properties.isXIDStart else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0 == "_" || $0.properties.isXIDContinue }
    }

    static func serialize(_ context: ContextValue) throws -> (kind: String, bytes: Data) {
        switch context {
        case .text(let text):
            return ("str", Data(text.utf8))
        case .documents(let documents):
            return ("list", try JSONEncoder().encode(documents))
        case .json(let value):
            return ("json", try JSONEncoder().encode(value))
        }
    }
}

/// Writing to a pipe whose reader died must fail with EPIPE, not kill the host.
private let ignoreSIGPIPE: Void = {
    _ = signal(SIGPIPE, SIG_IGN)
}()

/// The worker's Python source, embedded in the binary, and its compiled form.
///
/// The source is embedded (SwiftPM `.embedInCode`) rather than a bundled resource so an `rlm` copied out of the
/// build folder (scripts/install) still has it: `Bundle.module` stops the program when its bundle is not beside it.
/// It never needs a file of its own: frame 0 carries it, and the compiler below reads it from stdin.
///
/// Compiling the 40 KB worker takes Python longer than starting up, so the host compiles it once per interpreter
/// (outside the sandbox, with an empty environment) and caches the `marshal`ed code object in memory and under
/// `~/.cache/swiftrlm`. Frame 0 then carries `RLMM` + that code; the bootstrap falls back to compiling source when
/// no compiled form is available.
enum WorkerSource {
    static let data = Data(PackageResources.rlm_worker_py)

    static let compiledMarker = Data("RLMM".utf8)
    private static let compiled = Mutex<[String: Data]>([:])

    /// Frame 0 for `python`: compiled code when possible, else the source.
    static func payload(python: String) -> Data {
        if let cached = compiled.withLock({ $0[python] }) { return cached }
        let payload = loadOrCompile(python: python) ?? data
        compiled.withLock { $0[python] = payload }
        return payload
    }

    private static func loadOrCompile(python: String) -> Data? {
        let real = URL(fileURLWithPath: python).resolvingSymlinksInPath().path
        var info = stat()
        guard stat(real, &info) == 0 else { return nil }
        var key = data
        key.append(Data("\(real)|\(info.st_mtim.tv_sec)|\(info.st_size)|\(python)".utf8))
        let name = "worker-" + String(fnv1a(key), radix: 16) + ".bin"
        let environment = ProcessInfo.processInfo.environment
        let cacheRoot =
            environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? NSHomeDirectory()) + "/.cache"
        let directory = cacheRoot + "/swiftrlm"
        let file = directory + "/" + name
        if let cached = FileManager.default.contents(atPath: file), cached.starts(with: compiledMarker) {
            return cached
        }
        guard let code = compile(python: python) else { return nil }
        let payload = compiledMarker + code
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let temporary = file + ".\(getpid()).tmp"
        if FileManager.default.createFile(atPath: temporary, contents: payload, attributes: [.posixPermissions: 0o600])
        {
            if rename(temporary, file) != 0 { unlink(temporary) }
        }
        return payload
    }

    /// Runs the interpreter once on the host to compile the worker; `nil` if anything goes wrong.
    private static func compile(python: String) -> Data? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [
            "-I", "-c",
            "import marshal,sys;sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.buffer.read().decode(),"
                + "'<rlm-worker>','exec')))",
        ]
        process.environment = [:]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return nil
        }
        let source = data
        let writer = Thread {
            try? input.fileHandleForWriting.write(contentsOf: source)
            try? input.fileHandleForWriting.close()
        }
        writer.start()
        let code = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, !code.isEmpty else { return nil }
        return code
    }

    private static func fnv1a(_ data: Data) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}
