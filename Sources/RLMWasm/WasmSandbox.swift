import Crypto
import Foundation
import Glibc
import Logging
import RLM
import RLMSandbox
import Synchronization
import WASI
import WasmKit

/// The wasm backend: each session is CPython for WASI (``WasmRuntime``) in its own WasmKit instance, inside this
/// process, on a thread of its own. It runs the same worker over the same framed channel as the process backend
/// (the guest's stdin and stdout are the channel), so the host checks everything it sends the same way.
///
/// What isolates it is WebAssembly itself rather than the kernel: the guest reaches nothing but the imports it is
/// given. Here that is WASI with no host directory at all — its only files are a private in-memory work dir (`/tmp`)
/// capped at ``ProcessSandbox/Configuration/workDirBytes`` — an empty environment, no sockets, and no symlinks or
/// hard links. Its linear memory is capped at ``ProcessSandbox/Configuration/memoryLimitBytes`` (a denied growth is a
/// `MemoryError` in Python), its CPU by fuel (``ProcessSandbox/Configuration/cpuSeconds`` at a nominal 10⁹
/// operations a second), and each cell by the session's wall-clock timeout: an interrupt, then a kill that stops the
/// guest whether it spins in Python or waits in a host call.
public struct WasmSandbox: Sandbox {
    /// Where the runtime comes from.
    public struct Options: Sendable, Hashable {
        /// A `python-3.12.0.wasm` to run instead of the pulled one (it must still be the pinned file); `nil` uses
        /// ``WasmSandbox/runtimePath()``.
        public var runtimePath: String?

        /// - Parameter runtimePath: the runtime file; `nil` is the one `rlm sandbox pull` fetched.
        public init(runtimePath: String? = nil) {
            self.runtimePath = runtimePath
        }
    }

    /// The limits: `memoryLimitBytes` caps linear memory, `workDirBytes` the work dir, `cellTimeout`,
    /// `interruptGrace`, `startTimeout`, `outputLimit` and `maxFrameBytes` as for the process backend, `cpuSeconds`
    /// the fuel, `maxLiveSessionsPerProcess` the sessions alive at once. Paths, uids, seccomp, Landlock and cgroups do
    /// not apply.
    public var configuration: ProcessSandbox.Configuration
    /// Where the runtime comes from.
    public var options: Options
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: the limits every session of this sandbox uses.
    ///   - options: where the runtime comes from.
    ///   - logger: where session lifecycle events are logged (debug level).
    public init(
        configuration: ProcessSandbox.Configuration = .init(), options: Options = .init(),
        logger: Logger = Logger(label: "rlm.sandbox.wasm", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.configuration = configuration
        self.options = options
        self.logger = logger
    }

    /// The pulled runtime when it is present and is the pinned file (checked once per process), else `nil`.
    public static func runtimePath() -> String? {
        let path = WasmRuntime.defaultPath()
        return (try? checkedRuntime(path)) != nil ? path : nil
    }

    /// Verifications of runtime files, once per path and process.
    private static let verified = Mutex<[String: Bool]>([:])

    private static func checkedRuntime(_ path: String) throws {
        if verified.withLock({ $0[path] }) == true { return }
        try WasmRuntime.verify(path: path)
        verified.withLock { $0[path] = true }
    }

    /// The worker's start-up code in the guest: read frame 0 (compiled code, or source) and run it. With the argument
    /// `compile`, source is compiled and the code object also written to the work dir, where the host reads it back
    /// before any user code runs (and caches it: compiling the worker costs the guest as much as starting Python).
    static let bootstrap = """
        import os,sys
        def _r(n):
            b=b''
            while len(b)<n:
                c=os.read(0,n-len(b))
                if not c: raise SystemExit(3)
                b+=c
            return b
        _n=int.from_bytes(_r(4),'big');_s=_r(_n)
        if _s[:4]==b'RLMM':
            _c=__import__('marshal').loads(_s[4:])
        else:
            _c=compile(_s.decode(),'<rlm-worker>','exec')
            if sys.argv[1:]==['compile']:
                with open('/tmp/.rlm-worker.bin','wb') as _f: _f.write(__import__('marshal').dumps(_c))
        del _s
        exec(_c,{'__name__':'rlm_worker','__builtins__':__builtins__})
        """

    static let workDir = "/tmp"
    static let compiledWorkerPath = "/tmp/.rlm-worker.bin"

    /// Fuel per second of `cpuSeconds`: a nominal rate (WasmKit runs about 10⁸–10⁹ operations a second here).
    static let fuelPerSecond: UInt64 = 1_000_000_000

    /// The interpreter's stack: CPython's recursion limit (1000 frames) needs more than WasmKit's 512 KiB default.
    static let interpreterStackBytes = 16 << 20

    /// Live guests in this process, for `maxLiveSessionsPerProcess`.
    private static let live = Mutex(0)

    public func startSession(handler: (any SubcallHandler)?) async throws -> any SandboxSession {
        let path = options.runtimePath ?? WasmRuntime.defaultPath()
        let configuration = configuration
        let module: Module
        do {
            module = try await Self.offPool { try WasmRuntime.module(at: path) }
        } catch let error as WasmRuntime.VerificationError {
            throw SandboxError.setup(
                options.runtimePath == nil && !FileManager.default.fileExists(atPath: path)
                    ? "the wasm runtime is not installed: run `rlm sandbox pull` (it fetches CPython 3.12 for WASI, "
                        + "\(WasmRuntime.sizeBytes >> 20) MB, sha256-pinned, into \(path))"
                    : error.description)
        } catch {
            throw SandboxError.setup("the wasm runtime \(path) could not be loaded: \(error)")
        }
        try await acquireSlot(limit: configuration.maxLiveSessionsPerProcess, wait: configuration.sessionSlotWait)
        let compiled = WasmWorkerCache.shared.compiled()
        let host: WasmWorkerHost
        do {
            host = try WasmWorkerHost(
                module: module,
                arguments: ["python", "-I", "-S", "-c", Self.bootstrap] + (compiled == nil ? ["compile"] : []),
                memoryLimit: configuration.memoryLimitBytes, workDirCap: configuration.workDirBytes,
                workDir: Self.workDir,
                fuel: UInt64(max(1, configuration.cpuSeconds)).multipliedReportingOverflow(by: Self.fuelPerSecond)
                    .partialValue,
                stackSize: Self.interpreterStackBytes, maxOpenFiles: configuration.maxOpenFiles,
                onRelease: { Self.live.withLock { $0 -= 1 } })
        } catch {
            Self.live.withLock { $0 -= 1 }
            throw SandboxError.setup("the wasm guest could not be started: \(error)")
        }
        var sessionConfiguration = configuration
        sessionConfiguration.startTimeout = configuration.startTimeout * Self.slowBuildFactor
        let session = try await WorkerSession.start(
            host: host, configuration: sessionConfiguration,
            payload: compiled.map { Data("RLMM".utf8) + $0 } ?? WorkerSource.data, workDir: Self.workDir,
            info: SessionInfo(pythonVersion: "", landlock: "pending", cgroups: false, hostUID: getuid()),
            handler: handler, logger: logger)
        // Nothing but the worker has run in the guest yet: what it compiled is its own.
        if let content = try? host.memoryFileSystem.getFile(at: Self.compiledWorkerPath) {
            try? host.memoryFileSystem.removeFile(at: Self.compiledWorkerPath)
            switch content {
            case .bytes(let bytes):
                if compiled == nil { WasmWorkerCache.shared.store(Data(bytes)) }
                host.creditWorkDir(
                    bytes.count + WasmSystemInterface.nodeCost(Array(Self.compiledWorkerPath.utf8)))
            default:
                break
            }
        }
        return session
    }

    /// WasmKit built without optimization (a debug build of this package) runs the guest some 50 times slower: the
    /// start-up deadline stretches with it rather than failing every debug run.
    static var slowBuildFactor: Int {
        #if DEBUG
            return 10
        #else
            return 1
        #endif
    }

    private func acquireSlot(limit: Int, wait: Duration) async throws {
        let deadline = ContinuousClock.now + wait
        while true {
            let got = Self.live.withLock { live -> Bool in
                guard live < max(1, limit) else { return false }
                live += 1
                return true
            }
            if got { return }
            guard ContinuousClock.now < deadline else {
                throw SandboxError.setup(
                    "\(limit) wasm sandboxes are already running in this process (maxLiveSessionsPerProcess); "
                        + "end one or raise the limit")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }
}

/// The worker compiled by the guest's own Python 3.12 (the host's marshal format may differ), in memory and in a
/// private file under the cache directory, keyed by the worker source and the runtime's sha256.
final class WasmWorkerCache: Sendable {
    static let shared = WasmWorkerCache()
    private let memory = Mutex<Data?>(nil)
    private let file: String
    private let key: String

    init(directory: URL = SwiftRLMPaths.cacheDirectory()) {
        var hasher = SHA256()
        hasher.update(data: WorkerSource.data)
        hasher.update(data: Data(WasmRuntime.sha256.utf8))
        key = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        file = directory.appendingPathComponent("wasm-worker-u\(getuid())-\(key.prefix(16)).bin").path
    }

    private static let marker = Data("RLMW1\n".utf8)

    /// The compiled worker, if known.
    func compiled() -> Data? {
        if let known = memory.withLock({ $0 }) { return known }
        guard SwiftRLMPaths.isPrivateFile(file), let contents = FileManager.default.contents(atPath: file),
            contents.starts(with: Self.marker)
        else { return nil }
        let rest = contents.dropFirst(Self.marker.count)
        guard rest.count > 65, rest[rest.startIndex + 64] == UInt8(ascii: "\n") else { return nil }
        let checksum = String(decoding: rest.prefix(64), as: UTF8.self)
        let code = Data(rest.dropFirst(65))
        guard checksum == Self.checksum(key: key, code: code) else { return nil }
        memory.withLock { $0 = code }
        return code
    }

    /// Keeps the compiled worker in memory and, best effort, on disk (a fresh 0600 file renamed into place).
    func store(_ code: Data) {
        guard !code.isEmpty else { return }
        memory.withLock { $0 = code }
        let directory = URL(fileURLWithPath: file).deletingLastPathComponent()
        guard (try? SwiftRLMPaths.createDirectory(directory, privateToOwner: true)) != nil else { return }
        var contents = Self.marker
        contents.append(Data((Self.checksum(key: key, code: code) + "\n").utf8))
        contents.append(code)
        WorkerSource.writePrivateFile(contents, to: file)
    }

    private static func checksum(key: String, code: Data) -> String {
        var hasher = SHA256()
        hasher.update(data: Data(key.utf8))
        hasher.update(data: code)
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
