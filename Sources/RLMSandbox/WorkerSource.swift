import Foundation
import Glibc
import RLM
import Synchronization

/// The worker's Python source, embedded in the binary, and its compiled form.
///
/// The source is embedded (SwiftPM `.embedInCode`) rather than a bundled resource so an `rlm` copied out of the
/// build folder (scripts/install) still has it: `Bundle.module` stops the program when its bundle is not beside it.
/// It never needs a file of its own: frame 0 carries it, and the compiler below reads it from stdin.
///
/// Compiling the 40 KB worker takes Python longer than starting up, so the host compiles it once per interpreter and
/// caches the `marshal`ed code object in memory and under ``SwiftRLMPaths/cacheDirectory(environment:)``. Frame 0 then
/// carries `RLMM` + that code; the bootstrap falls back to compiling source when no compiled form is available.
///
/// The compiler runs on the host, often as root, so it must run no code but CPython's own: `-I -S` (no environment,
/// no user site, and no `site` at all, so a venv's `.pth` hooks never run), an empty environment, and the sandbox's
/// own spawn path. The cache is trusted only when it is a private file of the current user with a matching header.
package enum WorkerSource {
    /// The worker's source: frame 0 for any interpreter other than the host's own.
    package static let data = Data(PackageResources.rlm_worker_py)

    static let compiledMarker = Data("RLMM".utf8)
    /// The cache file's first bytes: a format tag, then the checksum (16 hex digits) and a newline before the code.
    static let fileMarker = Data("RLMC1".utf8)
    /// Frame 0 per (interpreter, cache directory).
    private static let compiled = Mutex<[String: Data]>([:])

    /// Frame 0 for `python`: compiled code when possible, else the source.
    /// - Parameters:
    ///   - python: the interpreter the sandbox runs.
    ///   - cacheDirectory: where the compiled form is kept; `nil` is ``SwiftRLMPaths/cacheDirectory(environment:)``.
    static func payload(python: String, cacheDirectory: URL? = nil) -> Data {
        let directory = cacheDirectory ?? SwiftRLMPaths.cacheDirectory()
        let key = python + "\u{0}" + directory.path
        if let cached = compiled.withLock({ $0[key] }) { return cached }
        let payload = loadOrCompile(python: python, directory: directory) ?? data
        compiled.withLock { $0[key] = payload }
        return payload
    }

    /// The interpreter as the cache sees it: the worker source, the real binary (path, mtime, size), the path asked
    /// for, and the user. Any change makes a new file name and a new checksum.
    struct Identity {
        let key: Data
        let fileName: String

        init?(python: String) {
            let real = URL(fileURLWithPath: python).resolvingSymlinksInPath().path
            var info = stat()
            guard stat(real, &info) == 0 else { return nil }
            var key = WorkerSource.data
            key.append(Data("\u{0}\(real)|\(info.st_mtim.tv_sec)|\(info.st_size)|\(python)|uid=\(getuid())".utf8))
            self.key = key
            fileName = "worker-u\(getuid())-" + String(WorkerSource.fnv1a(key), radix: 16) + ".bin"
        }
    }

    /// Where the compiled worker for `python` is cached (for tests).
    static func cacheFile(python: String, directory: URL) -> String? {
        Identity(python: python).map { directory.appendingPathComponent($0.fileName).path }
    }

    private static func loadOrCompile(python: String, directory: URL) -> Data? {
        guard let identity = Identity(python: python) else { return nil }
        // A cache directory that is not ours alone (a planted one, group-writable) is neither read nor written.
        let usable = (try? SwiftRLMPaths.createDirectory(directory, privateToOwner: true)) != nil
        let file = directory.appendingPathComponent(identity.fileName).path
        if usable, let code = readCache(file, identity: identity) { return compiledMarker + code }
        guard let code = compile(python: python) else { return nil }
        if usable { writeCache(file, identity: identity, code: code) }
        return compiledMarker + code
    }

    /// The cached code, if the file is a private regular file of ours (checked on the path, then again on the open
    /// descriptor, so a swap in between is caught) whose header matches this interpreter and whose code matches the
    /// checksum. Anything else is ignored, and then replaced.
    static func readCache(_ file: String, identity: Identity) -> Data? {
        guard SwiftRLMPaths.isPrivateFile(file) else { return nil }
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == getuid(),
            info.st_mode & 0o022 == 0, info.st_size < 16 << 20
        else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var got = 0
        while got < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, $0.count - got) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            got += n
        }
        let contents = Data(bytes)
        let headerLength = fileMarker.count + 17
        guard contents.count > headerLength, contents.starts(with: fileMarker) else { return nil }
        let checksum = String(decoding: contents[fileMarker.count..<(headerLength - 1)], as: UTF8.self)
        let code = contents.suffix(from: headerLength)
        guard contents[headerLength - 1] == UInt8(ascii: "\n"),
            checksum == Self.checksum(identity: identity, code: code)
        else { return nil }
        return Data(code)
    }

    /// Writes the cache through a fresh temporary file (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600) renamed into place, so a
    /// reader never sees half a file and nothing planted at the temporary name is followed or reused.
    static func writeCache(_ file: String, identity: Identity, code: Data) {
        var contents = fileMarker
        contents.append(Data((checksum(identity: identity, code: code) + "\n").utf8))
        contents.append(code)
        writePrivateFile(contents, to: file)
    }

    /// Writes `contents` to `file` through a fresh temporary file (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600) renamed into
    /// place: a reader never sees half a file, and nothing planted at the temporary name is followed or reused. Best
    /// effort: on any failure the file is left as it was.
    package static func writePrivateFile(_ contents: Data, to file: String) {
        let temporary = file + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let complete = contents.withUnsafeBytes { buffer -> Bool in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
        close(fd)
        if !complete || rename(temporary, file) != 0 { unlink(temporary) }
    }

    private static func checksum(identity: Identity, code: Data) -> String {
        var hashed = identity.key
        hashed.append(code)
        let value = String(fnv1a(hashed), radix: 16)
        return String(repeating: "0", count: 16 - value.count) + value
    }

    /// Runs the interpreter once on the host to compile the worker; `nil` if anything goes wrong.
    private static func compile(python: String) -> Data? {
        let script =
            "import marshal,sys;sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.buffer.read().decode(),"
            + "'<rlm-worker>','exec')))"
        guard
            let done = try? ChildProcess.runToCompletion(
                [python, "-I", "-S", "-c", script], input: data, timeout: .seconds(60)),
            done.succeeded, !done.stdout.isEmpty
        else { return nil }
        return done.stdout
    }

    static func fnv1a(_ data: Data) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}
