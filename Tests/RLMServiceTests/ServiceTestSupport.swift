import Foundation
import Glibc
import RLM
import RLMRuntime
import RLMStore
import RLMTesting
import Synchronization
import Testing

@testable import RLMService

/// The key the fake LLM server is sent (through `--api-key-env FAKE_KEY`); it must never reach a record.
let fakeProviderKey = "sk-test-9f3c1e7a5b2d4c6e8a0b"

/// One test's store: a fresh 0700 temporary directory holding a real ``SQLiteKeyStore`` (and, once a service uses
/// it, its contexts, trajectories and audit log). Removed by ``withFixture(_:)``.
final class Fixture: Sendable {
    let directory: String
    let store: SQLiteKeyStore

    private init(directory: String, store: SQLiteKeyStore) {
        self.directory = directory
        self.store = store
    }

    static func make() async throws -> Fixture {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("rlm-service-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let store = try await SQLiteKeyStore.open(path: StoreLocation(directory: directory).keysDatabase)
        return Fixture(directory: directory, store: store)
    }

    /// A new key and the caller it authenticates as.
    func key(_ name: String, _ limits: APIKeyLimits = APIKeyLimits()) async throws -> (secret: String, caller: Caller) {
        let created = try await store.createKey(name: name, limits: limits)
        return (created.secret, Caller(key: created.record))
    }

    var auditLogPath: String { (directory as NSString).appendingPathComponent("audit.jsonl") }
    var trajectoriesDirectory: String { (directory as NSString).appendingPathComponent("trajectories") }

    /// The audit log's lines as JSON objects (none when it does not exist yet).
    func auditLines() -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: auditLogPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    /// A service over this store; its runtime talks to `baseURL` (the fake server) as an OpenAI-compatible provider.
    func service(
        baseURL: String = "http://127.0.0.1:9/v1", configure: (inout ServiceConfiguration) -> Void = { _ in }
    ) -> RLMService {
        RLMService(configuration: configuration(baseURL: baseURL, configure: configure), store: store)
    }

    func configuration(
        baseURL: String = "http://127.0.0.1:9/v1", configure: (inout ServiceConfiguration) -> Void = { _ in }
    ) -> ServiceConfiguration {
        let runtime = RuntimeOptions(
            provider: .openai, baseURL: baseURL, model: "fake", apiKeyVariable: "FAKE_KEY", maxIterations: 6,
            cellTimeout: .seconds(20))
        var configuration = ServiceConfiguration(
            runtime: runtime, environment: ["FAKE_KEY": fakeProviderKey], storeDirectory: directory,
            shutdownGrace: .seconds(5))
        configure(&configuration)
        return configuration
    }

    func remove() async {
        await store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a fresh ``Fixture`` and removes it afterwards.
func withFixture<T>(_ body: (Fixture) async throws -> T) async throws -> T {
    let fixture = try await Fixture.make()
    do {
        let value = try await body(fixture)
        await fixture.remove()
        return value
    } catch {
        await fixture.remove()
        throw error
    }
}

/// Runs `body` while a service over `fixture` is ready, its provider a ``FakeLLMServer`` answering with `respond`.
func withReadyService(
    _ fixture: Fixture, configure: @escaping (inout ServiceConfiguration) -> Void = { _ in },
    respond: @escaping @Sendable (FakeLLMServer.Request) async -> FakeLLMServer.Reply = { _ in .text("FINAL(ok)") },
    _ body: @escaping @Sendable (RLMService, FakeLLMServer) async throws -> Void
) async throws {
    try await FakeLLMServer.withServer(respond: respond) { server in
        let service = fixture.service(baseURL: server.openAIBaseURL, configure: configure)
        try await service.run { try await body(service, server) }
    }
}

/// The ``ServiceError`` `body` throws; records an issue (and returns `nil`) when it throws something else or nothing.
func serviceError<T>(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T
) async -> ServiceError? {
    do {
        _ = try await body()
        Issue.record("expected a ServiceError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as ServiceError {
        return error
    } catch {
        Issue.record("expected a ServiceError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

struct TimedOut: Error, CustomStringConvertible {
    var description: String { "the test waited too long" }
}

/// `body`'s value, or ``TimedOut`` after `limit` (so a test that would hang fails instead).
func withTimeout<T: Sendable>(
    _ limit: Duration, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
/// - Returns: whether it held.
func eventually(within limit: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

// MARK: - Sandboxes, seen from the host

/// Python for a cell that prints its sandbox's pid namespace (`NS pid:[…]`): the one name of a sandbox both sides
/// see, so the host can tell exactly that sandbox's processes apart from every other test's.
let printNamespaceCode = "import os\nprint('NS', os.readlink('/proc/self/ns/pid'))"

/// The pid namespace a cell's output (or a model request quoting it) names.
func namespace(in text: String?) -> String? {
    guard let text, let match = text.firstMatch(of: #/NS (pid:\[\d+\])/#) else { return nil }
    return String(match.output.1)
}

/// Host pids living in the pid namespace `namespace` (`pid:[…]`).
func processes(inNamespace namespace: String) -> [pid_t] {
    allPids().filter { pid in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/pid")) == namespace
    }
}

/// The test process's own pid namespace: a sandbox's must differ.
var hostNamespace: String? { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid") }

/// One live sandbox as the host sees it, taken while it runs: the processes in its pid namespace, the launcher
/// (bubblewrap) above them, and its `swiftrlm-…` cgroups.
struct SandboxProbe: Sendable {
    var namespace: String
    var pids: [pid_t]
    var cgroups: [String]

    /// Probes the sandbox whose namespace `text` names (`NS pid:[…]`, printed by ``printNamespaceCode``).
    init?(_ text: String?) {
        guard let namespace = RLMServiceTests.namespace(in: text) else { return nil }
        self.namespace = namespace
        let inside = processes(inNamespace: namespace)
        let launchers = inside.compactMap(parentPid).filter { !inside.contains($0) }
        pids = Array(Set(inside + launchers))
        cgroups = Array(
            Set(
                inside.flatMap { pid -> [String] in
                    let text = (try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? ""
                    return text.split(separator: "\n").compactMap { line in
                        let name = line.split(separator: "/").last.map(String.init) ?? ""
                        return name.hasPrefix("swiftrlm-") ? name : nil
                    }
                }))
    }

    /// What is still there: live processes of it, processes in its cgroups or its namespace.
    var leftovers: [String] {
        var left = pids.filter { kill($0, 0) == 0 && !isZombie($0) }.map { "pid \($0)" }
        left += processesInCgroups(named: cgroups).map { "pid \($0) in its cgroup" }
        left += processes(inNamespace: namespace).map { "pid \($0) in its namespace" }
        return left
    }
}

private func parentPid(_ pid: pid_t) -> pid_t? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 1 ? pid_t(fields[1]) : nil
}

/// Checks that `probe` saw a real sandbox (its own pid namespace, processes, a launcher) and that nothing of it is
/// left (polling for up to `limit`).
func expectSandboxGone(
    _ probe: SandboxProbe?, within limit: Duration = .seconds(5), sourceLocation: SourceLocation = #_sourceLocation
) async {
    guard let probe else {
        Issue.record("the sandbox was never seen", sourceLocation: sourceLocation)
        return
    }
    #expect(
        probe.namespace != hostNamespace, "the sandbox shares the host's pid namespace", sourceLocation: sourceLocation)
    #expect(probe.pids.count >= 2, "too few processes seen: \(probe.pids)", sourceLocation: sourceLocation)
    let gone = await eventually(within: limit) { probe.leftovers.isEmpty }
    #expect(gone, "the sandbox outlived its end: \(probe.leftovers)", sourceLocation: sourceLocation)
}

/// File mode bits (permissions only) of `path`, not following a link.
func mode(_ path: String) -> UInt32 {
    var info = stat()
    guard lstat(path, &info) == 0 else { return 0 }
    return UInt32(info.st_mode & 0o7777)
}

/// A caller-visible message with `id` replaced, to compare the shapes of two "not found" answers.
func shape(_ error: ServiceError?, id: String) -> String? {
    error.map {
        "\($0.status) \($0.type) \($0.code) \($0.param ?? "-") \($0.message.replacingOccurrences(of: id, with: "ID"))"
    }
}

/// A context id of the right shape that nobody uploaded.
func unknownContextID() -> String { "ctx_" + String(repeating: "0a", count: 12) }

/// A small thread-safe box for what a fake server's handler sees.
final class Box<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func get() -> Value { value.withLock { $0 } }
    func set(_ new: Value) { value.withLock { $0 = new } }
    @discardableResult
    func update<T: Sendable>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
}
