import CRLMSystem
import Foundation
import Glibc
import RLM
import Synchronization

/// Writes a context's files to a worker's data pipe (docs/CHANNEL.md, "The data pipe"): for each file a header — the
/// label's length (4 bytes, big-endian), the label (UTF-8), the planned size (8 bytes) — then its bytes as chunk
/// records (a 4-byte length, the bytes), ended by a zero length.
///
/// File bytes move with splice(2) and never enter this process's memory; the host holds one file open at a time. A
/// file that cannot be opened any more (deleted, swapped for a link since it was planned) is sent empty and reported
/// in ``failures``; a file that grew is cut at its planned size.
final class ContextStream: Sendable {
    private let files: [ContextFile]
    private let pipe: Int32
    private let failed = Mutex<[ContextSummary.Notice]>([])

    /// - Parameters:
    ///   - files: the context's sources, in order.
    ///   - pipe: the host's end of the worker's data pipe.
    init(files: [ContextFile], pipe: Int32) {
        self.files = files
        self.pipe = pipe
    }

    /// Files the host could not send, with why (they reached the worker empty).
    var failures: [ContextSummary.Notice] { failed.withLock { $0 } }

    /// Streams every file. Blocks: run it off the cooperative pool. Stops at the first write error (the worker went
    /// away; the exchange reports that).
    func run() {
        var relay: [Int32] = [-1, -1]
        guard crlm_pipe_cloexec(&relay) == 0 else { return }
        defer {
            close(relay[0])
            close(relay[1])
        }
        _ = fcntl(relay[1], 1031 /* F_SETPIPE_SZ */, 1 << 20)
        for file in files {
            guard send(file, relay: relay) else { return }
        }
    }

    private func send(_ file: ContextFile, relay: [Int32]) -> Bool {
        if case .data(let data) = file.content {
            guard write(header(file, size: UInt64(max(0, file.size)))) else { return false }
            var offset = 0
            while offset < data.count {
                let end = min(data.count, offset + (1 << 20))
                guard write(Data(Self.bigEndian(UInt32(end - offset)))), write(data[offset..<end]) else {
                    return false
                }
                offset = end
            }
            return write(Data(Self.bigEndian(UInt32(0))))
        }
        let fd: Int32
        do {
            fd = try file.openForReading() ?? -1
        } catch {
            let reason = (error as? ContextLoadError)?.description ?? "\(error)"
            failed.withLock {
                $0.append(ContextSummary.Notice(label: file.label, reason: "could not be read (\(reason)), skipped"))
            }
            // The worker leaves it out: its size says the host skipped it.
            return write(header(file, size: Self.hostSkipped) + Data(Self.bigEndian(UInt32(0))))
        }
        defer { close(fd) }
        guard write(header(file, size: UInt64(max(0, file.size)))) else { return false }
        var sent: UInt64 = 0
        let status = relay.withUnsafeBufferPointer { relay in
            crlm_stream_file(fd, 0, UInt64(max(0, file.size)), pipe, relay.baseAddress, &sent)
        }
        if status == 1 {
            let reason = String(cString: strerror(errno))
            failed.withLock {
                $0.append(ContextSummary.Notice(label: file.label, reason: "could not be read to the end (\(reason))"))
            }
        }
        return status >= 0
    }

    /// The planned size that tells the worker the host could not send the file (it is reported host-side).
    static let hostSkipped = UInt64.max

    private func header(_ file: ContextFile, size: UInt64) -> Data {
        var header = Data()
        let label = Data(file.label.utf8.prefix(4096))
        header.append(contentsOf: Self.bigEndian(UInt32(label.count)))
        header.append(label)
        header.append(contentsOf: Self.bigEndian(size))
        return header
    }

    private func write(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            raw.count == 0 || crlm_write_all(pipe, raw.baseAddress, UInt64(raw.count)) == 0
        }
    }

    private static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }
}

/// Counts a single text's lines on the host, from the same bytes the sandbox reads (memchr over pread chunks, on
/// another core while the bytes stream): the worker would otherwise need a pass over the whole built `str`.
enum ContextLineCount {
    /// Encodings in which a newline is the byte 0x0A, as Python names them (`codecs.lookup(…).name`) or users write.
    static let asciiCompatible: Set<String> = [
        "auto", "utf-8", "utf8", "utf_8", "utf-8-sig", "ascii", "latin-1", "latin1", "latin_1", "iso-8859-1",
        "iso8859-1", "iso8859_1", "iso-8859-15", "cp1252", "cp1250", "cp1251", "windows-1252",
    ]

    /// Whether the host's byte count is the text's line count: an ASCII-compatible encoding, a file (not bytes in
    /// memory) and, under `auto`, no UTF-16/32 byte-order mark.
    static func applies(to source: ContextSource) -> Bool {
        guard source.files.count == 1, asciiCompatible.contains(source.encoding.name.lowercased()) else {
            return false
        }
        let file = source.files[0]
        if case .data = file.content { return false }
        guard source.encoding.name.lowercased() == "auto" else { return true }
        guard let fd = try? file.openForReading() else { return false }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 4)
        let got = pread(fd, &head, 4, 0)
        guard got >= 2 else { return true }
        let bom = Array(head.prefix(got))
        return
            !(bom.starts(with: [0xFF, 0xFE]) || bom.starts(with: [0xFE, 0xFF]) || bom.starts(with: [0, 0, 0xFE, 0xFF]))
    }

    /// The lines in the planned bytes of `file`, or `nil` when it cannot be read.
    static func count(_ file: ContextFile) -> Int? {
        guard let fd = try? file.openForReading() else { return nil }
        defer { close(fd) }
        let lines = crlm_count_lines(fd, UInt64(max(0, file.size)))
        return lines >= 0 ? Int(lines) : nil
    }
}
