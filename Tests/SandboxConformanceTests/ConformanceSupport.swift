import Foundation
import Glibc
import RLM
import RLMWasm
import Testing

@testable import RLMSandbox

/// One backend the conformance suite runs against, or why it cannot run here.
struct BackendUnderTest: Sendable, CustomTestStringConvertible {
    let name: String
    /// The sandbox with the given limits; `nil` when this machine lacks what the backend needs.
    let make: @Sendable (ProcessSandbox.Configuration) throws -> any Sandbox
    /// Why the backend is absent here, or `nil` when it is present.
    let absentBecause: String?
    /// A cell past its timeout is interrupted with its state kept (process-like backends), rather than killed.
    let interruptsCells: Bool
    /// The tests share one live session (one at a time) instead of starting their own: the wasm backend's guest
    /// takes ~40 s to start in a debug build (WasmKit unoptimized; 1 s in release), so a session per test would
    /// cost minutes. A test that kills it (a timeout) makes the next one start afresh.
    var sharesSessions = false

    var testDescription: String { name }

    /// Every backend; the suite runs the present ones and names the absent ones with the reason.
    static let all: [BackendUnderTest] = [process, command, container, wasm]

    /// The container backend on podman with the local test image scripts/container_image.sh builds (root only).
    static let container: BackendUnderTest = {
        let image =
            ProcessInfo.processInfo.environment["SWIFTRLM_CONTAINER_IMAGE"] ?? "localhost/swiftrlm-test-python:bookworm"
        let engine = ContainerSandbox.detectEngine("podman")
        var absent: String?
        if geteuid() != 0 {
            absent = "the container tests run as root (podman's root store, where scripts/test builds the image)"
        } else if let engine {
            if (try? ContainerEngine(path: engine).checkImage(image)) == nil {
                absent = "the image \(image) is missing: scripts/container_image.sh builds it (scripts/test does)"
            }
        } else {
            absent = "podman is not installed: apt-get install -y podman runc (scripts/test does)"
        }
        return BackendUnderTest(
            name: "container",
            make: { ContainerSandbox(configuration: $0, options: .init(engine: "podman", image: image)) },
            absentBecause: absent, interruptsCells: true)
    }()

    /// The wasm backend on the pulled runtime (`rlm sandbox pull`). Its cells cannot be interrupted (no signals in
    /// WASI): past the timeout the guest is stopped and its state is lost.
    static let wasm = BackendUnderTest(
        name: "wasm", make: { WasmSandbox(configuration: $0) },
        absentBecause: WasmSandbox.runtimePath() == nil
            ? "the wasm runtime is not pulled: rlm sandbox pull (scripts/test does)" : nil,
        interruptsCells: false, sharesSessions: true)

    static let process = BackendUnderTest(
        name: "process", make: { ProcessSandbox(configuration: $0) }, absentBecause: nil, interruptsCells: true)

    /// The command backend, tested with a command that starts the process backend's own launcher and bubblewrap —
    /// the same command line, but reached only through stdin and stdout (no data pipes, no cgroups).
    static let command = BackendUnderTest(
        name: "command",
        make: { configuration in
            CommandSandbox(command: try launcherCommand(configuration), configuration: configuration)
        },
        absentBecause: nil, interruptsCells: true)

    /// The process backend's command line without its data pipes and its start-up code (the command backend adds
    /// that), as a user would write it for `--command`.
    static func launcherCommand(_ configuration: ProcessSandbox.Configuration) throws -> [String] {
        let plan = try LaunchPlan(configuration: configuration)
        var argv = plan.arguments(
            configuration: configuration, cgroups: nil,
            bubblewrapFeatures: BubblewrapFeatures.probe(plan.bubblewrapPath))
        argv.removeAll { $0 == "--data-fd" }
        #expect(argv.suffix(2).first == "-c")
        return Array(argv.dropLast(2))
    }

    /// The present backends (for `arguments:`).
    static var present: [BackendUnderTest] { all.filter { $0.absentBecause == nil } }
}

/// Short timeouts so a hang fails fast; every protection stays at its default.
func conformanceConfiguration(timeout: Duration = .seconds(20), memoryMB: Int = 512) -> ProcessSandbox.Configuration {
    var configuration = ProcessSandbox.Configuration()
    configuration.cellTimeout = timeout
    configuration.interruptGrace = .seconds(1)
    configuration.memoryLimitBytes = memoryMB << 20
    configuration.workDirBytes = 64 << 20
    configuration.startTimeout = .seconds(60)
    return configuration
}

/// Answers sub-calls the way the suite checks them: `llm_query(p)` → "echo:p", batches one answer per prompt, and
/// `rlm_query` with a context → the context's size.
struct EchoHandler: SubcallHandler {
    func handle(_ request: SubcallRequest) async throws -> SubcallResponse {
        switch request {
        case .llmQuery(let prompt, _): return .text("echo:" + prompt)
        case .llmQueryBatched(let prompts, _): return .batch(prompts.map { "echo:" + $0 })
        case .rlmQuery(let prompt, let context, _):
            switch context {
            case .streamed(let streamed): return .text("child:\(prompt):\(streamed.source.totalBytes)")
            case .value(let value): return .text("child:\(prompt):value:\(value)")
            case nil: return .text("child:\(prompt)")
            }
        }
    }
}

/// Runs `body` in a fresh session of `backend` and always shuts it down; for a backend that shares sessions, in its
/// one live session (started with ``sharedConfiguration`` and ``EchoHandler``, whatever the test asked for).
func withSession<T: Sendable>(
    _ backend: BackendUnderTest, _ configuration: ProcessSandbox.Configuration = conformanceConfiguration(),
    handler: (any SubcallHandler)? = EchoHandler(), _ body: (any SandboxSession) async throws -> T
) async throws -> T {
    guard backend.sharesSessions else {
        return try await backend.make(configuration).withSession(handler: handler, body)
    }
    let session = try await SharedSessions.shared.acquire(backend)
    do {
        let value = try await body(session)
        await SharedSessions.shared.release(backend)
        return value
    } catch {
        await SharedSessions.shared.release(backend)
        throw error
    }
}

/// The limits of a shared session: cells may take minutes in a debug build (the timeout tests pass their own).
let sharedConfiguration: ProcessSandbox.Configuration = {
    var configuration = conformanceConfiguration(timeout: .seconds(900), memoryMB: 256)
    configuration.startTimeout = .seconds(900)
    return configuration
}()

/// One live session per sharing backend, lent to one test at a time.
actor SharedSessions {
    static let shared = SharedSessions()
    private var sessions: [String: any SandboxSession] = [:]
    private var busy: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    /// Waits for the backend's session to be free, then lends it (started afresh when there is none or it died).
    func acquire(_ backend: BackendUnderTest) async throws -> any SandboxSession {
        while busy.contains(backend.name) {
            await withCheckedContinuation { waiters[backend.name, default: []].append($0) }
        }
        busy.insert(backend.name)
        if let session = sessions[backend.name], await session.isAlive { return session }
        do {
            let session = try await backend.make(sharedConfiguration).startSession(handler: EchoHandler())
            sessions[backend.name] = session
            return session
        } catch {
            release(backend)
            throw error
        }
    }

    /// Gives the session back for the next test.
    func release(_ backend: BackendUnderTest) {
        busy.remove(backend.name)
        if var queue = waiters[backend.name], !queue.isEmpty {
            let next = queue.removeFirst()
            waiters[backend.name] = queue
            next.resume()
        }
    }
}
