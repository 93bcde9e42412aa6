import Foundation
import Glibc
import RLM
import RLMTesting
import Testing

/// The built `rlm` binary, next to the test bundle.
func rlmBinary() throws -> String {
    let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("rlm").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir.deleteLastPathComponent()
    }
    throw CLIError(description: "the rlm binary was not built next to the tests (run `swift build` first)")
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
}

struct CLIResult {
    var status: Int32
    var stdout: String
    var stderr: String
    /// The process's pid (it has exited).
    var pid: Int32 = 0

    var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any]
    }
}

/// Runs `rlm` with `arguments` and exactly `environment` (plus PATH and HOME), like a script would, and then checks
/// that it left no sandbox behind (``expectNoSandboxLeftBehind(rlmPID:since:sourceLocation:)``).
func runRLM(
    _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws -> CLIResult {
    let started = Date()
    let result = try await runProgram(
        try rlmBinary(), arguments, environment: environment, stdin: stdin, checkLeftovers: false)
    try await expectNoSandboxLeftBehind(rlmPID: result.pid, since: started, sourceLocation: sourceLocation)
    return result
}

/// After an `rlm` process (`rlmPID`) has exited: none of its sandboxes is left — no cgroup named for it
/// (`swiftrlm-<pid>-…`, which held every process of its sandboxes), no process still in one, and no bubblewrap of
/// ours started since `since` left orphaned. Polls for up to three seconds.
func expectNoSandboxLeftBehind(
    rlmPID: Int32, since: Date, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    var left = [String]()
    for _ in 0..<150 {
        // The per-sandbox groups and the process's parent group `swiftrlm-<pid>`.
        left = cgroupDirectories(prefix: "swiftrlm-\(rlmPID)")
            .filter { path in
                let name = (path as NSString).lastPathComponent
                return name == "swiftrlm-\(rlmPID)" || name.hasPrefix("swiftrlm-\(rlmPID)-")
            }
            .map { "cgroup \($0)" }
        left += processesInCgroups(prefix: "swiftrlm-\(rlmPID)-").map { "pid \($0) in rlm \(rlmPID)'s cgroup" }
        left += orphanedSandboxProcesses(startedAfter: since).map { "orphaned bwrap \($0)" }
        if left.isEmpty { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("rlm \(rlmPID) left sandboxes behind: \(left)", sourceLocation: sourceLocation)
}

/// Runs `executable` with `arguments` and exactly `environment` (plus PATH, HOME and XDG_STATE_HOME in a scratch
/// directory); unless `checkLeftovers` is false, checks afterwards that no sandbox of ours was left orphaned.
func runProgram(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil,
    checkLeftovers: Bool = true, sourceLocation: SourceLocation = #_sourceLocation
) async throws -> CLIResult {
    let started = Date()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    var env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch.path, "XDG_STATE_HOME": scratch.path + "/state"]
    env.merge(environment) { _, new in new }
    process.environment = env
    let out = scratch.appendingPathComponent("stdout")
    let err = scratch.appendingPathComponent("stderr")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { try input.fileHandleForWriting.write(contentsOf: Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
    if checkLeftovers {
        var orphans = orphanedSandboxProcesses(startedAfter: started)
        for _ in 0..<150 where !orphans.isEmpty {
            try await Task.sleep(for: .milliseconds(20))
            orphans = orphanedSandboxProcesses(startedAfter: started)
        }
        #expect(orphans.isEmpty, "\(executable) left sandboxes behind: \(orphans)", sourceLocation: sourceLocation)
    }
    return CLIResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "", pid: process.processIdentifier)
}

/// A scripted root model for the fake server: root requests (with our system prompt) get `steps[n]` where n is the
/// number of assistant turns so far; sub-calls (no system prompt) get `subcall(prompt)`.
func scriptedHandler(
    steps: [String], subcall: @escaping @Sendable (String) -> String = { _ in "sub-answer" }
) -> FakeLLMServer.Handler {
    FakeLLMServer.Handler { request in
        let isRoot = request.messages.contains { $0.role == .system }
        guard isRoot else { return .text(subcall(request.lastUserMessage ?? "")) }
        let turn = request.messages.filter { $0.role == .assistant }.count
        return .text(turn < steps.count ? steps[turn] : "FINAL(script exhausted)")
    }
}

func writeTemporary(_ text: String, name: String = "context.txt") throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-ctx-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent(name).path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
