import Foundation
import Glibc
import RLM
import RLMTesting
import Testing

/// `rlm run --context` as users point it at files, repositories and pipes: what is loaded, what is left out and said,
/// and what is refused before anything is read.
@Suite("rlm run contexts", .serialized)
struct ContextCLITests {
    static let key = ["OPENAI_API_KEY": "sk-test-0123456789"]

    /// A scratch directory, removed afterwards.
    final class Scratch {
        let path: String
        init() throws {
            path =
                FileManager.default.temporaryDirectory.appendingPathComponent("rlm-cli-ctx-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        func write(_ name: String, _ data: Data) throws {
            let url = URL(fileURLWithPath: path).appendingPathComponent(name)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }

        func git(_ arguments: [String]) throws {
            let result = try runGit(["-C", path] + arguments)
            guard result == 0 else { throw CLIError(description: "git \(arguments) failed") }
        }
    }

    static func runGit(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = ["-c", "user.email=t@example.com", "-c", "user.name=t"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// The root model's messages of every root request the server saw, in order.
    static func rootRequests(_ server: FakeLLMServer) async -> [[ChatMessage]] {
        await server.requests.map(\.messages).filter { $0.contains { $0.role == .system } }
    }

    /// A repository with a .gitignore, an ignored secret, a symlink to a host file, a FIFO and a Latin-1 file, loaded
    /// as a directory: git decides what is loaded, nothing outside is read, nothing blocks, and `--verbose` names what
    /// was left out.
    @Test func aRepositoryLoadsLikeADeveloperExpects() async throws {
        let repo = try Scratch()
        try repo.write(".gitignore", Data("*.log\nsecret.env\n".utf8))
        try repo.write("src/app.py", Data("def main():\n    return 42\n".utf8))
        try repo.write("notes.md", Data("# notes\n".utf8))
        try repo.write("debug.log", Data("ignored log line\n".utf8))
        try repo.write("secret.env", Data("API_TOKEN=do-not-load\n".utf8))
        try repo.write("menu.txt", Data("caf".utf8) + Data([0xE9]) + Data("\n".utf8))
        #expect(symlink("/etc/passwd", repo.path + "/passwd-link") == 0)
        #expect(mkfifo(repo.path + "/pipe", 0o600) == 0)
        try repo.git(["init", "-q"])
        try repo.git(["add", ".gitignore", "src/app.py", "notes.md"])
        try repo.git(["commit", "-qm", "init"])

        let code = """
            ```repl
            print(sorted(d.splitlines()[0] for d in context))
            print(any('root:' in d for d in context), any('do-not-load' in d for d in context))
            print(any('café' in d for d in context))
            ```
            """
        try await FakeLLMServer.withServer(scriptedHandler(steps: [code, "FINAL(done)"])) { server in
            let started = ContinuousClock.now
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", repo.path, "--verbose",
                    "--json", "q",
                ], environment: Self.key)
            #expect(ContinuousClock.now - started < .seconds(60), "a FIFO in the tree must not block the load")
            #expect(result.status == 0, "\(result.stderr)")
            let roots = await Self.rootRequests(server)
            let output = try #require(roots.count >= 2 ? roots[1].last?.content : nil)
            let repoLabel = repo.path
            #expect(output.contains("### \(repoLabel)/.gitignore"))
            #expect(output.contains("### \(repoLabel)/src/app.py"))
            #expect(output.contains("### \(repoLabel)/menu.txt"), "an untracked, not ignored file is loaded")
            #expect(!output.contains("debug.log"), "ignored by .gitignore")
            #expect(output.contains("False False"), "no host file through the link, no ignored secret: \(output)")
            #expect(output.contains("True"), "the Latin-1 file reads as Latin-1: \(output)")
            #expect(result.stderr.contains("passwd-link: symbolic link"), "\(result.stderr)")
            #expect(result.stderr.contains("pipe: not a regular file"), "\(result.stderr)")
            #expect(result.stderr.contains("menu.txt: decoded as Latin-1"), "\(result.stderr)")
            let system = roots[0].first?.content ?? ""
            #expect(system.contains("`context` is a list of 4 str documents"), "\(system)")
        }
    }

    /// Without --verbose the counts are said, not the names.
    @Test func skippedFilesAreCountedWithoutVerbose() async throws {
        let dir = try Scratch()
        try dir.write("a.txt", Data("alpha\n".utf8))
        #expect(symlink("/etc/hostname", dir.path + "/link") == 0)
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(x)"])) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", dir.path, "q"],
                environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("1 files skipped (1 symbolic link, skipped); --verbose names them"))
            #expect(!result.stderr.contains("/link:"))
        }
    }

    /// A context over --max-context is refused before anything is read: a 10 GiB sparse file is refused at once.
    @Test func aContextOverTheLimitIsRefusedBeforeReading() async throws {
        let dir = try Scratch()
        let path = dir.path + "/huge.log"
        let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        #expect(ftruncate(fd, 10 << 30) == 0)
        close(fd)
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(x)"])) { server in
            let started = ContinuousClock.now
            let result = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", path, "--max-context", "1G",
                    "--json", "q",
                ], environment: Self.key)
            #expect(ContinuousClock.now - started < .seconds(30))
            #expect(result.status == 2, "\(result.stderr)")
            let error = try #require(result.json?["error"] as? [String: Any])
            #expect(error["kind"] as? String == "context")
            #expect((error["message"] as? String ?? "").contains("--max-context"), "\(error)")
            #expect(await server.requests.isEmpty, "nothing was asked of the model")
        }
    }

    /// A --memory too small for the context is refused before reading, naming the flag.
    @Test func aMemoryTooSmallForTheContextIsRefusedNamingTheFlag() async throws {
        let dir = try Scratch()
        let path = dir.path + "/big.log"
        let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        #expect(ftruncate(fd, 300 << 20) == 0)
        close(fd)
        let result = try await runRLM(
            ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--context", path, "--memory", "200M", "q"],
            environment: Self.key)
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains("--memory"), "\(result.stderr)")
    }

    @Test(arguments: [("--memory", "lots"), ("--max-context", "-1G"), ("--workdir-size", "0")])
    func aSizeThatIsNotASizeIsAUsageError(flag: String, value: String) async throws {
        let result = try await runRLM(["run", "--model", "m", flag, value, "q"], environment: Self.key)
        #expect(result.status == 64 || result.status == 2, "\(result.stderr)")
        #expect(result.stderr.contains(flag), "\(result.stderr)")
    }

    /// No context and an empty one are allowed, said on stderr, and the prompt does not pretend there is data.
    @Test func noContextAndAnEmptyOneAreSaidAndNotPretended() async throws {
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(4)"])) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "what is 2+2?"], environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("no --context given"))
            let first = await Self.rootRequests(server).first ?? []
            #expect(first.first?.content.contains("no context came with this question") == true)
            #expect(first.last?.content.contains("How `context` begins") == false)
        }
        let empty = try writeTemporary("", name: "empty.txt")
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(4)"])) { server in
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", empty, "what is 2+2?"],
                environment: Self.key)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("the context is empty"), "\(result.stderr)")
            let first = await Self.rootRequests(server).first ?? []
            #expect(first.first?.content.contains("holds no data") == true)
            #expect(first.first?.content.contains("there is no data to search") == true)
        }
    }

    /// Standard input from a pipe is spooled, not held, and loads as a str.
    @Test func standardInputIsAContext() async throws {
        let code = "```repl\nprint(len(context), context.count('ERROR'))\n```"
        try await FakeLLMServer.withServer(scriptedHandler(steps: [code, "FINAL(done)"])) { server in
            let text = String(repeating: "12:00 ERROR x\n", count: 1000)
            let result = try await runRLM(
                ["run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", "-", "q"],
                environment: Self.key, stdin: text)
            #expect(result.status == 0, "\(result.stderr)")
            let output = await Self.rootRequests(server).dropFirst().first?.last?.content ?? ""
            #expect(output.contains("\(text.utf8.count) 1000"), "\(output)")
        }
    }

    /// A strict encoding that does not fit the file is an error that names the flags; an unknown one names itself.
    @Test func encodingsAreChosenAndWrongOnesExplained() async throws {
        let dir = try Scratch()
        try dir.write("menu.txt", Data("caf".utf8) + Data([0xE9]) + Data("\n".utf8))
        let path = dir.path + "/menu.txt"
        try await FakeLLMServer.withServer(scriptedHandler(steps: ["FINAL(x)"])) { server in
            let strict = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", path, "--encoding", "utf-8",
                    "q",
                ], environment: Self.key)
            #expect(strict.status == 2, "\(strict.stderr)")
            #expect(strict.stderr.contains("--encoding-errors replace"), "\(strict.stderr)")
            #expect(!strict.stderr.contains("binary file?"))
            let unknown = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", path, "--encoding",
                    "klingon", "q",
                ], environment: Self.key)
            #expect(unknown.status == 2, "\(unknown.stderr)")
            #expect(unknown.stderr.contains("unknown encoding 'klingon'"), "\(unknown.stderr)")
        }
        let code = "```repl\nprint(ascii(context))\n```"
        try await FakeLLMServer.withServer(scriptedHandler(steps: [code, "FINAL(x)"])) { server in
            let latin = try await runRLM(
                [
                    "run", "--base-url", server.openAIBaseURL, "--model", "m", "--context", path, "--encoding",
                    "latin-1", "q",
                ], environment: Self.key)
            #expect(latin.status == 0, "\(latin.stderr)")
            let output = await Self.rootRequests(server).dropFirst().first?.last?.content ?? ""
            #expect(output.contains(#"'caf\xe9\n'"#), "\(output)")
        }
    }
}
