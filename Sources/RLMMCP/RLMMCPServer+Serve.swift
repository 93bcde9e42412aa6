import Foundation
import Logging
import MCP
import RLMService

extension RLMMCPServer {
    /// Serves MCP over stdio (`rlm mcp`) as the local user until stdin closes or the task is cancelled; see
    /// ``serve(service:caller:transport:logger:)``. Nothing but MCP frames goes to stdout: `logger` must write
    /// elsewhere (stderr).
    /// - Parameters:
    ///   - service: the serving core, running (inside `RLMService.run`).
    ///   - logger: the server's log.
    public static func serveStdio(service: RLMService, logger: Logger) async throws {
        try await serve(
            service: service, caller: .localUser, transport: StdioTransport(logger: logger), logger: logger)
    }

    /// Serves MCP on one connection (a transport whose peer is one client), every call as `caller`, each one audited.
    ///
    /// When the input ends (the client closed stdin), answers to the calls already taken still go out before this
    /// returns. When the task is cancelled (SIGINT/SIGTERM), no new call is taken, the service is stopped — calls
    /// running get its shutdown grace to finish, then are cancelled and answered as interrupted — and then the
    /// connection is closed.
    /// - Parameters:
    ///   - service: the serving core, running (inside `RLMService.run`).
    ///   - caller: who every call runs as.
    ///   - transport: the connection (stdio; in-memory in tests).
    ///   - logger: the server's log.
    public static func serve(
        service: RLMService, caller: Caller, transport: any Transport, logger: Logger
    ) async throws {
        let guarded = GuardedTransport(transport, logger: logger)
        let server = await make(service: service, caller: { caller }, logger: logger, auditCalls: true)
        try await server.start(transport: guarded)
        await withTaskCancellationHandler {
            await server.waitUntilCompleted()
        } onCancel: {
            Task { await guarded.closeInput() }
        }
        var cancelled = Task.isCancelled
        if !cancelled {
            // The client closed its input: the calls it already made still get their answers.
            do {
                while guarded.ledger.pending > 0 { try await Task.sleep(for: .milliseconds(50)) }
            } catch {
                cancelled = true
                await guarded.closeInput()
            }
        }
        if cancelled {
            // In a task of its own: a cancelled task cannot sleep, and both waits below poll.
            await Task {
                await service.stop()
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(2)
                while guarded.ledger.pending > 0, clock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }.value
        }
        await server.stop()
    }
}
