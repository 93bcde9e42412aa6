import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOEmbedded
import RLMRuntime
import RLMServer
import RLMService
import RLMStore
import Synchronization
import Testing

/// One test's server: a temporary store with a real ``SQLiteKeyStore``, a service over it (not started: the HTTP
/// layer's own rules need no runtime), and the Hummingbird application `rlm serve` runs.
final class ServerFixture: Sendable {
    let directory: String
    let store: SQLiteKeyStore
    let service: RLMService
    let settings: HTTPServerSettings

    private init(directory: String, store: SQLiteKeyStore, service: RLMService, settings: HTTPServerSettings) {
        self.directory = directory
        self.store = store
        self.service = service
        self.settings = settings
    }

    static func make(
        settings: HTTPServerSettings = HTTPServerSettings(),
        configure: (inout ServiceConfiguration) -> Void = { _ in }
    ) async throws -> ServerFixture {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("rlm-server-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let store = try await SQLiteKeyStore.open(path: StoreLocation(directory: directory).keysDatabase)
        var configuration = ServiceConfiguration(
            runtime: RuntimeOptions(
                provider: .openai, baseURL: "http://127.0.0.1:9/v1", model: "fake", apiKeyVariable: "FAKE_KEY"),
            environment: ["FAKE_KEY": "sk-test-server-tests"], storeDirectory: directory)
        configure(&configuration)
        let service = RLMService(configuration: configuration, store: store)
        return ServerFixture(directory: directory, store: store, service: service, settings: settings)
    }

    /// A new key's secret and id.
    func key(_ name: String, _ limits: APIKeyLimits = APIKeyLimits()) async throws -> (secret: String, id: String) {
        let created = try await store.createKey(name: name, limits: limits)
        return (created.secret, created.record.id)
    }

    func application() throws -> some ApplicationProtocol {
        try RLMHTTPServer(service: service, settings: settings, listen: .init(host: "127.0.0.1", port: 0))
            .application(onListening: { _ in })
    }

    var auditLogPath: String { (directory as NSString).appendingPathComponent("audit.jsonl") }

    /// The audit log's request lines.
    func requestLines() -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: auditLogPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.filter { $0["kind"] as? String == "request" }
    }

    func remove() async {
        await store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a fresh ``ServerFixture`` and removes it afterwards.
func withServer<T>(
    settings: HTTPServerSettings = HTTPServerSettings(),
    configure: (inout ServiceConfiguration) -> Void = { _ in },
    _ body: (ServerFixture) async throws -> T
) async throws -> T {
    let fixture = try await ServerFixture.make(settings: settings, configure: configure)
    do {
        let value = try await body(fixture)
        await fixture.remove()
        return value
    } catch {
        await fixture.remove()
        throw error
    }
}

func bearer(_ secret: String) -> HTTPFields { [.authorization: "Bearer \(secret)"] }

func json(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

/// A response as the tests read it: from the test client, or straight from the responder.
protocol HTTPReply {
    var status: HTTPResponse.Status { get }
    var headers: HTTPFields { get }
    var text: String { get }
}

extension TestResponse: HTTPReply {
    var text: String { String(buffer: body) }
}

/// A response collected from the responder itself.
struct CollectedResponse: HTTPReply {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var text: String
}

extension HTTPReply {
    /// The body as a JSON object (empty when it is not one).
    var object: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// OpenAI's `error` object, when the body is exactly `{"error": {...}}`.
    var error: [String: Any]? {
        guard object.count == 1 else { return nil }
        return object["error"] as? [String: Any]
    }

    /// Names of the `Access-Control-*` headers sent.
    var corsHeaders: [String] {
        headers.map { $0.name.canonicalName }.filter { $0.hasPrefix("access-control-") }
    }
}

/// Sends `request` straight to `app`'s responder (no test client, so no header is added) and collects the reply.
func respond<App: ApplicationProtocol>(_ app: App, _ request: Request) async throws -> CollectedResponse {
    let responder = try await app.responder
    let context = App.Responder.Context(
        source: ApplicationRequestContextSource(
            channel: NIOAsyncTestingChannel(), logger: Logger(label: "rlm.server.tests")))
    let response = try await responder.respond(to: request, context: context)
    let body = CollectedBody()
    try await response.body.write(body)
    return CollectedResponse(status: response.status, headers: response.headers, text: String(buffer: body.buffer))
}

/// Checks that `response` is an OpenAI-shaped JSON error: the status, `Content-Type: application/json`, and a body
/// of exactly `{"error": {"message", "type", "code", "param"}}` with the code given.
func expectOpenAIError(
    _ response: some HTTPReply, status: Int, code: String, param: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(Int(response.status.code) == status, "\(response.text)", sourceLocation: sourceLocation)
    #expect(
        response.headers[.contentType]?.hasPrefix("application/json") == true, sourceLocation: sourceLocation)
    guard let error = response.error else {
        Issue.record("not an OpenAI error body: \(response.text)", sourceLocation: sourceLocation)
        return
    }
    #expect(Set(error.keys) == ["message", "type", "code", "param"], sourceLocation: sourceLocation)
    #expect(error["code"] as? String == code, "\(response.text)", sourceLocation: sourceLocation)
    #expect((error["message"] as? String)?.isEmpty == false, sourceLocation: sourceLocation)
    #expect(error["type"] is String, sourceLocation: sourceLocation)
    if let param {
        #expect(error["param"] as? String == param, "\(response.text)", sourceLocation: sourceLocation)
    }
    let message = error["message"] as? String ?? ""
    #expect(!message.contains("/tmp/") && !message.contains("rlm-server-tests"), sourceLocation: sourceLocation)
}

/// A response body writer that keeps what it is given.
final class CollectedBody: ResponseBodyWriter, Sendable {
    private let collected = Mutex(ByteBuffer())

    var buffer: ByteBuffer { collected.withLock { $0 } }

    func write(_ buffer: ByteBuffer) async throws {
        collected.withLock { $0.writeImmutableBuffer(buffer) }
    }

    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
