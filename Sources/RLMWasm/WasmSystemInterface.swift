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
    static let mfile: UInt32 = 33
    static let nametoolong: UInt32 = 37
    static let io: UInt32 = 29
    static let nospc: UInt32 = 51
    static let notsup: UInt32 = 58
    static let perm: UInt32 = 63
    static let xdev: UInt32 = 72
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
    /// Every descriptor `path_open` gave out and that is still open (files and directories), for `maxOpenFiles`.
    private var openDescriptors = Set<UInt32>()
    private let maxOpenFiles: Int
    private var pendingCredit = 0
    private let scratch = ScratchMemory()
    private let probe: [String: WASIHostFunction<ScratchMemory>]

    init(
        bridge: WASIBridgeToHost, stdin: Int32, stdout: Int32, stderr: Int32, killFD: Int32, workDirCap: Int,
        maxOpenFiles: Int
    ) {
        self.maxOpenFiles = max(1, maxOpenFiles)
        self.stdinFD = stdin
        self.stdoutFD = stdout
        self.stderrFD = stderr
        self.killFD = killFD
        self.workDirCap = workDirCap
        self.probe = bridge.hostFunctions(capabilities: WASICapability<ScratchMemory>.all)
    }

    /// Bytes the host itself removed from the work dir (the compiled worker it reads back).
    func credit(_ bytes: Int) { charge(-max(0, bytes)) }

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
            return try self.growing(fd: fd, to: { _, position in Self.sum(position, n) }) {
                try original.implementation(memory, args)
            }
        }
        replace("fd_pwrite") { [unowned self] memory, args, original in
            let fd = args[0].u32
            if fd <= 2 { return [.i32(WASIErrno.notsup)] }
            let n = Self.iovecTotal(memory, iovs: args[1].u32, count: args[2].u32)
            let offset = Int(exactly: args[3].u64)
            return try self.growing(fd: fd, to: { _, _ in offset.flatMap { Self.sum($0, n) } }) {
                try original.implementation(memory, args)
            }
        }
        replace("fd_filestat_set_size") { [unowned self] memory, args, original in
            let target = Int(exactly: args[1].u64)
            return try self.growing(fd: args[0].u32, to: { _, _ in target }) {
                try original.implementation(memory, args)
            }
        }
        replace("fd_allocate") { [unowned self] memory, args, original in
            let end = Int(exactly: args[1].u64).flatMap { offset in
                Int(exactly: args[2].u64).flatMap { Self.sum(offset, $0) }
            }
            return try self.growing(fd: args[0].u32, to: { size, _ in end.map { max(size, $0) } }) {
                try original.implementation(memory, args)
            }
        }
        replace("path_open") { [unowned self] memory, args, original in
            guard self.openDescriptors.count < self.maxOpenFiles else { return [.i32(WASIErrno.mfile)] }
            guard let path = Self.guestPath(memory, at: args[2].u32, length: args[3].u32) else {
                return [.i32(WASIErrno.fault)]
            }
            // Looked up only when the open may create or truncate (imports open read-only, many times).
            let existing = args[4].u32 & (1 | 8) != 0 ? self.pathStat(dir: args[0].u32, path: path) : nil
            // A new file costs its name and a node.
            let creating = args[4].u32 & 1 != 0 && existing == nil  // O_CREAT
            let cost = Self.nodeCost(path)
            if creating && !self.fits(cost) { return [.i32(WASIErrno.nospc)] }
            let truncating = args[4].u32 & 8 != 0  // O_TRUNC
            let before = truncating && existing?.type == 4 ? existing?.size : nil
            let result = try original.implementation(memory, args)
            guard result.first?.u32 == WASIErrno.success else { return result }
            let fd = Self.load32(memory, at: args[8].u32)
            self.openDescriptors.insert(fd)
            if creating { self.charge(cost) }
            let after = self.regularFileSize(fd: fd)
            if after != nil { self.openFiles.insert(fd) }
            // WasmKit truncates only with the FD_WRITE right: credit what the file really lost.
            if let before, let after, after < before { self.charge(after - before) }
            return result
        }
        replace("fd_close") { [unowned self] memory, args, original in
            let fd = args[0].u32
            if fd <= 2 { return [.i32(WASIErrno.success)] }  // the channel stays the channel
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success { self.openDescriptors.remove(fd) }
            if result.first?.u32 == WASIErrno.success, self.openFiles.remove(fd) != nil, self.openFiles.isEmpty {
                // Unlinked files held open are freed with their last descriptor.
                self.charge(-self.pendingCredit)
                self.pendingCredit = 0
            }
            return result
        }
        replace("path_unlink_file") { [unowned self] memory, args, original in
            guard let path = Self.guestPath(memory, at: args[1].u32, length: args[2].u32) else {
                return [.i32(WASIErrno.fault)]
            }
            let before = self.pathStat(dir: args[0].u32, path: path)
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success, let before {
                // The name goes at once; with files open the unlinked one may be among them: its bytes are freed
                // only when they are all closed.
                self.charge(-Self.nodeCost(path))
                if before.type == 4 { self.free(before.size) }
            }
            return result
        }
        replace("path_create_directory") { [unowned self] memory, args, original in
            guard let path = Self.guestPath(memory, at: args[1].u32, length: args[2].u32) else {
                return [.i32(WASIErrno.fault)]
            }
            let cost = Self.nodeCost(path)
            guard self.fits(cost) else { return [.i32(WASIErrno.nospc)] }
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success { self.charge(cost) }
            return result
        }
        replace("path_remove_directory") { [unowned self] memory, args, original in
            guard let path = Self.guestPath(memory, at: args[1].u32, length: args[2].u32) else {
                return [.i32(WASIErrno.fault)]
            }
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success { self.charge(-Self.nodeCost(path)) }
            return result
        }
        replace("path_rename") { [unowned self] memory, args, original in
            let (sourceDir, destDir) = (args[0].u32, args[3].u32)
            guard let source = Self.guestPath(memory, at: args[1].u32, length: args[2].u32),
                let dest = Self.guestPath(memory, at: args[4].u32, length: args[5].u32)
            else { return [.i32(WASIErrno.fault)] }
            if self.pathStat(dir: sourceDir, path: source)?.type == 3 {  // DIRECTORY
                // WasmKit moves a directory into itself (a cycle that is never freed): refuse that. Two directory
                // descriptors may name the same directory and nothing tells them apart, so a directory moves only
                // within one (EXDEV otherwise: shutil.move copies instead).
                guard sourceDir == destDir else { return [.i32(WASIErrno.xdev)] }
                guard let from = Self.components(source), let to = Self.components(dest) else {
                    return [.i32(WASIErrno.inval)]
                }
                if to.count > from.count && Array(to.prefix(from.count)) == from { return [.i32(WASIErrno.inval)] }
            }
            // A rename onto an existing file frees that file — unless it is the same file (then the source is
            // still there afterwards: WasmKit's rename removes the source name and sets the destination's).
            let replaced = self.pathStat(dir: destDir, path: dest)
            // The new name costs what it is longer than the old one, unless it replaces a node (that one's cost goes).
            let growth = replaced == nil ? Self.nodeCost(dest) - Self.nodeCost(source) : 0
            if growth > 0 && !self.fits(growth) { return [.i32(WASIErrno.nospc)] }
            let result = try original.implementation(memory, args)
            if result.first?.u32 == WASIErrno.success, self.pathStat(dir: sourceDir, path: source) == nil {
                if let replaced {
                    self.charge(-Self.nodeCost(source))
                    if replaced.type == 4 { self.free(replaced.size) }
                } else {
                    self.charge(growth)
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
        // Every function, replaced or not, first checks the guest's pointers: WasmKit's accessors stop the whole
        // process on an access outside the guest's memory, and some write their result only after acting.
        var pointerArguments = Self.pointerArguments
        for (name, sizes) in ["args_get": "args_sizes_get", "environ_get": "environ_sizes_get"] {
            // The pointer array and the strings' buffer, sized as the matching *_sizes_get reports them.
            guard let sizesGet = probe[sizes],
                (try? sizesGet.implementation(scratch, [.i32(0), .i32(4)]))?.first?.u32 == WASIErrno.success
            else { continue }
            let count = Int(scratch.u64(at: 0) & 0xffff_ffff)
            let buffer = Int(scratch.u64(at: 4) & 0xffff_ffff)
            pointerArguments[name] = [.fixed(0, size: count * 4), .fixed(1, size: buffer)]
        }
        for (name, checks) in pointerArguments {
            guard let (type, body) = functions[name] else { continue }
            functions[name] = (
                type,
                { memory, args in
                    if let errno = Self.check(checks, memory, args) { return [.i32(errno)] }
                    return try body(memory, args)
                }
            )
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

    // MARK: - Guest pointers

    /// What an argument of a WASI function points at.
    enum PointerArgument: Sendable {
        /// `size` bytes at argument `at`.
        case fixed(Int, size: Int)
        /// A buffer: its address is argument `at`, its length argument `length`.
        case buffer(Int, length: Int)
        /// A path (a buffer, at most ``maxPathBytes`` long and no name longer than ``maxNameBytes``).
        case path(Int, length: Int)
        /// An array of `count` (argument) elements of `size` bytes.
        case array(Int, count: Int, size: Int)
        /// An iovec array of `count` (argument) entries, and every buffer they name.
        case iovecs(Int, count: Int)
    }

    /// The pointer arguments of every wasi_snapshot_preview1 function (WasmKit 0.4.2's WASICapability.swift).
    static let pointerArguments: [String: [PointerArgument]] = [
        "args_sizes_get": [.fixed(0, size: 4), .fixed(1, size: 4)],
        "environ_sizes_get": [.fixed(0, size: 4), .fixed(1, size: 4)],
        "clock_res_get": [.fixed(1, size: 8)],
        "clock_time_get": [.fixed(2, size: 8)],
        "random_get": [.buffer(0, length: 1)],
        "fd_write": [.iovecs(1, count: 2), .fixed(3, size: 4)],
        "fd_read": [.iovecs(1, count: 2), .fixed(3, size: 4)],
        "fd_pread": [.iovecs(1, count: 2), .fixed(4, size: 4)],
        "fd_pwrite": [.iovecs(1, count: 2), .fixed(4, size: 4)],
        "fd_fdstat_get": [.fixed(1, size: 24)],
        "fd_seek": [.fixed(3, size: 8)],
        "fd_tell": [.fixed(1, size: 8)],
        "fd_filestat_get": [.fixed(1, size: 64)],
        "fd_prestat_get": [.fixed(1, size: 8)],
        "fd_prestat_dir_name": [.buffer(1, length: 2)],
        "fd_readdir": [.buffer(1, length: 2), .fixed(4, size: 4)],
        "path_create_directory": [.path(1, length: 2)],
        "path_filestat_get": [.path(2, length: 3), .fixed(4, size: 64)],
        "path_filestat_set_times": [.path(2, length: 3)],
        "path_link": [.path(2, length: 3), .path(5, length: 6)],
        "path_open": [.path(2, length: 3), .fixed(8, size: 4)],
        "path_readlink": [.path(1, length: 2), .buffer(3, length: 4), .fixed(5, size: 4)],
        "path_remove_directory": [.path(1, length: 2)],
        "path_rename": [.path(1, length: 2), .path(4, length: 5)],
        "path_symlink": [.path(0, length: 1), .path(3, length: 4)],
        "path_unlink_file": [.path(1, length: 2)],
        "poll_oneoff": [.array(0, count: 2, size: 48), .array(1, count: 2, size: 32), .fixed(3, size: 4)],
        "sock_accept": [.fixed(2, size: 4)],
        "sock_recv": [.iovecs(1, count: 2), .fixed(4, size: 4), .fixed(5, size: 2)],
        "sock_send": [.iovecs(1, count: 2), .fixed(4, size: 4)],
    ]

    /// The errno for the first bad pointer argument (EFAULT; ENAMETOOLONG for a path too long), or `nil`.
    static func check(_ checks: [PointerArgument], _ memory: Memory, _ args: [Value]) -> UInt32? {
        func arg(_ index: Int) -> UInt32 { index < args.count ? args[index].u32 : 0 }
        for check in checks {
            switch check {
            case .fixed(let at, let size):
                guard inBounds(memory, UInt(arg(at)), size) else { return WASIErrno.fault }
            case .buffer(let at, let length):
                guard inBounds(memory, UInt(arg(at)), Int(arg(length))) else { return WASIErrno.fault }
            case .path(let at, let length):
                guard arg(length) <= maxPathBytes else { return WASIErrno.nametoolong }
                guard let bytes = guestPath(memory, at: arg(at), length: arg(length)) else { return WASIErrno.fault }
                if bytes.split(separator: UInt8(ascii: "/")).contains(where: { $0.count > maxNameBytes }) {
                    return WASIErrno.nametoolong
                }
            case .array(let at, let count, let size):
                guard inBounds(memory, UInt(arg(at)), Int(arg(count)) * size) else { return WASIErrno.fault }
            case .iovecs(let at, let count):
                let base = arg(at)
                let entries = Int(arg(count))
                guard entries <= 1 << 16 else { return WASIErrno.inval }
                guard inBounds(memory, UInt(base), entries * 8) else { return WASIErrno.fault }
                for index in 0..<entries {
                    let entry = base &+ UInt32(index) &* 8
                    guard inBounds(memory, UInt(load32(memory, at: entry)), Int(load32(memory, at: entry &+ 4))) else {
                        return WASIErrno.fault
                    }
                }
            }
        }
        return nil
    }

    // MARK: - The work dir's cap

    /// Runs `call` (a write-like call on `fd`) if the growth it may cause fits the cap; then charges what it did.
    /// `end(size, position)` is the largest size the file can have after the call (`nil`: past any file size).
    /// All arithmetic here is overflow-safe: sizes and offsets come from the guest.
    private func growing(fd: UInt32, to end: (Int, Int) -> Int?, _ call: () throws -> [Value]) throws -> [Value] {
        guard let size = regularFileSize(fd: fd) else { return try call() }
        let position = max(size, fileAppends(fd: fd) ? size : (filePosition(fd: fd) ?? size))
        guard let end = end(size, position) else { return [.i32(WASIErrno.fbig)] }
        if end > size {
            // `end <= workDirCap` first, so `end - size` and `workDirCap - workDirBytes` cannot overflow.
            guard end <= workDirCap, end - size <= workDirCap - min(workDirBytes, workDirCap) else {
                return [.i32(WASIErrno.nospc)]
            }
        }
        let result = try call()
        if let after = regularFileSize(fd: fd) { charge(after - size) }
        return result
    }

    /// Adds `bytes` (negative: frees them) to the work dir's count, saturating at zero.
    private func charge(_ bytes: Int) {
        let (total, overflow) = workDirBytes.addingReportingOverflow(bytes)
        workDirBytes = overflow ? (bytes > 0 ? Int.max : 0) : max(0, total)
    }

    /// What a node costs besides its bytes: its name (the last component of `path`) and a fixed overhead.
    static func nodeCost(_ path: [UInt8]) -> Int {
        let name = path.split(separator: UInt8(ascii: "/")).last { $0 != [UInt8(ascii: ".")] }
        return nodeOverhead + min(name?.count ?? 0, maxPathBytes)
    }

    /// The host memory a file or directory node takes besides its name and bytes (a class instance, a dictionary
    /// entry, a lock), rounded up.
    static let nodeOverhead = 256

    /// Whether `bytes` more fit under the cap.
    private func fits(_ bytes: Int) -> Bool {
        bytes <= workDirCap - min(workDirBytes, workDirCap)
    }

    /// Frees the bytes of a file the guest removed: at once, or with the last open file (it may be one of them).
    private func free(_ bytes: Int) {
        if openFiles.isEmpty {
            charge(-bytes)
        } else {
            pendingCredit = Self.sum(pendingCredit, bytes) ?? Int.max
        }
    }

    /// `a + b`, or `nil` when it overflows.
    static func sum(_ a: Int, _ b: Int) -> Int? {
        let (total, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : total
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

    /// The type (3 directory, 4 regular file) and size of what a path (relative to the directory `dir`) names.
    private func pathStat(dir: UInt32, path bytes: [UInt8]) -> (type: UInt8, size: Int)? {
        guard bytes.count <= Self.maxPathBytes, let stat = probe["path_filestat_get"] else { return nil }
        scratch.bytes.replaceSubrange(128..<(128 + bytes.count), with: bytes)
        guard
            (try? stat.implementation(scratch, [.i32(dir), .i32(0), .i32(128), .i32(UInt32(bytes.count)), .i32(0)]))?
                .first?.u32 == WASIErrno.success
        else { return nil }
        return (scratch.bytes[16], Int(clamping: scratch.u64(at: 32)))
    }

    static let maxPathBytes = 4096
    static let maxNameBytes = 255

    /// A guest path's bytes, or `nil` when they are not all inside its memory or longer than a path may be.
    static func guestPath(_ memory: Memory, at address: UInt32, length: UInt32) -> [UInt8]? {
        guard length <= maxPathBytes, inBounds(memory, UInt(address), Int(length)) else { return nil }
        let bytes = memory.withUnsafeMutableBufferPointer(offset: UInt(address), count: Int(length)) { Array($0) }
        return bytes.count == Int(length) ? bytes : nil
    }

    /// A relative path's components as WasmKit resolves them (`.` skipped, `..` unwinding the walk), or `nil` when
    /// it leaves its directory.
    static func components(_ path: [UInt8]) -> [[UInt8]]? {
        var stack = [[UInt8]]()
        for component in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            switch Array(component) {
            case [UInt8(ascii: ".")]: continue
            case [UInt8(ascii: "."), UInt8(ascii: ".")]:
                guard stack.popLast() != nil else { return nil }
            default: stack.append(Array(component))
            }
        }
        return stack
    }

    // MARK: - stdio

    private func readStdin(_ memory: Memory, iovs: UInt32, count: UInt32, result: UInt32) throws -> UInt32 {
        for index in 0..<min(count, 1024) {
            let base = Self.load32(memory, at: iovs &+ index &* 8)
            let length = Self.load32(memory, at: iovs &+ index &* 8 &+ 4)
            guard length > 0 else { continue }
            guard Self.inBounds(memory, UInt(base), Int(length)) else { return WASIErrno.fault }
            var n = -1
            while n < 0 {
                try waitFor(stdinFD, events: Int16(POLLIN))
                n = memory.withUnsafeMutableBufferPointer(offset: UInt(base), count: Int(length)) { buffer in
                    read(stdinFD, buffer.baseAddress, buffer.count)
                }
                // The guest's end is non-blocking: woken for nothing (or by a signal), it waits again, still watching
                // the kill event.
                if n < 0 && errno != EAGAIN && errno != EINTR { return WASIErrno.io }
            }
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
