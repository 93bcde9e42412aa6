import Foundation
import RLM
import RLMRuntime
import RLMStore
import RLMTrajectory
import Synchronization

/// A session: one REPL kept across questions (and MCP's `execute_python` cells) for one caller, with one trajectory
/// (a run per question, `<id>-qN`) and its latest events. One turn at a time.
final class ServiceSession: Sendable {
    let id: String
    let owner: String
    let contextIDs: [String]
    let created: Date
    /// The budget each question and cell starts from (narrowed per turn to what the caller has left).
    let budget: Budget
    let session: RLMSession
    let writer: TrajectoryWriter
    private let baseRun: String
    private let maxEvents: Int
    private let shared: Shared

    /// The mutable part, in a class so the event handler can hold it (a `Mutex` cannot be captured).
    final class Shared: Sendable {
        let state: Mutex<State>
        init(_ state: State) { self.state = Mutex(state) }
    }

    struct State {
        var lastUsed: Date
        var turns = 0
        var busy = false
        var events = [RLMEvent]()
        var sink: (@Sendable (RLMEvent) -> Void)?
        var record: ServiceRecord?
    }

    init(
        id: String, owner: String, contextIDs: [String], configuration: RLMConfiguration, source: ContextSource?,
        writer: TrajectoryWriter, maxEvents: Int
    ) {
        self.id = id
        self.owner = owner
        self.contextIDs = contextIDs
        self.created = Date()
        self.budget = configuration.budget
        self.writer = writer
        self.baseRun = writer.runID
        self.maxEvents = maxEvents
        let shared = Shared(State(lastUsed: Date()))
        self.shared = shared
        var configuration = configuration
        configuration.onEvent = { [shared, writer] event in
            writer.write(event)
            let (sink, record) = shared.state.withLock { state in
                state.events.append(event)
                if state.events.count > maxEvents { state.events.removeFirst(state.events.count - maxEvents) }
                return (state.sink, state.record)
            }
            record?.observe(event)
            sink?(event)
        }
        self.session = RLMSession(configuration: configuration, source: source)
    }

    /// Takes the session's one turn: events go to `sink` until ``endTurn()``.
    /// - Throws: ``ServiceError`` 409 when a question or cell is running in it.
    func beginTurn(sink: (@Sendable (RLMEvent) -> Void)?, record: ServiceRecord, question: Bool) throws {
        let free = shared.state.withLock { state -> Bool in
            guard !state.busy else { return false }
            state.busy = true
            state.turns += 1
            state.sink = sink
            state.record = record
            state.lastUsed = Date()
            return true
        }
        guard free else {
            throw ServiceError(
                status: 409, type: "invalid_request_error", code: "session_busy",
                message: "session \(id) is answering another question; wait for it or use another session",
                param: "session")
        }
        if question { writer.startRun(id: "\(baseRun)-q\(shared.state.withLock { $0.turns })") }
        record.opened(writer)
    }

    func endTurn() {
        shared.state.withLock { state in
            state.busy = false
            state.sink = nil
            state.record = nil
            state.lastUsed = Date()
        }
    }

    func expired(now: Date, ttl: Duration) -> Bool {
        shared.state.withLock { !$0.busy && now.timeIntervalSince($0.lastUsed) > ttl.inSeconds }
    }

    func summary(ttl: Duration) -> SessionSummary {
        shared.state.withLock { state in
            SessionSummary(
                id: id, created: created, expires: state.lastUsed.addingTimeInterval(ttl.inSeconds),
                contextIDs: contextIDs, turns: state.turns, busy: state.busy, events: state.events.count)
        }
    }

    var events: [RLMEvent] { shared.state.withLock { $0.events } }

    func close() async {
        await session.close()
        writer.close()
    }
}

extension RLMService {
    /// Opens a session over the caller's contexts (and paths beneath the roots): one REPL for every question asked
    /// in it. The context loads when the first question (or cell) comes.
    /// - Parameters:
    ///   - caller: the owner.
    ///   - contextIDs: uploaded contexts of the caller's.
    ///   - paths: paths beneath the server's roots.
    ///   - request: budgets for each question (as a run's `rlm` object); a session keeps them.
    /// - Throws: ``ServiceError`` 429 past the per-caller session cap, 404 for a context not the caller's.
    public func openSession(
        caller: Caller, contextIDs: [String] = [], paths: [String] = [], budgets request: RunRequest? = nil
    ) async throws -> SessionSummary {
        let (template, plan) = try readyForSessions()
        sweepSessions()
        let (held, total) = withState { state in
            (state.sessions.values.filter { $0.owner == caller.owner }.count, state.sessions.count)
        }
        guard total < configuration.maxSessionsTotal else {
            throw ServiceError.unavailable(
                "the server holds \(total) sessions, its limit; retry when one closes or expires", retryAfter: 30)
        }
        guard held < configuration.maxSessionsPerCaller else {
            throw ServiceError.rateLimited(
                "session_limit_exceeded",
                "this key holds \(held) sessions, its limit; close one (DELETE /v1/sessions/{id} or close_session)",
                retryAfter: nil)
        }
        if let model = request?.model, !models.contains(model) {
            throw ServiceError(
                status: 404, type: "invalid_request_error", code: "model_not_found",
                message: "no model \(Self.shown(model)) here; GET /v1/models lists them", param: "model")
        }
        var configuration = template
        configuration.budget = try (request ?? RunRequest(query: "")).budget(
            server: template.budget, tokensLeft: nil, costLeft: nil)
        let source = try await contextSource(caller: caller, ids: contextIDs, paths: paths, history: nil)
        configuration.sandbox = try sandbox(for: source)
        let writer = try runtimeForRecords.openTrajectory(plan, path: self.configuration.newTrajectoryPath())
        let id = Self.newID("ses_")
        let session = ServiceSession(
            id: id, owner: caller.owner, contextIDs: contextIDs, configuration: configuration, source: source,
            writer: writer, maxEvents: self.configuration.maxEventsPerSession)
        let added = withState { state -> Bool in
            guard state.phase == .ready else { return false }
            state.sessions[id] = session
            return true
        }
        guard added else {
            await session.close()
            throw ServiceError.unavailable("the server is stopping")
        }
        return session.summary(ttl: self.configuration.sessionTTL)
    }

    /// The caller's sessions.
    public func sessions(caller: Caller) -> [SessionSummary] {
        sweepSessions()
        return withState { state in
            state.sessions.values.filter { $0.owner == caller.owner }
        }
        .map { $0.summary(ttl: configuration.sessionTTL) }
        .sorted { $0.created < $1.created }
    }

    /// The latest events of the caller's session.
    public func sessionEvents(caller: Caller, id: String) throws -> [RLMEvent] {
        try session(caller: caller, id: id).events
    }

    /// Closes the caller's session: its sandbox is killed.
    /// - Throws: ``ServiceError`` 404 when it is not the caller's (or does not exist).
    public func closeSession(caller: Caller, id: String) async throws {
        let session = withState { state -> ServiceSession? in
            guard let session = state.sessions[id], session.owner == caller.owner else { return nil }
            state.sessions[id] = nil
            return session
        }
        guard let session else { throw ServiceError.notFound("session \(Self.shown(id))", param: "session_id") }
        await session.close()
    }

    /// Runs the caller's own code in a session's REPL (MCP's `execute_python`); a new session when `id` is `nil`.
    /// - Returns: the session's id and the cell's result.
    public func execute(caller: Caller, sessionID id: String?, code: String) async throws -> (String, CellResult) {
        guard code.utf8.count <= 1 << 20 else {
            throw ServiceError.tooLarge("the code is over 1 MiB", code: "code_too_large")
        }
        var id = id
        if id == nil { id = try await openSession(caller: caller).id }
        guard let id else { throw ServiceError.internalError }
        let session = try session(caller: caller, id: id)
        // The code's llm_query calls spend the caller's tokens and dollars like a question does.
        let (tokensLeft, costLeft) = try await allowance(caller)
        let budget = try RunRequest(query: "").budget(
            server: session.budget, tokensLeft: tokensLeft, costLeft: costLeft)
        let slot = try limiter.acquireRun(caller)
        defer { slot.free() }
        let turn = try await gate.enter()
        defer { turn.leave() }
        let record = ServiceRecord()
        try session.beginTurn(sink: nil, record: record, question: false)
        defer { session.endTurn() }
        do {
            let (result, usage) = try await session.session.execute(code, budget: budget)
            if usage.modelCalls > 0 || usage.tokens.totalTokens > 0 { await addUsage(caller, usage) }
            return (id, result)
        } catch {
            if let usage = record.usage { await addUsage(caller, usage) }
            throw ServiceError(RunFailure.classify(error))
        }
    }

    /// Asks a question in the caller's session.
    func ask(
        _ request: RunRequest, in id: String, caller: Caller, plan: RLMRuntime.Plan, tokensLeft: Int?,
        costLeft: Double?,
        onEvent: (@Sendable (RLMEvent) -> Void)?, record: ServiceRecord, start: ContinuousClock.Instant
    ) async throws -> RunOutcome {
        let session = try session(caller: caller, id: id)
        guard request.contextIDs.isEmpty, request.paths.isEmpty else {
            throw ServiceError.invalid(
                "a session's contexts are set when it is opened; leave rlm.contexts out when rlm.session is given",
                param: "rlm.contexts")
        }
        let budget = try request.budget(server: session.budget, tokensLeft: tokensLeft, costLeft: costLeft)
        try session.beginTurn(sink: onEvent, record: record, question: true)
        defer { session.endTurn() }
        var query = request.query
        if let history = request.history, !history.isEmpty {
            query = "Earlier in this conversation:\n\(history)\n\nThe question: \(request.query)"
        }
        let result = try await session.session.ask(query, budget: budget)
        let outcome = RunOutcome(
            result: result, trajectoryID: session.writer.runID, model: models.first ?? "", sessionID: id)
        await finish(outcome: outcome, caller: caller, models: models, plan: plan, trajectory: session.writer.path)
        return outcome
    }

    func session(caller: Caller, id: String) throws -> ServiceSession {
        guard let session = withState({ $0.sessions[id] }), session.owner == caller.owner else {
            throw ServiceError.notFound("session \(Self.shown(id))", param: "session_id")
        }
        return session
    }

    /// Closes sessions idle past the TTL (their sandboxes killed).
    func sweepSessions(now: Date = Date()) {
        let ttl = configuration.sessionTTL
        let expired = withState { state -> [ServiceSession] in
            let gone = state.sessions.values.filter { $0.expired(now: now, ttl: ttl) }
            for session in gone { state.sessions[session.id] = nil }
            return gone
        }
        guard !expired.isEmpty else { return }
        Task { for session in expired { await session.close() } }
    }
}
