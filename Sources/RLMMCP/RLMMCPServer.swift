import Foundation
import Logging
import MCP
import RLM
import RLMService

/// Builds the MCP server SwiftRLM serves over stdio (`rlm mcp`) and streamable HTTP (`/mcp` on `rlm serve`).
///
/// Tools (contract 4): `rlm_query`, `execute_python`, `load_context`, `list_sessions`, `close_session`. Every call runs
/// as the caller the resolver names: the local user over stdio, the API key of the request over HTTP.
///
/// ```swift
/// let server = await RLMMCPServer.make(service: service, caller: { .localUser }, logger: logger)
/// try await server.start(transport: transport)
/// ```
public enum RLMMCPServer {
    /// The server's name in `initialize`.
    public static let name = "swiftrlm"

    /// The server's version in `initialize`: SwiftRLM's.
    public static var version: String { RLMVersion.string }

    /// The tools, as `tools/list` lists them.
    public static var tools: [Tool] { ToolCatalog.tools }

    static let instructions = """
        SwiftRLM answers questions over contexts far larger than a model's window. Load a context with load_context \
        (text, or a path beneath the server's root directories), then ask rlm_query with its id. execute_python runs \
        your own Python in a sandboxed REPL whose variables persist within a session.
        """

    /// A server with the tools capability and handlers for `tools/list` and `tools/call`; start it on a transport.
    /// - Parameters:
    ///   - service: the serving core the tools call.
    ///   - caller: who each call runs as; asked at every call (an HTTP session's key may have new limits). A
    ///     `ServiceError` it throws is the call's answer.
    ///   - logger: where unexpected failures are logged (never on stdout over stdio).
    ///   - auditCalls: whether each call gets a line in the audit log (for stdio; over HTTP the server audits the
    ///     request itself).
    public static func make(
        service: RLMService, caller: @escaping @Sendable () async throws -> Caller, logger: Logger,
        auditCalls: Bool = false
    ) async -> Server {
        let server = Server(
            name: name, version: version, instructions: instructions,
            capabilities: Server.Capabilities(tools: .init(listChanged: false)))
        let calls = ToolCalls(service: service, caller: caller, logger: logger, auditCalls: auditCalls)
        await server.withMethodHandler(ListTools.self) { _ in ListTools.Result(tools: ToolCatalog.tools) }
        await server.withMethodHandler(CallTool.self) { [weak server] params in
            try await calls.call(params, server: server)
        }
        return server
    }
}
