import Foundation
import RLMLocal
import Synchronization

/// A fresh directory under the system temp dir, removed by `remove()`.
struct TemporaryDirectory {
    let url: URL

    init(_ label: String = "rlmlocal") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "\(label)-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(at: url)
    }

    func appending(_ component: String) -> URL {
        url.appendingPathComponent(component)
    }

    /// Names in the directory, hidden ones included.
    func contents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
    }
}

struct PythonFailure: Error, CustomStringConvertible {
    var description: String
}

/// Runs `python3 -c code args…` synchronously and returns its stdout.
@discardableResult
func runPython(_ code: String, _ arguments: [String] = []) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", code] + arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw PythonFailure(description: String(decoding: errorData, as: UTF8.self))
    }
    return String(decoding: data, as: UTF8.self)
}

/// Fake model wheels, built with Python's zipfile: each part holds a few deterministic bytes at its member path.
struct FakeWheels {
    /// The directory holding the `.whl` files (usable as pip's `--find-links`).
    let directory: URL
    /// The parts, in order.
    let parts: [WheelPart]
    /// sha256 of the concatenated data files.
    let sha256: String
    /// Size of the concatenated data files.
    let sizeBytes: Int64
    /// The concatenated data files.
    let assembled: Data

    /// Builds `count` wheels named `<prefix>-part<N>==1.0.<tag>` in `directory`.
    init(in directory: URL, prefix: String = "swiftrlm-fake", count: Int, bytesPerPart: Int = 70_000) throws {
        self.directory = directory
        let version = "1.0.0"
        parts = (1...count).map { index in
            let package = "\(prefix)-part\(index)"
            let module = package.replacingOccurrences(of: "-", with: "_")
            return WheelPart(package: package, version: version, member: "\(module)/data/part\(index).bin")
        }
        let specification = try JSONSerialization.data(
            withJSONObject: parts.map { ["package": $0.package, "version": $0.version, "member": $0.member] })
        let output = try runPython(
            """
            import hashlib, json, os, sys, zipfile
            directory, size, parts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
            digest = hashlib.sha256(); everything = b""
            for index, part in enumerate(parts):
                data = bytes((index * 7 + i * 13) % 251 for i in range(size + index * 1000))
                name = part["package"].replace("-", "_")
                path = os.path.join(directory, f"{name}-{part['version']}-py3-none-any.whl")
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
                    wheel.writestr(f"{name}/__init__.py", "")
                    wheel.writestr(part["member"], data)
                    wheel.writestr(f"{name}-{part['version']}.dist-info/METADATA",
                        f"Metadata-Version: 2.1\\nName: {part['package']}\\nVersion: {part['version']}\\n")
                    wheel.writestr(f"{name}-{part['version']}.dist-info/WHEEL",
                        "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
                    wheel.writestr(f"{name}-{part['version']}.dist-info/RECORD", "")
                digest.update(data); everything += data
            with open(os.path.join(directory, "assembled.bin"), "wb") as handle:
                handle.write(everything)
            print(digest.hexdigest(), len(everything))
            """, [directory.path, "\(bytesPerPart)", String(decoding: specification, as: UTF8.self)])
        let fields = output.split(separator: " ")
        sha256 = String(fields[0])
        sizeBytes = Int64(fields[1].trimmingCharacters(in: .whitespacesAndNewlines))!
        assembled = try Data(contentsOf: directory.appendingPathComponent("assembled.bin"))
    }

    /// A catalog entry for these wheels, with the right pins unless told otherwise.
    func model(name: String = "fake-model", sha256: String? = nil, sizeBytes: Int64? = nil) -> LocalModel {
        LocalModel(
            name: name, summary: "fake", parts: parts, sizeBytes: sizeBytes ?? self.sizeBytes,
            sha256: sha256 ?? self.sha256, contextWindow: 512, smokeOnly: true)
    }
}

/// Copies wheels out of a local folder, counting calls; can fail or hang at a chosen part.
final class FolderFetcher: WheelFetcher {
    enum Behavior: Sendable {
        case normal
        case fail(atPart: Int)
        case hang(atPart: Int)
    }

    private let source: URL
    private let behavior: Behavior
    private let calls = Mutex(0)

    init(source: URL, behavior: Behavior = .normal) {
        self.source = source
        self.behavior = behavior
    }

    var fetchCount: Int { calls.withLock { $0 } }

    func fetch(_ part: WheelPart, into directory: URL) async throws -> URL {
        let call = calls.withLock { calls in
            calls += 1
            return calls
        }
        switch behavior {
        case .fail(let index) where index == call:
            throw LocalModelError.fetchFailed("fake fetch failure at part \(call)")
        case .hang(let index) where index == call:
            while true { try await Task.sleep(for: .milliseconds(20)) }
        default:
            break
        }
        let name = "\(part.package.replacingOccurrences(of: "-", with: "_"))-\(part.version)-py3-none-any.whl"
        let destination = directory.appendingPathComponent(name)
        try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: destination)
        return destination
    }
}

/// A stand-in for serve_llama.py: same arguments and ready file, answers `/health` and `/v1/models` with Python's
/// http.server. The model file's content picks a behaviour: `ok`, `crash` (exits with a message on stderr), `hang`
/// (never becomes ready), `stubborn` (ignores SIGTERM and stdin EOF).
let fakeServerScript = """
    import argparse, http.server, json, os, signal, sys, threading, time
    parser = argparse.ArgumentParser()
    for name in ("--model", "--alias", "--ready-file"):
        parser.add_argument(name)
    for name in ("--port", "--ctx", "--threads"):
        parser.add_argument(name, type=int, default=0)
    arguments = parser.parse_args()
    mode = open(arguments.model).read().strip()
    print(f"fake server: mode {mode}, n_ctx {arguments.ctx}", file=sys.stderr, flush=True)
    if mode == "crash":
        print("fake server: cannot load model: invalid magic", file=sys.stderr, flush=True)
        sys.exit(3)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                body = {"status": "ok"}
            elif self.path == "/v1/models":
                body = {"object": "list", "data": [{"id": arguments.alias, "meta": {"n_ctx": arguments.ctx}}]}
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    stop = threading.Event()
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()
        threading.Thread(target=watch, daemon=True).start()
    if mode != "hang":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", arguments.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with open(arguments.ready_file + ".tmp", "w") as handle:
            json.dump({"port": server.server_address[1], "pid": os.getpid()}, handle)
        os.replace(arguments.ready_file + ".tmp", arguments.ready_file)
    while not stop.wait(0.1):
        pass
    os._exit(0)
    """

/// Whether a process with this id exists.
func isAlive(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0
}
