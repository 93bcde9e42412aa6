import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RLMLocal
import Synchronization
import Testing

/// The server launcher against a fake server script (Python's http.server): port discovery, readiness, the state
/// file, reuse, stop and failure reporting. The real llama.cpp server is in `LocalModelIntegrationTests`.
@Suite("LocalModelServer (fake server)")
struct LocalModelServerTests {
    let logger = Logger(label: "test.rlmlocal.server", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A temp dir with the fake script, a fake model file (whose content picks the fake's behaviour) and a state dir.
    struct Fixture {
        let root: TemporaryDirectory
        let script: URL
        let model: URL
        let state: URL

        init(mode: String = "ok") throws {
            root = try TemporaryDirectory("rlmlocal-server")
            script = root.appending("fake_serve.py")
            model = root.appending("model.gguf")
            state = root.appending("state")
            try Data(fakeServerScript.utf8).write(to: script)
            try Data(mode.utf8).write(to: model)
        }

        func configuration(port: Int = 0, timeout: Duration = .seconds(20), grace: Duration = .seconds(5))
            -> LocalModelServer.Configuration
        {
            LocalModelServer.Configuration(
                port: port, startTimeout: timeout, stopGracePeriod: grace, stateDirectory: state,
                python: "python3", serveScript: script)
        }

        func stateFile(_ name: String = "fake") -> [String: Any]? {
            guard
                let data = FileManager.default.contents(
                    atPath: state.appendingPathComponent("server-\(name).json").path)
            else { return nil }
            return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        }
    }

    func server(_ fixture: Fixture, contextWindow: Int = 512, configuration: LocalModelServer.Configuration? = nil)
        -> LocalModelServer
    {
        LocalModelServer(
            modelName: "fake", modelPath: fixture.model, contextWindow: contextWindow,
            configuration: configuration ?? fixture.configuration(), logger: logger)
    }

    func status(_ url: String) async -> Int? {
        guard let response = try? await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(3))
        else { return nil }
        return Int(response.status.code)
    }

    @Test func startsOnAFreePortRecordsStateAndStops() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        let events = ProgressRecorder()
        let running = try await server(fixture).start(progress: events.record)

        #expect(running.startedHere)
        #expect(running.port > 0)
        #expect(running.baseURL.absoluteString == "http://127.0.0.1:\(running.port)/v1")
        #expect(running.modelName == "fake")
        #expect(running.contextWindow == 512)
        #expect(await status("http://127.0.0.1:\(running.port)/health") == 200)
        let state = try #require(fixture.stateFile())
        #expect(state["pid"] as? Int == Int(running.pid))
        #expect(state["port"] as? Int == running.port)
        #expect(state["model"] as? String == "fake")
        #expect(state["n_ctx"] as? Int == 512)
        #expect(events.names.first == "launching")
        #expect(events.names.last == "ready")

        let log = try #require(running.logFile)
        #expect(try String(contentsOf: log, encoding: .utf8).contains("fake server: mode ok, n_ctx 512"))

        await running.stop()
        #expect(running.hasExited)
        #expect(!isAlive(running.pid))
        #expect(fixture.stateFile() == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.state.path) == ["server-fake.lock"])
        #expect(await status("http://127.0.0.1:\(running.port)/health") == nil)
    }

    @Test func usesAGivenPort() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        let port = Int(
            try runPython(
                "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()"
            ).trimmingCharacters(in: .whitespacesAndNewlines))!
        try await server(fixture, configuration: fixture.configuration(port: port)).withServer { running in
            #expect(running.port == port)
            #expect(await status("http://127.0.0.1:\(port)/health") == 200)
        }
    }

    @Test func reusesARunningServerForTheSameModelAndLeavesItRunning() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        let first = try await server(fixture).start()
        let events = ProgressRecorder()
        try await server(fixture).withServer(progress: events.record) { second in
            #expect(!second.startedHere)
            #expect(second.port == first.port)
            #expect(second.pid == first.pid)
            #expect(second.contextWindow == 512)
        }
        #expect(events.names == ["reusing"])
        // The reusing scope ended: the server it did not start still runs.
        #expect(!first.hasExited)
        #expect(await status("http://127.0.0.1:\(first.port)/health") == 200)

        // A smaller window is served by the same server; a larger one needs a new server.
        try await server(fixture, contextWindow: 256).withServer { smaller in
            #expect(smaller.pid == first.pid && smaller.contextWindow == 512)
        }
        try await server(fixture, contextWindow: 1024).withServer { larger in
            #expect(larger.startedHere && larger.pid != first.pid)
        }
        await first.stop()
    }

    @Test func ignoresAStaleStateFile() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        try FileManager.default.createDirectory(at: fixture.state, withIntermediateDirectories: true)
        try Data(
            #"{"pid": 999999, "port": 1, "model": "fake", "model_path": "\#(fixture.model.path)", "n_ctx": 512, "owner_pid": 999999, "started_at": "2026-01-01T00:00:00Z"}"#
                .utf8
        )
        .write(to: fixture.state.appendingPathComponent("server-fake.json"))
        try await server(fixture).withServer { running in
            #expect(running.startedHere)
            #expect(running.port != 1)
            #expect(fixture.stateFile()?["pid"] as? Int == Int(running.pid))
        }
    }

    @Test func withServerStopsTheServerWhenTheBodyThrows() async throws {
        struct BodyFailed: Error {}
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        let pid = Mutex<Int32>(0)
        await #expect(throws: BodyFailed.self) {
            try await server(fixture).withServer { running in
                pid.withLock { $0 = running.pid }
                throw BodyFailed()
            }
        }
        #expect(!isAlive(pid.withLock { $0 }))
        #expect(fixture.stateFile() == nil)
    }

    @Test func withServerStopsTheServerWhenCancelled() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        let pid = Mutex<Int32>(0)
        let task = Task {
            try await server(fixture).withServer { running in
                pid.withLock { $0 = running.pid }
                while true { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        while pid.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(isAlive(pid.withLock { $0 }))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(!isAlive(pid.withLock { $0 }))
        #expect(fixture.stateFile() == nil)
    }

    @Test func aForgottenServerIsStopped() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        var running: RunningServer? = try await server(fixture).start()
        let pid = try #require(running?.pid)
        #expect(isAlive(pid))
        running = nil
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while isAlive(pid) && clock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!isAlive(pid))
    }

    @Test func reportsTheLogTailWhenTheServerDies() async throws {
        let fixture = try Fixture(mode: "crash")
        defer { fixture.root.remove() }
        let error = try await #require(throws: LocalModelError.self) { try await server(fixture).start() }
        #expect(error.isServerFailure)
        #expect(error.message.contains("exit status 3"))
        #expect(error.message.contains("cannot load model: invalid magic"))
    }

    @Test func timesOutAndKillsAServerThatNeverBecomesReady() async throws {
        let fixture = try Fixture(mode: "hang")
        defer { fixture.root.remove() }
        let clock = ContinuousClock()
        let started = clock.now
        // 3 s, not 1: with the other suites starting Python processes on two cores, the fake can take over a second
        // to print its first line, and the log tail checked below would be empty.
        let error = try await #require(throws: LocalModelError.self) {
            try await server(fixture, configuration: fixture.configuration(timeout: .seconds(3))).start()
        }
        #expect(error.isServerFailure)
        #expect(error.message.contains("did not answer /health"))
        #expect(error.message.contains("fake server: mode hang"))
        // Bounded by the 3 s timeout plus the kill; generous because the suite runs in parallel on two cores.
        #expect(clock.now - started < .seconds(30))
        #expect(fixture.stateFile() == nil)
    }

    @Test func killsAServerThatIgnoresSIGTERMAfterTheGracePeriod() async throws {
        let fixture = try Fixture(mode: "stubborn")
        defer { fixture.root.remove() }
        let running = try await server(fixture, configuration: fixture.configuration(grace: .milliseconds(300)))
            .start()
        let clock = ContinuousClock()
        let started = clock.now
        await running.stop()
        #expect(running.hasExited)
        #expect(clock.now - started >= .milliseconds(250))
        #expect(clock.now - started < .seconds(20))
    }

    @Test func refusesAMissingModelFile() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        let missing = LocalModelServer(
            modelName: "fake", modelPath: fixture.root.appending("none.gguf"), contextWindow: 512,
            configuration: fixture.configuration(), logger: logger)
        let error = try await #require(throws: LocalModelError.self) { try await missing.start() }
        #expect(error.message.contains("no model file"))
    }

    @Test func explainsHowToGetVenvSupportWhenNoPythonCanMakeOne() async throws {
        let fixture = try Fixture()
        defer { fixture.root.remove() }
        var configuration = fixture.configuration()
        configuration.python = nil
        configuration.venvDirectory = fixture.root.appending("venv")
        configuration.basePythons = ["/nonexistent/python3", "swiftrlm-no-such-python"]
        let events = ProgressRecorder()
        let error = try await #require(throws: LocalModelError.self) {
            try await server(fixture, configuration: configuration).start(progress: events.record)
        }
        #expect(error.message.contains("apt-get install -y python3-venv"))
        #expect(error.message.contains("/nonexistent/python3: not found"))
        #expect(events.names == ["creatingEnvironment"])
        #expect(!FileManager.default.fileExists(atPath: fixture.root.appending("venv").path))
    }

    @Test func catalogModelsMustBeInstalledToServe() throws {
        let store = try TemporaryDirectory()
        defer { store.remove() }
        let error = try #require(throws: LocalModelError.self) {
            try LocalModelServer(
                model: .smolLM2135M,
                store: LocalModelStore(configuration: .init(directory: store.url), logger: logger), logger: logger)
        }
        #expect(error.isNotInstalled)
    }

    @Test func theBundledScriptParsesAndDocumentsItsArguments() throws {
        let script = try #require(LocalModelServer.bundledServeScript)
        let help = try runPython(
            "import runpy, sys; path = sys.argv[1]; sys.argv = [path, '--help']; runpy.run_path(path, run_name='__main__')",
            [script.path])
        for argument in ["--model", "--port", "--ctx", "--threads", "--alias", "--ready-file"] {
            #expect(help.contains(argument))
        }
    }
}

/// Records progress event names.
final class ProgressRecorder: Sendable {
    private let events = Mutex<[String]>([])

    var names: [String] { events.withLock { $0 } }

    var record: @Sendable (ServerProgress) -> Void {
        { [self] progress in
            let name: String
            switch progress {
            case .creatingEnvironment: name = "creatingEnvironment"
            case .installingPackage: name = "installingPackage"
            case .reusing: name = "reusing"
            case .launching: name = "launching"
            case .ready: name = "ready"
            }
            append(name)
        }
    }

    private func append(_ name: String) {
        events.withLock { $0.append(name) }
    }
}
