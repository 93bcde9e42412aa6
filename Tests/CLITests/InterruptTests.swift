import Foundation
import RLM
import RLMTesting
import Testing

/// SIGINT and SIGTERM stop `rlm run` cleanly: the sandbox is killed, its cgroups removed, the trajectory ends with an
/// `interrupted` record, and the exit status says which signal.
@Suite("rlm run interrupted", .serialized)
struct InterruptTests {
    /// cgroup directories named for `pid` (`swiftrlm-<pid>-…`) anywhere under the v1 memory and pids hierarchies.
    static func cgroups(of pid: Int32) -> [String] {
        var found = [String]()
        for root in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"] {
            guard let walker = FileManager.default.enumerator(atPath: root) else { continue }
            while let path = walker.nextObject() as? String {
                // Both the per-sandbox groups (`swiftrlm-<pid>-<n>`) and the process's parent (`swiftrlm-<pid>`),
                // wherever the host's own group nests them.
                let name = (path as NSString).lastPathComponent
                if name == "swiftrlm-\(pid)" || name.hasPrefix("swiftrlm-\(pid)-") { found.append(path) }
                if path.split(separator: "/").count > 8 { walker.skipDescendants() }
            }
        }
        return found
    }

    /// Whether `pid` no longer has SIGINT's default disposition (ignored or caught, per `SigIgn`/`SigCgt` in
    /// /proc/PID/status): `rlm run` takes the signal over when it starts listening for it.
    static func ignoresSIGINT(_ pid: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
        var mask: UInt64 = 0
        for line in status.split(separator: "\n") where line.hasPrefix("SigIgn:") || line.hasPrefix("SigCgt:") {
            mask |= UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
        }
        return mask & (1 << UInt64(SIGINT - 1)) != 0
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func aSignalStopsTheRunAndLeavesNothingBehind(signal: Int32) async throws {
        let steps = ["```repl\nimport time\nprint('started', flush=True)\ntime.sleep(60)\n```", "FINAL(never)"]
        try await FakeLLMServer.withServer(scriptedHandler(steps: steps)) { server in
            let scratch = try writeTemporary("", name: "x")
            let trajectory = scratch + ".jsonl"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try rlmBinary())
            process.arguments = [
                "run", "--base-url", server.openAIBaseURL, "--model", "m", "--trajectory", trajectory, "q",
            ]
            process.environment = [
                "PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory(), "OPENAI_API_KEY": "sk-x",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            let started = Date()
            try process.run()
            // Wait until the cell is running: the trajectory shows the model's reply and then nothing for a while.
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let text = (try? String(contentsOfFile: trajectory, encoding: .utf8)) ?? ""
                if text.contains("model_response") { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(700))
            let pid = process.processIdentifier
            let hadCgroups = !Self.cgroups(of: pid).isEmpty
            kill(pid, signal)
            let stopBy = ContinuousClock.now + .seconds(20)
            while process.isRunning && ContinuousClock.now < stopBy { try await Task.sleep(for: .milliseconds(50)) }
            #expect(!process.isRunning, "rlm run did not stop after the signal")
            if process.isRunning { process.terminate() }
            #expect(process.terminationStatus == 128 + signal)
            let lines = try String(contentsOfFile: trajectory, encoding: .utf8).split(separator: "\n")
            let last = try #require(lines.last)
            #expect(last.contains("\"interrupted\""), "\(last)")
            #expect(Self.cgroups(of: pid).isEmpty, "cgroups left behind: \(Self.cgroups(of: pid))")
            try await expectNoSandboxLeftBehind(rlmPID: pid, since: started)
            if getuid() == 0 { #expect(hadCgroups, "the run had cgroups to clean up (root on cgroup v1)") }
        }
    }

    /// A run stuck where cancellation cannot reach (a read of a terminal that never ends) still stops: a second
    /// signal exits at once, and `--json` still prints one object.
    @Test func aSecondSignalExitsAtOnceWithJSON() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try rlmBinary())
        process.arguments = [
            "run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--context", "-", "--json", "q",
        ]
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory()]
        let input = Pipe()  // never written, never closed: the read of stdin blocks
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Signal only once rlm has taken over SIGINT (it then ignores it at the kernel level and listens itself):
        // a busy machine can take seconds to get there.
        let ready = ContinuousClock.now + .seconds(30)
        while !Self.ignoresSIGINT(process.processIdentifier) && ContinuousClock.now < ready {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(200))
        kill(process.processIdentifier, SIGINT)
        try await Task.sleep(for: .milliseconds(300))
        kill(process.processIdentifier, SIGINT)
        let stopBy = ContinuousClock.now + .seconds(8)
        while process.isRunning && ContinuousClock.now < stopBy { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning, "rlm run did not stop after two signals")
        if process.isRunning { process.terminate() }
        #expect(process.terminationStatus == 128 + SIGINT)
        let text = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect((object?["error"] as? [String: Any])?["kind"] as? String == "interrupted", "\(text)")
        try input.fileHandleForWriting.close()
    }
}
