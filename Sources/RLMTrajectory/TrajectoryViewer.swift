import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A trajectory (docs/TRAJECTORY.md) as one self-contained HTML page: every run in the file, each loop's steps
/// (replies, code coloured as Python, outputs, errors), the sub-call tree by depth, the answer or why there is none,
/// and a tokens/cost timeline.
///
/// Everything in a trajectory is untrusted: a model wrote it, or code a model wrote. The page never puts trajectory
/// text into markup. The events travel as JSON in a `<script type="application/json">` block with `<`, `>`, `&`,
/// U+2028 and U+2029 written as `\u` escapes (so no `</script>` or `<!--` can end or bend the block), and the page's
/// own script builds the DOM from them with `textContent` only. A Content-Security-Policy allows that one script (by
/// its SHA-256) and the one stylesheet, and nothing else: no network source of any kind, no other script, no
/// plugin, no form, no base URL; Trusted Types forbid every HTML sink.
public enum TrajectoryViewer {
    /// The `<meta name="generator">` every page carries near its start; ``writePage(_:toPath:)`` replaces only a
    /// file that carries it.
    public static let generatorMarker = #"<meta name="generator" content="rlm view, trajectory schema 1">"#

    /// Characters of an unreadable line kept for the page (the head); the rest is cut.
    static let unreadableLineLimit = 4000

    /// The page's Content-Security-Policy: the page's own script and stylesheet by hash, nothing else.
    public static let contentSecurityPolicy: String = {
        [
            "default-src 'none'",
            "script-src '\(cspHash(ViewerAssets.script))'",
            "style-src '\(cspHash(ViewerAssets.style))'",
            "img-src 'none'", "font-src 'none'", "connect-src 'none'", "media-src 'none'", "object-src 'none'",
            "frame-src 'none'", "worker-src 'none'", "manifest-src 'none'",
            "base-uri 'none'", "form-action 'none'",
            "require-trusted-types-for 'script'", "trusted-types 'none'",
        ].joined(separator: "; ")
    }()

    /// Renders a trajectory file's bytes.
    ///
    /// Lines that are not a JSON object (a last line cut short by a SIGKILL, a stray line) are kept and shown as
    /// unreadable; unknown kinds and fields are shown as JSON.
    /// - Parameters:
    ///   - jsonl: the file's bytes, one event a line.
    ///   - source: the name to show for the file (untrusted too: it travels in the JSON).
    /// - Returns: the page.
    public static func render(jsonl: Data, source: String) -> String {
        var lines = [ArraySlice<UInt8>]()
        let bytes = [UInt8](jsonl)
        var start = 0
        for index in bytes.indices where bytes[index] == 0x0A {
            lines.append(bytes[start..<index])
            start = index + 1
        }
        let endsWithNewline = start == bytes.count
        if !endsWithNewline { lines.append(bytes[start...]) }
        return render(lineBytes: lines, lastIsComplete: endsWithNewline, source: source)
    }

    /// Renders a trajectory given as its lines (without their newlines).
    /// - Parameters:
    ///   - lines: the file's lines, in order.
    ///   - source: the name to show for the file.
    /// - Returns: the page.
    public static func render(lines: [String], source: String) -> String {
        render(lineBytes: lines.map { ArraySlice($0.utf8) }, lastIsComplete: false, source: source)
    }

    private static func render(lineBytes: [ArraySlice<UInt8>], lastIsComplete: Bool, source: String) -> String {
        var events = [String]()
        events.reserveCapacity(lineBytes.count)
        var unreadable = [Any]()
        for (offset, raw) in lineBytes.enumerated() {
            var line = raw
            if line.last == 0x0D { line = line.dropLast() }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            // Parsed and written again, so the page gets plain RFC 8259 JSON whatever leniency the parser has.
            if let object = try? JSONSerialization.jsonObject(with: Data(line)), object is [String: Any],
                let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            {
                events.append(String(decoding: data, as: UTF8.self))
            } else {
                var text = String(decoding: line, as: UTF8.self)
                if text.count > unreadableLineLimit {
                    text =
                        String(text.prefix(unreadableLineLimit))
                        + " … [\(text.count - unreadableLineLimit) characters cut]"
                }
                let isLast = offset == lineBytes.count - 1 && !lastIsComplete
                unreadable.append(["line": offset + 1, "text": text, "last": isLast])
            }
        }
        let rest: [String: Any] = ["viewer": 1, "source": source, "unreadable": unreadable]
        let restJSON =
            (try? JSONSerialization.data(withJSONObject: rest, options: [.sortedKeys]))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        // `{"events":[…],` followed by the rest's members.
        let payload = "{\"events\":[" + events.joined(separator: ",") + "]," + restJSON.dropFirst()
        return page(payload: scriptSafeJSON(payload))
    }

    /// JSON text that can sit inside an HTML `<script>` element: `<`, `>`, `&`, U+2028 and U+2029 written as `\u`
    /// escapes, so neither `</script>` nor `<!--` can appear and the text is the same JSON value.
    ///
    /// Valid for any valid JSON: those characters can occur only inside strings, where a `\u` escape means the same.
    /// - Parameter json: serialized JSON.
    /// - Returns: the same value, safe to embed.
    public static func scriptSafeJSON(_ json: String) -> String {
        var out = [UInt8]()
        out.reserveCapacity(json.utf8.count + json.utf8.count / 16)
        json.utf8.withContiguousStorageIfAvailable { bytes in
            var index = 0
            let count = bytes.count
            while index < count {
                let byte = bytes[index]
                switch byte {
                case 0x3C: out.append(contentsOf: escapeLT)
                case 0x3E: out.append(contentsOf: escapeGT)
                case 0x26: out.append(contentsOf: escapeAmp)
                case 0xE2 where index + 2 < count && bytes[index + 1] == 0x80 && bytes[index + 2] & 0xFE == 0xA8:
                    out.append(contentsOf: bytes[index + 2] == 0xA8 ? escapeLS : escapePS)
                    index += 2
                // DEL and the C1 controls, which some terminals obey, so `cat page.html` is safe too (`JSONText`).
                case 0x7F: out.append(contentsOf: Array(#"\u007f"#.utf8))
                case 0xC2 where index + 1 < count && (0x80...0x9F).contains(bytes[index + 1]):
                    let hex = String(bytes[index + 1], radix: 16)
                    out.append(contentsOf: Array(#"\u00"#.utf8) + Array(hex.utf8))
                    index += 1
                default: out.append(byte)
                }
                index += 1
            }
        }
        if out.isEmpty && !json.isEmpty {
            // A non-contiguous (bridged) string: make it native and try again.
            var native = json
            native.makeContiguousUTF8()
            return scriptSafeJSON(native)
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let escapeLT = Array(#"\u003c"#.utf8)
    private static let escapeGT = Array(#"\u003e"#.utf8)
    private static let escapeAmp = Array(#"\u0026"#.utf8)
    private static let escapeLS = Array(#"\u2028"#.utf8)
    private static let escapePS = Array(#"\u2029"#.utf8)

    private static func page(payload: String) -> String {
        // The policy comes first, before any script or style.
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta http-equiv="Content-Security-Policy" content="\(contentSecurityPolicy)">
        \(generatorMarker)
        <meta name="referrer" content="no-referrer">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>rlm view</title>
        <style>\(ViewerAssets.style)</style>
        </head>
        <body>
        <main id="app"><p>Rendering the trajectory…</p><noscript>This page shows the trajectory with its own \
        script; allow JavaScript for this file.</noscript></main>
        <script type="application/json" id="rlm-trajectory">\(payload)</script>
        <script>\(ViewerAssets.script)</script>
        </body>
        </html>

        """
    }

    /// `'sha256-…'` for an inline script or style.
    static func cspHash(_ text: String) -> String {
        "sha256-" + Data(SHA256.hash(Array(text.utf8))).base64EncodedString()
    }
}

// MARK: - Files

/// Why a page could not be read from or written to a file; the description is safe to print (it names the path).
public struct TrajectoryViewerError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable {
        case unreadable, notRegular, tooLarge, refused, writeFailed
    }

    private let code: Code
    /// A sentence for the user.
    public let description: String

    /// Whether the user can fix it by naming another file (a usage error) rather than the system failing.
    public var isUsageError: Bool { code != .writeFailed }

    static func unreadable(_ path: String, _ reason: String) -> Self {
        Self(code: .unreadable, description: "cannot read \(path): \(reason)")
    }
    static func notRegular(_ path: String) -> Self {
        Self(code: .notRegular, description: "\(path) is not a regular file")
    }
    static func tooLarge(_ path: String, _ size: Int64) -> Self {
        Self(
            code: .tooLarge,
            description:
                "\(path) is \(size) bytes; the viewer reads trajectories up to \(TrajectoryViewer.maxTrajectoryBytes) bytes"
        )
    }
    static func refused(_ path: String, _ reason: String) -> Self {
        Self(code: .refused, description: "refusing to overwrite \(path): \(reason)")
    }
    static func writeFailed(_ path: String, _ reason: String) -> Self {
        Self(code: .writeFailed, description: "cannot write \(path): \(reason)")
    }
}

extension TrajectoryViewer {
    /// The largest trajectory ``readTrajectory(atPath:)`` reads (the page holds all of it).
    public static let maxTrajectoryBytes: Int64 = 1 << 30

    /// Reads a trajectory file: a regular file (a FIFO or a device is refused, not waited on) of at most
    /// ``maxTrajectoryBytes``.
    /// - Parameter path: the file.
    /// - Returns: its bytes.
    public static func readTrajectory(atPath path: String) throws -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw TrajectoryViewerError.unreadable(path, String(cString: strerror(errno))) }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw TrajectoryViewerError.unreadable(path, String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw TrajectoryViewerError.notRegular(path) }
        guard Int64(info.st_size) <= maxTrajectoryBytes else {
            throw TrajectoryViewerError.tooLarge(path, Int64(info.st_size))
        }
        do {
            return try handle.readToEnd() ?? Data()
        } catch {
            throw TrajectoryViewerError.unreadable(path, "\(error)")
        }
    }

    /// Writes a page to `path`, born 0600 (it holds the run). An existing file is replaced only when it is a regular
    /// file owned by this user that carries ``generatorMarker`` (a page this viewer wrote); a link, a directory, a
    /// device, someone else's file or any other file is refused. The replacement is a new file renamed over the
    /// old one, so nothing is written through a link.
    /// - Parameters:
    ///   - html: the page.
    ///   - path: where to write it.
    public static func writePage(_ html: String, toPath path: String) throws {
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else {
                throw TrajectoryViewerError.refused(path, String(cString: strerror(errno)))
            }
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                let reason = String(cString: strerror(errno))
                if errno == EEXIST { throw TrajectoryViewerError.refused(path, "it appeared while writing") }
                throw TrajectoryViewerError.writeFailed(path, reason)
            }
            do {
                try writeAll(html, to: fd, path: path)
            } catch {
                unlink(path)
                throw error
            }
            return
        }
        try checkReplaceable(path, info)
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temporary =
            (directory.isEmpty ? "" : directory + "/") + ".\(name).rlm-view-\(UInt32.random(in: .min ... .max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TrajectoryViewerError.writeFailed(path, String(cString: strerror(errno))) }
        do {
            try writeAll(html, to: fd, path: path)
            guard rename(temporary, path) == 0 else {
                throw TrajectoryViewerError.writeFailed(path, String(cString: strerror(errno)))
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    private static func checkReplaceable(_ path: String, _ info: stat) throws {
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFLNK: throw TrajectoryViewerError.refused(path, "it is a symbolic link")
        case S_IFDIR: throw TrajectoryViewerError.refused(path, "it is a directory")
        default: throw TrajectoryViewerError.refused(path, "it is not a regular file")
        }
        guard info.st_uid == geteuid() else { throw TrajectoryViewerError.refused(path, "another user owns it") }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw TrajectoryViewerError.refused(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 1024)
        let count = read(fd, &head, head.count)
        let text = String(decoding: head.prefix(max(count, 0)), as: UTF8.self)
        guard text.contains(generatorMarker) else {
            throw TrajectoryViewerError.refused(path, "it is not a page written by rlm view")
        }
    }

    private static func writeAll(_ html: String, to fd: Int32, path: String) throws {
        defer { close(fd) }
        // The mode asked of open() is cut by the umask; set it exactly.
        fchmod(fd, 0o600)
        var bytes = Array(html.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw TrajectoryViewerError.writeFailed(path, String(cString: strerror(errno)))
            }
            bytes = bytes.dropFirst(written)
        }
    }
}

// MARK: - SHA-256

/// SHA-256 (FIPS 180-4), for the page's Content-Security-Policy hashes; this module links no crypto library.
enum SHA256 {
    private static let k: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    /// The 32-byte digest of `message`.
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [
            0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
        ]
        var padded = message
        padded.append(0x80)
        while padded.count % 64 != 56 { padded.append(0) }
        let bits = UInt64(message.count) &* 8
        for shift in stride(from: 56, through: 0, by: -8) { padded.append(UInt8(truncatingIfNeeded: bits >> shift)) }
        var w = [UInt32](repeating: 0, count: 64)
        for chunk in stride(from: 0, to: padded.count, by: 64) {
            for i in 0..<16 {
                let b = chunk + i * 4
                w[i] =
                    UInt32(padded[b]) << 24 | UInt32(padded[b + 1]) << 16 | UInt32(padded[b + 2]) << 8
                    | UInt32(padded[b + 3])
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                let choice = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ choice &+ k[i] &+ w[i]
                let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                let majority = (a & b) ^ (a & c) ^ (b & c)
                let t2 = s0 &+ majority
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            for (i, value) in [a, b, c, d, e, f, g, hh].enumerated() { h[i] = h[i] &+ value }
        }
        return h.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (24 - 8 * $0)) } }
    }

    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
}
