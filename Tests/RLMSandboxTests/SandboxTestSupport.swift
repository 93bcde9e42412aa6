import Foundation
import Glibc
import RLM
import RLMTesting
import Synchronization
import Testing

@testable import RLMSandbox

/// A sandbox configuration for tests: short timeouts so a hang fails fast. Every protection is the product's own
/// (seccomp, Landlock, cgroups, rlimits, the uid drop stay at their defaults); only sizes and timeouts are smaller.
func testConfiguration(
    timeout: Duration = .seconds(10), memoryMB: Int = 512, workDirMB: Int = 64
) -> ProcessSandbox.Configuration {
    var configuration = ProcessSandbox.Configuration()
    configuration.cellTimeout = timeout
    configuration.interruptGrace = .seconds(1)
    configuration.memoryLimitBytes = memoryMB << 20
    configuration.workDirBytes = workDirMB << 20
    return configuration
}

/// The host runs as root: the uid drop to 65534 and the cgroups are in force only then.
let runningAsRoot = geteuid() == 0

/// Runs `body` in a fresh session and then checks that no sandbox process is left alive.
@discardableResult
func withTestSession<T: Sendable>(
    _ configuration: ProcessSandbox.Configuration = testConfiguration(),
    handler: (any SubcallHandler)? = nil,
    _ body: (any SandboxSession) async throws -> T
) async throws -> T {
    let started = Date()
    let session = try await ProcessSandbox(configuration: configuration).startSession(handler: handler)
    let probe = try #require(session as? WorkerSession).processesForTesting
    do {
        let value = try await body(session)
        await session.shutdown()
        try await expectNoSandboxLeftBehind(probe, since: started)
        return value
    } catch {
        await session.shutdown()
        try await expectNoSandboxLeftBehind(probe, since: started)
        throw error
    }
}

/// Checks that nothing of one session outlived it: its launcher (bwrap's outer process) is reaped, its cgroups —
/// which held every process of the sandbox, cell children included — are gone, no process still sits in them, and
/// no sandbox bubblewrap started since `since` was left orphaned. Other tests' sandboxes may run meanwhile; this
/// looks only at this one's.
func expectNoSandboxLeftBehind(
    _ probe: (pid: pid_t, cgroups: [String]), since: Date? = nil, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    var left = [String]()
    for _ in 0..<150 {
        left = []
        if kill(probe.pid, 0) == 0 && !isZombie(probe.pid) { left.append("launcher \(probe.pid) alive") }
        left += probe.cgroups.filter { FileManager.default.fileExists(atPath: $0) }.map { "cgroup \($0)" }
        left += processesInCgroups(named: probe.cgroups.map { ($0 as NSString).lastPathComponent })
            .map { "pid \($0) in the session's cgroup" }
        if let since { left += orphanedSandboxProcesses(startedAfter: since).map { "orphaned bwrap \($0)" } }
        if left.isEmpty { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("sandbox \(probe.pid) outlived its session: \(left)", sourceLocation: sourceLocation)
}

/// The old name of ``expectNoSandboxLeftBehind(_:since:sourceLocation:)``.
func expectGone(
    _ probe: (pid: pid_t, cgroups: [String]), sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    try await expectNoSandboxLeftBehind(probe, sourceLocation: sourceLocation)
}

func openLoopbackListener() throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SandboxError.setup("socket failed") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0, listen(fd, 16) == 0 else { throw SandboxError.setup("bind/listen failed") }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// One call the launcher's seccomp filter denies, as `rlm-sandbox-launch --print-denied-syscalls` lists it: the
/// table the filter is built from, so the test and the filter cannot drift apart.
struct DeniedSyscall: Sendable, CustomTestStringConvertible {
    var name: String
    var number: Int
    var arguments: [Int]
    var errno: Int32

    var testDescription: String { name }

    /// The launcher's own table; empty (and ``deniedSyscallTableError`` says why) when it cannot be read.
    static let table: [DeniedSyscall] = {
        guard let launcher = LaunchPlan.defaultLauncherPath() else { return [] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launcher)
        process.arguments = ["--print-denied-syscalls"]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return [] }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let name = object["name"] as? String, let number = object["nr"] as? Int,
                let arguments = object["args"] as? [Int], let errno = object["errno"] as? Int
            else { return nil }
            return DeniedSyscall(name: name, number: number, arguments: arguments, errno: Int32(errno))
        }
    }()
}

/// A value several tasks update (what a handler saw, say).
final class Shared<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    var value: Value { storage.withLock { $0 } }
    func update(_ body: (inout Value) -> Void) { storage.withLock { body(&$0) } }
}

/// Every sandbox test runs one at a time: each checks afterwards that no sandbox process is left alive, which only
/// means something when no other sandbox is running.
@Suite(.serialized) enum SandboxTests {}

/// The text of an `rlm_query` context as the host received it (a spooled file), or `nil` for none.
func spooledText(_ context: ChildContext?) -> String? {
    guard case .streamed(let streamed) = context, let file = streamed.source.files.first,
        let fd = try? file.openForReading()
    else { return nil }
    defer { close(fd) }
    var data = Data(count: file.size)
    let count = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
    return String(decoding: data.prefix(max(0, count)), as: UTF8.self)
}
