import Foundation
import Glibc
import RLM
import RLMRuntime
import Synchronization
import Testing

/// The planner turns `--context` arguments into a list of files without reading them: git decides what a directory in
/// a work tree holds, links are never followed, nothing but regular files is planned, the size limit is checked
/// before anything is read, and standard input is spooled to disk rather than held in memory.
@Suite("Context planner")
struct ContextPlannerTests {
    static let gitPath = SwiftRLMPaths.executable(named: "git")

    // MARK: - git work trees

    @Test(.enabled(if: gitPath != nil))
    func gitDecidesWhatADirectoryHolds() throws {
        let scratch = try Scratch()
        let repo = try scratch.repository("repo")
        try scratch.write("*.log\nnode_modules/\n!keep.log\n", to: "repo/.gitignore")
        try scratch.write("*.tmp\n", to: "repo/sub/.gitignore")
        try scratch.write("private.txt\n", to: "repo/.git/info/exclude")
        try scratch.write("*.bak\n", to: "home/.config/git/ignore")  // the user's global excludes
        try scratch.write("# readme\n", to: "repo/README.md")
        try scratch.write("on: push\n", to: "repo/.github/workflows/ci.yml")
        try scratch.write("let x = 1\n", to: "repo/sub/code.swift")
        try scratch.write("tracked although ignored\n", to: "repo/forced.log")
        try scratch.git(["add", ".gitignore", "README.md", ".github", "sub/.gitignore", "sub/code.swift"], in: repo)
        try scratch.git(["add", "-f", "forced.log"], in: repo)
        try scratch.git(["commit", "-q", "-m", "start"], in: repo)
        try scratch.write("untracked, not ignored\n", to: "repo/notes.md")
        try scratch.write("new\n", to: "repo/sub/new.txt")
        try scratch.write("kept by a negation\n", to: "repo/keep.log")
        try scratch.write("debug\n", to: "repo/debug.log")
        try scratch.write("scratch\n", to: "repo/sub/x.tmp")
        try scratch.write("excluded by info/exclude\n", to: "repo/private.txt")
        try scratch.write("excluded globally\n", to: "repo/old.bak")
        // A big ignored folder, with a FIFO in it: walking it would name the FIFO (and take time).
        for package in 0..<10 {
            for file in 0..<10 { try scratch.write("x", to: "repo/node_modules/p\(package)/f\(file).js") }
        }
        #expect(mkfifo(repo.appendingPathComponent("node_modules/p0/pipe").path, 0o600) == 0)

        let plan = try scratch.planner(maxBytes: 1 << 20).plan([repo.path])
        let expected = [
            ".github/workflows/ci.yml", ".gitignore", "README.md", "forced.log", "keep.log", "notes.md",
            "sub/.gitignore", "sub/code.swift", "sub/new.txt",
        ]
        #expect(plan.source.shape == .documents)
        #expect(Self.relative(plan, to: repo) == expected)
        let listedByGit = try scratch.git(["ls-files", "--cached", "--others", "--exclude-standard"], in: repo)
        #expect(Set(expected) == Set(listedByGit))
        #expect(plan.ignored == 4, "debug.log, old.bak, private.txt and sub/x.tmp; node_modules and .git never walked")
        #expect(plan.skipped.isEmpty, "\(plan.skipped)")
        #expect(plan.notes.isEmpty, "\(plan.notes)")
        for file in plan.source.files {
            let onDisk = try Data(contentsOf: URL(fileURLWithPath: file.label))
            #expect(file.size == onDisk.count)
            #expect(try Self.bytes(of: file) == Array(onDisk))
        }
        #expect(plan.totalBytes == plan.source.files.reduce(0) { $0 + $1.size })
    }

    /// Symbolic links are named and never followed, in a work tree (git lists untracked links) and outside one.
    @Test(arguments: [false, true])
    func symbolicLinksAreNamedAndNeverFollowed(inGit: Bool) throws {
        guard !inGit || Self.gitPath != nil else { return }
        let scratch = try Scratch()
        let dir = inGit ? try scratch.repository("dir") : try scratch.directory("dir")
        try scratch.write("TOP-SECRET-VALUE", to: "outside/secret.txt")
        try scratch.write("hello", to: "dir/a.txt")
        let links = [
            "passwd": "/etc/passwd", "outside": scratch.url("outside").path, "loop": "loop", "loop1": "loop2",
            "loop2": "loop1", "secret.txt": scratch.url("outside/secret.txt").path,
        ]
        for (name, target) in links {
            #expect(symlink(target, dir.appendingPathComponent(name).path) == 0)
        }
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([dir.path])
        #expect(Self.relative(plan, to: dir) == ["a.txt"])
        #expect(Set(plan.skipped.map(\.label)) == Set(links.keys.map { dir.appendingPathComponent($0).path }))
        #expect(plan.skipped.allSatisfy { $0.reason == "symbolic link, skipped" })
    }

    @Test(arguments: [false, true])
    func fifosAndSocketsAreSkippedWithoutBlocking(inGit: Bool) async throws {
        guard !inGit || Self.gitPath != nil else { return }
        let scratch = try Scratch()
        let dir = inGit ? try scratch.repository("dir") : try scratch.directory("dir")
        try scratch.write("hello", to: "dir/a.txt")
        let fifo = dir.appendingPathComponent("fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let socketPath = dir.appendingPathComponent("sock").path
        let listener = try Self.bindUnixSocket(at: socketPath)
        defer { close(listener) }
        let planner = scratch.planner(maxBytes: 1 << 20)

        let plan = try await Self.within(seconds: 20) { try planner.plan([dir.path]) }
        #expect(Self.relative(plan, to: dir) == ["a.txt"])
        #expect(plan.skipped.map(\.label) == [fifo, socketPath])
        #expect(plan.skipped.allSatisfy { $0.reason == "not a regular file, skipped" })

        for special in [fifo, socketPath] {
            let error = try await Self.within(seconds: 20) { () -> ContextLoadError? in
                do {
                    _ = try planner.plan([special])
                    return nil
                } catch let error as ContextLoadError {
                    return error
                }
            }
            #expect(error?.description == "context \(special) is not a regular file or a directory")
        }
    }

    /// A submodule or a repository inside the directory is git's business: named, not walked.
    @Test(.enabled(if: gitPath != nil))
    func aNestedRepositoryIsNamedNotWalked() throws {
        let scratch = try Scratch()
        let repo = try scratch.repository("repo")
        try scratch.write("top", to: "repo/top.txt")
        let inner = try scratch.repository("repo/inner")
        try scratch.write("inner", to: "repo/inner/file.txt")
        try scratch.git(["add", "file.txt"], in: inner)
        try scratch.git(["commit", "-q", "-m", "inner"], in: inner)
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([repo.path])
        #expect(Self.relative(plan, to: repo) == ["top.txt"])
        #expect(plan.skipped.map(\.label) == [inner.path])
        #expect(plan.skipped.first?.reason.contains("nested repository") == true)
    }

    @Test(.enabled(if: gitPath != nil))
    func aDirectoryGitIgnoresEntirelyIsSaidSo() throws {
        let scratch = try Scratch()
        let repo = try scratch.repository("repo")
        try scratch.write("build/\n", to: "repo/.gitignore")
        try scratch.write("output", to: "repo/build/out.txt")
        let build = repo.appendingPathComponent("build").path
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([build])
        #expect(plan.source.files.isEmpty)
        #expect(plan.ignored == 1)
        #expect(
            plan.notes == [
                "git ignores everything in \(build) (.gitignore, .git/info/exclude or your global excludes): "
                    + "nothing was loaded from it"
            ])
    }

    /// A repository's own config can name a command for git to run (core.fsmonitor); the planner's git call never
    /// runs it. Nor do the caller's GIT_* variables point it at another repository.
    @Test(.enabled(if: gitPath != nil))
    func aHostileRepositoryCannotRunACommand() throws {
        let scratch = try Scratch()
        let repo = try scratch.repository("repo")
        try scratch.write("tracked", to: "repo/tracked.txt")
        try scratch.git(["add", "tracked.txt"], in: repo)
        try scratch.git(["commit", "-q", "-m", "start"], in: repo)
        let marker = scratch.url("fsmonitor-ran").path
        try scratch.write("#!/bin/sh\ntouch '\(marker)'\n", to: "hook.sh")
        #expect(chmod(scratch.url("hook.sh").path, 0o755) == 0)
        try scratch.git(["config", "core.fsmonitor", scratch.url("hook.sh").path], in: repo)
        // The control: this git does run the hook for a plain `ls-files`.
        _ = try scratch.git(["ls-files", "--cached", "--others", "--exclude-standard"], in: repo)
        #expect(access(marker, F_OK) == 0, "control: git ran core.fsmonitor")
        unlink(marker)

        let other = try scratch.repository("other")
        try scratch.write("elsewhere", to: "other/elsewhere.txt")
        var environment = scratch.environment()
        environment["GIT_DIR"] = other.appendingPathComponent(".git").path
        environment["GIT_WORK_TREE"] = other.path
        environment["GIT_CONFIG_PARAMETERS"] = "'core.fsmonitor'='\(scratch.url("hook.sh").path)'"
        let plan = try ContextPlanner(maxBytes: 1 << 20, environment: environment).plan([repo.path])
        #expect(access(marker, F_OK) != 0, "the repository's fsmonitor command ran")
        #expect(Self.relative(plan, to: repo) == ["tracked.txt"])
        #expect(plan.notes.isEmpty, "\(plan.notes)")
    }

    // MARK: - Without git

    @Test func outsideGitHiddenEntriesAndBuildFoldersAreLeftOut() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        for path in [
            "a.txt", ".hidden", ".config/x.txt", "node_modules/x.js", "__pycache__/x.pyc", "venv/bin/activate",
            "sub/b.txt", "sub/.env", "sub/node_modules/y.js", ".build/debug/out.txt", "target/notes.txt",
        ] {
            try scratch.write("text", to: "dir/\(path)")
        }
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([dir.path])
        #expect(Self.relative(plan, to: dir) == ["a.txt", "sub/b.txt", "target/notes.txt"])
        #expect(plan.skipped.isEmpty)
        #expect(plan.ignored == 0)
        #expect(plan.notes.isEmpty)
    }

    /// Without git, a directory that has a .gitignore is loaded by the fixed rules, and the user is told.
    @Test func gitMissingFallsBackAndSaysSoWhereItMatters() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        try scratch.write("*.log\n", to: "dir/.gitignore")
        try scratch.write("text", to: "dir/a.txt")
        try scratch.write("log", to: "dir/a.log")
        let plain = try scratch.directory("plain")
        try scratch.write("text", to: "plain/b.txt")
        var environment = scratch.environment()
        environment["PATH"] = scratch.url("no-such-bin").path
        let planner = ContextPlanner(maxBytes: 1 << 20, environment: environment)

        let plan = try planner.plan([dir.path])
        #expect(Self.relative(plan, to: dir) == ["a.log", "a.txt"])
        #expect(
            plan.notes == [
                "git is not installed: .gitignore rules were not applied to \(dir.path) (hidden and build folders "
                    + "were skipped instead)"
            ])
        #expect(try planner.plan([plain.path]).notes.isEmpty, "no git, nothing of git's: nothing to say")
    }

    /// git that refuses (a repository owned by someone else), hangs or floods: the fixed rules apply and a note says
    /// what happened.
    @Test func gitRefusingFallsBackAndSaysWhy() async throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        try scratch.write("*.log\n", to: "dir/.gitignore")
        try scratch.write("text", to: "dir/a.txt")
        try scratch.write("log", to: "dir/a.log")
        let fakes: [(script: String, timeout: Duration, says: String)] = [
            (
                "echo \"fatal: detected dubious ownership in repository at '$PWD'\" >&2\nexit 128\n", .seconds(60),
                "(detected dubious ownership in repository at "
            ),
            ("exec sleep 30\n", .milliseconds(300), "took longer than 0.3 s to list"),
            ("head -c 100000 /dev/zero\n", .seconds(60), "is larger than 1 KiB"),
        ]
        for fake in fakes {
            try scratch.write("#!/bin/sh\n" + fake.script, to: "fakebin/git")
            #expect(chmod(scratch.url("fakebin/git").path, 0o755) == 0)
            var environment = scratch.environment()
            environment["PATH"] = scratch.url("fakebin").path + ":/usr/bin:/bin"
            let planner = ContextPlanner(
                maxBytes: 1 << 20, environment: environment, gitTimeout: fake.timeout, gitOutputLimit: 1024)
            // Timed on the planning thread: the test's own resumption may wait for a busy cooperative pool.
            let (plan, elapsed) = try await Self.within(seconds: 20) {
                let start = ContinuousClock.now
                return (try planner.plan([dir.path]), ContinuousClock.now - start)
            }
            #expect(elapsed < .seconds(10))
            #expect(Self.relative(plan, to: dir) == ["a.log", "a.txt"])
            #expect(plan.notes.count == 1)
            #expect(plan.notes.first?.contains(fake.says) == true, "\(plan.notes)")
            #expect(plan.notes.first?.contains(".gitignore rules were not applied to \(dir.path)") == true)
        }
    }

    /// git gets the directory on fd 3 and nothing else of the host's, even a descriptor left without close-on-exec.
    @Test func gitInheritsOnlyTheDirectory() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        try scratch.write("text", to: "dir/a.txt")
        let stray = try Self.pipe()  // not close-on-exec
        defer {
            close(stray.read)
            close(stray.write)
        }
        let script = """
            #!/bin/sh
            for fd in \(stray.read) \(stray.write); do
                if [ -e /proc/self/fd/$fd ]; then echo "fatal: descriptor $fd leaked" >&2; exit 1; fi
            done
            if [ "$2" = core.fsmonitor=false ] && [ "$4" = /proc/self/fd/3 ] && [ -d /proc/self/fd/3 ]; then
                echo "fatal: clean" >&2
            fi
            exit 1

            """
        try scratch.write(script, to: "fakebin/git")
        #expect(chmod(scratch.url("fakebin/git").path, 0o755) == 0)
        var environment = scratch.environment()
        environment["PATH"] = scratch.url("fakebin").path + ":/usr/bin:/bin"
        let plan = try ContextPlanner(maxBytes: 1 << 20, environment: environment).plan([dir.path])
        #expect(plan.notes.first?.hasPrefix("git could not list \(dir.path) (clean)") == true, "\(plan.notes)")
    }

    /// The real thing, as root: git refuses a repository another user owns.
    @Test(.enabled(if: gitPath != nil && getuid() == 0))
    func aRepositoryOwnedBySomeoneElseIsRefusedByGitAndSaid() throws {
        let scratch = try Scratch()
        let repo = try scratch.repository("repo")
        try scratch.write("*.log\n", to: "repo/.gitignore")
        try scratch.write("log", to: "repo/a.log")
        #expect(chown(repo.path, 65534, 65534) == 0)
        #expect(chown(repo.appendingPathComponent(".git").path, 65534, 65534) == 0)
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([repo.path])
        #expect(Self.relative(plan, to: repo) == ["a.log"])
        #expect(plan.notes.first?.contains("dubious ownership") == true, "\(plan.notes)")
    }

    // MARK: - What is planned, and how

    @Test func filesArePlannedNotDecoded() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        let latin1: [UInt8] = [0x63, 0x61, 0x66, 0xE9, 0x0A]  // "café\n" in Latin-1
        let binary: [UInt8] = [0x00, 0xFF, 0x00, 0x01]
        try Data(latin1).write(to: dir.appendingPathComponent("latin1.txt"))
        try Data(binary).write(to: dir.appendingPathComponent("zeros.bin"))
        let encoding = ContextEncoding(name: "latin-1", errors: .replace)
        let plan = try ContextPlanner(maxBytes: 1 << 20, encoding: encoding, environment: scratch.environment())
            .plan([dir.path])
        #expect(plan.source.encoding == encoding)
        #expect(plan.source.files.map(\.size) == [latin1.count, binary.count])
        #expect(try plan.source.files.map { try Self.bytes(of: $0) } == [latin1, binary])
        for file in plan.source.files {
            guard case .below(_, let path) = file.content else {
                Issue.record("\(file.label) is not planned below its directory")
                continue
            }
            #expect(file.label == dir.path + "/" + path)
        }
    }

    @Test func shapesAndLabelsFollowTheSources() throws {
        let scratch = try Scratch()
        try scratch.write("{\"a\": 1}", to: "data.json")
        try scratch.write("{\"b\": 2}", to: "UPPER.JSON")
        try scratch.write("text", to: "notes.txt")
        try scratch.write("in dir", to: "dir/x.txt")
        let planner = scratch.planner(maxBytes: 1 << 20)
        let json = scratch.url("data.json").path

        let single = try planner.plan([json])
        #expect(single.source.shape == .json)
        #expect(single.source.files.map(\.label) == [json])
        guard case .open = single.source.files.first?.content else {
            Issue.record("a named file is opened when planned")
            return
        }
        #expect(try planner.plan([scratch.url("UPPER.JSON").path]).source.shape == .json)
        var asText = planner
        asText.parseSingleJSONFile = false
        #expect(try asText.plan([json]).source.shape == .text)
        #expect(try planner.plan([scratch.url("notes.txt").path]).source.shape == .text)

        let dir = scratch.url("dir").path
        let several = try planner.plan([scratch.url("notes.txt").path, dir + "/", json])
        #expect(several.source.shape == .documents)
        #expect(several.source.files.map(\.label) == [scratch.url("notes.txt").path, dir + "/x.txt", json])
        #expect(try planner.plan([dir]).source.shape == .documents, "a directory is documents even with one file")
    }

    /// Byte order, not Swift's `String` order (which treats `e` + combining acute and `é` as equal).
    @Test func entriesComeInByteOrder() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        let names = ["\u{E9}.txt", "f.txt", "e\u{301}.txt", "B.txt", "a.txt", "a/b.txt"]
        for name in names { try scratch.write(name, to: "dir/\(name)") }
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([dir.path])
        let expected = ["B.txt", "a/b.txt", "a.txt", "e\u{301}.txt", "f.txt", "\u{E9}.txt"]
        #expect(Self.relative(plan, to: dir).map { Array($0.utf8) } == expected.map { Array($0.utf8) })
    }

    @Test func nestingDeeperThanTheLimitIsNamed() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        let deep = Array(repeating: "d", count: ContextPlanner.maxDepth + 1).joined(separator: "/")
        try scratch.write("deep", to: "dir/\(deep)/deep.txt")
        try scratch.write("shallow", to: "dir/\(deep.dropLast(2))/ok.txt")
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([dir.path])
        #expect(Self.relative(plan, to: dir) == ["\(deep.dropLast(2))/ok.txt"])
        #expect(plan.skipped.map(\.label) == [dir.path + "/" + deep])
        #expect(plan.skipped.first?.reason == "nested more than 64 directories deep, skipped")
    }

    @Test func missingAndSpecialSourcesAreClearErrorsAndAnEmptyDirectoryIsNot() throws {
        let scratch = try Scratch()
        let planner = scratch.planner(maxBytes: 1 << 20)
        let missing = scratch.url("nope").path
        #expect(throws: ContextLoadError.self) { try planner.plan([missing]) }
        do {
            _ = try planner.plan([missing])
        } catch let error as ContextLoadError {
            #expect(error.description == "context \(missing): no such file or directory")
            #expect(!error.isTooLarge)
        }
        do {
            _ = try planner.plan(["/dev/null"])
            Issue.record("a device was planned")
        } catch let error as ContextLoadError {
            #expect(error.description == "context /dev/null is not a regular file or a directory")
        }
        let empty = try scratch.directory("empty")
        let plan = try planner.plan([empty.path])
        #expect(plan.source.shape == .documents)
        #expect(plan.source.files.isEmpty)
        #expect(plan.totalBytes == 0)
    }

    // MARK: - Limits

    /// A 10 GiB sparse file: refused from its size alone, at once (reading it first would take the host down).
    @Test func aHugeSparseFileIsRefusedFromItsSize() throws {
        let scratch = try Scratch()
        let dir = try scratch.directory("dir")
        let huge = dir.appendingPathComponent("huge.log").path
        let fd = open(huge, O_WRONLY | O_CREAT, 0o600)
        #expect(fd >= 0)
        #expect(ftruncate(fd, 10 << 30) == 0)
        close(fd)
        let planner = scratch.planner(maxBytes: 1 << 30)
        for source in [dir.path, huge] {
            let start = ContinuousClock.now
            do {
                _ = try planner.plan([source])
                Issue.record("a 10 GiB file was planned under a 1 GiB limit")
            } catch let error as ContextLoadError {
                #expect(error.isTooLarge)
                #expect(
                    error.description
                        == "the context is more than --max-context (1 GiB): 10 GiB in 1 file so far (\(huge) is "
                        + "10 GiB); pass a larger --max-context (e.g. --max-context 10G) or fewer files")
            }
            #expect(ContinuousClock.now - start < .seconds(2))
        }
    }

    @Test func smallFilesTogetherOverTheLimitAreRefused() throws {
        let scratch = try Scratch()
        for name in ["a", "b", "c"] { try scratch.write(String(repeating: "x", count: 600), to: "dir/\(name).txt") }
        do {
            _ = try scratch.planner(maxBytes: 1500).plan([scratch.url("dir").path])
            Issue.record("1,800 bytes were planned under a 1,500-byte limit")
        } catch let error as ContextLoadError {
            #expect(error.isTooLarge)
            #expect(error.description.hasPrefix("the context is more than --max-context (1.5 KiB): 1.8 KiB in 3 files"))
            #expect(error.description.contains("--max-context 1M"))
        }
        #expect(try scratch.planner(maxBytes: 1800).plan([scratch.url("dir").path]).totalBytes == 1800)
    }

    @Test(arguments: [
        (0, "0 bytes"), (1, "1 byte"), (1023, "1023 bytes"), (1024, "1 KiB"), (1536, "1.5 KiB"),
        (1_048_575, "1 MiB"), (5 << 20, "5 MiB"), (1_288_490_189, "1.2 GiB"), (10 << 30, "10 GiB"),
    ])
    func bytesAreDescribedInBinaryUnits(bytes: Int, text: String) {
        #expect(ContextPlanner.describeBytes(bytes) == text)
    }

    // MARK: - Standard input

    @Test func standardInputFromAPipeIsSpooledToAnUnlinkedPrivateFile() async throws {
        let scratch = try Scratch()
        let payload = (0..<(3 << 20) + 123).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let pipe = try Self.pipe()
        let writer = Self.write(payload, to: pipe.write)
        defer { close(pipe.read) }
        let planner = scratch.planner(maxBytes: 8 << 20)
        let plan = try await Self.within(seconds: 30) { try planner.plan(["-"], standardInput: pipe.read) }
        #expect(writer.count == payload.count)
        #expect(plan.source.shape == .text)
        let file = try #require(plan.source.files.first)
        #expect(plan.source.files.count == 1)
        #expect(file.label == "<stdin>")
        #expect(file.size == payload.count)
        #expect(try Self.bytes(of: file) == payload)
        guard case .open(let descriptor) = file.content else {
            Issue.record("standard input is not planned as an open file")
            return
        }
        var info = stat()
        #expect(fstat(descriptor.fd, &info) == 0)
        #expect(info.st_nlink == 0, "the spool file has no name")
        #expect(info.st_mode & 0o777 == 0o600)
    }

    @Test func standardInputOverTheLimitIsRefusedWithoutReadingItAll() async throws {
        let scratch = try Scratch()
        signal(SIGPIPE, SIG_IGN)  // the writer finds the pipe closed once the planner has given up
        let pipe = try Self.pipe()
        let writer = Self.write([UInt8](repeating: 0x61, count: 64 << 20), to: pipe.write)
        let planner = scratch.planner(maxBytes: 1 << 20)
        let refusal = try await Self.within(seconds: 30) { () -> ContextLoadError? in
            do {
                _ = try planner.plan(["-"], standardInput: pipe.read)
                return nil
            } catch let error as ContextLoadError {
                return error
            }
        }
        let written = writer.count
        close(pipe.read)
        #expect(refusal?.isTooLarge == true)
        #expect(refusal?.description.hasPrefix("standard input holds more than --max-context (1 MiB)") == true)
        #expect(refusal?.description.contains("--max-context 2M") == true, "\(String(describing: refusal))")
        #expect(written < 8 << 20, "the planner read on after the limit: \(written) bytes written")

        // What other sources take is no longer left for standard input.
        try scratch.write(String(repeating: "x", count: 700 << 10), to: "big.txt")
        let second = try Self.pipe()
        _ = Self.write([UInt8](repeating: 0x62, count: 400 << 10), to: second.write)
        defer { close(second.read) }
        #expect(throws: ContextLoadError.self) {
            try planner.plan([scratch.url("big.txt").path, "-"], standardInput: second.read)
        }
    }

    @Test func standardInputFromAFileIsUsedInPlaceOrFromItsOffset() throws {
        let scratch = try Scratch()
        try scratch.write("0123456789", to: "input.txt")
        let planner = scratch.planner(maxBytes: 1 << 20)
        let fd = open(scratch.url("input.txt").path, O_RDONLY | O_CLOEXEC)
        defer { close(fd) }

        let whole = try planner.plan(["-"], standardInput: fd)
        #expect(whole.source.files.map(\.size) == [10])
        #expect(try Self.bytes(of: whole.source.files[0]) == Array("0123456789".utf8))

        #expect(lseek(fd, 4, SEEK_SET) == 4)
        let rest = try planner.plan(["-"], standardInput: fd)
        #expect(rest.source.files.map(\.size) == [6])
        #expect(try Self.bytes(of: rest.source.files[0]) == Array("456789".utf8))

        #expect(lseek(fd, 0, SEEK_SET) == 0)
        #expect(throws: ContextLoadError.self) { try planner.plan(["-", "-"], standardInput: fd) }
        #expect(throws: ContextLoadError.self) { try scratch.planner(maxBytes: 9).plan(["-"], standardInput: fd) }
    }

    // MARK: - Opening later

    /// Planned files are opened when the context is sent, below their directory and never through a link: a file or
    /// a directory swapped for a link after planning is refused, not followed.
    @Test func aFileSwappedForALinkAfterPlanningIsNotOpened() throws {
        let scratch = try Scratch()
        try scratch.write("TOP-SECRET-VALUE", to: "outside/notes.txt")
        try scratch.write("TOP-SECRET-VALUE", to: "outside/b.txt")
        try scratch.write("plain", to: "dir/b.txt")
        try scratch.write("plain", to: "dir/sub/notes.txt")
        let dir = scratch.url("dir")
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([dir.path])
        #expect(Self.relative(plan, to: dir) == ["b.txt", "sub/notes.txt"])
        #expect(try plan.source.files.map { try Self.bytes(of: $0) } == [Array("plain".utf8), Array("plain".utf8)])

        #expect(unlink(dir.appendingPathComponent("b.txt").path) == 0)
        #expect(symlink(scratch.url("outside/b.txt").path, dir.appendingPathComponent("b.txt").path) == 0)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("sub"))
        #expect(symlink(scratch.url("outside").path, dir.appendingPathComponent("sub").path) == 0)
        for file in plan.source.files {
            #expect(throws: ContextLoadError.self) { _ = try file.openForReading() }
        }
    }

    /// The attack from the field, against the later open: while the context is opened over and over, a planned file
    /// flips between a plain file and a link to a secret. The secret is never read.
    @Test func aFileFlippingToALinkIsNeverReadThrough() throws {
        let scratch = try Scratch()
        try scratch.write("TOP-SECRET-VALUE", to: "outside/secret.txt")
        try scratch.write("plain", to: "dir/b.txt")
        let dir = scratch.url("dir")
        let plan = try scratch.planner(maxBytes: 1 << 20).plan([dir.path])
        let file = try #require(plan.source.files.first)
        let stop = Mutex(false)
        let swaps = Mutex(0)
        let secret = scratch.url("outside/secret.txt").path
        let finished = DispatchSemaphore(value: 0)
        let swapper = Thread {
            let target = dir.appendingPathComponent("b.txt").path
            let link = dir.appendingPathComponent("b.link").path
            let plain = dir.appendingPathComponent("b.plain").path
            while !stop.withLock({ $0 }) {
                unlink(link)
                symlink(secret, link)
                rename(link, target)
                _ = FileManager.default.createFile(atPath: plain, contents: Data("plain".utf8))
                rename(plain, target)
                swaps.withLock { $0 += 1 }
            }
            finished.signal()
        }
        swapper.start()
        defer {
            // The scratch directory goes when this returns: the swapper must not be writing into it any more.
            stop.withLock { $0 = true }
            finished.wait()
        }
        var opened = 0
        var refused = 0
        let deadline = ContinuousClock.now + .seconds(1)
        while ContinuousClock.now < deadline {
            do {
                let bytes = try Self.bytes(of: file)
                #expect(bytes == Array("plain".utf8))
                opened += 1
            } catch {
                refused += 1
            }
        }
        #expect(opened + refused > 3)
        #expect(swaps.withLock { $0 } > 10, "the attack really ran")
    }

    // MARK: - Speed

    /// 50,000 files are planned with metadata only: no file is opened, no process but one git per directory.
    @Test(arguments: [false, true])
    func fiftyThousandFilesArePlannedQuickly(inGit: Bool) throws {
        guard !inGit || Self.gitPath != nil else { return }
        let scratch = try Scratch(inMemory: true)
        let dir = inGit ? try scratch.repository("dir") : try scratch.directory("dir")
        for folder in 0..<50 {
            let path = dir.appendingPathComponent("f\(folder)").path
            #expect(mkdir(path, 0o755) == 0)
            for file in 0..<1000 {
                let fd = open("\(path)/file\(file).txt", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
                _ = Glibc.write(fd, "x", 1)
                close(fd)
            }
        }
        let start = ContinuousClock.now
        let plan = try scratch.planner(maxBytes: 1 << 30).plan([dir.path])
        let elapsed = ContinuousClock.now - start
        #expect(plan.source.files.count == 50_000)
        #expect(plan.totalBytes == 50_000)
        // Well under a second alone; the bound leaves room for the whole suite running in parallel on two cores.
        #expect(elapsed < .seconds(3), "50,000 files took \(elapsed)")
    }
}

// MARK: - Helpers

extension ContextPlannerTests {
    /// A private directory for one test (removed at the end), with its own HOME so the user's git config and
    /// excludes, and the real cache directory, stay out of it.
    final class Scratch {
        let root: URL

        /// - Parameter inMemory: under /dev/shm when it is there (creating 50,000 files on a busy disk takes longer
        ///   than the test is about).
        init(inMemory: Bool = false) throws {
            let base =
                inMemory && access("/dev/shm", W_OK) == 0
                ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
            root = base.appendingPathComponent("rlm-planner-\(UUID().uuidString)")
            try FileManager.default.createDirectory(
                at: root.appendingPathComponent("home"), withIntermediateDirectories: true)
        }

        deinit { try? FileManager.default.removeItem(at: root) }

        func url(_ path: String) -> URL { root.appendingPathComponent(path) }

        /// HOME, XDG_CONFIG_HOME and XDG_CACHE_HOME inside the scratch directory, no system git config, and git
        /// stopped from looking for a repository above it.
        func environment() -> [String: String] {
            [
                "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
                "HOME": url("home").path, "XDG_CONFIG_HOME": url("home/.config").path,
                "XDG_CACHE_HOME": url("home/.cache").path, "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CEILING_DIRECTORIES": root.deletingLastPathComponent().path,
            ]
        }

        func planner(maxBytes: Int) -> ContextPlanner {
            ContextPlanner(maxBytes: maxBytes, environment: environment())
        }

        func write(_ text: String, to path: String) throws {
            let file = url(path)
            try FileManager.default.createDirectory(
                at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: file)
        }

        func directory(_ path: String) throws -> URL {
            try FileManager.default.createDirectory(at: url(path), withIntermediateDirectories: true)
            return url(path)
        }

        func repository(_ path: String) throws -> URL {
            let directory = try directory(path)
            try git(["init", "-q"], in: directory)
            return directory
        }

        /// Runs git in `directory` and returns the lines it printed; a failure throws.
        @discardableResult
        func git(_ arguments: [String], in directory: URL) throws -> [String] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try #require(ContextPlannerTests.gitPath))
            process.arguments =
                ["-C", directory.path, "-c", "user.email=test@example.com", "-c", "user.name=Test"] + arguments
            process.environment = environment()
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw ContextLoadError("git \(arguments.joined(separator: " ")) failed")
            }
            return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        }
    }

    struct TimedOut: Error {}

    /// Runs `body` on a thread of its own and waits at most `seconds` for it: a planner that blocks fails the test
    /// instead of hanging the suite (and never ties up a thread of the cooperative pool).
    static func within<T: Sendable>(seconds: Int, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let finished = Mutex(false)
            let finish: @Sendable (Result<T, any Error>) -> Void = { result in
                let first = finished.withLock { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(with: result) }
            }
            Thread { finish(Result { try body() }) }.start()
            Task {
                try? await Task.sleep(for: .seconds(seconds))
                finish(.failure(TimedOut()))
            }
        }
    }

    /// The labels of the planned files, relative to `directory`.
    static func relative(_ plan: ContextPlanner.Plan, to directory: URL) -> [String] {
        let prefix = directory.path + "/"
        return plan.source.files.map {
            $0.label.hasPrefix(prefix) ? String($0.label.dropFirst(prefix.count)) : $0.label
        }
    }

    /// Everything the sandbox would read of `file`, through ``ContextFile/openForReading()``.
    static func bytes(of file: ContextFile) throws -> [UInt8] {
        guard let fd = try file.openForReading() else {
            if case .data(let data) = file.content { return Array(data) }
            return []
        }
        defer { close(fd) }
        var result = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while result.count < file.size {
            let count = pread(fd, &buffer, buffer.count, offset)
            guard count > 0 else { break }
            result += buffer[0..<count]
            offset += off_t(count)
        }
        return Array(result.prefix(file.size))
    }

    static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw ContextLoadError("pipe failed") }
        return (fds[0], fds[1])
    }

    /// Bytes a writer thread has written so far.
    final class Progress: Sendable {
        let written = Mutex(0)
        var count: Int { written.withLock { $0 } }
    }

    /// Writes `bytes` into `fd` from a thread, then closes it.
    static func write(_ bytes: [UInt8], to fd: Int32) -> Progress {
        let progress = Progress()
        Thread {
            var offset = 0
            while offset < bytes.count {
                let count = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, min($0.count, 1 << 16)) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                offset += count
                progress.written.withLock { $0 = offset }
            }
            close(fd)
        }.start()
        return progress
    }

    static func bindUnixSocket(at path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ContextLoadError("socket failed") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8).prefix(raw.count - 1))
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            close(fd)
            throw ContextLoadError("bind \(path) failed")
        }
        return fd
    }
}
