import Foundation
import Glibc
import Synchronization
import WASI
import WasmKit
import WasmKitWASI

/// Thrown out of a host function to end the guest: the session was killed.
struct GuestStopped: Error, CustomStringConvertible {
    let description: String
}

/// WASI errno values (wasi_snapshot_preview1).
enum WASIErrno {
    static let success: UInt32 = 0
    static let again: UInt32 = 6
    static let badf: UInt32 = 8
    static let fault: UInt32 = 21
    static let fbig: UInt32 = 22
    static let inval: UInt32 = 28
    static let io: UInt32 = 29
    static let nospc: UInt32 = 51
    static let notsup: UInt32 = 58
    static let perm: UInt32 = 63
}

/// A small host buffer the WASI implementation reads from and writes to, so that the host can ask it about a file
/// descriptor (its size, its position) without touching the guest's memory.
final class ScratchMemory: GuestMemory, @unchecked Sendable {
    var bytes = [UInt8](repeating: 0, count: 4096 + 128)

    func withUnsafeMutableBufferPointer<T>(
        offset: UInt, count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> T
    ) rethrows -> T {
        try bytes.withUnsafeMutableBytes { all in
            let start = min(Int(offset), all.count)
            let end = min(start + max(0, count), all.count)
            return try body(UnsafeMutableRawBufferPointer(rebasing: all[start..<end]))
        }
    }

    func u64(at offset: Int) -> UInt64 {
        bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
    }
}

/// The guest's system interface: WasmKit's WASI with the calls that matter for isolation replaced.
///
/// - stdio (fds 0, 1, 2) goes straight to the host's pipes, and every blocking wait there also watches the kill
///   event, so a guest blocked reading the channel or writing to a full pipe ends when the session is killed.
/// - `poll_oneoff` (time.sleep, select) is implemented here for the same reason: it wakes on the kill event.
/// - the work dir lives in a `MemoryFileSystem`, so its bytes are host memory: every call that can grow a file is
///   checked against the cap first (ENOSPC past it), and truncations and unlinks give the room back.
/// - `path_symlink`, `path_link` and `fd_renumber` are refused (EPERM/ENOTSUP): a symlink is how WasmKit 0.4.2
///   reaches the host file system with host preopens, a hard link would defeat the accounting, and renumbering onto
///   stdio would too.
final class WasmSystemInterface: @unchecked Sendable {
    private let stdinFD: Int32
    private let stdoutFD: Int32
    private let stderrFD: Int32
    private let killFD: Int32
    private let workDirCap: Int
    /// Only the guest's thread calls these functions: no lock needed for the accounting below.
    private(set) var workDirBytes = 0
    private var openFiles = Set<UInt32>()
    private var pendingCredit = 0
    private let scratch = ScratchMemory()
    private let probe: [String: WASIHostFunction<ScratchMemory>]

    init(bridge: WASIBridgeToHost, stdin: Int32, stdout: Int32, stderr: Int32, killFD: Int32, workDirCap: Int) {
        self.stdinFD = stdin
        self.stdoutFD = stdout
        self.stderrFD = stderr
        self.killFD = killFD
        self.workDirCap = workDirCap
        self.probe = bridge.hostFunctions(capabilities: WASICapability<ScratchMemory>.all)
    }

    /// Bytes the host itself removed from the work dir (the compiled worker it reads back).
    func credit(_ bytes: Int) { workDirBytes = max(0, workDirBytes - bytes) }

    /// Defines the WASI imports, with the replacements, into `imports`.
    func link(bridge: WASIBridgeToHost, to imports: inout Imports, store: Store) {
        let originals = bridge.hostFunctions(capabilities: WASICapability<Memory>.all)
        typealias Body = @Sendable (Memory, [Value]) throws -> [Value]
        var functions = originals.mapValues { ($0.type, $0.implementation as Body) }
        func replace(_ name: String, _ body: @escaping (Memory, [Value], WASIHostFunction<Memory>) throws -> [Value]) {
            guard let original = originals[name] else { return }
            nonisolated(unsafe) let body = body
            functions[name] = (original.type, { memory, values in try body(memory, values, original) })
        }
        replace("fd_read") { [unowned self] memory, args, original in
            guard args[0].u32 == 0 else { return try original.implementation(memory, args) }
            return [.i32(try self.readStdin(memory, iovs: args[1].u32, count: args[2].u32, result: args[3].u32))]
        }
        replace("fd_write") { [unowned self] memory, args, original in
            let fd = args[0].u32
            if fd == 1 || fd == 2 {
                return [
                    .i32(
                        try self.writeStdio(
                            fd == 1 ? self.stdoutFD : self.stderrFD, lossy: fd == 2, memory, iovs: args[1].u32,
                            count: args[2].u32, result: args[3].u32))
                ]
            }
            if fd == 0 { return [.i32(WASIErrno.badf)] }
            let n = Self.iovecTotal(memory, iovs: args[1].u32, count: args[2].u32)
            return try self.growing(fd: fd, by: { size, position in position + n - size }) {
                try original.implementation(memory, args)
            }
        }
        replace("fd_pwrite") { [unowned self] memory, args, original in
            let fd = args[0].u32
            if fd <= 2 { return [.i32(WASIErrno.notsup)] }
            let n = Self.iovecTotal(memory, iovs: args[1].u32, count: args[2].u32)
            let offset = Int(clamping: args[3].u64)
            return try self.growing(fd: fd, by: { size, _ in offset.addingReportingOverflow(n).partialValue - size }) {
                try original.implementation(memory, args)
            }
        }
        replace("fd_filestat_set_size") { [unowned self] memory, args, original in
            let target = Int(clamping: args[1].u64)
            return try self.growing(fd: args[0].u32, by: { size, _ in target - size }) {
                try original.implementation(memory, args)
            }
        }
        replace("fd_allocate") { [unowned self] memory, args, original in
            let end = Int(clamping: args[1].u64).addingReportingOverflow(Int(clamping: args[2].u64)).partialValue
            return try self.growing(fd: args[0].u32, by: { size, _ in end - size }) {
                try original.implementation(memory, args)
            }
        }
        replace("path_open") { [unowned self] memory, args, original in
            let truncating = args[4].u32 & 8 != 0  // O_TRUNC
            let before =
                truncating ? self.pathSize(memory, dir: args[0].u32, path: args[2].u32, length: args[3].u32) : nil
            let result = try original.implementation(memory, args)
            guard result.first?.u32 == WASIErrno.success else { return result }
            let fd = Self.load32(memory, at: args[8].u32)
            if self.regularFileSize(fd: fd) != nil { self.openFiles.insert(fd) }
            if let before { self.workDirBytes = max(0, self.workDirBytes - before) }
            return result
        }
        replace("fd_close") { [unowned self] memory, args, original in
            let fd = args[0].u32
            if fd <= 2 { return [.i32(WASIErrno.success)] }  // the channel stays the channel
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success, self.openFiles.remove(fd) != nil, self.openFiles.isEmpty {
                // Unlinked files held open are freed with their last descriptor.
                self.workDirBytes = max(0, self.workDirBytes - self.pendingCredit)
                self.pendingCredit = 0
            }
            return result
        }
        replace("path_unlink_file") { [unowned self] memory, args, original in
            let before = self.pathSize(memory, dir: args[0].u32, path: args[1].u32, length: args[2].u32)
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success, let before {
                // With files open the unlinked one may be among them: it is freed only when they are all closed.
                if self.openFiles.isEmpty {
                    self.workDirBytes = max(0, self.workDirBytes - before)
                } else {
                    self.pendingCredit += before
                }
            }
            return result
        }
        replace("path_rename") { [unowned self] memory, args, original in
            // A rename onto an existing file frees that file.
            let replaced = self.pathSize(memory, dir: args[3].u32, path: args[4].u32, length: args[5].u32)
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success, let replaced {
                if self.openFiles.isEmpty {
                    self.workDirBytes = max(0, self.workDirBytes - replaced)
                } else {
                    self.pendingCredit += replaced
                }
            }
            return result
        }
        replace("path_symlink") { _, _, _ in [.i32(WASIErrno.perm)] }
        replace("path_link") { _, _, _ in [.i32(WASIErrno.perm)] }
        replace("fd_renumber") { _, _, _ in [.i32(WASIErrno.notsup)] }
        replace("poll_oneoff") { [unowned self] memory, args, _ in
            [
                .i32(
                    try self.pollOneoff(
                        memory, subscriptions: args[0].u32, events: args[1].u32, count: args[2].u32,
                        result: args[3].u32))
            ]
        }
        for (name, (type, implementation)) in functions {
            imports.define(
                module: "wasi_snapshot_preview1", name: name,
                Function(store: store, type: type) { caller, values in
                    guard case .memory(let memory) = caller.instance?.export("memory") else {
                        throw GuestStopped(description: "the guest exports no memory")
                    }
                    return try implementation(memory, values)
                })
        }
    }

    // MARK: - The work dir's cap

    /// Runs `call` (a write-like call on `fd`) if the growth it may cause fits the cap; then charges what it did.
    /// `growth(size, position)` is the most the file can grow by (negative: it shrinks).
    private func growing(fd: UInt32, by growth: (Int, Int) -> Int, _ call: () throws -> [Value]) throws -> [Value] {
        guard let size = regularFileSize(fd: fd) else { return try call() }
        let position = max(size, fileAppends(fd: fd) ? size : (filePosition(fd: fd) ?? size))
        let most = growth(size, position)
        if most > 0 && workDirBytes + most > workDirCap { return [.i32(WASIErrno.nospc)] }
        let result = try call()
        if let after = regularFileSize(fd: fd) { workDirBytes = max(0, workDirBytes + after - size) }
        return result
    }

    /// The size of `fd` when it is a regular file of the work dir.
    private func regularFileSize(fd: UInt32) -> Int? {
        guard let stat = probe["fd_filestat_get"],
            (try? stat.implementation(scratch, [.i32(fd), .i32(0)]))?.first?.u32 == WASIErrno.success,
            scratch.bytes[16] == 4  // REGULAR_FILE
        else { return nil }
        return Int(clamping: scratch.u64(at: 32))
    }

    private func filePosition(fd: UInt32) -> Int? {
        guard let tell = probe["fd_tell"],
            (try? tell.implementation(scratch, [.i32(fd), .i32(0)]))?.first?.u32 == WASIErrno.success
        else { return nil }
        return Int(clamping: scratch.u64(at: 0))
    }

    private func fileAppends(fd: UInt32) -> Bool {
        guard let fdstat = probe["fd_fdstat_get"],
            (try? fdstat.implementation(scratch, [.i32(fd), .i32(0)]))?.first?.u32 == WASIErrno.success
        else { return false }
        return scratch.bytes[2] & 1 != 0  // FDFLAGS_APPEND
    }

    /// The size of the regular file at a guest path (relative to the directory `dir`), or `nil`.
    private func pathSize(_ memory: Memory, dir: UInt32, path: UInt32, length: UInt32) -> Int? {
        guard length <= 4096, Self.inBounds(memory, UInt(path), Int(length)), let stat = probe["path_filestat_get"]
        else { return nil }
        let bytes = memory.withUnsafeMutableBufferPointer(offset: UInt(path), count: Int(length)) { Array($0) }
        guard bytes.count == Int(length) else { return nil }
        scratch.bytes.replaceSubrange(128..<(128 + bytes.count), with: bytes)
        guard
            (try? stat.implementation(scratch, [.i32(dir), .i32(0), .i32(128), .i32(length), .i32(0)]))?.first?.u32
                == WASIErrno.success, scratch.bytes[16] == 4
        else { return nil }
        return Int(clamping: scratch.u64(at: 32))
    }

    // MARK: - stdio

    private func readStdin(_ memory: Memory, iovs: UInt32, count: UInt32, result: UInt32) throws -> UInt32 {
        for index in 0..<min(count, 1024) {
            let base = Self.load32(memory, at: iovs &+ index &* 8)
            let length = Self.load32(memory, at: iovs &+ index &* 8 &+ 4)
            guard length > 0 else { continue }
            guard Self.inBounds(memory, UInt(base), Int(length)) else { return WASIErrno.fault }
            try waitFor(stdinFD, events: Int16(POLLIN))
            let n = memory.withUnsafeMutableBufferPointer(offset: UInt(base), count: Int(length)) { buffer in
                read(stdinFD, buffer.baseAddress, buffer.count)
            }
            if n < 0 { return errno == EAGAIN ? WASIErrno.again : WASIErrno.io }
            Self.store32(memory, at: result, UInt32(n))
            return WASIErrno.success
        }
        Self.store32(memory, at: result, 0)
        return WASIErrno.success
    }

    private func writeStdio(
        _ fd: Int32, lossy: Bool, _ memory: Memory, iovs: UInt32, count: UInt32, result: UInt32
    ) throws -> UInt32 {
        var total: UInt32 = 0
        for index in 0..<min(count, 1024) {
            let base = Self.load32(memory, at: iovs &+ index &* 8)
            let length = Self.load32(memory, at: iovs &+ index &* 8 &+ 4)
            guard Self.inBounds(memory, UInt(base), Int(length)) else { return WASIErrno.fault }
            var done = 0
            while done < Int(length) {
                // The diagnostics pipe never blocks the guest: what does not fit is dropped.
                if !lossy { try waitFor(fd, events: Int16(POLLOUT)) }
                let n = memory.withUnsafeMutableBufferPointer(
                    offset: UInt(base) + UInt(done), count: Int(length) - done
                ) {
                    buffer in write(fd, buffer.baseAddress, buffer.count)
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    if lossy { break }
                    if errno == EAGAIN { continue }
                    return WASIErrno.io
                }
                done += n
            }
            total &+= length
        }
        Self.store32(memory, at: result, total)
        return WASIErrno.success
    }

    /// Waits until `fd` is ready for `events`, or throws when the session is killed.
    private func waitFor(_ fd: Int32, events: Int16) throws {
        var fds = [pollfd(fd: killFD, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: events, revents: 0)]
        while true {
            let n = poll(&fds, 2, -1)
            if n < 0 && errno == EINTR { continue }
            if fds[0].revents != 0 { throw GuestStopped(description: "the session was killed") }
            if n != 0 { return }
        }
    }

    // MARK: - poll_oneoff

    private func pollOneoff(
        _ memory: Memory, subscriptions: UInt32, events: UInt32, count: UInt32, result: UInt32
    ) throws -> UInt32 {
        guard count > 0, count <= 4096 else { return WASIErrno.inval }
        guard Self.inBounds(memory, UInt(events), Int(count) * 32) else { return WASIErrno.fault }
        struct Subscription {
            let userdata: UInt64
            let tag: UInt8
            let fd: UInt32
            let deadline: UInt64  // monotonic ns, clocks only
        }
        let now = Self.monotonicNow()
        var subs = [Subscription]()
        for index in 0..<count {
            let at = subscriptions &+ index &* 48
            let userdata = Self.load64(memory, at: at)
            guard Self.inBounds(memory, UInt(at), 48) else { return WASIErrno.fault }
            let tag = memory.withUnsafeMutableBufferPointer(offset: UInt(at &+ 8), count: 1) { $0.first ?? 0 }
            var deadline = UInt64.max
            if tag == 0 {
                let clock = Self.load32(memory, at: at &+ 16)
                let timeout = Self.load64(memory, at: at &+ 24)
                let absolute = (Self.load16(memory, at: at &+ 40) & 1) != 0
                if absolute {
                    let clockNow = clock == 0 ? Self.realtimeNow() : now
                    deadline = timeout > clockNow ? now + (timeout - clockNow) : now
                } else {
                    deadline = now.addingReportingOverflow(timeout).overflow ? .max : now + timeout
                }
            }
            subs.append(
                Subscription(userdata: userdata, tag: tag, fd: Self.load32(memory, at: at &+ 16), deadline: deadline))
        }
        var fired = [(UInt64, UInt8, UInt16)]()  // userdata, type, error
        func collectReady() -> Bool {
            let current = Self.monotonicNow()
            for sub in subs {
                switch sub.tag {
                case 0 where sub.deadline <= current: fired.append((sub.userdata, 0, 0))
                case 1 where sub.fd == 0: continue
                case 1, 2:
                    // Memory files and the output pipes are always ready; other descriptors get EBADF back.
                    fired.append((sub.userdata, sub.tag, sub.fd <= 2 || regularFileSize(fd: sub.fd) != nil ? 0 : 8))
                default: continue
                }
            }
            return !fired.isEmpty
        }
        let watchesStdin = subs.contains { $0.tag == 1 && $0.fd == 0 }
        while !collectReady() {
            let deadline = subs.filter { $0.tag == 0 }.map(\.deadline).min() ?? .max
            let current = Self.monotonicNow()
            // Milliseconds, rounded up: a sleep never ends early.
            let milliseconds =
                deadline == .max
                ? Int32(-1) : Int32(clamping: ((deadline > current ? deadline - current : 0) + 999_999) / 1_000_000)
            var fds = [pollfd(fd: killFD, events: Int16(POLLIN), revents: 0)]
            if watchesStdin { fds.append(pollfd(fd: stdinFD, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), milliseconds)
            if n < 0 && errno != EINTR { return WASIErrno.io }
            if fds[0].revents != 0 { throw GuestStopped(description: "the session was killed") }
            if watchesStdin && fds[1].revents != 0 {
                for sub in subs where sub.tag == 1 && sub.fd == 0 { fired.append((sub.userdata, 1, 0)) }
                _ = collectReady()
                break
            }
        }
        for (index, event) in fired.prefix(Int(count)).enumerated() {
            let at = events &+ UInt32(index) &* 32
            memory.withUnsafeMutableBufferPointer(offset: UInt(at), count: 32) { buffer in
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                buffer.storeBytes(of: event.0.littleEndian, toByteOffset: 0, as: UInt64.self)
                buffer.storeBytes(of: event.2.littleEndian, toByteOffset: 8, as: UInt16.self)
                buffer.storeBytes(of: event.1, toByteOffset: 10, as: UInt8.self)
                if event.1 != 0 { buffer.storeBytes(of: UInt64(1).littleEndian, toByteOffset: 16, as: UInt64.self) }
            }
        }
        Self.store32(memory, at: result, UInt32(min(fired.count, Int(count))))
        return WASIErrno.success
    }

    // MARK: - Guest memory and clocks

    /// Whether `count` bytes at `address` lie inside the guest's memory. WasmKit's accessors stop the whole process
    /// on an access outside it, and every address here comes from the guest.
    static func inBounds(_ memory: Memory, _ address: UInt, _ count: Int) -> Bool {
        count >= 0 && UInt64(address) + UInt64(count) <= UInt64(memory.byteCount)
    }

    static func iovecTotal(_ memory: Memory, iovs: UInt32, count: UInt32) -> Int {
        var total = 0
        for index in 0..<min(count, 1 << 16) { total += Int(load32(memory, at: iovs &+ index &* 8 &+ 4)) }
        return total
    }

    static func load16(_ memory: Memory, at address: UInt32) -> UInt16 {
        guard inBounds(memory, UInt(address), 2) else { return 0 }
        return memory.withUnsafeMutableBufferPointer(offset: UInt(address), count: 2) {
            $0.count == 2 ? UInt16(littleEndian: $0.loadUnaligned(as: UInt16.self)) : 0
        }
    }

    static func load32(_ memory: Memory, at address: UInt32) -> UInt32 {
        guard inBounds(memory, UInt(address), 4) else { return 0 }
        return memory.withUnsafeMutableBufferPointer(offset: UInt(address), count: 4) {
            $0.count == 4 ? UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) : 0
        }
    }

    static func load64(_ memory: Memory, at address: UInt32) -> UInt64 {
        guard inBounds(memory, UInt(address), 8) else { return 0 }
        return memory.withUnsafeMutableBufferPointer(offset: UInt(address), count: 8) {
            $0.count == 8 ? UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) : 0
        }
    }

    static func store32(_ memory: Memory, at address: UInt32, _ value: UInt32) {
        guard inBounds(memory, UInt(address), 4) else { return }
        memory.withUnsafeMutableBufferPointer(offset: UInt(address), count: 4) {
            if $0.count == 4 { $0.storeBytes(of: value.littleEndian, as: UInt32.self) }
        }
    }

    static func monotonicNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    static func realtimeNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

extension Value {
    /// The value as an unsigned 32-bit integer (0 when it is another type).
    var u32: UInt32 {
        if case .i32(let value) = self { return value }
        return 0
    }

    /// The value as an unsigned 64-bit integer (0 when it is another type).
    var u64: UInt64 {
        if case .i64(let value) = self { return value }
        return 0
    }
}
