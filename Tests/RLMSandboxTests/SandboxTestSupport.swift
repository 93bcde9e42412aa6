import Foundation
import Glibc
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
    let value = try await ProcessSandbox(configuration: configuration).withSession(handler: handler, body)
    try await expectNoSandboxProcesses()
    return value
}

/// Every sandbox process carries the worker bootstrap or our bwrap hostname on its command line.
func sandboxProcesses() -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var found = [Int32]()
    for entry in entries {
        guard let pid = Int32(entry), pid != getpid() else { continue }
        guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"), !data.isEmpty else {
            continue
        }
        let cmdline = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        if cmdline.contains("'rlm_worker'") || cmdline.contains("rlm-sandbox") {
            // Zombies already exited; they hold nothing.
            if let status = try? String(contentsOfFile: "/proc/\(entry)/status", encoding: .utf8),
                status.contains("State:\tZ")
            {
                continue
            }
            found.append(pid)
        }
    }
    return found
}

/// Fails the test when a sandbox process outlives its session (after a short grace for reaping).
func expectNoSandboxProcesses(sourceLocation: SourceLocation = #_sourceLocation) async throws {
    for _ in 0..<100 {
        if sandboxProcesses().isEmpty { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    let left = sandboxProcesses()
    #expect(left.isEmpty, "sandbox processes left alive: \(left)", sourceLocation: sourceLocation)
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
