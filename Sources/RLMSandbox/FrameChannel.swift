import Dispatch
import Foundation
import Glibc
import RLM

/// Why a frame could not be read or written.
enum ChannelFailure: Error, Sendable, Equatable {
    /// The other side closed its end (it exited or was killed).
    case endOfStream
    /// A frame's length prefix exceeds the cap.
    case oversized(Int)
    /// The stream ended in the middle of a frame.
    case truncated
    /// read(2) or write(2) failed.
    case io(Int32)
    /// A frame was begun but its remaining bytes did not arrive in time.
    case stalled
}

/// Length-prefixed frames (4-byte big-endian length, then the payload) over a pair of pipe descriptors.
///
/// Reads and writes block, so each direction has its own serial queue: the cooperative thread pool never blocks, a
/// stuck peer can only stall its own queue, and killing the peer (which closes its ends) unblocks them.
final class FrameChannel: Sendable {
    private let readFD: Int32
    private let writeFD: Int32
    let maxFrameBytes: Int
    private let readQueue = DispatchQueue(label: "rlm.sandbox.channel.read")
    private let writeQueue = DispatchQueue(label: "rlm.sandbox.channel.write")

    init(readFD: Int32, writeFD: Int32, maxFrameBytes: Int) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.maxFrameBytes = maxFrameBytes
    }

    /// Writes one frame. Frames are written whole and in call order.
    func send(_ payload: Data) async throws {
        let fd = writeFD
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            writeQueue.async {
                var header = UInt32(payload.count).bigEndian
                var frame = Data(bytes: &header, count: 4)
                frame.append(payload)
                do {
                    try Self.writeAll(fd: fd, frame)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Writes several frames back to back in one call (fewer queue hops).
    func send(frames: [Data]) async throws {
        var joined = Data()
        for payload in frames {
            var header = UInt32(payload.count).bigEndian
            joined.append(Data(bytes: &header, count: 4))
            joined.append(payload)
        }
        let fd = writeFD
        let data = joined
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            writeQueue.async {
                do {
                    try Self.writeAll(fd: fd, data)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Reads the next frame's payload.
    func receive() async throws -> Data {
        let fd = readFD
        let cap = maxFrameBytes
        return try await withCheckedThrowingContinuation { continuation in
            readQueue.async {
                continuation.resume(with: Result { try Self.readFrame(fd: fd, cap: cap) })
            }
        }
    }

    /// Closes both descriptors once any queued read or write has finished.
    func close() {
        let readFD = readFD
        let writeFD = writeFD
        readQueue.async { _ = Glibc.close(readFD) }
        writeQueue.async { _ = Glibc.close(writeFD) }
    }

    private static func writeAll(fd: Int32, _ data: Data) throws {
        try data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, base + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw ChannelFailure.io(errno)
                }
                offset += written
            }
        }
    }

    private static func readFrame(fd: Int32, cap: Int) throws -> Data {
        var header = [UInt8](repeating: 0, count: 4)
        let got = try readExactly(fd: fd, into: &header, count: 4)
        if got == 0 { throw ChannelFailure.endOfStream }
        if got < 4 { throw ChannelFailure.truncated }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        if length > cap { throw ChannelFailure.oversized(length) }
        var payload = [UInt8](repeating: 0, count: length)
        if length > 0 {
            // A worker writes a frame in one go; one that starts a frame and stops is stalling the host.
            let read = try readExactly(fd: fd, into: &payload, count: length, stallTimeoutMS: 2000)
            if read < length { throw ChannelFailure.truncated }
        }
        return Data(payload)
    }

    /// Reads until `count` bytes arrived or the stream ended; returns how many arrived.
    private static func readExactly(
        fd: Int32, into buffer: inout [UInt8], count: Int, stallTimeoutMS: Int32? = nil
    ) throws -> Int {
        var offset = 0
        try buffer.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            while offset < count {
                if let stallTimeoutMS {
                    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    let ready = poll(&pfd, 1, stallTimeoutMS)
                    if ready == 0 { throw ChannelFailure.stalled }
                    if ready < 0 && errno != EINTR { throw ChannelFailure.io(errno) }
                    if ready < 0 { continue }
                }
                let n = Glibc.read(fd, base + offset, count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ChannelFailure.io(errno)
                }
                if n == 0 { return }
                offset += n
            }
        }
        return offset
    }
}
