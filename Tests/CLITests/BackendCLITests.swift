import Foundation
import Testing

/// Contract 2 for every backend present (issue 14): `rlm sandbox exec --backend X` prints the program's output,
/// exits 0/1/124/137/2 and speaks the same `--json`, whatever holds the worker.
@Suite("rlm sandbox exec on every backend", .serialized)
struct BackendCLITests {
    /// A backend's flags, or why it is absent here.
    struct Backend: Sendable, CustomTestStringConvertible {
        let name: String
        let flags: [String]
        let absentBecause: String?
        var testDescription: String { name }
    }

    static let backends: [Backend] = [
        Backend(name: "process", flags: [], absentBecause: nil),
        // A command as a user would give it: Python under prlimit, which bounds its address space as the process
        // backend's launcher does; the host kills its process group on timeout.
        Backend(
            name: "command",
            flags: ["--backend", "command", "--command", "prlimit --as=\(512 << 20) /usr/bin/python3 -I -S"],
            absentBecause: FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit")
                ? nil : "prlimit (util-linux) is not installed"),
        Backend(
            name: "container",
            flags: [
                "--backend", "container", "--image",
                ProcessInfo.processInfo.environment["RLM_TEST_CONTAINER_IMAGE"] ?? "",
            ],
            absentBecause: ProcessInfo.processInfo.environment["RLM_TEST_CONTAINER_IMAGE"] == nil
                ? "RLM_TEST_CONTAINER_IMAGE is not set (scripts/test sets it once podman and the test image are ready)"
                : nil),
        // The tests run rlm with a home of their own, so the runtime `rlm sandbox pull` fetched is named explicitly.
        Backend(
            name: "wasm",
            flags: ["--backend", "wasm", "--wasm-runtime", ProcessInfo.processInfo.environment["RLM_TEST_WASM"] ?? ""],
            absentBecause: ProcessInfo.processInfo.environment["RLM_TEST_WASM"] == nil
                ? "RLM_TEST_WASM (the pulled runtime's path) is not set: scripts/test sets it after `rlm sandbox pull`"
                : nil),
    ]

    static var present: [Backend] { backends.filter { $0.absentBecause == nil } }

    /// One cache directory for every wasm run of this suite: the worker compiled by the guest's Python is kept there
    /// after the first run (compiling it inside the guest costs ~30 s in a debug build).
    static let cache = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-cli-wasm-cache-\(getpid())")

    static func environment(_ backend: Backend) -> [String: String] {
        backend.name == "wasm" ? ["XDG_CACHE_HOME": cache.path] : [:]
    }

    @Test("the backends absent here, and why", .enabled(if: backends.contains { $0.absentBecause != nil }))
    func absent() {
        for backend in Self.backends {
            if let reason = backend.absentBecause { print("rlm sandbox exec: \(backend.name) absent: \(reason)") }
        }
        #expect(Self.present.contains { $0.name == "process" })
    }

    @Test("exit codes and output", arguments: present)
    func exitCodes(_ backend: Backend) async throws {
        let cases: [(code: String, status: Int32, stdout: String, stderr: String)] = [
            ("print('hi')", 0, "hi\n", ""),
            (
                "import sys\nprint('out')\nprint('err', file=sys.stderr)\nraise ValueError('boom')", 1, "out\n",
                "ValueError: boom"
            ),
            ("import sys\nsys.exit(0)", 0, "", ""),
            ("import sys\nsys.exit(3)", 1, "", "SystemExit"),
            ("while True:\n    pass", 124, "", "Timeout"),
            ("x = bytearray(1 << 30)", 137, "", "MemoryError"),
        ]
        // A wasm session takes ~40 s to start in a debug build: the cases that differ between backends only.
        for item in cases where backend.name != "wasm" || item.stdout == "hi\n" || [124, 137].contains(item.status) {
            let timeout = backend.name == "wasm" ? "600" : "20"
            let result = try await runRLM(
                ["sandbox", "exec"] + backend.flags + [
                    "--timeout", item.status == 124 ? "2" : timeout, "--memory", "256", "-",
                ],
                environment: Self.environment(backend), stdin: item.code)
            #expect(result.status == item.status, "\(backend.name): \(item.code): \(result.stderr)")
            #expect(result.stdout == item.stdout, "\(backend.name): \(item.code)")
            if !item.stderr.isEmpty {
                #expect(result.stderr.contains(item.stderr), "\(backend.name): \(item.code): \(result.stderr)")
            }
        }
    }

    @Test("--json has the contract's fields", arguments: present)
    func json(_ backend: Backend) async throws {
        let result = try await runRLM(
            ["sandbox", "exec"] + backend.flags + ["--json", "--timeout", "600", "-"],
            environment: Self.environment(backend),
            stdin: "import sys\nprint('a')\nprint('b', file=sys.stderr)\n1/0\n")
        #expect(result.status == 1, "\(result.stderr)")
        let json = try #require(result.json, "\(result.stdout) \(result.stderr)")
        #expect(Set(json.keys) == ["stdout", "stderr", "error", "timed_out", "duration_ms"])
        #expect(json["stdout"] as? String == "a\n")
        #expect((json["stderr"] as? String)?.hasPrefix("b\n") == true)
        let error = try #require(json["error"] as? [String: Any])
        #expect(error["type"] as? String == "ZeroDivisionError")
        #expect(json["timed_out"] as? Bool == false)
    }

    /// `podman ps --all` names of the SwiftRLM containers whose owner label is `pid`.
    static func containers(ownedBy pid: Int32) async throws -> [String] {
        let listed = try await runProgram(
            "/usr/bin/podman",
            [
                "ps", "--all", "--filter", "label=swiftrlm.sandbox=1", "--filter", "label=swiftrlm.host-pid=\(pid)",
                "--format", "{{.Names}}",
            ], checkLeftovers: false)
        try #require(listed.status == 0, "podman ps: \(listed.stderr)")
        return listed.stdout.split(separator: "\n").map(String.init)
    }

    /// The host process dies outright (SIGKILL: no cleanup of its own runs) while its container spins in a cell:
    /// the container still goes, without waiting for another rlm to sweep it. The engine client, in a process group
    /// of its own, sees its stdin close; the worker's reader sees the channel end and exits; `--rm` has the engine
    /// remove the container.
    @Test(
        "a container does not outlive its rlm killed outright",
        .enabled(if: present.contains { $0.name == "container" }))
    func aKilledHostLeavesNoContainer() async throws {
        let backend = try #require(Self.present.first { $0.name == "container" })
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try rlmBinary())
        process.arguments = ["sandbox", "exec"] + backend.flags + ["--timeout", "600", "-"]
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory()]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        input.fileHandleForWriting.write(Data("while True:\n    pass\n".utf8))
        try input.fileHandleForWriting.close()
        let pid = process.processIdentifier
        // Running: the container is listed under this owner, and a moment later its cell is spinning.
        let listed = ContinuousClock.now + .seconds(60)
        while try await Self.containers(ownedBy: pid).isEmpty && ContinuousClock.now < listed {
            try await Task.sleep(for: .milliseconds(100))
        }
        let before = try await Self.containers(ownedBy: pid)
        try #require(before.count == 1, "rlm sandbox exec started no container: \(before)")
        try await Task.sleep(for: .seconds(1))
        kill(pid, SIGKILL)
        process.waitUntilExit()
        let gone = ContinuousClock.now + .seconds(30)
        while try await !Self.containers(ownedBy: pid).isEmpty && ContinuousClock.now < gone {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await Self.containers(ownedBy: pid).isEmpty, "\(before) outlived rlm (SIGKILL)")
    }

    @Test("setup errors exit 2 with a message naming what to do")
    func setupErrors() async throws {
        let noCommand = try await runRLM(["sandbox", "exec", "--backend", "command", "-"], stdin: "1")
        #expect(noCommand.status == 2)
        #expect(noCommand.stderr.contains("--command"))
        let notFound = try await runRLM(
            ["sandbox", "exec", "--backend", "command", "--command", "/no/such/kubectl exec -i pod --", "-"], stdin: "1"
        )
        #expect(notFound.status == 2)
        #expect(notFound.stderr.contains("/no/such/kubectl"))
        let notAWorker = try await runRLM(
            ["sandbox", "exec", "--backend", "command", "--command", "echo hello", "-"], stdin: "1")
        #expect(notAWorker.status == 2)
        #expect(notAWorker.stderr.contains("must start Python"), "\(notAWorker.stderr)")
        let unknown = try await runRLM(["sandbox", "exec", "--backend", "vm", "-"], stdin: "1")
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("process, container, wasm, command"))
        let stray = try await runRLM(["sandbox", "exec", "--command", "python3", "-"], stdin: "1")
        #expect(stray.status == 2)
    }

    @Test("rlm doctor --backend command reports the host's layers in force and the far side's as seen")
    func doctorCommand() async throws {
        let result = try await runRLM(
            [
                "doctor", "--json", "--backend", "command", "--command",
                "prlimit --as=\(512 << 20) /usr/bin/python3 -I -S",
            ])
        #expect(result.status == 0, "\(result.stderr)")
        let data = Data(result.stdout.utf8)
        let checks = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        let status = Dictionary(
            uniqueKeysWithValues: checks.map { ($0["feature"] as? String ?? "", $0["status"] as? String ?? "") })
        #expect(status["host-side kill"] == "in force")
        #expect(status["clean environment for the command"] == "in force")
        #expect(status["memory limit"] == "in force", "prlimit's RLIMIT_AS is seen on the far side")
        #expect(status["network"] == "missing", "a plain python3 on the host has the host's network")
    }
}
