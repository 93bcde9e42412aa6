import Foundation
import Glibc
import RLM
import Synchronization
import Testing

/// The context loader opens each file once, relative to its directory and without following links, checks it is a
/// regular file inside the limit before reading, and reads no further than the limit.
@Suite("Context loader")
struct ContextLoaderTests {
    static func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-loader-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func documents(_ loaded: ContextLoader.Loaded) -> [String] {
        switch loaded.context {
        case .documents(let documents): return documents
        case .text(let text): return [text]
        case .json: return []
        }
    }

    @Test func aLinkInsideADirectoryIsNeverFollowed() throws {
        let outside = try Self.scratch()
        let secret = outside.appendingPathComponent("secret.txt")
        try "TOP-SECRET-VALUE".write(to: secret, atomically: true, encoding: .utf8)
        let dir = try Self.scratch()
        try "hello".write(to: dir.appendingPathComponent("a.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            at: dir.appendingPathComponent("b.txt"), withDestinationURL: secret)
        try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("sub"), withDestinationURL: outside)
        let loaded = try ContextLoader().load([dir.path])
        let all = Self.documents(loaded).joined()
        #expect(all.contains("hello"))
        #expect(!all.contains("TOP-SECRET-VALUE"))
        #expect(loaded.notices.contains { $0.path.hasSuffix("b.txt") && $0.reason.contains("symbolic link") })
        #expect(loaded.notices.contains { $0.path.hasSuffix("sub") && $0.reason.contains("symbolic link") })
    }

    /// The attack from the field: while the loader works, a listed file is swapped for a link to a file outside the
    /// directory, over and over. The secret must never be read.
    @Test func aFileSwappedForALinkMidLoadIsNeverRead() async throws {
        let outside = try Self.scratch()
        let secret = outside.appendingPathComponent("secret.txt")
        try "TOP-SECRET-VALUE".write(to: secret, atomically: true, encoding: .utf8)
        let dir = try Self.scratch()
        try String(repeating: "log line\n", count: 200_000).write(
            to: dir.appendingPathComponent("a-big.log"), atomically: true, encoding: .utf8)
        let target = dir.appendingPathComponent("b.txt")
        try "plain".write(to: target, atomically: true, encoding: .utf8)
        let stop = Mutex(false)
        let swaps = Mutex(0)
        let swapper = Thread {
            let link = dir.appendingPathComponent("b.link").path
            let plain = dir.appendingPathComponent("b.plain").path
            while !stop.withLock({ $0 }) {
                // Atomically replace b.txt by a link, then by a plain file again.
                unlink(link)
                symlink(secret.path, link)
                rename(link, target.path)
                FileManager.default.createFile(atPath: plain, contents: Data("plain".utf8))
                rename(plain, target.path)
                swaps.withLock { $0 += 1 }
            }
        }
        swapper.start()
        defer { stop.withLock { $0 = true } }
        var loads = 0
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            let loaded = try ContextLoader().load([dir.path])
            #expect(!Self.documents(loaded).joined().contains("TOP-SECRET-VALUE"))
            loads += 1
        }
        stop.withLock { $0 = true }
        #expect(loads > 3)
        #expect(swaps.withLock { $0 } > 10, "the attack really ran")
    }

    /// A 64 GiB sparse file: refused from its size alone (reading it first would take the host down).
    @Test func aHugeSparseFileIsRefusedFromItsSize() throws {
        let dir = try Self.scratch()
        let file = dir.appendingPathComponent("huge.log").path
        let fd = open(file, O_WRONLY | O_CREAT, 0o600)
        #expect(fd >= 0)
        #expect(ftruncate(fd, 64 << 30) == 0)
        close(fd)
        let start = ContinuousClock.now
        #expect(throws: ContextLoader.LoadError.self) { try ContextLoader(maxTotalBytes: 4_000).load([dir.path]) }
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    /// No path component can be swapped: a directory inside the context flips between a real directory and a link
    /// to one outside it; the loader opens every component relative to its parent's descriptor without following
    /// links, so the outside file is never read.
    @Test func aDirectorySwappedForALinkMidLoadIsNeverFollowed() async throws {
        let outside = try Self.scratch()
        try "TOP-SECRET-VALUE".write(
            to: outside.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let dir = try Self.scratch()
        let sub = dir.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try "plain".write(to: sub.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        try String(repeating: "line\n", count: 100_000).write(
            to: dir.appendingPathComponent("a.log"), atomically: true, encoding: .utf8)
        let stop = Mutex(false)
        let swaps = Mutex(0)
        let swapper = Thread {
            let real = dir.appendingPathComponent("sub.real").path
            let link = dir.appendingPathComponent("sub.link").path
            while !stop.withLock({ $0 }) {
                unlink(link)
                symlink(outside.path, link)
                rename(sub.path, real)
                rename(link, sub.path)
                unlink(sub.path)
                rename(real, sub.path)
                swaps.withLock { $0 += 1 }
            }
        }
        swapper.start()
        defer { stop.withLock { $0 = true } }
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            let loaded = try ContextLoader().load([dir.path])
            #expect(!Self.documents(loaded).joined().contains("TOP-SECRET-VALUE"))
        }
        stop.withLock { $0 = true }
        #expect(swaps.withLock { $0 } > 10, "the attack really ran")
    }

    @Test func aFileOverTheLimitIsRefusedBeforeItIsRead() throws {
        let dir = try Self.scratch()
        let file = dir.appendingPathComponent("big.txt")
        try String(repeating: "x", count: 10_000).write(to: file, atomically: true, encoding: .utf8)
        do {
            _ = try ContextLoader(maxTotalBytes: 4_000).load([file.path])
            Issue.record("expected a refusal")
        } catch let error as ContextLoader.LoadError {
            #expect(error.description.contains("limit"))
            #expect(error.description.contains("big.txt"))
        }
    }

    @Test func aNulByteAnywhereMakesAFileBinary() throws {
        let dir = try Self.scratch()
        var bytes = Data(String(repeating: "text ", count: 4_000).utf8)  // 20 KB of text, then a NUL
        bytes.append(0)
        try bytes.write(to: dir.appendingPathComponent("late-nul.txt"))
        try "fine".write(to: dir.appendingPathComponent("ok.txt"), atomically: true, encoding: .utf8)
        let loaded = try ContextLoader().load([dir.path])
        #expect(Self.documents(loaded).count == 1)
        #expect(loaded.notices.contains { $0.path.hasSuffix("late-nul.txt") && $0.reason.contains("binary") })
    }

    @Test func standardInputIsReadNoFurtherThanTheLimit() throws {
        let asked = Mutex(0)
        do {
            _ = try ContextLoader(maxTotalBytes: 100).load(["-"]) { maxBytes in
                asked.withLock { $0 = maxBytes }
                return Data(repeating: UInt8(ascii: "a"), count: maxBytes)
            }
            Issue.record("expected a refusal")
        } catch let error as ContextLoader.LoadError {
            #expect(error.description.contains("stdin"))
        }
        #expect(asked.withLock { $0 } == 101, "the reader was asked for the limit plus one byte, not for everything")
        #expect(throws: ContextLoader.LoadError.self) {
            try ContextLoader().load(["-"]) { _ in Data([0xFF, 0xFE, 0x41]) }
        }
    }

    @Test func missingAndSpecialSourcesAreClearErrors() throws {
        #expect(throws: ContextLoader.LoadError.self) { try ContextLoader().load(["/nonexistent/rlm-context"]) }
        #expect(throws: ContextLoader.LoadError.self) { try ContextLoader().load(["/dev/null"]) }
        let empty = try Self.scratch()
        #expect(throws: ContextLoader.LoadError.self) { try ContextLoader().load([empty.path]) }
    }
}
