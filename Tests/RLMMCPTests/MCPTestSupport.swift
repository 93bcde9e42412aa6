import Foundation
import Logging
import MCP
import RLM
import RLMMCP
import RLMRuntime
import RLMService
import RLMStore
import RLMTesting
import Testing

/// A running serving core over a real sandbox, answering through a fake LLM server, with a root directory holding
/// `notes.txt`, `docs/a.txt`, a symbolic link `escape.txt` pointing out of it, and `outside.txt` beside it.
struct Harness: Sendable {
    let service: RLMService
    let store: SQLiteKeyStore
    let directory: String
    let root: String

    var outsideFile: String { (directory as NSString).appendingPathComponent("outside.txt") }

    static let notes = "the launch code is 7-4-1"
    static let outside = "a secret outside the root"

    /// Silent, unless `RLM_MCP_TEST_LOG` is set (then everything, on stderr).
    static let logger = Logger(label: "rlm.mcp.tests") { label in
        guard ProcessInfo.processInfo.environment["RLM_MCP_TEST_LOG"] != nil else { return SwiftLogNoOpLogHandler() }
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .trace
        return handler
    }

    /// The fake model: the root's reply depends on a keyword in the latest question.
    /// - `LENGTH?`: the context's length; `ECHO?`: the context's text (documents joined by `|`);
    /// - `RECALL?`: the REPL variable `secret`; `BUDGET?`: never answers; `SLEEP?`: a cell that sleeps 25 s.
    static let handler = FakeLLMServer.Handler { request in
        guard request.messages.contains(where: { $0.role == .system }) else { return .text("sub-answer") }
        let users = request.messages.filter { $0.role == .user }.map(\.content)
        let keywords = ["LENGTH?", "ECHO?", "RECALL?", "BUDGET?", "SLEEP?"]
        let keyword = users.reversed().lazy.compactMap { text in keywords.first { text.contains($0) } }.first
        switch keyword {
        case "LENGTH?": return .text("```repl\nFINAL(str(len(context)))\n```")
        case "ECHO?":
            return .text("```repl\nFINAL(context if isinstance(context, str) else '|'.join(context))\n```")
        case "RECALL?": return .text("```repl\nFINAL(str(secret))\n```")
        case "BUDGET?": return .text("```repl\nprint('still looking')\n```")
        case "SLEEP?": return .text("```repl\nimport time\ntime.sleep(25)\n```")
        default: return .text("FINAL(no keyword)")
        }
    }

    /// Runs `body` with a ready service (its own store, fake server and root), then stops it.
    static func with(
        configure: @Sendable (inout ServiceConfiguration) -> Void = { _ in },
        _ body: @escaping @Sendable (Harness) async throws -> Void
    ) async throws {
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let root = (directory as NSString).appendingPathComponent("root")
        try FileManager.default.createDirectory(
            atPath: (root as NSString).appendingPathComponent("docs"), withIntermediateDirectories: true)
        try notes.write(
            toFile: (root as NSString).appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        try "alpha".write(
            toFile: (root as NSString).appendingPathComponent("docs/a.txt"), atomically: true, encoding: .utf8)
        let outsideFile = (directory as NSString).appendingPathComponent("outside.txt")
        try outside.write(toFile: outsideFile, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: (root as NSString).appendingPathComponent("escape.txt"), withDestinationPath: outsideFile)

        try await FakeLLMServer.withServer(handler) { server in
            var configuration = ServiceConfiguration(
                runtime: RuntimeOptions(
                    provider: .openai, baseURL: server.openAIBaseURL, model: "fake-model",
                    cellTimeout: .seconds(30)),
                environment: ["HOME": directory, "PATH": "/usr/bin:/bin"],
                storeDirectory: (directory as NSString).appendingPathComponent("store"), roots: [root],
                shutdownGrace: .seconds(2))
            configure(&configuration)
            let store = try await SQLiteKeyStore.open(path: configuration.storeLocation.keysDatabase)
            let service = RLMService(configuration: configuration, store: store)
            let harness = Harness(service: service, store: store, directory: directory, root: root)
            do {
                try await service.run { try await body(harness) }
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        }
    }

    /// A caller with an API key of this store.
    func keyCaller(_ name: String) async throws -> Caller {
        Caller(key: try await store.createKey(name: name, limits: APIKeyLimits()).record)
    }

    /// Runs `body` with an MCP client connected, in memory, to a server whose calls run as `caller`.
    func withClient(
        as caller: Caller = .localUser, _ body: (Client) async throws -> Void
    ) async throws {
        let (clientSide, serverSide) = await InMemoryTransport.createConnectedPair()
        // Connected before the client speaks: an in-memory transport drops what arrives before it is connected.
        try await serverSide.connect()
        let service = self.service
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await RLMMCPServer.serve(
                    service: service, caller: caller, transport: serverSide, logger: Harness.logger)
            }
            let client = Client(name: "rlm-tests", version: "1")
            do {
                try await client.connect(transport: clientSide)
                try await body(client)
            } catch {
                await client.disconnect()
                throw error
            }
            await client.disconnect()
            try await group.waitForAll()
        }
    }

    private static func makeDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-mcp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        // The roots are canonical (as `rlm` makes them), so resolve /tmp's own links if any.
        return URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }
}

/// A tool call's answer, read the way a client reads it.
struct ToolAnswer {
    let result: CallTool.Result

    var isError: Bool { result.isError == true }

    /// The first text content.
    var text: String {
        for case .text(let text, _, _) in result.content { return text }
        return ""
    }

    /// The structured content as an object.
    var fields: [String: Value] { result.structuredContent?.objectValue ?? [:] }

    func string(_ key: String) -> String? { fields[key]?.stringValue }
}

extension Client {
    /// Calls a tool and returns its whole result (structured content included).
    func call(_ name: String, _ arguments: [String: Value] = [:]) async throws -> ToolAnswer {
        let context = try send(CallTool.request(.init(name: name, arguments: arguments)))
        return ToolAnswer(result: try await context.value)
    }
}
