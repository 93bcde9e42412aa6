import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import RLMMCP
import RLMRuntime
import RLMServer
import RLMService
import RLMStore
import ServiceLifecycle
import UnixSignals

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the RLM over an OpenAI-compatible HTTP API (and MCP at /mcp), locked down by default.",
        discussion: """
            Binds 127.0.0.1; another address needs TLS (--tls-cert and --tls-key) or --insecure. Every endpoint \
            but /healthz and /readyz needs an API key from `rlm keys create` (Authorization: Bearer KEY), with \
            that key's limits. Prints "listening on http://HOST:PORT" on stderr once it accepts connections. \
            SIGTERM or SIGINT stops it: running runs get --shutdown-grace seconds, then are cancelled and their \
            sandboxes killed. See docs/SERVING.md and docs/openapi.json.
            """
    )

    @OptionGroup var serve: ServeOptions

    @Option(help: "The address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "The port (0: a free one).")
    var port: Int = 8080

    @Option(help: "An Origin allowed by CORS and at /mcp (repeatable; default: none, no CORS header is ever sent).")
    var corsOrigin: [String] = []

    @Option(help: "TLS certificate chain (PEM).")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM).")
    var tlsKey: String?

    @Option(help: "The largest API request body in MiB (context uploads have --max-context).")
    var maxBody: Int = 8

    @Flag(help: "Allow a non-loopback --host without TLS (traffic and keys in clear text).")
    var insecure = false

    @Flag(help: "Serve /metrics without a key.")
    var publicMetrics = false

    @Flag(help: "Log only warnings and errors on stderr.")
    var quiet = false

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
        guard (1...4096).contains(maxBody) else { throw ValidationError("--max-body must be 1 to 4096 MiB") }
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        let listen = RLMHTTPServer.Listen(host: host, port: port)
        if !listen.isLoopback && tlsCert == nil && !insecure {
            throw ValidationError(
                "--host \(host) is not loopback: serving keys and contexts in clear text there needs --insecure; "
                    + "give --tls-cert and --tls-key instead")
        }
        for origin in corsOrigin {
            guard let url = URL(string: origin), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil, url.path.isEmpty || url.path == "/", origin != "*"
            else {
                throw ValidationError("--cors-origin \(origin) must be an origin such as https://app.example.com")
            }
        }
    }

    func run() async throws {
        let level: Logger.Level = quiet ? .warning : .info
        let logger = Logger(label: "rlm.serve") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let (service, store) = try await serve.openService(logger: logger)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let mcp = MCPMount.endpoint(service: service, logger: logger)
        let http = RLMHTTPServer(
            service: service,
            settings: HTTPServerSettings(
                corsOrigins: Set(corsOrigin.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }),
                maxBodyBytes: maxBody << 20, publicMetrics: publicMetrics),
            listen: RLMHTTPServer.Listen(host: host, port: port, tls: tlsCert.map { ($0, tlsKey ?? "") }),
            metrics: registry, mcp: mcp, logger: logger)
        let application: any Service
        do {
            application = try http.application { address in printError("listening on \(address)") }
        } catch {
            printError("rlm: \(error)")
            await store.close()
            throw ExitCode(2)
        }
        // Shut down in reverse order: the runtime first (runs stopped, sessions closed, the offline model stopped),
        // then MCP's sessions, then the HTTP server finishes what is in flight.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: application)]
        services.append(.init(service: MCPMount.Closer(endpoint: mcp)))
        services.append(.init(service: RuntimeService(service: service)))
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
                logger: logger))
        do {
            try await group.run()
        } catch {
            await store.close()
            printError("rlm: \(Self.describe(error))")
            throw ExitCode(RunFailure.classify(error).exitCode == 2 ? 2 : 1)
        }
        await store.close()
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? ServiceError { return error.message }
        let text = String(describing: error)
        if text.contains("Address already in use") { return "the port is already in use: pick another with --port" }
        return RunFailure.classify(error).message
    }
}

/// Where `/mcp` comes from: the MCP module's endpoint, mounted on the HTTP server, and the service that closes its
/// sessions when the server stops.
enum MCPMount {
    static func endpoint(service: RLMService, logger: Logger) -> MCPHTTPEndpoint {
        MCPHTTPEndpoint(service: service, logger: logger)
    }

    /// Waits for the graceful shutdown, then closes every MCP session.
    struct Closer: Service {
        let endpoint: MCPHTTPEndpoint

        func run() async throws {
            try? await gracefulShutdown()
            await endpoint.closeAll()
        }
    }
}
