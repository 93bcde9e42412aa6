import Foundation
import Logging
import MCP
import RLM
import RLMService
import RLMStore

/// Answers `tools/call` for one MCP connection: checks the arguments, calls the serving core as the connection's
/// caller, and shapes the answer.
///
/// Mistakes in arguments and refusals of the core (an unknown session, a path outside the roots, a spent budget) are
/// tool results with `isError: true` and a message the model can act on; an unknown tool is a JSON-RPC invalid-params
/// error. No message holds a stack trace or a path of the server's: anything unexpected is logged and answered with
/// a generic sentence.
struct ToolCalls: Sendable {
    let service: RLMService
    let caller: @Sendable () async throws -> Caller
    let logger: Logger
    /// Whether each call gets a line in the audit log (stdio: there is no HTTP request to audit).
    let auditCalls: Bool

    /// Answers one call.
    /// - Parameters:
    ///   - params: the call.
    ///   - server: the server, for progress notifications.
    /// - Throws: `MCPError.invalidParams` for an unknown tool; `CancellationError` when the client cancelled.
    func call(_ params: CallTool.Parameters, server: Server?) async throws -> CallTool.Result {
        let start = ContinuousClock.now
        var status = 200
        var who: Caller?
        defer {
            if auditCalls {
                service.auditRequest(
                    caller: who, method: String(params.name.prefix(100)), path: "mcp", status: status,
                    duration: ContinuousClock.now - start)
            }
        }
        guard let allowed = ToolCatalog.arguments[params.name] else {
            status = 400
            who = try? await caller()
            throw MCPError.invalidParams(
                "Unknown tool: \(ToolArguments.quoted(params.name)); tools/list names the tools")
        }
        do {
            let arguments = try ToolArguments(tool: params.name, arguments: params.arguments, allowed: allowed)
            let caller = try await self.caller()
            who = caller
            switch params.name {
            case ToolCatalog.rlmQuery:
                return try await query(arguments, caller: caller, progress: params._meta?.progressToken, server: server)
            case ToolCatalog.executePython: return try await execute(arguments, caller: caller)
            case ToolCatalog.loadContext: return try await loadContext(arguments, caller: caller)
            case ToolCatalog.listSessions: return listSessions(caller: caller)
            default: return try await closeSession(arguments, caller: caller)
            }
        } catch let error as ToolArgumentError {
            status = 400
            return Self.failure(error.message, code: "invalid_arguments")
        } catch let error as ServiceError {
            status = error.status
            // A call the client cancelled gets no answer (the run it started is cancelled with it).
            if Task.isCancelled { throw CancellationError() }
            return Self.failure(error.message, code: error.code)
        } catch is CancellationError {
            status = 499
            throw CancellationError()
        } catch {
            status = 500
            logger.error(
                "an MCP tool call failed", metadata: ["rlm.mcp.tool": .string(params.name), "error": "\(error)"])
            return Self.failure(ServiceError.internalError.message, code: ServiceError.internalError.code)
        }
    }

    // MARK: - Tools

    private func query(
        _ arguments: ToolArguments, caller: Caller, progress: ProgressToken?, server: Server?
    ) async throws -> CallTool.Result {
        let query = try arguments.string("query", required: true)!
        guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ToolArgumentError("rlm_query: 'query' is blank")
        }
        let request = RunRequest(
            query: query, contextIDs: try arguments.strings("context_ids"), paths: try arguments.strings("paths"),
            sessionID: try arguments.string("session_id"),
            maxIterations: try arguments.integer("max_iterations", in: 1...1000),
            maxDepth: try arguments.integer("max_depth", in: 0...8),
            maxTokens: try arguments.integer("max_tokens", in: 1...Int.max),
            maxCostUSD: try arguments.number("max_cost", above: 0, atMost: 1e9),
            timeoutSeconds: try arguments.number("timeout", above: 0, atMost: 86_400))
        if request.sessionID != nil {
            let extra = ["context_ids", "paths", "max_iterations", "max_depth", "max_tokens", "max_cost", "timeout"]
                .filter(arguments.has)
            if !extra.isEmpty {
                throw ToolArgumentError(
                    "rlm_query: a session's contexts and budgets are set when it opens; leave "
                        + extra.joined(separator: ", ") + " out when session_id is given")
            }
        }
        let outcome = try await withProgress(progress, server: server) { report in
            try await service.run(request, caller: caller) { event in
                if event.depth == 0, event.kind == .modelRequest { report(event.iteration) }
            }
        }
        return Self.result(of: outcome)
    }

    private func execute(_ arguments: ToolArguments, caller: Caller) async throws -> CallTool.Result {
        let code = try arguments.string("code", required: true, allowEmpty: true)!
        let (sessionID, cell) = try await service.execute(
            caller: caller, sessionID: try arguments.string("session_id"), code: code)
        var error: Value = .null
        if let raised = cell.error {
            error = .object([
                "type": .string(raised.type), "message": .string(raised.message),
                "traceback": .string(raised.traceback),
            ])
        }
        return Self.success(
            .object([
                "session_id": .string(sessionID), "stdout": .string(cell.stdout), "stderr": .string(cell.stderr),
                "error": error, "timed_out": .bool(cell.timedOut), "state_lost": .bool(cell.stateLost),
                "memory_exceeded": .bool(cell.memoryExceeded), "duration_ms": .double(cell.durationMilliseconds),
            ]))
    }

    private func loadContext(_ arguments: ToolArguments, caller: Caller) async throws -> CallTool.Result {
        let name = try arguments.string("name")
        let path = try arguments.string("path")
        let text = try arguments.string("text", allowEmpty: true)
        switch (path, text) {
        case (let path?, nil):
            let record = try service.addPathContext(caller: caller, path: path, name: name)
            return Self.success(
                .object([
                    "id": .string(record.id), "name": record.name.map { .string($0) } ?? .null, "bytes": .null,
                    "source": "path",
                ]))
        case (nil, let text?):
            let bytes = Data(text.utf8)
            let upload = try service.beginUpload(caller: caller, name: name, expectedBytes: bytes.count)
            do {
                try upload.write(bytes)
                let record = try await upload.finish()
                return Self.success(
                    .object([
                        "id": .string(record.id), "name": record.name.map { .string($0) } ?? .null,
                        "bytes": .int(record.bytes), "source": "text",
                    ]))
            } catch {
                upload.abort()
                throw error
            }
        case (nil, nil):
            throw ToolArgumentError("load_context needs 'path' (beneath the server's roots) or 'text'")
        case (_?, _?):
            throw ToolArgumentError("load_context takes 'path' or 'text', not both")
        }
    }

    private func listSessions(caller: Caller) -> CallTool.Result {
        let sessions = service.sessions(caller: caller).map { session -> Value in
            .object([
                "id": .string(session.id), "created": .int(Int(session.created.timeIntervalSince1970)),
                "expires_at": .int(Int(session.expires.timeIntervalSince1970.rounded(.up))),
                "context_ids": .array(session.contextIDs.map { .string($0) }), "turns": .int(session.turns),
                "busy": .bool(session.busy),
            ])
        }
        return Self.success(.object(["sessions": .array(sessions)]))
    }

    private func closeSession(_ arguments: ToolArguments, caller: Caller) async throws -> CallTool.Result {
        let id = try arguments.string("session_id", required: true)!
        try await service.closeSession(caller: caller, id: id)
        return Self.success(.object(["session_id": .string(id), "closed": true]))
    }

    // MARK: - Progress

    /// Runs `body`, turning the iterations it reports into `notifications/progress` for `token`, in order, when the
    /// client asked for progress.
    private func withProgress<T: Sendable>(
        _ token: ProgressToken?, server: Server?,
        _ body: (_ report: @escaping @Sendable (Int) -> Void) async throws -> T
    ) async throws -> T {
        guard let token, let server else { return try await body { _ in } }
        let (iterations, continuation) = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(64))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var last = 0
                for await iteration in iterations where iteration > last {
                    last = iteration
                    try? await server.notify(
                        ProgressNotification.message(
                            .init(progressToken: token, progress: Double(iteration), message: "iteration \(iteration)")
                        ))
                }
            }
            defer { continuation.finish() }
            return try await body { continuation.yield($0) }
        }
    }

    // MARK: - Results

    static func result(of outcome: RunOutcome) -> CallTool.Result {
        let result = outcome.result
        var reason: String?
        if case .budgetExhausted(let exhausted) = result.status { reason = exhausted.message }
        if result.answer == nil, reason == nil { reason = "the run ended without a final answer" }
        let usage = result.usage
        let summary: Value = .object([
            "status": .string(outcome.status),
            "answer": result.answer.map { .string($0) } ?? .null,
            "reason": reason.map { .string($0) } ?? .null,
            "iterations": .int(result.iterations),
            "usage": .object([
                "input_tokens": .int(usage.tokens.inputTokens), "output_tokens": .int(usage.tokens.outputTokens),
                "total_tokens": .int(usage.tokens.totalTokens), "cost_usd": .double(usage.costUSD),
                "model_calls": .int(usage.modelCalls), "subcalls": .int(usage.subcalls),
            ]),
            "trajectory": .string(outcome.trajectoryID),
            "model": .string(outcome.model),
            "session_id": outcome.sessionID.map { .string($0) } ?? .null,
            "duration_ms": .double(result.duration.inMilliseconds),
        ])
        let text = result.answer ?? "No answer: \(reason ?? "") (\(result.iterations) iterations)."
        return CallTool.Result(
            content: [.text(text: ArgumentEscaping.protect(text), annotations: nil, _meta: nil)],
            structuredContent: Value?.some(ArgumentEscaping.protect(summary)), isError: false)
    }

    /// A success: the structured content, and the same as JSON text for clients that read only text.
    static func success(_ content: Value) -> CallTool.Result {
        CallTool.Result(
            content: [.text(text: json(content), annotations: nil, _meta: nil)],
            structuredContent: Value?.some(ArgumentEscaping.protect(content)), isError: false)
    }

    /// A refusal or failure the model can read.
    static func failure(_ message: String, code: String) -> CallTool.Result {
        CallTool.Result(
            content: [.text(text: ArgumentEscaping.protect(message), annotations: nil, _meta: nil)],
            structuredContent: Value?.some(
                ArgumentEscaping.protect(
                    .object(["error": .object(["code": .string(code), "message": .string(message)])]))),
            isError: true)
    }

    static func json(_ value: Value) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
