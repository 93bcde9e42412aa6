import Foundation
import RLM
import RLMSandbox
import Synchronization

/// An in-memory model whose replies come from a script: the seam fake for engine unit tests (the fake HTTP server
/// covers the wire).
final class ScriptedModel: LanguageModel {
    let name: String
    let contextWindow: Int?
    private let script: @Sendable ([ChatMessage]) throws -> String
    private let log = Mutex<[[ChatMessage]]>([])
    private let delay: Duration

    init(
        name: String = "scripted", contextWindow: Int? = nil, delay: Duration = .zero,
        _ script: @escaping @Sendable ([ChatMessage]) throws -> String
    ) {
        self.name = name
        self.contextWindow = contextWindow
        self.delay = delay
        self.script = script
    }

    /// Replies in order; past the end, a reply that makes the failure obvious.
    convenience init(name: String = "scripted", replies: [String]) {
        let index = Mutex(0)
        self.init(name: name) { _ in
            let i = index.withLock { value in
                defer { value += 1 }
                return value
            }
            return i < replies.count ? replies[i] : "SCRIPT EXHAUSTED"
        }
    }

    var requests: [[ChatMessage]] { log.withLock { $0 } }

    func complete(_ request: CompletionRequest) async throws -> Completion {
        log.withLock { $0.append(request.messages) }
        if delay > .zero { try await Task.sleep(for: delay) }
        let text = try script(request.messages)
        let input = request.messages.reduce(0) { $0 + $1.content.count } / 4
        return Completion(
            text: text, usage: TokenUsage(inputTokens: input, outputTokens: max(1, text.count / 4)), model: name)
    }
}

func sandboxForTests() -> ProcessSandbox {
    var configuration = ProcessSandbox.Configuration()
    configuration.cellTimeout = .seconds(20)
    configuration.memoryLimitBytes = 512 << 20
    configuration.workDirBytes = 64 << 20
    return ProcessSandbox(configuration: configuration)
}

func engine(
    root: any LanguageModel, sub: (any LanguageModel)? = nil, budget: Budget = Budget(),
    configure: (inout RLMConfiguration) -> Void = { _ in }
) -> RLMEngine {
    var configuration = RLMConfiguration(rootModel: root, subModel: sub, sandbox: sandboxForTests(), budget: budget)
    configuration.cellTimeout = .seconds(20)
    configure(&configuration)
    return RLMEngine(configuration: configuration)
}

/// Collects events from any task.
final class EventLog: Sendable {
    private let events = Mutex<[RLMEvent]>([])
    var handler: RLMEventHandler { { event in self.events.withLock { $0.append(event) } } }
    var all: [RLMEvent] { events.withLock { $0 } }
}
