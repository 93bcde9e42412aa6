import Foundation
import Glibc
import Logging
import RLM
import RLMRuntime
import RLMSandbox
import RLMStore
import RLMTrajectory
import Synchronization

/// The serving core the HTTP API and MCP share, free of either's types.
///
/// It authenticates callers and keeps their limits, stores uploaded contexts, opens sessions over one REPL, and
/// answers questions through the same runtime as `rlm run` — the same provider resolution, local model, budgets,
/// trajectory and audit. Contexts and sessions belong to the caller that made them; another caller's id is "not
/// found", exactly like an id that never existed.
///
/// ```swift
/// let service = RLMService(configuration: configuration, store: store)
/// try await service.run {            // prepares the runtime, starts the offline model if it is the root
///     try await serveHTTP(service)    // ready while this runs; then runs finish or are cancelled
/// }
/// ```
public final class RLMService: Sendable {
    /// Where the service is in its life.
    public enum Phase: String, Sendable {
        /// The runtime is being prepared (a local model starting): runs get 503 with `Retry-After`.
        case starting
        /// Serving.
        case ready
        /// Stopping: new runs get 503; running ones finish within the grace period or are cancelled.
        case stopping
    }

    /// The configuration.
    public let configuration: ServiceConfiguration
    /// The key store.
    public let store: any KeyStore
    let logger: Logger
    let limiter = KeyLimiter()
    let gate: RunGate
    let files: ContextFiles
    private let state = Mutex(State())
    private let runtime: RLMRuntime

    struct State {
        var phase = Phase.starting
        var template: RLMConfiguration?
        var plan: RLMRuntime.Plan?
        var models: [String] = []
        var runs = [UUID: Task<RunOutcome, any Error>]()
        var sessions = [String: ServiceSession]()
        var pathContexts = [String: PathContext]()
        /// Contexts the local user (MCP over stdio, no key) uploaded: kept for the process's life, not in the key
        /// store, which holds what keys own.
        var localContexts = [String: ContextRecord]()
    }

    /// A context named by path (MCP's `load_context path`): kept in memory, resolved beneath its root at each use.
    struct PathContext: Sendable {
        var owner: String
        var root: String
        var relative: String
        var name: String
        var created: Date
    }

    /// - Parameters:
    ///   - configuration: the runtime options and the serving limits.
    ///   - store: keys, usage and context ownership.
    ///   - logger: the server's log (never a key, never a context's bytes).
    public init(
        configuration: ServiceConfiguration, store: any KeyStore,
        logger: Logger = Logger(label: "rlm.service", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        self.gate = RunGate(limit: configuration.maxConcurrentRuns, queue: configuration.maxQueuedRuns)
        self.files = ContextFiles(directory: configuration.storeLocation.contextsDirectory)
        self.runtime = RLMRuntime(
            options: configuration.runtime, environment: configuration.environment, logger: logger)
    }

    // MARK: - Life

    /// The phase now.
    public var phase: Phase { state.withLock { $0.phase } }

    /// The models a request may name (the root model first); empty until ready.
    public var models: [String] { state.withLock { $0.models } }

    /// Sessions open, of every caller.
    public var openSessions: Int { state.withLock { $0.sessions.count } }

    /// Runs in flight, of every caller.
    public var runsInFlight: Int { state.withLock { $0.runs.count } }

    /// Checks the runtime options before anything starts (a bad flag fails `rlm serve` at once, not at the first
    /// request).
    /// - Throws: ``RunFailure`` with the flag's message.
    public func validate() throws {
        do {
            _ = try runtime.prepare()
        } catch {
            throw RunFailure.classify(error)
        }
    }

    /// Runs the service: prepares the runtime and starts (or reuses) the offline model when it is the root, is
    /// ready while `body` runs, then stops: new runs are refused, running ones get ``ServiceConfiguration/shutdownGrace``
    /// to finish and are then cancelled (their sandboxes killed, their trajectories ended), and every session is
    /// closed.
    /// - Parameter body: serves; returns (or throws) when the service should stop.
    public func run(_ body: @Sendable () async throws -> Void) async throws {
        let plan: RLMRuntime.Plan
        do {
            plan = try runtime.prepare()
        } catch {
            throw RunFailure.classify(error)
        }
        let base = configuration.runtime.sandboxBackend.sandbox(
            RLMRuntime.sandboxLimits(python: configuration.runtime.python))
        do {
            try await runtime.withConfiguration(plan, sandbox: base) { template in
                // The names a user gave (the client's own name carries its provider, `openai-compatible:…`); a
                // root discovered from the server is the one callable name the plan did not know.
                var root = plan.models.root.name
                if root.isEmpty {
                    root =
                        template.callableModels.keys.first { plan.models.callable[$0] == nil }
                        ?? template.rootModel.name
                }
                let models = [root] + template.callableModels.keys.sorted().filter { $0 != root }
                state.withLock { state in
                    state.template = template
                    state.plan = plan
                    state.models = models
                    if state.phase == .starting { state.phase = .ready }
                }
                logger.info("ready", metadata: ["models": .string(models.joined(separator: ","))])
                let sweeper = Task {
                    let every = min(Duration.seconds(30), configuration.sessionTTL / 2)
                    while !Task.isCancelled {
                        try? await Task.sleep(for: every)
                        sweepSessions()
                    }
                }
                defer { sweeper.cancel() }
                let served: Result<Void, any Error>
                do {
                    try await body()
                    served = .success(())
                } catch {
                    served = .failure(error)
                }
                await stop()
                try served.get()
            }
        } catch let error as ServiceError {
            await stop()
            throw error
        } catch {
            await stop()
            throw RunFailure.classify(error)
        }
    }

    /// Stops taking runs, lets running ones finish within the grace period, cancels the rest and closes every
    /// session. Safe to call twice.
    public func stop() async {
        let first = state.withLock { state -> Bool in
            defer { state.phase = .stopping }
            return state.phase != .stopping
        }
        if first { logger.info("stopping") }
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.shutdownGrace
        while clock.now < deadline, state.withLock({ !$0.runs.isEmpty }) {
            // A cancelled caller (its body was cancelled) gets no grace: the sleep would return at once and spin.
            do { try await Task.sleep(for: .milliseconds(50)) } catch { break }
        }
        let (runs, sessions) = state.withLock { state in
            defer { state.sessions = [:] }
            return (Array(state.runs.values), Array(state.sessions.values))
        }
        for run in runs { run.cancel() }
        for run in runs { _ = await run.result }
        for session in sessions { await session.close() }
        // The local user's uploads live as long as the process that recorded them (the key store holds keys' only).
        let local = state.withLock { state in
            defer { state.localContexts = [:] }
            return Array(state.localContexts.keys)
        }
        for id in local { files.remove(owner: Caller.localUser.owner, id: id) }
    }

    // MARK: - Callers

    /// The caller an `Authorization` header names.
    /// - Parameter authorization: the header's value (`Bearer KEY`), if any.
    /// - Throws: ``ServiceError/unauthorized`` for no key, a malformed, unknown or revoked one — never saying which.
    public func authenticate(authorization: String?) async throws -> Caller {
        guard let authorization else { throw ServiceError.unauthorized }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw ServiceError.unauthorized }
        let secret = parts[1].trimmingCharacters(in: .whitespaces)
        guard !secret.isEmpty, secret.count <= 256 else { throw ServiceError.unauthorized }
        let key: APIKeyRecord?
        do {
            key = try await store.authenticate(secret: secret)
        } catch {
            logger.error("the key store failed: \(error)")
            throw ServiceError.unavailable("the key store cannot be read; retry shortly", retryAfter: 5)
        }
        guard let key else { throw ServiceError.unauthorized }
        return Caller(key: key)
    }

    /// Counts a request against the caller's requests per minute.
    /// - Throws: ``ServiceError`` 429 with `Retry-After`.
    public func admitRequest(_ caller: Caller) throws {
        try limiter.admitRequest(caller)
    }

    // MARK: - Contexts

    /// Begins an upload for the caller; write the bytes to it as they arrive, then `finish()`.
    /// - Parameters:
    ///   - caller: the owner.
    ///   - name: a label (never used as a path).
    ///   - expectedBytes: the declared length, when known: refused at once when it is over the limit.
    public func beginUpload(caller: Caller, name: String?, expectedBytes: Int? = nil) throws -> ContextUpload {
        let name = try Self.checkedName(name)
        if let expectedBytes, expectedBytes > configuration.maxContextBytes {
            throw ServiceError.tooLarge(
                "the context is \(ByteSize.describe(expectedBytes)), more than this server's limit of "
                    + "\(ByteSize.describe(configuration.maxContextBytes)) (--max-context)")
        }
        let id = Self.newID("ctx_")
        let fd = try files.create(owner: caller.owner, id: id)
        let record: @Sendable (ContextRecord) async throws -> Void
        if caller.key == nil {
            record = { [self] stored in state.withLock { $0.localContexts[stored.id] = stored } }
        } else {
            record = { [self] stored in try await storeCall { try await store.addContext(stored) } }
        }
        return ContextUpload(
            id: id, path: files.path(owner: caller.owner, id: id), fd: fd, name: name, owner: caller.owner,
            maxBytes: configuration.maxContextBytes, record: record)
    }

    /// The caller's context `id`.
    /// - Throws: ``ServiceError`` 404 when it does not exist or is another caller's.
    public func context(caller: Caller, id: String) async throws -> ContextRecord {
        if let path = state.withLock({ $0.pathContexts[id] }), path.owner == caller.owner {
            return ContextRecord(id: id, keyID: caller.owner, name: path.name, bytes: 0, created: path.created)
        }
        if caller.key == nil {
            guard let record = state.withLock({ $0.localContexts[id] }) else {
                throw ServiceError.notFound("context \(Self.shown(id))", param: "id")
            }
            return record
        }
        guard Self.isID(id, prefix: "ctx_"),
            let record = try await storeCall({ try await store.context(id: id, keyID: caller.owner) })
        else { throw ServiceError.notFound("context \(Self.shown(id))", param: "id") }
        return record
    }

    /// The caller's contexts, oldest first.
    public func contexts(caller: Caller) async throws -> [ContextRecord] {
        if caller.key == nil {
            return state.withLock { $0.localContexts.values.sorted { $0.created < $1.created } }
        }
        return try await storeCall { try await store.contexts(keyID: caller.owner) }
    }

    /// Deletes the caller's context `id` (a run already using it keeps its open file).
    /// - Throws: ``ServiceError`` 404 when it does not exist or is another caller's.
    public func deleteContext(caller: Caller, id: String) async throws {
        let removedPath = state.withLock { state -> Bool in
            guard let path = state.pathContexts[id], path.owner == caller.owner else { return false }
            state.pathContexts[id] = nil
            return true
        }
        if removedPath { return }
        if caller.key == nil {
            guard state.withLock({ $0.localContexts.removeValue(forKey: id) }) != nil else {
                throw ServiceError.notFound("context \(Self.shown(id))", param: "id")
            }
            files.remove(owner: caller.owner, id: id)
            return
        }
        guard Self.isID(id, prefix: "ctx_"),
            try await storeCall({ try await store.deleteContext(id: id, keyID: caller.owner) })
        else { throw ServiceError.notFound("context \(Self.shown(id))", param: "id") }
        files.remove(owner: caller.owner, id: id)
    }

    /// Registers a path beneath one of the server's roots as a context of the caller's (MCP's `load_context`).
    /// - Throws: ``ServiceError`` 400 when the path is outside every root, goes through a link, or does not exist.
    public func addPathContext(caller: Caller, path: String, name: String?) throws -> ContextRecord {
        let (root, relative) = try resolveBeneathRoots(path)
        let fd = try openBeneath(root: root, relative: relative)
        close(fd)
        let id = Self.newID("ctx_")
        let label = try Self.checkedName(name) ?? (relative.isEmpty ? (root as NSString).lastPathComponent : relative)
        let created = Date()
        state.withLock { state in
            state.pathContexts[id] = PathContext(
                owner: caller.owner, root: root, relative: relative, name: label, created: created)
        }
        return ContextRecord(id: id, keyID: caller.owner, name: label, bytes: 0, created: created)
    }

    // MARK: - Runs

    /// Answers a question through the runtime. The caller's limits are checked first (429), the run waits for a
    /// turn when the server is busy, and the run is recorded: its trajectory, an audit line, the key's usage.
    /// - Parameters:
    ///   - request: the question, contexts and budgets.
    ///   - caller: who asks.
    ///   - onEvent: receives the run's events as they happen (an SSE stream's progress).
    /// - Returns: the result; a run that fails throws ``ServiceError``.
    public func run(
        _ request: RunRequest, caller: Caller, onEvent: (@Sendable (RLMEvent) -> Void)? = nil
    ) async throws -> RunOutcome {
        let (template, plan) = try readyTemplate()
        guard !request.query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ServiceError.invalid("the question is empty: the last user message needs text", param: "messages")
        }
        if let model = request.model, !models.contains(model) {
            throw ServiceError(
                status: 404, type: "invalid_request_error", code: "model_not_found",
                message: "no model \(Self.shown(model)) here; GET /v1/models lists them", param: "model")
        }
        let (tokensLeft, costLeft) = try await allowance(caller)
        let slot = try limiter.acquireRun(caller)
        defer { slot.free() }
        let turn = try await gate.enter()
        defer { turn.leave() }
        let id = UUID()
        let task = Task { () async throws -> RunOutcome in
            try await self.execute(
                request, caller: caller, template: template, plan: plan, tokensLeft: tokensLeft, costLeft: costLeft,
                onEvent: onEvent)
        }
        let registered = state.withLock { state -> Bool in
            guard state.phase == .ready else { return false }
            state.runs[id] = task
            return true
        }
        guard registered else {
            task.cancel()
            _ = await task.result
            throw ServiceError.unavailable("the server is stopping")
        }
        defer { _ = state.withLock { $0.runs.removeValue(forKey: id) } }
        return try await withTaskCancellationHandler {
            do {
                return try await task.value
            } catch let error as ServiceError {
                throw error
            } catch {
                throw ServiceError(RunFailure.classify(error))
            }
        } onCancel: {
            task.cancel()
        }
    }

    /// The caller's tokens left today and dollars left in all; refuses when either is spent.
    func allowance(_ caller: Caller) async throws -> (tokens: Int?, cost: Double?) {
        guard let key = caller.key else { return (nil, nil) }
        var tokens: Int?
        if let perDay = key.limits.tokensPerDay {
            let used = try await storeCall { try await store.tokensUsed(keyID: key.id, day: Self.today()) }
            guard used < perDay else {
                let retry = Self.secondsToUTCMidnight()
                throw ServiceError.rateLimited(
                    "tokens_per_day_exceeded",
                    "this key has used its \(perDay) tokens for today (UTC); retry in \(retry) s", retryAfter: retry)
            }
            tokens = perDay - used
        }
        var cost: Double?
        if let budget = key.limits.maxCostUSD {
            let left = budget - key.spentUSD
            guard left > 0 else {
                throw ServiceError(
                    status: 429, type: "insufficient_quota", code: "insufficient_quota",
                    message: String(format: "this key has spent its cost budget ($%.4f)", budget))
            }
            cost = left
        }
        return (tokens, cost)
    }

    private func readyTemplate() throws -> (RLMConfiguration, RLMRuntime.Plan) {
        let (phase, template, plan) = state.withLock { ($0.phase, $0.template, $0.plan) }
        switch phase {
        case .starting: throw ServiceError.unavailable("the server is starting; retry shortly", retryAfter: 5)
        case .stopping: throw ServiceError.unavailable("the server is stopping")
        case .ready: break
        }
        guard let template, let plan else { throw ServiceError.unavailable("the server is starting", retryAfter: 5) }
        return (template, plan)
    }

    private func execute(
        _ request: RunRequest, caller: Caller, template: RLMConfiguration, plan: RLMRuntime.Plan, tokensLeft: Int?,
        costLeft: Double?, onEvent: (@Sendable (RLMEvent) -> Void)?
    ) async throws -> RunOutcome {
        let start = ContinuousClock.now
        let models = state.withLock { $0.models }
        let record = ServiceRecord()
        do {
            if let sessionID = request.sessionID {
                return try await ask(
                    request, in: sessionID, caller: caller, plan: plan, tokensLeft: tokensLeft, costLeft: costLeft,
                    onEvent: onEvent, record: record, start: start)
            }
            let budget = try request.budget(
                server: template.budget, tokensLeft: tokensLeft, costLeft: costLeft)
            let source = try await contextSource(
                caller: caller, ids: request.contextIDs, paths: request.paths, history: request.history)
            var configuration = template
            configuration.budget = budget
            configuration.sandbox = try sandbox(for: source)
            let writer = try runtime.openTrajectory(plan, path: configuration.newTrajectoryPathFor(self))
            record.opened(writer)
            defer { writer.close() }
            configuration.onEvent = { event in
                writer.write(event)
                record.observe(event)
                onEvent?(event)
            }
            let result = try await RLMEngine(configuration: configuration).run(query: request.query, source: source)
            let outcome = RunOutcome(
                result: result, trajectoryID: TrajectoryStore.id(ofPath: writer.path), model: models[0])
            await finish(outcome: outcome, caller: caller, models: models, plan: plan, trajectory: writer.path)
            return outcome
        } catch {
            await failed(error, caller: caller, models: models, plan: plan, record: record, start: start)
            throw error
        }
    }

    /// Records a finished run: an audit line with the caller's key id, and the key's usage.
    func finish(
        outcome: RunOutcome, caller: Caller, models: [String], plan: RLMRuntime.Plan, trajectory: String
    ) async {
        let entry = AuditLog.Entry(
            result: outcome.result, models: models, trajectory: trajectory, principal: caller.principal)
        audit(entry, plan: plan)
        await addUsage(caller, outcome.result.usage)
    }

    func failed(
        _ error: any Error, caller: Caller, models: [String], plan: RLMRuntime.Plan, record: ServiceRecord,
        start: ContinuousClock.Instant
    ) async {
        let failure = RunFailure.classify(error)
        if failure.kind == .interrupted { record.writeInterrupted(start: start) }
        record.close()
        if error is ServiceError, record.path == nil { return }  // refused before it ran: the request line says so
        let entry = AuditLog.Entry(
            errorKind: failure.kind.rawValue, models: models, trajectory: record.path, usage: record.usage,
            duration: ContinuousClock.now - start, principal: caller.principal)
        audit(entry, plan: plan)
        if let usage = record.usage { await addUsage(caller, usage) }
    }

    func addUsage(_ caller: Caller, _ usage: RunUsage) async {
        guard let key = caller.key else { return }
        // Recorded even for a run that was cancelled (its spending happened): not in the cancelled task.
        let (store, logger) = (store, logger)
        await Task.detached {
            do {
                try await store.addUsage(
                    keyID: key.id, day: Self.today(), tokens: usage.tokens.totalTokens, costUSD: usage.costUSD)
            } catch {
                logger.error("the key store could not record usage: \(error)")
            }
        }.value
    }

    func audit(_ entry: AuditLog.Entry, plan: RLMRuntime.Plan?) {
        do {
            try AuditLog(path: configuration.auditLogPath, secrets: plan?.secrets ?? [])
                .append(entry)
        } catch {
            logger.error("the audit log could not be written: \(error)")
        }
    }

    /// Appends a request's line to the audit log: who, what, the status and how long it took.
    /// - Parameters:
    ///   - caller: the authenticated caller, or `nil` when authentication failed.
    ///   - method: the HTTP method or the MCP tool.
    ///   - path: the path (without its query) or `mcp`.
    ///   - status: the status answered.
    ///   - duration: time to answer.
    public func auditRequest(caller: Caller?, method: String, path: String, status: Int, duration: Duration) {
        do {
            try AuditLog(path: configuration.auditLogPath).appendRequest(
                AuditLog.Request(
                    principal: caller?.principal, method: method, path: path, status: status,
                    durationMs: Int(duration.inMilliseconds)))
        } catch {
            logger.error("the audit log could not be written: \(error)")
        }
    }

    // MARK: - Context sources

    /// The run's context: uploaded contexts, paths beneath the roots, and earlier chat messages as one document.
    func contextSource(caller: Caller, ids: [String], paths: [String], history: String?) async throws
        -> ContextSource?
    {
        guard ids.count + paths.count <= 1000 else {
            throw ServiceError.invalid("at most 1000 contexts and paths per run", param: "rlm.contexts")
        }
        var files = [ContextFile]()
        var opened = [ContextPlanner.OpenedSource]()
        var total = 0
        for id in ids {
            if let path = state.withLock({ $0.pathContexts[id] }), path.owner == caller.owner {
                let fd = try openBeneath(root: path.root, relative: path.relative)
                opened.append(.init(label: path.name, fd: fd))
                continue
            }
            let record = try await context(caller: caller, id: id)
            let fd = try self.files.openForReading(owner: caller.owner, id: record.id)
            total += record.bytes
            files.append(
                ContextFile(
                    label: record.name ?? record.id, size: record.bytes, content: .open(ContextDescriptor(fd: fd))))
        }
        for path in paths {
            let (root, relative) = try resolveBeneathRoots(path)
            let fd = try openBeneath(root: root, relative: relative)
            opened.append(.init(label: relative.isEmpty ? (root as NSString).lastPathComponent : relative, fd: fd))
        }
        var anyDirectory = false
        if !opened.isEmpty {
            let planner = ContextPlanner(
                maxBytes: max(0, configuration.maxContextBytes - total), encoding: .auto)
            let planned = try planner.plan(opened: opened)
            anyDirectory = planned.source.shape == .documents || opened.count > 1
            files += planned.source.files
            total += planned.totalBytes
        }
        if let history, !history.isEmpty {
            let data = Data(history.utf8)
            files.append(ContextFile(label: "messages", data: data))
            total += data.count
        }
        guard total <= configuration.maxContextBytes else {
            throw ContextLoadError(
                "the contexts come to \(ByteSize.describe(total)), more than this server's limit of "
                    + "\(ByteSize.describe(configuration.maxContextBytes)) (--max-context)",
                isTooLarge: true)
        }
        guard !files.isEmpty else { return nil }
        let shape: ContextSource.Shape = files.count == 1 && !anyDirectory ? .text : .documents
        return ContextSource(shape: shape, files: files)
    }

    /// The server's sandbox backend sized for the context (memory, work dir), from the server's limits.
    func sandbox(for source: ContextSource?) throws -> any Sandbox {
        var base = RLMRuntime.sandboxLimits(python: configuration.runtime.python)
        // Sized so idle sessions can never take the slots runs need (the process default, 16, is `rlm run`'s).
        base.maxLiveSessionsPerProcess = configuration.maxLiveSandboxes
        return configuration.runtime.sandboxBackend.sandbox(
            try configuration.contextLimits.sandbox(
                forContextBytes: source?.totalBytes ?? 0, shape: source?.shape, base: base))
    }

    // MARK: - Roots

    /// Splits a path argument into one of the roots and a path relative to it: an absolute path must lie under a
    /// root; a relative one is taken against the first root. `..` and `.` components are refused outright, and links
    /// are refused when the path is opened (``openBeneath(root:relative:)``).
    func resolveBeneathRoots(_ path: String) throws -> (root: String, relative: String) {
        let roots = configuration.roots
        guard !roots.isEmpty else {
            throw ServiceError.invalid(
                "this server was started without --root, so it reads no paths: upload the context instead",
                param: "paths")
        }
        guard !path.isEmpty, path.utf8.count <= 4096, !path.contains("\0") else {
            throw ServiceError.invalid("the path is empty or too long", param: "paths")
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !components.contains(where: { $0 == ".." || $0 == "." }) else {
            throw ServiceError.invalid("paths may not contain '.' or '..' components", param: "paths")
        }
        if path.hasPrefix("/") {
            for root in roots {
                let rootParts = root.split(separator: "/", omittingEmptySubsequences: true)
                if components.starts(with: rootParts) {
                    return (root, components.dropFirst(rootParts.count).joined(separator: "/"))
                }
            }
            throw ServiceError.invalid("the path is outside every directory this server may read", param: "paths")
        }
        return (roots[0], components.joined(separator: "/"))
    }

    /// Opens `relative` beneath `root` without following any symbolic link and without leaving the root
    /// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
    func openBeneath(root: String, relative: String) throws -> Int32 {
        let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else {
            throw ServiceError.invalid("a root directory of this server cannot be opened", param: "paths")
        }
        if relative.isEmpty { return rootFD }
        defer { close(rootFD) }
        let directory = ContextDirectory(fd: dup(rootFD))
        do {
            return try directory.openEntry(relative)
        } catch {
            throw ServiceError.invalid(
                "\(Self.shown(relative)) cannot be read beneath the server's root: it does not exist, leaves the "
                    + "root, or goes through a symbolic link",
                param: "paths")
        }
    }

    // MARK: - Helpers

    func storeCall<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ServiceError {
            throw error
        } catch {
            logger.error("the key store failed: \(error)")
            throw ServiceError.unavailable("the key store cannot be used now; retry shortly", retryAfter: 5)
        }
    }

    /// `prefix` and 24 random hex digits.
    static func newID(_ prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<12).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return prefix + bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func isID(_ id: String, prefix: String) -> Bool {
        id.hasPrefix(prefix) && id.utf8.count == prefix.utf8.count + 24
            && id.utf8.dropFirst(prefix.utf8.count).allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// An id or name quoted back to the caller: short and on one line.
    static func shown(_ text: String) -> String {
        let clean = String(text.prefix(80).map { $0.isNewline || $0.asciiValue.map { $0 < 32 } == true ? " " : $0 })
        return "'\(clean)'" + (text.count > 80 ? "…" : "")
    }

    static func checkedName(_ name: String?) throws -> String? {
        guard let name else { return nil }
        guard !name.isEmpty, name.count <= 200, !name.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw ServiceError.invalid("a context name must be 1 to 200 characters on one line", param: "name")
        }
        return name
    }

    static func today(_ date: Date = Date()) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d", parts.year ?? 1970, parts.month ?? 1, parts.day ?? 1)
    }

    static func secondsToUTCMidnight(_ date: Date = Date()) -> Int {
        let seconds = Int(date.timeIntervalSince1970)
        return max(1, 86_400 - seconds % 86_400)
    }

    // MARK: - Sessions (see ServiceSession.swift)

    func withState<T>(_ body: (inout State) -> T) -> T { state.withLock { body(&$0) } }

    func readyForSessions() throws -> (RLMConfiguration, RLMRuntime.Plan) { try readyTemplate() }

    var runtimeForRecords: RLMRuntime { runtime }
}

extension RLMConfiguration {
    fileprivate func newTrajectoryPathFor(_ service: RLMService) -> String {
        service.configuration.newTrajectoryPath()
    }
}

/// A run's trajectory and what it spent so far, for the record of a run that failed or was cancelled.
final class ServiceRecord: Sendable {
    private let writer = Mutex<TrajectoryWriter?>(nil)
    private let seen = Mutex<(iterations: Int, usage: RunUsage?)>((0, nil))

    func opened(_ trajectory: TrajectoryWriter) { writer.withLock { $0 = trajectory } }

    func observe(_ event: RLMEvent) {
        seen.withLock { seen in
            if event.depth == 0 { seen.iterations = max(seen.iterations, event.iteration) }
            if let usage = event.usage { seen.usage = usage }
        }
    }

    var usage: RunUsage? { seen.withLock { $0.usage } }
    var path: String? { writer.withLock { $0?.path } }

    /// Ends the trajectory with `run_finished`, status `interrupted` (the server stopped or the client left).
    func writeInterrupted(start: ContinuousClock.Instant) {
        let (iterations, usage) = seen.withLock { $0 }
        writer.withLock {
            $0?.write(
                RLMEvent.interrupted(
                    signal: "cancelled", iterations: iterations,
                    durationMilliseconds: (ContinuousClock.now - start).inMilliseconds, usage: usage))
        }
    }

    func close() { writer.withLock { $0?.close() } }
}
