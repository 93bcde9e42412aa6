import ArgumentParser
import Foundation
import Logging
import RLMMCP
import RLMRuntime
import RLMService
import RLMStore
import Synchronization

/// `rlm mcp`: the RLM as an MCP server over stdio, for MCP clients that start it (the local user is the principal).
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve the RLM as an MCP server over stdio (tools: rlm_query, execute_python, load_context, …).",
        discussion: """
            Speaks MCP (JSON-RPC, one message per line) on stdin and stdout; logs go to stderr only. The local user \
            is the principal: no key is needed, and no per-key limit applies; the run budgets below do. Tools: \
            rlm_query, execute_python, load_context, list_sessions, close_session (see docs/SERVING.md). Paths \
            (rlm_query's paths, load_context's path) are read only beneath --root directories. Runs until stdin \
            closes (calls already made are answered first) or SIGTERM/SIGINT (running calls get --shutdown-grace \
            seconds, then are cancelled). Exit status: 0 stopped, 2 usage or setup error before serving, 1 a \
            failure while serving.
            """
    )

    @OptionGroup var serve: ServeOptions

    @Flag(help: "Log only warnings and errors on stderr.")
    var quiet = false

    func run() async throws {
        let level: Logger.Level = quiet ? .warning : .info
        let logger = Logger(label: "rlm.mcp") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let (service, store) = try await serve.openService(logger: logger)
        let configuration = service.configuration
        let serving = Atomic<Bool>(false)
        let grace = configuration.shutdownGrace + .seconds(10)
        do {
            try await untilInterrupted(grace: grace, forceExit: { Foundation.exit(128 + $0) }) {
                try await service.run {
                    serving.store(true, ordering: .relaxed)
                    try await RLMMCPServer.serveStdio(service: service, logger: logger)
                }
            }
        } catch is Interrupted {
            // SIGINT or SIGTERM: a clean stop.
        } catch {
            await store.close()
            let message = (error as? ServiceError)?.message ?? RunFailure.classify(error).message
            printError("rlm: \(message)")
            throw ExitCode(serving.load(ordering: .relaxed) ? 1 : 2)
        }
        await store.close()
    }
}
