import Foundation
import Logging
import RLM
import Subprocess

/// The private venv that holds the xllamacpp wheel, created on first use.
///
/// It is built in a sibling temporary directory and renamed into place only once pip has succeeded, so a failed
/// or interrupted install never leaves a half-made venv behind. Concurrent creators take turns on a lock file.
struct PythonEnvironment: Sendable {
    /// The venv directory.
    var directory: URL
    /// Interpreters to create it with, tried in order (paths or names looked up in `PATH`).
    var basePythons: [String]
    /// The pip requirement to install (`xllamacpp==…`).
    var requirement: String
    var logger: Logger

    /// The venv's interpreter.
    var python: URL { directory.appendingPathComponent("bin/python") }

    private var marker: URL { directory.appendingPathComponent(".swiftrlm-requirement") }

    /// Whether the venv exists with `requirement` installed.
    var isReady: Bool {
        FileManager.default.isExecutableFile(atPath: python.path)
            && (try? String(contentsOf: marker, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                == requirement
    }

    /// Returns the venv's python, creating the venv and installing `requirement` first when needed.
    func ensure(progress: @Sendable (ServerProgress) -> Void) async throws -> String {
        if isReady { return python.path }
        let parent = directory.deletingLastPathComponent()
        try LocalModelError.storage { try SwiftRLMPaths.createDirectory(parent) }
        let lock = try await FileLock.acquire(
            parent.appendingPathComponent("\(directory.lastPathComponent).lock").path, timeout: .seconds(900),
            purpose: "creating the Python environment")
        defer { lock.release() }
        if isReady { return python.path }

        let token = UUID().uuidString.prefix(8).lowercased()
        let staging = parent.appendingPathComponent(".\(directory.lastPathComponent).tmp-\(token)")
        defer { try? FileManager.default.removeItem(at: staging) }

        progress(.creatingEnvironment(directory))
        logger.info("creating the local model server's venv", metadata: ["rlm.local.venv": "\(directory.path)"])
        var failures: [String] = []
        var created = false
        for candidate in basePythons {
            guard let executable = SwiftRLMPaths.executable(named: candidate) else {
                failures.append("\(candidate): not found")
                continue
            }
            let result = try await runCommand(executable, ["-m", "venv", staging.path])
            if result.status.isSuccess {
                created = true
                break
            }
            failures.append("\(executable) -m venv: \(result.tail(lines: 3))")
            try? FileManager.default.removeItem(at: staging)
        }
        guard created else {
            throw LocalModelError.pythonEnvironment(
                """
                cannot create a Python venv at \(directory.path); install venv support \
                (apt-get install -y python3-venv) and try again.
                \(failures.joined(separator: "\n"))
                """)
        }

        progress(.installingPackage(requirement))
        let stagedPython = staging.appendingPathComponent("bin/python").path
        let install = try await runCommand(
            stagedPython,
            ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off", requirement]
        )
        guard install.status.isSuccess else {
            throw LocalModelError.pythonEnvironment(
                "pip install \(requirement) failed (\(install.status.summary)); is PyPI reachable?\n\(install.tail())")
        }
        let check = try await runCommand(stagedPython, ["-c", "import xllamacpp"])
        guard check.status.isSuccess else {
            throw LocalModelError.pythonEnvironment(
                "\(requirement) installed but does not import on this machine:\n\(check.tail())")
        }
        do {
            try Data((requirement + "\n").utf8).write(
                to: staging.appendingPathComponent(".swiftrlm-requirement"))
            if FileManager.default.fileExists(atPath: directory.path) {
                // An older or broken venv: move it out of the way first so the rename below cannot fail on it.
                let old = parent.appendingPathComponent(".\(directory.lastPathComponent).old-\(token)")
                try FileManager.default.moveItem(at: directory, to: old)
                try? FileManager.default.removeItem(at: old)
            }
            try FileManager.default.moveItem(at: staging, to: directory)
        } catch {
            throw LocalModelError.pythonEnvironment(
                "cannot install the venv at \(directory.path): \(error.localizedDescription)")
        }
        logger.info("created the local model server's venv", metadata: ["rlm.local.venv": "\(directory.path)"])
        return python.path
    }
}
