import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import Prometheus
import RLM
import RLMService
import ServiceLifecycle

/// `rlm serve`'s HTTP side: the OpenAI-compatible API (and MCP at `/mcp`) on Hummingbird, behind the front
/// middleware, with TLS from certificate files.
///
/// It runs in one `ServiceGroup` with the ``RuntimeService`` (the runtime and the offline model): on SIGTERM or
/// SIGINT the runtime stops first — new runs refused, running ones given the grace period, then cancelled with their
/// sandboxes killed and their trajectories ended — then the HTTP server finishes the requests in flight and stops.
public struct RLMHTTPServer: Sendable {
    /// Where to listen and how.
    public struct Listen: Sendable {
        /// The address (`127.0.0.1` by default).
        public var host: String
        /// The port; 0 picks a free one.
        public var port: Int
        /// Certificate chain and key files (PEM), for TLS.
        public var tls: (certificate: String, key: String)?

        /// - Parameters: as the properties.
        public init(host: String = "127.0.0.1", port: Int = 8080, tls: (certificate: String, key: String)? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
        }

        /// Whether the address is loopback only.
        public var isLoopback: Bool {
            ["127.0.0.1", "::1", "localhost"].contains(host) || host.hasPrefix("127.")
        }
    }

    let service: RLMService
    let settings: HTTPServerSettings
    let listen: Listen
    let metrics: PrometheusCollectorRegistry?
    let mcp: (any PlainHTTPEndpoint)?
    let logger: Logger

    /// - Parameters:
    ///   - service: the serving core.
    ///   - settings: CORS, body limit, public metrics.
    ///   - listen: address, port, TLS.
    ///   - metrics: the registry `/metrics` renders (bootstrap swift-metrics with it to fill it).
    ///   - mcp: the MCP endpoint mounted at `/mcp`, if any.
    ///   - logger: the server's log.
    public init(
        service: RLMService, settings: HTTPServerSettings, listen: Listen,
        metrics: PrometheusCollectorRegistry? = nil, mcp: (any PlainHTTPEndpoint)? = nil,
        logger: Logger = Logger(label: "rlm.serve", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.service = service
        self.settings = settings
        self.listen = listen
        self.metrics = metrics
        self.mcp = mcp
        self.logger = logger
    }

    /// The Hummingbird application (a `Service`).
    /// - Parameter onListening: called once with the address the server accepts connections on.
    /// - Throws: when the TLS files cannot be read.
    public func application(onListening: @escaping @Sendable (String) -> Void) throws -> some ApplicationProtocol {
        let router = Router(context: ServerContext.self)
        router.addMiddleware { FrontMiddleware(service: service, settings: settings, logger: logger) }
        Routes(service: service, settings: settings, metrics: metrics, mcp: mcp).register(on: router)
        let server: HTTPServerBuilder
        let scheme: String
        if let tls = listen.tls {
            server = try .tls(.http1(), tlsConfiguration: try Self.tlsConfiguration(tls))
            scheme = "https"
        } else {
            server = .http1()
            scheme = "http"
        }
        let host = listen.host
        return Application(
            router: router, server: server,
            configuration: ApplicationConfiguration(
                address: .hostname(host, port: listen.port), serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                let shown = host.contains(":") ? "[\(host)]" : host
                onListening("\(scheme)://\(shown):\(port)")
            },
            logger: logger)
    }

    static func tlsConfiguration(_ files: (certificate: String, key: String)) throws -> TLSConfiguration {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(files.certificate)
            guard !chain.isEmpty else { throw ServerSetupError("\(files.certificate) holds no PEM certificate") }
            let key = try NIOSSLPrivateKey(file: files.key, format: .pem)
            return TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        } catch let error as ServerSetupError {
            throw error
        } catch {
            throw ServerSetupError(
                "the TLS certificate \(files.certificate) or key \(files.key) cannot be read as PEM: \(error)")
        }
    }
}

/// A setup problem of the server (TLS files, a bind refused by policy), said so the user can act on it.
public struct ServerSetupError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var description: String

    /// - Parameter description: what is wrong.
    public init(_ description: String) { self.description = description }
}

/// The runtime as a `Service`: prepares it and starts (or reuses) the offline model, serves until the group shuts
/// down gracefully, then stops runs and sessions and the offline model it started.
public struct RuntimeService: Service {
    let service: RLMService

    /// - Parameter service: the serving core.
    public init(service: RLMService) { self.service = service }

    public func run() async throws {
        try await service.run {
            try? await gracefulShutdown()
        }
    }
}
