import Crypto
import Foundation
import Glibc
import RLM

/// `serve_llama.py`, embedded in the binary (SwiftPM `.embedInCode`) so an installed `rlm` needs no resource bundle
/// beside it; `Bundle.module` stops the program when its bundle is missing.
///
/// Python runs a script from a path, and this one runs on the host (not in the sandbox), so the text is written to
/// a file only this user can change: `$XDG_CACHE_HOME/swiftrlm` (or `~/.cache/swiftrlm`, where the sandbox caches
/// the compiled worker), refused unless it is a directory owned by this user that no one else can write, holding
/// `serve_llama-<hash of the text>.py` (0600, written to a temporary file and renamed into place). The file's
/// content is compared with the embedded text on every use, so a stale or damaged copy is replaced, never run.
enum ServeScript {
    static let text: [UInt8] = PackageResources.serve_llama_py

    /// A file holding exactly the embedded script.
    /// - Parameter environment: the variables that locate the cache directory.
    /// - Throws: ``LocalModelError`` when the directory is not private to this user or the file cannot be written.
    static func file(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        let directory = SwiftRLMPaths.cacheDirectory(environment: environment)
        try LocalModelError.storage { try SwiftRLMPaths.createDirectory(directory, privateToOwner: true) }
        let digest = SHA256.hash(data: text).prefix(8).map { String(format: "%02x", $0) }.joined()
        let file = directory.appendingPathComponent("serve_llama-\(digest).py")
        if holdsText(file.path) { return file }

        let temporary = file.path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        // O_EXCL | O_NOFOLLOW: never write through a file or link that was already there.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw LocalModelError.storage("cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == text.count, rename(temporary, file.path) == 0 else {
            unlink(temporary)
            throw LocalModelError.storage("cannot write \(file.path): \(String(cString: strerror(errno)))")
        }
        guard holdsText(file.path) else {
            throw LocalModelError.storage("\(file.path) does not hold the server script after writing it")
        }
        return file
    }

    /// Whether `path` is a regular file of ours, writable by no one else, with exactly the embedded text.
    private static func holdsText(_ path: String) -> Bool {
        guard SwiftRLMPaths.isPrivateFile(path) else { return false }
        return FileManager.default.contents(atPath: path).map { [UInt8]($0) == text } ?? false
    }
}
