import Foundation
import Glibc
import RLM
import Synchronization
import Testing

@testable import RLMSandbox

/// Contexts built inside the sandbox from files streamed down the data pipe: decoding, measuring, skipping, and the
/// host never holding the bytes.
extension SandboxTests {
    @Suite("Process sandbox: contexts streamed from files")
    struct ContextStreamingTests {
        /// A scratch directory with files, removed afterwards.
        final class Scratch {
            let url: URL
            init() throws {
                url = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-stream-\(UUID().uuidString)")
                try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            }
            deinit { try? FileManager.default.removeItem(at: url) }

            @discardableResult
            func write(_ name: String, _ data: Data) throws -> String {
                let path = url.appendingPathComponent(name).path
                try data.write(to: URL(fileURLWithPath: path))
                return path
            }

            /// A file opened the way the planner opens a named file.
            func open(_ name: String) throws -> ContextFile {
                let path = url.appendingPathComponent(name).path
                let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                #expect(fd >= 0)
                var info = stat()
                fstat(fd, &info)
                return ContextFile(label: name, size: Int(info.st_size), content: .open(ContextDescriptor(fd: fd)))
            }

            /// The directory, opened the way the planner opens one.
            func directory() -> ContextDirectory {
                ContextDirectory(fd: Glibc.open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC))
            }
        }

        private func load(
            _ source: ContextSource, sample: Int = 64,
            _ check: (ContextSummary, any SandboxSession) async throws -> Void
        ) async throws {
            var configuration = testConfiguration(timeout: .seconds(60), memoryMB: 1024)
            configuration.cellTimeout = .seconds(60)
            try await withTestSession(configuration) { (session: any SandboxSession) async throws in
                let summary = try await session.loadContext(source, name: "context", sample: sample)
                try await check(summary, session)
            }
        }

        /// Above the 1 MiB fast-path threshold: the str is built in place while every chunk is ASCII.
        @Test func aLargeASCIIFileBecomesOneStrMeasuredOnTheWay() async throws {
            let scratch = try Scratch()
            let line = "2026-11-21 12:00:01 ERROR svc-7 request failed\n"
            let text = String(repeating: line, count: 60_000)  // 2.8 MB
            try scratch.write("big.log", Data(text.utf8))
            try await load(ContextSource(shape: .text, files: [try scratch.open("big.log")])) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.type == "str")
                #expect(summary.bytes == text.utf8.count)
                #expect(summary.characters == text.utf8.count)
                #expect(summary.lines == 60_000)
                #expect(summary.head == String(text.prefix(64)))
                let result = try await session.run(
                    "print(len(context), context.count('ERROR'), context.isascii(), context == context.encode().decode())"
                )
                #expect(result.stdout == "\(text.utf8.count) 60000 True True\n")
            }
        }

        /// The sandbox gets the bytes, never a descriptor of the host's file: after a load, no descriptor inside points
        /// at anything but pipes, /dev/null and the sandbox's own files.
        @Test func noHostFileDescriptorEntersTheSandbox() async throws {
            let scratch = try Scratch()
            try scratch.write("data.txt", Data("payload\n".utf8))
            try await load(ContextSource(shape: .text, files: [try scratch.open("data.txt")])) {
                (_: ContextSummary, session: any SandboxSession) async throws in
                let result = try await session.run(
                    """
                    import os
                    links = []
                    for f in os.listdir('/proc/self/fd'):
                        try:
                            links.append(os.readlink('/proc/self/fd/' + f))
                        except OSError:
                            pass
                    print(sorted(set(l.split(':')[0] if ':' in l else l for l in links)))
                    """)
                #expect(!result.stdout.contains(scratch.url.path), "\(result.stdout)")
                #expect(!result.stdout.contains("data.txt"), "\(result.stdout)")
            }
        }

        /// Text that turns non-ASCII after an ASCII start longer than a chunk, in every width CPython stores: the
        /// str is assembled at the right width, equal to the same text decoded by Python itself.
        @Test(arguments: ["é", "Ω€", "😀"])
        func nonASCIITextAfterAnASCIIStartIsAssembledAtTheRightWidth(tail: String) async throws {
            let scratch = try Scratch()
            let ascii = String(repeating: "plain ascii line\n", count: 100_000)  // 1.7 MB: the fast path starts
            let mixed = String(repeating: "mixed \(tail) line\n", count: 50_000)
            let text = ascii + mixed + "end"
            try scratch.write("mixed.txt", Data(text.utf8))
            try await load(ContextSource(shape: .text, files: [try scratch.open("mixed.txt")])) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.characters == text.unicodeScalars.count)
                #expect(summary.lines == 150_001)
                let result = try await session.run(
                    "print(len(context), context.count('\(tail)'), context[-3:], context == context.encode().decode())")
                #expect(result.stdout == "\(text.unicodeScalars.count) 50000 end True\n", "\(result)")
            }
        }

        /// Also when the only bad byte ends the file (a truncated UTF-8 sequence that shows only at the end).
        @Test(arguments: [" cr\u{E8}me\n", ""])
        func autoReadsANonUTF8FileAsLatin1AndSaysSo(rest: String) async throws {
            let scratch = try Scratch()
            try scratch.write("menu.txt", Data("caf".utf8) + Data([0xE9]) + Data(rest.utf8))
            try await load(ContextSource(shape: .text, files: [try scratch.open("menu.txt")])) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.decodedAs.first?.reason.contains("Latin-1") == true)
                let result = try await session.run("print('café' in context, len(context))")
                #expect(result.stdout.hasPrefix("True "), "\(result)")
            }
        }

        @Test func strictUTF8RefusesAndNamesTheFlags() async throws {
            let scratch = try Scratch()
            try scratch.write("menu.txt", Data("caf".utf8) + Data([0xE9]))
            let source = ContextSource(
                shape: .text, files: [try scratch.open("menu.txt")],
                encoding: ContextEncoding(name: "utf-8", errors: .strict))
            try await withTestSession { (session: any SandboxSession) async throws in
                do {
                    _ = try await session.loadContext(source, name: "context", sample: 10)
                    Issue.record("a non-UTF-8 file loaded under strict utf-8")
                } catch let error as ContextLoadError {
                    #expect(error.description.contains("offset 3"))
                    #expect(error.description.contains("--encoding"))
                    #expect(error.description.contains("--encoding-errors replace"))
                }
                // The REPL is still usable.
                #expect(try await session.run("print(1)").stdout == "1\n")
            }
        }

        @Test func lossyModeReplacesBadBytes() async throws {
            let scratch = try Scratch()
            try scratch.write("menu.txt", Data("caf".utf8) + Data([0xE9, 0x21]))
            let source = ContextSource(
                shape: .text, files: [try scratch.open("menu.txt")],
                encoding: ContextEncoding(name: "utf-8", errors: .replace))
            try await load(source) { (_: ContextSummary, session: any SandboxSession) async throws in
                #expect(try await session.run("print(ascii(context))").stdout == "'caf\\ufffd!'\n")
            }
        }

        @Test func aByteOrderMarkDecidesUTF16() async throws {
            let scratch = try Scratch()
            var data = Data([0xFF, 0xFE])
            data.append("hello wörld\n".data(using: .utf16LittleEndian)!)
            try scratch.write("utf16.txt", data)
            try await load(ContextSource(shape: .text, files: [try scratch.open("utf16.txt")])) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.characters == 12)
                #expect(summary.lines == 1, "counted by the worker: the host cannot count UTF-16 bytes")
                #expect(summary.decodedAs.first?.reason.contains("UTF-16") == true)
                #expect(try await session.run("print(context.strip())").stdout == "hello wörld\n")
            }
        }

        @Test func documentsSkipBinariesAndKeepLabels() async throws {
            let scratch = try Scratch()
            try scratch.write("a.txt", Data("alpha\n".utf8))
            try scratch.write("blob.bin", Data([0x89, 0x50, 0x4E, 0x47, 0x00, 0x01, 0x02]))
            try scratch.write("c.txt", Data("gamma".utf8))
            let directory = scratch.directory()
            let files = ["a.txt", "blob.bin", "c.txt"].map {
                ContextFile(label: "repo/\($0)", size: 100, content: .below(directory, path: $0))
            }
            try await load(ContextSource(shape: .documents, files: files)) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.items == 2)
                #expect(summary.skipped.map(\.label) == ["repo/blob.bin"])
                #expect(summary.skipped.first?.reason.contains("binary") == true)
                #expect(summary.itemHeads.first?.hasPrefix("### repo/a.txt\nalpha") == true)
                #expect(summary.lines == 0, "documents' lines are not counted")
                #expect(
                    try await session.run("print(context)").stdout
                        == "['### repo/a.txt\\nalpha\\n', '### repo/c.txt\\ngamma']\n")
            }
        }

        /// A file swapped for a symbolic link between planning and sending is not followed: the host skips it and
        /// says why; the rest loads.
        @Test func aFileSwappedForALinkAfterPlanningIsNotFollowed() async throws {
            let scratch = try Scratch()
            try scratch.write("a.txt", Data("alpha".utf8))
            try scratch.write("b.txt", Data("beta".utf8))
            let directory = scratch.directory()
            let files = ["a.txt", "b.txt"].map {
                ContextFile(label: $0, size: 5, content: .below(directory, path: $0))
            }
            let b = scratch.url.appendingPathComponent("b.txt").path
            unlink(b)
            symlink("/etc/passwd", b)
            try await load(ContextSource(shape: .documents, files: files)) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.items == 1)
                #expect(summary.skipped.first?.label == "b.txt")
                let result = try await session.run("print(any('root:' in d for d in context))")
                #expect(result.stdout == "False\n")
            }
        }

        /// A file that grew after it was planned is cut at its planned size (the limits were checked on that).
        @Test func aFileThatGrewIsCutAtItsPlannedSize() async throws {
            let scratch = try Scratch()
            try scratch.write("log.txt", Data("0123456789".utf8))
            let file = try scratch.open("log.txt")
            let handle = try FileHandle(forWritingTo: scratch.url.appendingPathComponent("log.txt"))
            handle.seekToEndOfFile()
            handle.write(Data("more that came later".utf8))
            try handle.close()
            try await load(ContextSource(shape: .text, files: [file])) {
                (summary: ContextSummary, _: any SandboxSession) async throws in
                #expect(summary.characters == 10)
                #expect(summary.head == "0123456789")
            }
        }

        @Test func jsonIsParsedAndDescribed() async throws {
            let scratch = try Scratch()
            try scratch.write("data.json", Data(#"{"users": [1, 2, 3], "name": "x"}"#.utf8))
            let source = ContextSource(shape: .json, files: [try scratch.open("data.json")])
            try await load(source) { (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.type == "dict")
                #expect(summary.items == 2)
                #expect(summary.keys == ["users", "name"])
                #expect(try await session.run("print(context['users'][2])").stdout == "3\n")
            }
        }

        @Test func invalidJSONIsAnErrorThatSaysHowToLoadItAsText() async throws {
            let scratch = try Scratch()
            try scratch.write("data.json", Data("{not json".utf8))
            try await withTestSession { (session: any SandboxSession) async throws in
                await #expect(throws: ContextLoadError.self) {
                    _ = try await session.loadContext(
                        ContextSource(shape: .json, files: [try scratch.open("data.json")]), name: "context",
                        sample: 10)
                }
            }
        }

        /// An empty file is an empty str, measured as such (the engine then says so instead of pretending).
        @Test func anEmptyFileIsAnEmptyContext() async throws {
            let scratch = try Scratch()
            try scratch.write("empty.txt", Data())
            try await load(ContextSource(shape: .text, files: [try scratch.open("empty.txt")])) {
                (summary: ContextSummary, session: any SandboxSession) async throws in
                #expect(summary.isEmpty)
                #expect(summary.lines == 0)
                #expect(try await session.run("print(repr(context))").stdout == "''\n")
            }
        }

        /// More text than the sandbox's memory: the worker runs out of memory building it, and the error names the
        /// flag that raises the limit; nothing is left behind.
        @Test func aContextTooBigForTheSandboxMemoryNamesTheFlag() async throws {
            let scratch = try Scratch()
            let path = scratch.url.appendingPathComponent("huge.txt").path
            let fd = Glibc.open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
            #expect(ftruncate(fd, 400 << 20) == 0)  // 400 MiB of NUL bytes, sparse
            close(fd)
            try await withTestSession(testConfiguration(timeout: .seconds(60), memoryMB: 256)) {
                (session: any SandboxSession) async throws in
                do {
                    _ = try await session.loadContext(
                        ContextSource(shape: .text, files: [try scratch.open("huge.txt")]), name: "context",
                        sample: 10)
                    Issue.record("400 MiB loaded into a 256 MiB sandbox")
                } catch let error as ContextLoadError {
                    #expect(error.description.contains("--memory"), "\(error)")
                }
            }
        }

        /// An `rlm_query` context larger than any frame streams out on the data pipe and reaches the host as a
        /// spooled file of exactly its bytes (never inside a frame); a dict goes as JSON.
        @Test func aChildContextStreamsOutAsASpooledFile() async throws {
            let seen = Mutex<[(kind: ContextSource.Shape, size: Int, head: String)]>([])
            let handler = ClosureSubcallHandler { request in
                guard case .rlmQuery(_, .streamed(let streamed), _) = request else { return .text("no context") }
                let text = spooledText(.streamed(streamed)) ?? ""
                seen.withLock {
                    $0.append((streamed.source.shape, streamed.source.totalBytes, String(text.prefix(20))))
                }
                return .text("got \(text.utf8.count)")
            }
            var configuration = testConfiguration(timeout: .seconds(60), memoryMB: 1024)
            configuration.maxFrameBytes = 1 << 20
            try await withTestSession(configuration, handler: handler) { (session: any SandboxSession) async throws in
                let big = try await session.run("print(rlm_query('q', context='é' + 'x' * (3 << 20)))")
                #expect(big.stdout == "got \((3 << 20) + 2)\n", "\(big)")
                let dict = try await session.run("print(rlm_query('q', context={'a': [1, 2]}))")
                #expect(dict.stdout == "got 11\n", "\(dict)")
                let after = try await session.run("print(rlm_query('no context'))")
                #expect(after.stdout == "no context\n", "the channel is still in step: \(after)")
            }
            let calls = seen.withLock { $0 }
            #expect(calls.map(\.kind) == [.text, .json])
            #expect(calls.first?.size == (3 << 20) + 2)
            #expect(calls.last?.head == #"{"a":[1,2]}"#)
        }
    }
}
