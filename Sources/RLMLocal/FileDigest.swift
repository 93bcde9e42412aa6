import Crypto
import Foundation

/// The sha256 of a file, computed with swift-crypto as it is read in 4 MiB chunks, so a 1 GB model never sits in
/// memory. It can follow a file that is still growing: each ``update(through:)`` hashes the bytes appended since the
/// last one.
struct FileDigest {
    private let handle: FileHandle
    private let path: String
    private var hasher = SHA256()
    /// How many bytes have been hashed.
    private(set) var bytes: Int64 = 0

    static let chunkSize = 4 << 20

    /// Opens `file` for reading.
    /// - Throws: ``LocalModelError/storage(_:)`` when it cannot be opened.
    init(file: URL) throws {
        path = file.path
        do {
            handle = try FileHandle(forReadingFrom: file)
        } catch {
            throw LocalModelError.storage("cannot read \(file.path): \(error.localizedDescription)")
        }
    }

    /// The sha256 (lowercase hex) of a whole file.
    /// - Throws: ``LocalModelError/storage(_:)`` when it cannot be read; `CancellationError`.
    static func sha256(of file: URL) async throws -> String {
        var digest = try FileDigest(file: file)
        defer { digest.close() }
        try await digest.update(through: nil)
        return digest.finalize()
    }

    /// Hashes the file's bytes from where the last call stopped up to offset `end`, or to the end of the file.
    /// Yields between chunks, so a long hash neither holds a cooperative thread nor ignores cancellation.
    /// - Throws: ``LocalModelError/storage(_:)`` when the file is shorter than `end` or cannot be read.
    mutating func update(through end: Int64?) async throws {
        while end.map({ bytes < $0 }) ?? true {
            try Task.checkCancellation()
            let wanted = end.map { Int(min(Int64(Self.chunkSize), $0 - bytes)) } ?? Self.chunkSize
            let chunk: Data
            do {
                chunk = try handle.read(upToCount: wanted) ?? Data()
            } catch {
                throw LocalModelError.storage("cannot read \(path): \(error.localizedDescription)")
            }
            if chunk.isEmpty {
                guard end == nil else {
                    throw LocalModelError.storage("\(path) ended at \(bytes) bytes, before \(end ?? 0)")
                }
                return
            }
            hasher.update(data: chunk)
            bytes += Int64(chunk.count)
            await Task.yield()
        }
    }

    /// The sha256 of what was hashed, in lowercase hex.
    func finalize() -> String {
        hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Closes the file.
    func close() {
        try? handle.close()
    }
}
