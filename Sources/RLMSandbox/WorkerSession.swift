import CRLMSystem
import Foundation
import Glibc
import Logging
import RLM
import Synchronization

/// One running worker, whatever holds it (``WorkerHost``): the channel, the exchange of frames, sub-calls, timeouts
/// and everything the host checks of what the worker sends. Every backend's sessions are this actor.
package actor WorkerSession: SandboxSession {
    private let host: any WorkerHost
    private let channel: FrameChannel
    private let configuration: ProcessSandbox.Configuration
    private let payload: Data
    private let workDir: String
    private let handler: (any SubcallHandler)?
    private let logger: Logger
    private var sessionInfo: SessionInfo
    private var nextRequest = 1
    private var busy = false
    /// Why the session ended, once it has.
    private var endReason: String?
    /// Every sub-call id the worker used, so a reused one is caught (ids are unique per session).
    private var subcallIDs = SubcallIDLedger()
    /// Sub-calls being answered right now; each one's task is released as soon as its reply is sent.
    private var subcallsInFlight = 0
    /// The worker's last words, from a `fatal` frame.
    private var fatalMessage: String?
    /// Where the current exchange stands (see ``exchange(id:sending:timeout:startTimer:allowSubcalls:)``).
    private var phase = Phase.running
    /// The current exchange's request has been written in full.
    private var requestSent = false
    /// A context's bytes are going inline on the channel: no frame may be written into the middle of them.
    private var loadingInline = false

    private init(
        host: any WorkerHost, configuration: ProcessSandbox.Configuration, payload: Data, workDir: String,
        handler: (any SubcallHandler)?, logger: Logger, info: SessionInfo
    ) {
        self.host = host
        self.channel = FrameChannel(
            readFD: host.channelReadFD, writeFD: host.channelWriteFD, maxFrameBytes: configuration.maxFrameBytes)
        self.configuration = configuration
        self.payload = payload
        self.workDir = workDir
        self.handler = handler
        self.logger = logger
        self.sessionInfo = info
    }

    /// Talks to a worker that has just been started: sends it its source and `init`, and waits for `ready`. On any
    /// failure the host is killed and released.
    /// - Parameters:
    ///   - host: the started worker.
    ///   - configuration: the limits (output, frames, timeouts, memory) the session enforces.
    ///   - payload: frame 0, the worker's code (``WorkerSource/payload(python:cacheDirectory:)`` for the host's own
    ///     interpreter, ``WorkerSource/data`` for any other).
    ///   - workDir: the worker's private writable directory, inside its sandbox.
    ///   - info: what the session reports about itself (the Python version and Landlock are filled in from `ready`).
    package static func start(
        host: any WorkerHost, configuration: ProcessSandbox.Configuration, payload: Data, workDir: String,
        info: SessionInfo, handler: (any SubcallHandler)?, logger: Logger
    ) async throws -> WorkerSession {
        _ = ignoreSIGPIPE
        let session = WorkerSession(
            host: host, configuration: configuration, payload: payload, workDir: workDir, handler: handler,
            logger: logger, info: info)
        try await session.handshake()
        return session
    }

    private func handshake() async throws {
        let init_ = HostMessage.Initialize(
            id: "h0", outputLimit: configuration.outputLimit, maxFrame: configuration.maxFrameBytes,
            maxBatch: WorkerMessage.maxBatchPrompts, workDir: workDir, landlock: configuration.landlock,
            maxChildContext: configuration.memoryLimitBytes, data: host.dataPipes == nil ? "inline" : "pipe")
        do {
            let reply = try await exchange(
                id: "h0",
                sending: [configuration.workerSourceOverride ?? payload, HostMessage.encode(init_)],
                timeout: configuration.startTimeout,
                startTimer: false, allowSubcalls: false)
            guard case .ready(_, _, let python, let landlock) = reply.message else {
                throw await violation("expected 'ready', got another frame")
            }
            sessionInfo.pythonVersion = python
            if configuration.landlock { sessionInfo.landlock = landlock }
            logger.debug(
                "sandbox started",
                metadata: ["rlm.sandbox.worker": "\(host.identity)", "rlm.sandbox.landlock": "\(landlock)"])
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
        guard let process = host as? ProcessWorkerHost else { return (0, []) }
        return (process.process.pid, process.cgroupDirectories)
    }

    /// For tests: what the session keeps per sub-call — tasks in flight plus ids it must still remember — which
    /// stays bounded however many sub-calls a cell makes.
    var subcallBookkeepingForTesting: Int { subcallsInFlight + subcallIDs.retained }

    /// A session dropped without ``shutdown()`` would keep its processes, cgroups, descriptors and slot: kill it and
    /// clean up in the background.
    deinit {
        guard endReason == nil else { return }
        let host = host
        let channel = channel
        host.kill()
        Task.detached {
            _ = await host.waitForExit()
            await host.release()
            channel.close()
        }
    }

    // MARK: - SandboxSession

    package var isAlive: Bool { endReason == nil }
    package var info: SessionInfo { sessionInfo }

    package func run(_ code: String, timeout: Duration?) async throws -> CellResult {
        try enter()
        defer { busy = false }
        let id = requestID()
        let limit = timeout ?? configuration.cellTimeout
        let start = ContinuousClock.now
        let request = HostMessage.encode(HostMessage.Execute(id: id, code: code))
        // The worker drops a host that sends an oversized frame; too much code is the caller's error, not a death.
        guard request.count <= configuration.maxFrameBytes else {
            var result = CellResult(duration: ContinuousClock.now - start)
            result.error = CellError(
                type: "ValueError",
                message: "the cell's code is \(request.count) bytes as a frame, more than the channel's "
                    + "\(configuration.maxFrameBytes)-byte frame cap; send less code per cell and load data as a "
                    + "context instead; the REPL state is kept")
            return result
        }
        let outcome: Exchange
        do {
            outcome = try await exchange(
                id: id, sending: [request], timeout: limit, startTimer: true, allowSubcalls: true)
        } catch let failure as ExchangeOutcome {
            return await died(during: start, timedOut: failure == .killedAfterTimeout, limit: limit)
        } catch is CancellationError {
            await terminate(reason: "the cell was cancelled; the sandbox was killed")
            throw CancellationError()
        }
        guard case .result(_, let payload) = outcome.message else {
            throw await violation("expected a 'result' frame for \(id)")
        }
        // The worker cuts each stream to the output limit, but code in the cell shares its process and could forge a
        // result frame: the host cuts again (the slack covers notes the worker appends after its own cut).
        let keep = configuration.outputLimit + 1000
        var result = CellResult(
            stdout: Self.cut(payload.stdout, keep: keep), stderr: Self.cut(payload.stderr, keep: keep),
            error: payload.error, duration: ContinuousClock.now - start, finalAnswer: payload.final)
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

    /// Head and tail of `text` within `keep` Unicode scalars (not grapheme clusters, one of which can hold megabytes
    /// of combining marks), with the worker's marker in the middle.
    static func cut(_ text: String, keep: Int) -> String {
        let scalars = text.unicodeScalars
        guard scalars.count > keep else { return text }
        let half = keep / 2
        var result = String.UnicodeScalarView(scalars.prefix(half))
        result.append(contentsOf: "\n... [\(scalars.count - 2 * half) characters cut] ...\n".unicodeScalars)
        result.append(contentsOf: scalars.suffix(half))
        return String(result)
    }

    package func loadContext(_ source: ContextSource, name: String, sample: Int) async throws -> ContextSummary {
        guard Self.isIdentifier(name) else {
            throw SandboxError.setup("'\(name)' is not a valid Python variable name")
        }
        guard source.shape == .documents || source.files.count == 1 else {
            throw ContextLoadError("a \(source.shape.rawValue) context is built from exactly one source")
        }
        try enter()
        defer { busy = false }
        let id = requestID()
        // A single text's lines are counted here, on another core, while its bytes stream; documents' are not counted.
        let hostCounts = source.shape == .text && ContextLineCount.applies(to: source)
        let frame = HostMessage.encode(
            HostMessage.LoadContext(
                id: id, name: name, kind: source.shape.rawValue, files: source.files.count,
                encoding: source.encoding.name, errors: source.encoding.errors.rawValue, sample: max(0, sample),
                heads: 3, countLines: source.shape == .text && !hostCounts))
        async let counted = hostCounts ? offPool { ContextLineCount.count(source.files[0]) } : nil
        // Without data pipes the bytes follow the frame on the channel: nothing else may be written to it meanwhile,
        // so no interrupt at the deadline (it would land inside the data), only the kill.
        let inline = host.dataPipes == nil
        loadingInline = inline
        defer { loadingInline = false }
        let streamed = ContextStream(files: source.files, pipe: host.dataPipes?.write ?? host.channelWriteFD)
        // Streaming can block while the worker builds the text; the deadline covers it: a cell's timeout plus
        // a second per 50 MB (the worker reads several hundred MB a second).
        let limit = configuration.cellTimeout + .seconds(source.totalBytes / (50 << 20))
        let outcome: Exchange
        do {
            outcome = try await exchange(
                id: id, sending: [frame], then: { streamed.run() }, timeout: limit, startTimer: !inline,
                allowSubcalls: false)
        } catch is CancellationError {
            await terminate(reason: "loading the context was cancelled; the sandbox was killed")
            throw CancellationError()
        } catch let failure as ExchangeOutcome {
            let oom = await host.memoryExceeded()
            await terminate(reason: "the sandbox died while loading the context")
            if oom {
                throw ContextLoadError(
                    "the sandbox ran out of memory (\(configuration.memoryLimitBytes >> 20) MiB) loading the "
                        + "\(source.totalBytes >> 20) MiB context; raise the sandbox memory limit (--memory)")
            }
            throw SandboxError.terminated("the sandbox died while loading the context (\(failure.description))")
        }
        guard case .loaded(_, let reply) = outcome.message else {
            throw await violation("expected 'loaded' for \(id)")
        }
        let hostSide = streamed.failures
        switch reply {
        case .failed(let message):
            throw ContextLoadError(UntrustedText.visible(message))
        case .summary(var summary):
            guard summary.shape == source.shape else { throw await violation("the summary is for another shape") }
            if let lines = await counted { summary.lines = lines }
            if let first = hostSide.first, source.shape != .documents {
                throw ContextLoadError("context \(first.label) \(first.reason)")
            }
            summary.skipped = hostSide + summary.skipped
            return summary
        }
    }

    package func variable(named name: String) async throws -> VariableValue? {
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

    package func interrupt() async {
        // During an inline load an interrupt frame would land inside the records; the load's deadline still holds.
        guard busy, endReason == nil, !loadingInline else { return }
        try? await channel.send(HostMessage.encode(HostMessage.Control.interrupt))
    }

    package func shutdown() async {
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

    private func setPhase(_ value: Phase) { phase = value }
    private func markRequestSent() { requestSent = true }
    private func subcallFinished() { subcallsInFlight -= 1 }

    /// Reads frames until the reply to `id` arrives, answering sub-calls on the way, under a deadline: past it the
    /// worker is interrupted (when `startTimer`) and, after the grace period, killed.
    ///
    /// The children run in a discarding task group, so each sub-call's task (and what it captured) is freed when its
    /// reply is sent rather than when the cell ends: a cell making 20,000 sub-calls holds only those in flight.
    private func exchange(
        id: String, sending frames: [Data], then stream: (@Sendable () -> Void)? = nil, timeout: Duration,
        startTimer: Bool, allowSubcalls: Bool
    ) async throws -> Exchange {
        phase = .running
        requestSent = false
        let host = host
        let channel = channel
        let grace = configuration.interruptGrace
        let maxFrame = configuration.maxFrameBytes
        return try await withTaskCancellationHandler {
            try await withThrowingDiscardingTaskGroup(returning: Exchange.self) { group in
                // Writing may block on a worker that does not read; the deadline below covers it.
                group.addTask {
                    try? await channel.send(frames: frames)
                    // Bulk data after the request (a context's files, on the data pipe): blocking writes, off the
                    // pool; a worker that stops reading is killed by the deadline, which ends them with EPIPE.
                    if let stream { await offPool { stream() } }
                    await self.markRequestSent()
                }
                // Children never throw: in a discarding group a child's error would end the whole exchange.
                group.addTask {
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }
                    if startTimer {
                        await self.setPhase(.interrupted)
                        try? await channel.send(HostMessage.encode(HostMessage.Control.interrupt))
                        guard (try? await Task.sleep(for: grace)) != nil else { return }
                    }
                    await self.setPhase(.killed)
                    host.kill()
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
                        if phase == .killed { throw ExchangeOutcome.killedAfterTimeout }
                        throw await violation("the worker's output ended in the middle of a frame")
                    } catch {
                        try Task.checkCancellation()
                        switch phase {
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
                    case .ready(let replyID, _, _, _), .result(let replyID, _), .loaded(let replyID, _),
                        .variable(let replyID, _):
                        guard replyID == id else {
                            throw await violation("a reply carries id '\(replyID.prefix(64))', expected '\(id)'")
                        }
                        let interrupted = phase == .interrupted
                        // A worker cannot answer a request it has not read; one that does is forging replies.
                        for _ in 0..<1000 where !requestSent { try? await Task.sleep(for: .milliseconds(1)) }
                        guard requestSent else {
                            throw await violation("a reply to '\(id)' arrived before the request was read")
                        }
                        return Exchange(message: message, interrupted: interrupted)
                    case .subcall(let subcallID, var request, let stream):
                        guard allowSubcalls else { throw await violation("a sub-call outside a running cell") }
                        guard subcallIDs.insert(subcallID) else {
                            throw await violation("sub-call id '\(subcallID)' was used before")
                        }
                        if let stream, case .rlmQuery(let prompt, _, let model) = request {
                            // The bytes follow on the data pipe out, in frame order: spool them now, before the next
                            // frame, into a private file the child's sandbox reads in turn.
                            let spooled = try await spool(stream)
                            request = .rlmQuery(
                                prompt: prompt,
                                context: .streamed(
                                    StreamedContext(
                                        source: ContextSource(
                                            shape: stream.kind,
                                            files: [
                                                ContextFile(
                                                    label: "<rlm_query context>", size: stream.bytes,
                                                    content: .open(spooled))
                                            ], encoding: ContextEncoding(name: "utf-8", errors: .replace)))),
                                model: model)
                        }
                        // Honest code cannot have more sub-calls waiting than it has threads (the pids limit);
                        // forged frames could start host tasks without end. Past that many, stop reading the channel
                        // until one finishes: the worker's writes then block on the full pipe.
                        while subcallsInFlight >= max(1, configuration.maxProcesses) {
                            try await Task.sleep(for: .milliseconds(5))
                        }
                        let handler = handler
                        subcallsInFlight += 1
                        group.addTask {
                            let reply = await Self.answer(request, id: subcallID, handler: handler)
                            try? await channel.send(Self.encodeReply(reply, request: request, maxFrame: maxFrame))
                            await self.subcallFinished()
                        }
                    case .fatal(let text):
                        fatalMessage = UntrustedText.visible(String(text.prefix(2000)))
                        logger.warning(
                            "sandbox worker failed", metadata: ["rlm.sandbox.message": "\(fatalMessage ?? "")"])
                        host.kill()
                        throw ExchangeOutcome.died
                    }
                }
            }
        } onCancel: {
            host.kill()
        }
    }

    /// Copies an announced child context from the data pipe out into a private spool file. The worker says how many
    /// bytes follow (at most the limit it was given); the chunk records must add up to exactly that.
    private func spool(_ stream: ChildStream) async throws -> ContextDescriptor {
        guard stream.bytes <= configuration.memoryLimitBytes else {
            throw await violation("an rlm_query context of \(stream.bytes) bytes is over the announced limit")
        }
        let file: ContextDescriptor
        do {
            file = try ContextDescriptor.spool()
        } catch {
            throw SandboxError.setup("\(error)")
        }
        // Inline, the records follow the sub-call's frame on the channel; the exchange reads no frame until they are in.
        let pipe = host.dataPipes?.read ?? host.channelReadFD
        let status = await offPool { crlm_spool_records(pipe, file.fd, UInt64(stream.bytes)) }
        switch status {
        case 0: return file
        case -2: throw await violation("the rlm_query context's records do not add up to the announced size")
        default: throw phase == .killed ? ExchangeOutcome.killedAfterTimeout : ExchangeOutcome.died
        }
    }

    /// The reply frame for a sub-call. The host never sends a frame over the cap (the worker would drop the whole
    /// REPL): an answer too large for one frame becomes an error the cell sees as `RuntimeError`, the state kept.
    static func encodeReply(_ reply: HostMessage.SubcallResult, request: SubcallRequest, maxFrame: Int) -> Data {
        let frame = HostMessage.encode(reply)
        guard frame.count > maxFrame else { return frame }
        let what: String
        switch request {
        case .llmQuery: what = "the llm_query reply"
        case .llmQueryBatched(let prompts, _): what = "the \(prompts.count) llm_query_batched replies together"
        case .rlmQuery: what = "the rlm_query reply"
        }
        return HostMessage.encode(
            HostMessage.SubcallResult(
                id: reply.id, ok: false, value: nil,
                error: "\(what) came to \(frame.count) bytes, too large for the channel's \(maxFrame)-byte frame "
                    + "cap, and was dropped; ask for a shorter answer (or fewer prompts per batch)"))
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
        // The reason may quote what the worker sent: never let it reach a log or a terminal raw.
        let reason = UntrustedText.visible(reason)
        logger.warning("sandbox protocol violation", metadata: ["rlm.sandbox.reason": "\(reason)"])
        await terminate(reason: "the worker broke the channel protocol (\(reason)); the sandbox was killed")
        return SandboxError.protocolViolation(reason)
    }

    /// The worker died or was killed during a cell: report it as the cell's outcome.
    private func died(during start: ContinuousClock.Instant, timedOut: Bool, limit: Duration = .zero) async
        -> CellResult
    {
        let oom = await host.memoryExceeded()
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
        host.kill()
        let status = await host.waitForExit()
        let stderr = host.diagnostics()
        await host.release()
        channel.close()
        logger.debug(
            "sandbox ended", metadata: ["rlm.sandbox.worker": "\(host.identity)", "rlm.sandbox.status": "\(status)"])
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
}

/// What a session holds of the process's shared limits: a slot under the per-process cap and, with cgroups, a share
/// of the process's parent group. Given back exactly once — by its ``WorkerHost`` after the processes are reaped and
/// the cgroups removed, or when freed.
final class SessionLease: Sendable {
    private let slot: SessionSlot
    private let holdsHostCgroups = Atomic<Bool>(false)

    init(slot: SessionSlot) {
        self.slot = slot
    }

    /// Joins the process's parent cgroup (made, and stale groups swept, as needed). Blocks: call off the pool.
    func holdHostCgroups(memoryLimitBytes: Int, maxProcesses: Int) -> [String: String] {
        let parents = HostCgroups.acquire(memoryLimitBytes: memoryLimitBytes, maxProcesses: maxProcesses)
        holdsHostCgroups.store(true, ordering: .releasing)
        return parents
    }

    func release() {
        if holdsHostCgroups.exchange(false, ordering: .acquiringAndReleasing) { HostCgroups.release() }
        slot.release()
    }

    deinit { release() }
}

/// The sub-call ids a session has seen, to refuse a reused one, in bounded memory for a well-behaved worker: its ids
/// are `w1`, `w2`, … so everything up to the highest contiguous number is one integer, and only ids above a gap (sent
/// out of order by concurrent threads) or of another shape are kept one by one.
struct SubcallIDLedger {
    private var contiguous: UInt64 = 0
    private var above = Set<UInt64>()
    private var others = Set<String>()

    /// Records `id`; `false` when it was seen before.
    mutating func insert(_ id: String) -> Bool {
        guard id.hasPrefix("w"), let number = UInt64(id.dropFirst()), number > 0, "w\(number)" == id else {
            return others.insert(id).inserted
        }
        guard number > contiguous, above.insert(number).inserted else { return false }
        while above.remove(contiguous + 1) != nil { contiguous += 1 }
        return true
    }

    /// Ids remembered one by one.
    var retained: Int { above.count + others.count }
}
