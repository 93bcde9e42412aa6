import Foundation
import RLM
import RLMSandbox
import RLMTesting
import Synchronization

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
