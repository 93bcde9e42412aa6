import Foundation
import Glibc
import Synchronization

/// An exclusive `flock(2)` on a file or directory, held until ``release()``. Works across processes and between
/// tasks of one process (each acquisition opens its own descriptor). The kernel drops it if the process dies.
final class FileLock: Sendable {
    private let descriptor: Mutex<Int32>

    private init(descriptor: Int32) {
        self.descriptor = Mutex(descriptor)
    }

    deinit {
        release()
    }

    /// Waits for the lock, polling so the wait stays cancellable.
    /// - Parameters:
    ///   - path: the file (created if missing) or directory to lock.
    ///   - timeout: give up after this long.
    ///   - purpose: what the lock protects, for the timeout message.
    static func acquire(_ path: String, timeout: Duration, purpose: String) async throws -> FileLock {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let flags = exists && isDirectory.boolValue ? O_RDONLY | O_DIRECTORY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else {
            throw LocalModelError.storage("cannot open lock \(path): \(String(cString: strerror(errno)))")
        }
        let lock = FileLock(descriptor: fd)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                throw LocalModelError.storage("cannot lock \(path): \(String(cString: strerror(errno)))")
            }
            guard clock.now < deadline else {
                throw LocalModelError.timedOut("gave up waiting for another process that is \(purpose) (\(path))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return lock
    }

    /// Releases the lock (idempotent).
    func release() {
        descriptor.withLock { fd in
            if fd >= 0 { _ = close(fd) }
            fd = -1
        }
    }
}
