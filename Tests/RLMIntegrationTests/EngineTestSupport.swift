import Foundation
import Glibc
import RLM
import RLMSandbox
import RLMTesting
import Synchronization
import Testing

@testable import RLMSandbox

/// The real process sandbox with test-sized limits; every session it starts is recorded in the current test's
/// ``SessionLog`` (see ``NoSandboxLeftBehind``).
func sandboxForTests() -> any Sandbox {
    var configuration = ProcessSandbox.Configuration()
    configuration.cellTimeout = .seconds(20)
    configuration.memoryLimitBytes = 512 << 20
    configuration.workDirBytes = 64 << 20
    return TrackingSandbox(inner: ProcessSandbox(configuration: configuration), log: SessionLog.current)
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

/// The sessions one test started: each launcher's pid and cgroup directories.
final class SessionLog: Sendable {
    @TaskLocal static var current = SessionLog()

    let started = Date()
    private let probes = Mutex<[(pid: pid_t, cgroups: [String])]>([])

    func record(_ probe: (pid: pid_t, cgroups: [String])) { probes.withLock { $0.append(probe) } }
    var all: [(pid: pid_t, cgroups: [String])] { probes.withLock { $0 } }
}

/// A ``Sandbox`` that records the sessions it starts.
struct TrackingSandbox: Sandbox {
    let inner: ProcessSandbox
    let log: SessionLog

    func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession {
        let session = try await inner.startSession(handler: handler)
        if let bubblewrap = session as? WorkerSession { log.record(bubblewrap.processesForTesting) }
        return session
    }
}

/// After each test of the suite it marks: every sandbox the test started is gone — launcher reaped, cgroups
/// removed, no process left in them, no orphaned bubblewrap of ours started since the test began.
struct NoSandboxLeftBehind: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        guard !test.isSuite else { return try await function() }
        let log = SessionLog()
        try await SessionLog.$current.withValue(log) { try await function() }
        try await expectNoSandboxLeftBehind(log)
    }
}

extension Trait where Self == NoSandboxLeftBehind {
    /// Checks after each test that none of the sandboxes it started is left behind.
    static var noSandboxLeftBehind: Self { NoSandboxLeftBehind() }
}

/// Every session in `log` has ended and left nothing behind (polls for up to three seconds).
func expectNoSandboxLeftBehind(_ log: SessionLog, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    var left = [String]()
    for _ in 0..<150 {
        left = []
        for probe in log.all {
            if kill(probe.pid, 0) == 0 && !isZombie(probe.pid) { left.append("launcher \(probe.pid) alive") }
            left += probe.cgroups.filter { FileManager.default.fileExists(atPath: $0) }.map { "cgroup \($0)" }
            left += processesInCgroups(named: probe.cgroups.map { ($0 as NSString).lastPathComponent })
                .map { "pid \($0) in a session's cgroup" }
        }
        left += orphanedSandboxProcesses(startedAfter: log.started).map { "orphaned bwrap \($0)" }
        if left.isEmpty { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("sandboxes outlived the test: \(left)", sourceLocation: sourceLocation)
}
