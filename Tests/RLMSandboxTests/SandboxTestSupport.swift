import Foundation
import Glibc
import RLM
import Testing

@testable import RLMSandbox

/// A sandbox configuration for tests: short timeouts so a hang fails fast.
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

/// Runs `body` in a fresh session and then checks that no sandbox process is left alive.
@discardableResult
func withTestSession<T: Sendable>(
    _ configuration: ProcessSandbox.Configuration = testConfiguration(),
    handler: (any SubcallHandler)? = nil,
    _ body: (any SandboxSession) async throws -> T
) async throws -> T {
    let session = try await ProcessSandbox(configuration: configuration).startSession(handler: handler)
    let probe = try #require(session as? BubblewrapSession).processesForTesting
    do {
        let value = try await body(session)
        await session.shutdown()
        try await expectGone(probe)
        return value
    } catch {
        await session.shutdown()
        try await expectGone(probe)
        throw error
    }
}

/// The session's launcher (bwrap's outer process) is reaped and its cgroups — which held every process of the
/// sandbox — are gone. Other tests' sandboxes may run meanwhile; this looks only at this one.
func expectGone(
    _ probe: (pid: pid_t, cgroups: [String]), sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    for _ in 0..<100 {
        let alive = kill(probe.pid, 0) == 0 && !isZombie(probe.pid)
        let groups = probe.cgroups.filter { FileManager.default.fileExists(atPath: $0) }
        if !alive && groups.isEmpty { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    #expect(
        Bool(false), "sandbox \(probe.pid) or its cgroups \(probe.cgroups) outlived the session",
        sourceLocation: sourceLocation)
}

func isZombie(_ pid: pid_t) -> Bool {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return true }
    return status.contains("State:\tZ")
}

/// A listening TCP socket on the host's 127.0.0.1; returns (fd, port).
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

/// Every sandbox test runs one at a time: each checks afterwards that no sandbox process is left alive, which only
/// means something when no other sandbox is running.
@Suite(.serialized) enum SandboxTests {}
