import Foundation
import Glibc
import RLM
import RLMRuntime
import RLMStore

/// One context being uploaded: its bytes go straight to a 0600 file in the caller's 0700 directory as they arrive,
/// never held whole in memory; past the size limit the upload fails and its file is removed. ``finish()`` records
/// it in the key store; an upload that is neither finished nor aborted removes its file when it is released.
public final class ContextUpload: @unchecked Sendable {
    // One writer at a time (a request body is read in order); the lock only guards a stray concurrent abort.
    private let lock = NSLock()
    private var fd: Int32
    private var written = 0
    private var done = false
    /// The context's id.
    public let id: String
    private let path: String
    private var name: String?
    private let owner: String
    private let maxBytes: Int
    private let record: @Sendable (ContextRecord) async throws -> Void

    init(
        id: String, path: String, fd: Int32, name: String?, owner: String, maxBytes: Int,
        record: @escaping @Sendable (ContextRecord) async throws -> Void
    ) {
        self.id = id
        self.path = path
        self.fd = fd
        self.name = name
        self.owner = owner
        self.maxBytes = maxBytes
        self.record = record
    }

    deinit { abort() }

    /// Names the context (a multipart file's name, known only once the form was read), unless it has one.
    /// - Throws: ``ServiceError`` 400 for a name that is not 1 to 200 characters on one line.
    public func name(_ name: String) throws {
        let checked = try RLMService.checkedName(name)
        lock.withLock { self.name = self.name ?? checked }
    }

    /// Bytes so far.
    public var bytes: Int { lock.withLock { written } }

    /// Appends bytes.
    /// - Throws: ``ServiceError`` 413 past the limit (the upload is aborted), 500 when the disk refuses.
    public func write(_ chunk: UnsafeRawBufferPointer) throws {
        try lock.withLock {
            guard !done, fd >= 0 else { throw ServiceError.invalid("the upload was already ended") }
            guard written + chunk.count <= maxBytes else {
                abortLocked()
                throw ServiceError.tooLarge(
                    "the context is larger than this server's limit of \(ByteSize.describe(maxBytes)) (--max-context)")
            }
            var offset = 0
            while offset < chunk.count {
                let count = Glibc.write(fd, chunk.baseAddress! + offset, chunk.count - offset)
                if count < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    abortLocked()
                    throw ServiceError(
                        status: 500, type: "server_error", code: code == ENOSPC ? "storage_full" : "storage_error",
                        message: "the context could not be stored: \(String(cString: strerror(code)))")
                }
                offset += count
            }
            written += chunk.count
        }
    }

    /// Appends bytes.
    public func write(_ bytes: some ContiguousBytes) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Ends the upload and records it.
    /// - Returns: the stored context.
    public func finish() async throws -> ContextRecord {
        let (count, descriptor, name): (Int, Int32, String?) = try lock.withLock {
            guard !done, fd >= 0 else { throw ServiceError.invalid("the upload was already ended") }
            done = true
            let descriptor = fd
            fd = -1
            return (written, descriptor, self.name)
        }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard synced else {
            unlink(path)
            throw ServiceError(
                status: 500, type: "server_error", code: "storage_error", message: "the context could not be stored")
        }
        let stored = ContextRecord(id: id, keyID: owner, name: name, bytes: count, created: Date())
        do {
            try await record(stored)
        } catch {
            unlink(path)
            throw error
        }
        return stored
    }

    /// Gives up: the file is removed. Safe to call twice.
    public func abort() {
        lock.withLock { abortLocked() }
    }

    private func abortLocked() {
        guard !done else { return }
        done = true
        if fd >= 0 { close(fd) }
        fd = -1
        unlink(path)
    }
}

/// Where uploaded contexts live: `<contexts>/<owner>/<id>`, directories 0700, files 0600, created with
/// `O_EXCL | O_NOFOLLOW` so nothing already there (a link included) is ever written through.
struct ContextFiles: Sendable {
    let directory: String

    func ownerDirectory(_ owner: String) -> String { (directory as NSString).appendingPathComponent(owner) }

    func path(owner: String, id: String) -> String {
        (ownerDirectory(owner) as NSString).appendingPathComponent(id)
    }

    /// Creates the file for a new upload.
    func create(owner: String, id: String) throws -> Int32 {
        for dir in [directory, ownerDirectory(owner)] {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw ServiceError(
                    status: 500, type: "server_error", code: "storage_error",
                    message: "the context store cannot be created: \(String(cString: strerror(errno)))")
            }
            var info = stat()
            guard lstat(dir, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == getuid() else {
                throw ServiceError(
                    status: 500, type: "server_error", code: "storage_error",
                    message: "the context store is not a directory of this user")
            }
            if info.st_mode & 0o077 != 0 { chmod(dir, 0o700) }
        }
        let fd = open(path(owner: owner, id: id), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ServiceError(
                status: 500, type: "server_error", code: "storage_error",
                message: "the context could not be stored: \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Opens a stored context for reading.
    func openForReading(owner: String, id: String) throws -> Int32 {
        let fd = Glibc.open(path(owner: owner, id: id), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw ServiceError.notFound("context \(id)", param: "contexts") }
        return fd
    }

    func remove(owner: String, id: String) {
        unlink(path(owner: owner, id: id))
    }
}
