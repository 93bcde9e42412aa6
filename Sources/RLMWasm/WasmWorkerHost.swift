import Foundation
import Glibc
import RLMSandbox
import Synchronization
import WASI
// `Store.resourceLimiter` is SPI (`Fuzzing`) in WasmKit 0.4.2, and it is the only way to cap the guest's linear memory.
@_spi(Fuzzing) import WasmKit
import WasmKitWASI

/// Caps the guest's linear memory, and remembers that it said no.
final class GuestMemoryLimiter: ResourceLimiter {
    let limit: Int
    private let denied = Atomic<Bool>(false)

    init(limit: Int) { self.limit = limit }

    func limitMemoryGrowth(to desired: Int) throws -> Bool {
        guard desired <= limit else {
            denied.store(true, ordering: .relaxed)
            return false
        }
        return true
    }

    func limitTableGrowth(to desired: Int) throws -> Bool { desired <= 1 << 20 }

    var wasDenied: Bool { denied.load(ordering: .relaxed) }
}

/// One wasm guest — CPython for WASI in a WasmKit instance — on a thread of its own, reached over two pipes that are
/// its stdin and stdout. It is a ``WorkerHost``: the worker session drives it exactly as it drives a process.
///
/// Killing it: ``kill()`` signals an eventfd that every blocking host call the guest can make waits on (the channel's
/// reads and writes, `poll_oneoff`), and zeroes the store's fuel so that a guest spinning in pure Python traps at its
/// next fuel check. The fuel cell belongs to the guest's thread, and WasmKit offers no way to change it from another:
/// the write is a plain 64-bit store racing the interpreter's own read-modify-write, which can overwrite it with the
/// value it read just before. So it is repeated (by ``waitForExit()``, every 2 ms) until the guest has stopped; the
/// interpreter's window between its load and its store is a few instructions, so one write soon lands.
final class WasmWorkerHost: WorkerHost, @unchecked Sendable {
    let channelWriteFD: Int32
    let channelReadFD: Int32
    var dataPipes: (write: Int32, read: Int32)? { nil }
    let identity: String

    /// The kill event: a pipe that becomes readable (a byte is written to ``killSignalFD``) when the guest is killed.
    private let killFD: Int32
    private let killSignalFD: Int32
    private let stderrReadFD: Int32
    private let limiter: GuestMemoryLimiter
    private let fileSystem: MemoryFileSystem
    private let state = Mutex(State())
    private let onRelease: @Sendable () -> Void

    private struct State {
        var killed = false
        var finished: String?
        /// The guest's store while it runs, for zeroing its fuel from another thread.
        var fuelCell: StoreReference?
        var notes = ""
        var released = false
        /// The kill pipe and the diagnostics pipe are closed (their numbers may belong to other files now).
        var closed = false
    }

    /// The store, handed to the killer. Only its fuel is ever touched from outside the guest's thread.
    final class StoreReference: @unchecked Sendable {
        let store: Store
        init(_ store: Store) { self.store = store }
    }

    /// The work dir's file system (the host reads the compiled worker back from it once the guest is ready).
    var memoryFileSystem: MemoryFileSystem { fileSystem }
    private var system: WasmSystemInterface?

    /// Starts the guest on its own thread.
    /// - Parameters:
    ///   - module: the parsed runtime.
    ///   - arguments: the guest's argv.
    ///   - memoryLimit: the most linear memory the guest may have.
    ///   - workDirCap: the most bytes its work dir may hold.
    ///   - workDir: the guest path of the work dir.
    ///   - fuel: the guest's CPU budget.
    ///   - stackSize: the interpreter's stack, in bytes.
    ///   - maxOpenFiles: the most descriptors the guest's `path_open` may hold open.
    ///   - onRelease: run once when the host is released.
    init(
        module: Module, arguments: [String], memoryLimit: Int, workDirCap: Int, workDir: String, fuel: UInt64,
        stackSize: Int, maxOpenFiles: Int = 256, onRelease: @escaping @Sendable () -> Void
    ) throws {
        var toGuest: [Int32] = [-1, -1]
        var fromGuest: [Int32] = [-1, -1]
        var diagnostics: [Int32] = [-1, -1]
        var killPipe: [Int32] = [-1, -1]
        // The guest's ends are non-blocking: a guest writing 8 MiB to a pipe nobody reads any more must not sit in
        // write(2), where the kill event cannot reach it (its loop waits for room, and for the kill, in poll).
        guard Self.makePipe(&toGuest, nonblocking: [true, false]) else { throw Self.failure("pipe") }
        guard Self.makePipe(&fromGuest, nonblocking: [false, true]) else {
            for fd in toGuest { close(fd) }
            throw Self.failure("pipe")
        }
        guard Self.makePipe(&diagnostics, nonblocking: [true, true]) else {
            for fd in toGuest + fromGuest { close(fd) }
            throw Self.failure("pipe")
        }
        guard Self.makePipe(&killPipe, nonblocking: [true, true]) else {
            for fd in toGuest + fromGuest + diagnostics { close(fd) }
            throw Self.failure("pipe")
        }
        channelWriteFD = toGuest[1]
        channelReadFD = fromGuest[0]
        stderrReadFD = diagnostics[0]
        killFD = killPipe[0]
        killSignalFD = killPipe[1]
        limiter = GuestMemoryLimiter(limit: memoryLimit)
        self.onRelease = onRelease
        identity = "wasm guest \(UInt32.random(in: 0...UInt32.max))"
        let guestStdin = toGuest[0]
        let guestStdout = fromGuest[1]
        let guestStderr = diagnostics[1]
        do {
            fileSystem = try MemoryFileSystem()
        } catch {
            for fd in [
                guestStdin, guestStdout, guestStderr, channelWriteFD, channelReadFD, stderrReadFD, killFD,
                killSignalFD,
            ] {
                close(fd)
            }
            throw error
        }
        let limiter = limiter
        let fileSystem = fileSystem
        let thread = Thread { [self] in
            let outcome = self.runGuest(
                module: module, arguments: arguments, stdin: guestStdin, stdout: guestStdout, stderr: guestStderr,
                limiter: limiter, fileSystem: fileSystem, workDirCap: workDirCap, workDir: workDir, fuel: fuel,
                stackSize: stackSize, maxOpenFiles: maxOpenFiles)
            // Closing the guest's ends tells the host: its reads see EOF, its writes EPIPE.
            close(guestStdin)
            close(guestStdout)
            close(guestStderr)
            self.state.withLock {
                $0.finished = outcome
                $0.fuelCell = nil
            }
        }
        thread.name = "rlm-wasm-guest"
        // The guest's own stack is WasmKit's (`stackSize`); this one holds the interpreter and the host calls.
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// A close-on-exec pipe, each end non-blocking when asked (read end, write end).
    private static func makePipe(_ fds: inout [Int32], nonblocking: [Bool]) -> Bool {
        guard pipe(&fds) == 0 else { return false }
        for (fd, nonblocking) in zip(fds, nonblocking) {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            if nonblocking { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        }
        return true
    }

    private static func failure(_ call: String) -> SandboxErrorDescription {
        SandboxErrorDescription(message: "\(call) failed: \(String(cString: strerror(errno)))")
    }

    struct SandboxErrorDescription: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// Runs the guest to its end on the current thread; returns how it ended.
    private func runGuest(
        module: Module, arguments: [String], stdin: Int32, stdout: Int32, stderr: Int32, limiter: GuestMemoryLimiter,
        fileSystem: MemoryFileSystem, workDirCap: Int, workDir: String, fuel: UInt64, stackSize: Int,
        maxOpenFiles: Int
    ) -> String {
        let bridge: WASIBridgeToHost
        do {
            bridge = try WASIBridgeToHost(
                args: arguments, environment: [:],
                fileSystem: .memory(fileSystem).withStdio(stdin: stdin, stdout: stdout, stderr: stderr)
                    .withPreopens([.init(guestPath: workDir, hostPath: workDir)]))
        } catch {
            return "the guest's WASI could not be set up: \(error)"
        }
        defer { try? bridge.close() }
        let engine = Engine(
            configuration: EngineConfiguration(stackSize: stackSize, fuelMetering: true))
        let store = Store(engine: engine)
        store.resourceLimiter = limiter
        store.fuel = Fuel(remaining: fuel)
        let system = WasmSystemInterface(
            bridge: bridge, stdin: stdin, stdout: stdout, stderr: stderr, killFD: killFD, workDirCap: workDirCap,
            maxOpenFiles: maxOpenFiles)
        var imports = Imports()
        system.link(bridge: bridge, to: &imports, store: store)
        let killedEarly = state.withLock { state -> Bool in
            state.fuelCell = StoreReference(store)
            self.system = system
            return state.killed
        }
        if killedEarly { return "killed before it started" }
        do {
            let instance = try module.instantiate(store: store, imports: imports)
            let code = try bridge.start(instance)
            return "exited with status \(code)"
        } catch let stopped as GuestStopped {
            return "stopped: \(stopped.description)"
        } catch {
            let text = String(describing: error)
            if text.contains("out of fuel") {
                if state.withLock({ $0.killed }) { return "killed" }
                note("the guest used up its CPU budget (cpuSeconds) and was stopped")
                return "stopped: out of fuel (its CPU budget)"
            }
            if limiter.wasDenied {
                note("the guest ran out of memory (its linear memory is capped at \(limiter.limit >> 20) MiB)")
            }
            return "trapped: \(text)"
        }
    }

    private func note(_ text: String) {
        state.withLock { $0.notes += "rlm wasm host: \(text)\n" }
    }

    /// Bytes the work dir's accounting should forget (the host removed a file itself).
    func creditWorkDir(_ bytes: Int) {
        state.withLock { _ in system?.credit(bytes) }
    }

    // MARK: - WorkerHost

    func kill() {
        let cell = state.withLock { state -> StoreReference? in
            // After release the kill pipe's numbers may be reused: the check and the write are under the lock that
            // closes them.
            guard !state.closed, state.finished == nil else { return nil }
            state.killed = true
            var one: UInt8 = 1
            _ = write(killSignalFD, &one, 1)
            return state.fuelCell
        }
        cell?.store.fuel = Fuel(remaining: 0)
    }

    func waitForExit() async -> String {
        while true {
            let (finished, cell) = state.withLock { ($0.finished, $0.killed ? $0.fuelCell : nil) }
            if let finished { return finished }
            // See the type's documentation: the killer's fuel write can be lost, so it is repeated.
            cell?.store.fuel = Fuel(remaining: 0)
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    func release() async {
        let first = state.withLock { state -> Bool in
            defer { state.released = true }
            return !state.released
        }
        guard first else { return }
        _ = await waitForExit()
        state.withLock { state in
            state.closed = true
            close(stderrReadFD)
            close(killFD)
            close(killSignalFD)
        }
        onRelease()
    }

    func memoryExceeded() async -> Bool { limiter.wasDenied }

    func diagnostics() -> String {
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16384)
        // Under the lock that closes the pipe (its read end is non-blocking).
        let notes = state.withLock { state in
            while !state.closed && bytes.count < 64 << 10 {
                let n = buffer.withUnsafeMutableBytes { read(stderrReadFD, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                bytes += buffer[..<n]
            }
            return state.notes
        }
        return notes + String(decoding: bytes.prefix(64 << 10), as: UTF8.self)
    }
}
